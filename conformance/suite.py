"""Running the checks over backend pairs, with expected failures read from data."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tomllib
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from . import amortized_checks, checks, dynamics_checks  # noqa: F401  (they register the checks)
from .backends import DEFAULT_REFERENCE, backends_under_test, precision, resolve
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


def case_ids(candidate: str, reference: str, only: str | None = None) -> list[tuple[str, str, str]]:
    """``(test_id, check, case)`` for every check and case, filtered by the fnmatch ``only``."""
    ids = []
    for check in CHECKS.values():
        for case in check.cases:
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
    """Run one check on one case; an exception inside the check is a failure (``ERROR``)."""
    return _run(resolve(candidate), resolve(reference), check, case, dtype, expected_failures)


def _run(
    candidate: tuple[str, ModuleType],
    reference: tuple[str, ModuleType],
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
        with precision(dtype):
            measurement = CHECKS[check].run(Pair(candidate[1], reference[1], dtype), case)
        status = "pass" if measurement.passed else "FAIL"
    except Exception as error:
        detail = "".join(traceback.format_exception_only(error)).strip()
        measurement = Measurement(float("nan"), float("nan"), detail)
        status = "ERROR"
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
) -> Report:
    """Hold ``backend`` to ``reference`` on every check; returns a `Report`.

    ``backend`` and ``reference`` are registered names, importable module names or modules.
    ``expected_failures`` is a TOML file path (default: the suite's own file), a list of
    `ExpectedFailure`, or ``None``. ``only`` filters test ids (fnmatch pattern or substring).
    """
    if expected_failures is None or isinstance(expected_failures, (str, os.PathLike)):
        failures = load_expected_failures(expected_failures)
    else:
        failures = list(expected_failures)
    candidate, ref = resolve(backend), resolve(reference)
    return Report(
        tuple(
            _run(candidate, ref, check, case, dtype, failures)
            for _, check, case in case_ids(candidate[0], ref[0], only)
        )
    )


def pairs(backends: Sequence[str], reference: str) -> list[tuple[str, str]]:
    """Each backend other than the reference against the reference (the reference against
    itself when it is the only one)."""
    others = [name for name in backends if name != reference]
    return [(name, reference) for name in others] or [(reference, reference)]


def run_suite(
    backends: str | None = None,
    reference: str = DEFAULT_REFERENCE,
    dtype: str = "float64",
    expected_failures: str | os.PathLike[str] | None = DEFAULT_EXPECTED_FAILURES,
    only: str | None = None,
) -> Report:
    """Every backend under test (see `backends_under_test`) against ``reference``."""
    results: list[Result] = []
    for candidate, ref in pairs(backends_under_test(backends), reference):
        results.extend(check_backend(candidate, ref, dtype, expected_failures, only).results)
    return Report(tuple(results))
