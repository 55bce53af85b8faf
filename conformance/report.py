"""Rendering a `Report`: a plain table, markdown, or JSON."""

from __future__ import annotations

import json
import math

from .suite import Report

__all__ = ["render"]


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2e}"


def _rows(report: Report) -> list[list[str]]:
    return [
        [
            f"{r.candidate} vs {r.reference}",
            r.check,
            r.case,
            r.dtype,
            _number(r.measurement.error),
            _number(r.measurement.tolerance),
            r.status,
            r.reason or (r.measurement.detail if not r.ok else ""),
        ]
        for r in report.results
    ]


HEADER = ["backends", "check", "case", "dtype", "max rel err", "tolerance", "result", "note"]


def render(report: Report, fmt: str = "table") -> str:
    """``fmt``: ``table`` (aligned text), ``markdown`` or ``json``; ends with the summary line."""
    if fmt == "json":
        return json.dumps(
            {
                "summary": report.summary(),
                "passed": report.passed,
                "failed": report.failed,
                "results": [
                    {
                        "id": r.test_id,
                        "check": r.check,
                        "case": r.case,
                        "dtype": r.dtype,
                        "error": None if math.isnan(r.measurement.error) else r.measurement.error,
                        "tolerance": None if math.isnan(r.measurement.tolerance) else r.measurement.tolerance,
                        "status": r.status,
                        "detail": r.measurement.detail,
                        "reason": r.reason,
                    }
                    for r in report.results
                ],
            },
            indent=2,
        )
    rows = _rows(report)
    if fmt == "markdown":
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    elif fmt == "table":
        widths = [max(len(str(cell)) for cell in column) for column in zip(HEADER, *rows, strict=False)]
        widths[-1] = 0
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [HEADER, *rows]
        ]
    else:
        raise ValueError(f"format must be table, markdown or json, got {fmt!r}")
    return "\n".join([*lines, "", report.summary()])
