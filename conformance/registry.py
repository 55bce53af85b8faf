"""The registry of checks and what a check returns.

A check runs on a list of cases (``"1d"``, ``"2d/truncated:2"``, ...) and returns a
`Measurement`: the max relative error and the tolerance it must not exceed. Relative error of
arrays (or dicts of arrays) is ``max |a - b| / max |b|`` over every entry, so a parameter whose
gradient is exactly zero in both backends counts as agreeing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["CHECKS", "Check", "Measurement", "Pair", "register", "relative_error"]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """``error <= tolerance`` passes; ``detail`` says what was compared."""

    error: float
    tolerance: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error <= self.tolerance


@dataclasses.dataclass(frozen=True)
class Pair:
    """A candidate backend, the reference it is held to, and the precision of the run."""

    candidate: ModuleType
    reference: ModuleType
    dtype: str


@dataclasses.dataclass(frozen=True)
class Check:
    """``quick``: the one case ``--quick`` runs (the edit-run loop): a cheap, telling one."""

    name: str
    cases: tuple[str, ...]
    run: Callable[[Pair, str], Measurement]
    quick: str


CHECKS: dict[str, Check] = {}


def register(
    name: str, cases: tuple[str, ...], quick: str | None = None
) -> Callable[[Callable[[Pair, str], Measurement]], Check]:
    """Register a check on ``cases``; ``quick`` (default: the first case) is its ``--quick`` case."""
    chosen = cases[0] if quick is None else quick
    if chosen not in cases:
        raise ValueError(f"{name}: quick case {chosen!r} is not one of its cases")

    def register(run: Callable[[Pair, str], Measurement]) -> Check:
        CHECKS[name] = Check(name, cases, run, chosen)
        return CHECKS[name]

    return register


def relative_error(actual: Any, expected: Any) -> float:
    """``max |a - b| / max |b|`` over every entry of two arrays or two dicts of arrays."""
    if isinstance(expected, dict):
        if set(actual) != set(expected):
            return float("inf")
        pairs = [(np.asarray(actual[k], np.float64), np.asarray(expected[k], np.float64)) for k in expected]
    else:
        pairs = [(np.asarray(actual, np.float64), np.asarray(expected, np.float64))]
    if any(a.shape != b.shape for a, b in pairs):
        return float("inf")
    difference = max((np.abs(a - b).max() if a.size else 0.0) for a, b in pairs)
    scale = max((np.abs(b).max() if b.size else 0.0) for _, b in pairs)
    if difference == 0.0:
        return 0.0
    return float(difference / scale) if scale > 0 else float("inf")
