"""Running the checks over backend pairs, with expected failures read from data."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tomllib
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pipekit_cycle import BackendNotInstalledError

from . import amortized_checks, checks, dynamics_checks, grid_checks  # noqa: F401  (they register the checks)
from .backends import DEFAULT_REFERENCE, backends_under_test, bound_compiled_code, one_thread, precision, resolve
from .golden import GOLDEN_SUFFIX, Golden, Recorder, golden_path
from .registry import CHECKS, Measurement, Pair

__all__ = [
    "DEFAULT_EXPECTED_FAILURES",
    "ExpectedFailure",
    "Report",
    "Result",
    "case_ids",
    "check_backend",
    "load_expected_failures",
    "run_one",
    "run_suite",
    "write_golden",
]

DEFAULT_EXPECTED_FAILURES = Path(__file__).with_name("expected_failures.toml")


@dataclasses.dataclass(frozen=True)
class ExpectedFailure:
    pattern: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Result:
    """One check on one case for one backend pair. ``status``: pass, FAIL, xfail (expected
    failure that failed), XPASS (expected failure that passed: unexpected), ERROR."""

    test_id: str
    candidate: str
    reference: str
    check: str
    case: str
    dtype: str
    measurement: Measurement
    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("pass", "xfail")


@dataclasses.dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]

    @property
    def passed(self) -> int:
        return sum(result.status == "pass" for result in self.results)

    @property
    def failed(self) -> int:
        return sum(not result.ok for result in self.results)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        xfailed = sum(result.status == "xfail" for result in self.results)
        extra = f", {xfailed} expected failures" if xfailed else ""
        selves = sorted({r.candidate for r in self.results if r.reference == f"{r.candidate} (itself)"})
        if selves:
            extra += f"; {', '.join(selves)} compared with itself, not with another backend"
        return f"{self.passed} passed, {self.failed} failed{extra}"


def load_expected_failures(path: str | os.PathLike[str] | None = DEFAULT_EXPECTED_FAILURES) -> list[ExpectedFailure]:
    """Read ``[[expected_failure]]`` entries (``pattern``, ``reason``) from a TOML file."""
    if path is None:
        return []
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    entries = data.get("expected_failure", [])
    failures = []
    for entry in entries:
        if not isinstance(entry, dict) or not {"pattern", "reason"} <= set(entry):
            raise ValueError(f"{path}: each expected_failure needs 'pattern' and 'reason', got {entry!r}")
        failures.append(ExpectedFailure(str(entry["pattern"]), str(entry["reason"])))
    return failures


def make_test_id(candidate: str, reference: str, check: str, case: str) -> str:
    return f"{candidate}-vs-{reference}::{check}::{case}"


# A reference: its label in reports, and the stand-in a check gets for ``check::case``.
_Reference = tuple[str, Callable[[str], Any]]


def _reference(reference: str | ModuleType, dtype: str, candidate: str) -> _Reference:
    """A live backend, or its golden files: asked for by ``<name>:golden``, or taken when the
    backend is not installed (and its files are there)."""
    name = reference if isinstance(reference, str) else reference.__name__
    base = name.removesuffix(GOLDEN_SUFFIX)
    if isinstance(reference, str) and name.endswith(GOLDEN_SUFFIX):
        return _golden(base, dtype)
    try:
        module = resolve(reference)[1]
    except BackendNotInstalledError as error:
        if golden_path(base, dtype).exists():
            return _golden(base, dtype)
        raise BackendNotInstalledError(f"{error}; and {golden_path(base, dtype)} (its golden outputs) is missing; "
                                       f"pass another --reference") from None
    label = f"{base} (itself)" if base == candidate else base
    return label, lambda key: module


def _golden(name: str, dtype: str) -> _Reference:
    path = golden_path(name, dtype)
    if not path.exists():
        raise FileNotFoundError(f"no golden outputs of {name} in {dtype}: {path} is missing; write them with "
                                f"`python -m conformance --write-golden --reference {name}`")
    golden = Golden(path)
    return f"{name} (golden)", golden.for_check


def case_ids(
    candidate: str, reference: str, only: str | None = None, quick: bool = False
) -> list[tuple[str, str, str]]:
    """``(test_id, check, case)`` for every check and case (``quick``: each check's one quick
    case), filtered by the fnmatch ``only``."""
    ids = []
    for check in CHECKS.values():
        for case in (check.quick,) if quick else check.cases:
            identifier = make_test_id(candidate, reference, check.name, case)
            if only is None or fnmatch.fnmatch(identifier, only) or only in identifier:
                ids.append((identifier, check.name, case))
    return ids


def run_one(
    candidate: str | ModuleType,
    reference: str | ModuleType,
    check: str,
    case: str,
    *,
    dtype: str = "float64",
    expected_failures: Sequence[ExpectedFailure] = (),
) -> Result:
    """Run one check on one case; an exception inside the check is a failure (``ERROR``).
    ``reference`` ``"<name>:golden"`` holds the candidate to the golden outputs of ``name``."""
    candidate_name, module = resolve(candidate)
    return _run((candidate_name, module), _reference(reference, dtype, candidate_name), check, case, dtype,
                expected_failures)


def _run(
    candidate: tuple[str, ModuleType],
    reference: _Reference,
    check: str,
    case: str,
    dtype: str,
    expected_failures: Sequence[ExpectedFailure],
) -> Result:
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    identifier = make_test_id(candidate[0], reference[0], check, case)
    expected = next((f for f in expected_failures if fnmatch.fnmatch(identifier, f.pattern)), None)
    try:
        with precision(dtype), one_thread():
            measurement = CHECKS[check].run(Pair(candidate[1], reference[1](f"{check}::{case}"), dtype), case)
        status = "pass" if measurement.passed else "FAIL"
    except Exception as error:
        detail = "".join(traceback.format_exception_only(error)).strip()
        measurement = Measurement(float("nan"), float("nan"), detail)
        status = "ERROR"
    bound_compiled_code()
    if expected is not None:
        status = "XPASS" if status == "pass" else "xfail"
    reason = expected.reason if expected else ""
    return Result(identifier, candidate[0], reference[0], check, case, dtype, measurement, status, reason)


def check_backend(
    backend: str | ModuleType,
    reference: str | ModuleType = DEFAULT_REFERENCE,
    dtype: str = "float64",
    expected_failures: Iterable[ExpectedFailure] | str | os.PathLike[str] | None = DEFAULT_EXPECTED_FAILURES,
    only: str | None = None,
    quick: bool = False,
) -> Report:
    """Hold ``backend`` to ``reference`` on every check; returns a `Report`.

    ``backend`` and ``reference`` are registered names, importable module names or modules.
    ``expected_failures`` is a TOML file path (default: the suite's own file), a list of
    `ExpectedFailure`, or ``None``. ``only`` filters test ids (fnmatch pattern or substring);
    ``quick`` runs one case per check (the edit-run loop), not every case.
    """
    if expected_failures is None or isinstance(expected_failures, (str, os.PathLike)):
        failures = load_expected_failures(expected_failures)
    else:
        failures = list(expected_failures)
    candidate = resolve(backend)
    ref = _reference(reference, dtype, candidate[0])
    return Report(
        tuple(
            _run(candidate, ref, check, case, dtype, failures)
            for _, check, case in case_ids(candidate[0], ref[0], only, quick)
        )
    )


def pairs(backends: Sequence[str], reference: str) -> list[tuple[str, str]]:
    """Each backend other than the reference against the reference; the reference alone is
    held to its own golden outputs (``<reference>:golden``), against itself only where they
    are missing (and the report says so)."""
    base = reference.removesuffix(GOLDEN_SUFFIX)
    others = [name for name in backends if name != base]
    if others:
        return [(name, reference) for name in others]
    if reference.endswith(GOLDEN_SUFFIX) or any(golden_path(base, dtype).exists() for dtype in ("float64", "float32")):
        return [(base, base + GOLDEN_SUFFIX)]
    return [(base, base)]


def write_golden(reference: str = DEFAULT_REFERENCE, dtypes: Sequence[str] = ("float64", "float32")) -> list[Path]:
    """Run every check with ``reference`` on both sides, logging the reference side, and
    write ``golden/<reference>-<dtype>.npz`` for each dtype (`conformance.golden`). A check
    that fails against itself stops the writing (``RuntimeError`` naming it): golden outputs
    are only written from a backend that passes."""
    name, module = resolve(reference)
    written = []
    for dtype in dtypes:
        recorder = Recorder(module)
        for _, check, case in case_ids(name, name):
            result = _run((name, module), (name, recorder.wrap), check, case, dtype, ())
            if not result.ok:
                detail = result.measurement.detail
                raise RuntimeError(f"{name} fails {check}::{case} ({dtype}) against itself: {detail}")
        path = golden_path(name, dtype)
        recorder.save(path)
        written.append(path)
    return written


def run_suite(
    backends: str | None = None,
    reference: str = DEFAULT_REFERENCE,
    dtype: str = "float64",
    expected_failures: str | os.PathLike[str] | None = DEFAULT_EXPECTED_FAILURES,
    only: str | None = None,
    quick: bool = False,
) -> Report:
    """Every backend under test (see `backends_under_test`) against ``reference``; ``quick``:
    one case per check."""
    results: list[Result] = []
    for candidate, ref in pairs(backends_under_test(backends), reference):
        results.extend(check_backend(candidate, ref, dtype, expected_failures, only, quick).results)
    return Report(tuple(results))
