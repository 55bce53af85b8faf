"""The sources the API reference is built from: no control characters (a ``\\frac`` written
through a non-raw string becomes a form feed and ``rac``), and the reST-to-Markdown rewrite
of the docs build (``docs/_griffe/rest_math.py``) on known inputs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipekit_cycle", "vardax_jax", "vardax_torch", "conformance", "benchmarks")


def test_sources_hold_no_control_characters():
    found = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}: {m[0]!r}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for text in [path.read_text()]
        for m in re.finditer(r"[\x00-\x09\x0b-\x1f]", text)
    ]
    assert not found, found


def _rest_math():
    spec = importlib.util.spec_from_file_location("rest_math", ROOT / "docs" / "_griffe" / "rest_math.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_maths_and_literals_become_markdown():
    markdown_of = _rest_math().markdown_of
    assert markdown_of("cost :math:`J(x)` of ``x``") == "cost $J(x)$ of `x`"
    text = "Solve\n\n    .. math::\n\n        a = b\n        c = d\n\n    then ``done``."
    assert markdown_of(text) == "Solve\n\n    $$\n    a = b\n    c = d\n    $$\n\n    then `done`."
