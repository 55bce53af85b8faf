"""The suite under pytest: one test per ``candidate-vs-reference::check::case``.

``pytest --pyargs conformance`` (or ``pytest tests``) runs it; ``-k`` selects by id. Backends
come from ``$PIPEKIT_BACKENDS`` (else every installed one), the reference from
``$PIPEKIT_REFERENCE`` (default ``vardax_jax``), the precision from ``$PIPEKIT_DTYPE``
(default ``float64``), known failures from ``$PIPEKIT_EXPECTED_FAILURES`` (default: the
suite's own data file); ``PIPEKIT_QUICK=1`` runs one case per check, as ``--quick`` does.
"""

from __future__ import annotations

import os

import pytest

from conformance.backends import DEFAULT_REFERENCE, backends_under_test
from conformance.suite import DEFAULT_EXPECTED_FAILURES, case_ids, load_expected_failures, pairs, run_one

_REFERENCE = os.environ.get("PIPEKIT_REFERENCE", DEFAULT_REFERENCE)
_DTYPE = os.environ.get("PIPEKIT_DTYPE", "float64")
_EXPECTED = load_expected_failures(os.environ.get("PIPEKIT_EXPECTED_FAILURES", DEFAULT_EXPECTED_FAILURES))
_QUICK = os.environ.get("PIPEKIT_QUICK", "") not in ("", "0")
_CASES = [
    pytest.param(candidate, reference, check, case, id=identifier)
    for candidate, reference in pairs(backends_under_test(), _REFERENCE)
    for identifier, check, case in case_ids(candidate, reference, quick=_QUICK)
]


@pytest.mark.parametrize(("candidate", "reference", "check", "case"), _CASES)
def test_conformance(candidate: str, reference: str, check: str, case: str) -> None:
    result = run_one(candidate, reference, check, case, dtype=_DTYPE, expected_failures=_EXPECTED)
    measured = f"max rel err {result.measurement.error:.3e} (tolerance {result.measurement.tolerance:.1e})"
    if result.status == "xfail":
        pytest.xfail(f"{result.reason}: {measured}; {result.measurement.detail}")
    assert result.status == "pass", f"{result.status}: {measured}; {result.measurement.detail} {result.reason}"
