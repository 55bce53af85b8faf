"""``python -m conformance``: the cross-backend table; exit status 1 on any unexpected failure."""

from __future__ import annotations

import argparse
import subprocess
import sys

from .backends import DEFAULT_REFERENCE
from .report import render
from .suite import DEFAULT_EXPECTED_FAILURES, run_suite, write_golden


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    parser.add_argument("--backends", help="comma-separated backends (default: $PIPEKIT_BACKENDS or all installed)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE,
                        help="the backend others are held to; NAME:golden holds them to its shipped outputs "
                             "(used by itself when NAME is not installed)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default=None, help="default float64")
    parser.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    parser.add_argument("--only", help="run only test ids matching this fnmatch pattern or substring")
    parser.add_argument("--quick", action="store_true",
                        help="one case per check (the edit-run loop; the full run is the verdict)")
    parser.add_argument(
        "--expected-failures", default=str(DEFAULT_EXPECTED_FAILURES), help="TOML file of known failures"
    )
    parser.add_argument("--write-golden", action="store_true",
                        help="write the reference's golden outputs (conformance/golden/) for both dtypes, then exit")
    args = parser.parse_args(argv)
    if args.write_golden:
        if args.dtype is None:  # each dtype in its own process: one process compiles too much for both
            for dtype in ("float64", "float32"):
                command = [sys.executable, "-m", "conformance", "--write-golden", "--dtype", dtype,
                           "--reference", args.reference]
                if subprocess.call(command):
                    return 1
            return 0
        for path in write_golden(args.reference, (args.dtype,)):
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
        return 0
    report = run_suite(args.backends, args.reference, args.dtype or "float64", args.expected_failures, args.only,
                       args.quick)
    print(render(report, args.format))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
