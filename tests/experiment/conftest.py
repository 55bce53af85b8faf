"""Shared sizes and helpers of the experiment-driver tests: runs small enough for ~1 s each."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest

# 4 steps, a checkpoint every 2: two checkpoints (step-000002, step-000004), both kept.
TINY: dict[str, Any] = {
    "system": "l96", "steps": 4, "batch_size": 2, "solver_steps": 2, "train_windows": 4, "test_windows": 2,
    "window_length": 4, "hidden_dim": 3, "prior_hidden_dim": 3, "checkpoint_every": 2, "fourdvar_windows": 0,
}


def flags(**changes: Any) -> list[str]:
    """``TINY`` (with ``changes``) as ``train`` flags."""
    words = []
    for field, value in {**TINY, **changes}.items():
        words += ["--" + field.replace("_", "-"), str(value)]
    return words


@pytest.fixture
def tiny() -> dict[str, Any]:
    return dict(TINY)


@pytest.fixture
def tiny_flags() -> Callable[..., list[str]]:
    return flags


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[[Sequence[str]], tuple[int, str]]:
    """``main(vardax_torch, argv)`` in this process: ``(exit status, stderr)``."""
    import vardax_torch
    from pipekit_cycle.experiment import main

    def run(argv: Sequence[str]) -> tuple[int, str]:
        capsys.readouterr()
        try:
            status = main(vardax_torch, list(argv))
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 1
        return status, capsys.readouterr().err

    return run


def run_module(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``python -m vardax_torch <argv>`` in a child process (torch imports faster than jax)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "vardax_torch", *argv], capture_output=True, text=True, env=env, timeout=120, **kwargs
    )


@pytest.fixture
def module_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_module
