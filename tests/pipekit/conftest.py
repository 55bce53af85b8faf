"""The snippet runner shared by test_readme.py (the README's and the docs pages' ```python blocks)
and test_docs.py (the ``Examples`` blocks of the docstrings on the API pages).

Each block runs in its own child process with only the framework it names: the other one's
import fails there, as on a machine without it (``pipekit_cycle``: neither framework). The
children share one JAX compilation cache for the session (a temporary directory), so the
programs that several blocks compile alike (model initialisation, a training step) are
compiled once: the values are the same, the time is not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# The framework each kind of snippet must run without.
BLOCKED = {"vardax_jax": ("torch",), "vardax_torch": ("jax",), "pipekit_cycle": ("jax", "torch")}

BLOCKER = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"No module named {{name!r}} (blocked: this snippet must not need it)")
        return None
sys.meta_path.insert(0, _Absent())
"""


def for_backend(code: str, backend: str) -> str:
    """``code`` with its ``import vardax_X as vd`` switched to ``backend``."""
    if backend.startswith("vardax_"):
        return re.sub(r"vardax_(jax|torch) as vd\b", f"{backend} as vd", code)
    return code


@pytest.fixture(scope="session")
def run_snippet(tmp_path_factory):
    """``run_snippet(code, backend) -> subprocess.CompletedProcess``, run from the repository root."""
    cache = tmp_path_factory.mktemp("jax-compilation-cache")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }

    def run(code: str, backend: str) -> subprocess.CompletedProcess:
        program = BLOCKER.format(blocked=BLOCKED[backend]) + for_backend(code, backend)
        return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env,
                              timeout=600, cwd=ROOT)

    return run
