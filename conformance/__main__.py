"""``python -m conformance``: the cross-backend table; exit status 1 on any unexpected failure."""

from __future__ import annotations

import argparse
import sys

from .backends import DEFAULT_REFERENCE
from .report import render
from .suite import DEFAULT_EXPECTED_FAILURES, run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument("--backends", help="comma-separated backends (default: $PIPEKIT_BACKENDS or all installed)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="the backend others are held to")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    parser.add_argument("--only", help="run only test ids matching this fnmatch pattern or substring")
    parser.add_argument(
        "--expected-failures", default=str(DEFAULT_EXPECTED_FAILURES), help="TOML file of known failures"
    )
    args = parser.parse_args(argv)
    report = run_suite(args.backends, args.reference, args.dtype, args.expected_failures, args.only)
    print(render(report, args.format))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
