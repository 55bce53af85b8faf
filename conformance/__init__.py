"""conformance: the suite that checks two backends compute the same thing (DESIGN section 4).

``conformance.check_backend(module, reference="vardax_jax", dtype="float64")`` returns a
`Report`; ``python -m conformance`` prints the table; ``pytest --pyargs conformance`` runs one
test per ``candidate-vs-reference::check::case``.
"""

from .backends import DEFAULT_REFERENCE, backends_under_test, precision
from .registry import CHECKS, Measurement, relative_error
from .report import render
from .suite import (
    DEFAULT_EXPECTED_FAILURES,
    ExpectedFailure,
    Report,
    Result,
    case_ids,
    check_backend,
    load_expected_failures,
    run_one,
    run_suite,
)

__all__ = [
    "CHECKS",
    "DEFAULT_EXPECTED_FAILURES",
    "DEFAULT_REFERENCE",
    "ExpectedFailure",
    "Measurement",
    "Report",
    "Result",
    "backends_under_test",
    "case_ids",
    "check_backend",
    "load_expected_failures",
    "precision",
    "relative_error",
    "render",
    "run_one",
    "run_suite",
]
