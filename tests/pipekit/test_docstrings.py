"""The sources the API reference is built from: no control characters (a ``\\frac`` written
through a non-raw string becomes a form feed and ``rac``), the reST-to-Markdown rewrite of the
docs build (``docs/_griffe/rest_math.py``) and its LaTeX-to-MathML hook (``docs/_hooks/mathml.py``)
on known inputs."""

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


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rest_math():
    return _load(ROOT / "docs" / "_griffe" / "rest_math.py")


def test_rest_maths_and_literals_become_markdown():
    markdown_of = _rest_math().markdown_of
    assert markdown_of("cost :math:`J(x)` of ``x``") == "cost $J(x)$ of `x`"
    text = "Solve\n\n    .. math::\n\n        a = b\n        c = d\n\n    then ``done``."
    assert markdown_of(text) == "Solve\n\n    $$\n    a = b\n    c = d\n    $$\n\n    then `done`."


def test_fenced_code_is_left_as_written():
    markdown_of = _rest_math().markdown_of
    text = "Use ``f``.\n\nExamples\n--------\n```python\nx = \"``y``\"  # :math:`z`\n```\nthen ``g``."
    assert markdown_of(text) == "Use `f`.\n\nExamples\n--------\n```python\nx = \"``y``\"  # :math:`z`\n```\nthen `g`."


def test_formulas_become_mathml():
    hook = _load(ROOT / "docs" / "_hooks" / "mathml.py")
    page = '<p>a <span class="arithmatex">\\(x^2 &lt; 1\\)</span></p><div class="arithmatex">\\[\n\\frac12\n\\]</div>'
    out = hook.mathml_of(page)
    assert "\\(" not in out and "\\[" not in out
    assert '<math xmlns="http://www.w3.org/1998/Math/MathML" display="inline">' in out and "<msup>" in out
    assert 'display="block"' in out and "<mfrac>" in out
    assert hook.latex_of("\\(x &amp; y\\)") == "x & y"
