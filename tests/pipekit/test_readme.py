"""The Python snippets of the README and of the documentation pages (``docs/**/*.md``) run as
shown, each in an environment with only the framework it imports (the other one's import is
blocked), and print the numbers the page quotes.

Every ```python block is preceded by a marker line:
``<!-- snippet: vardax_torch vardax_jax -->`` (run with each backend named: the block's
``import vardax_X as vd`` line is switched to it; ``pipekit_cycle``: run with neither framework
importable), optionally ``; prints {"vardax_jax": "..."}`` (the last line it prints, per
backend; its numbers are compared to 3 % relative, because 100 float32 training steps land a
percent apart on CPUs with different vector units, while a broken snippet lands far off), or
``<!-- snippet: not run: why -->`` for a fragment that needs the reader's own data or backend.
A block without a marker fails the test, so a new snippet is tested or says why not. The
runner (``run_snippet``) is in this folder's conftest.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"<!-- snippet: (?P<body>.*?) -->\s*\n```python\n(?P<code>.*?)```", re.S)
BLOCKS = re.compile(r"^```python\n", re.M)
KINDS = ("vardax_jax", "vardax_torch", "pipekit_cycle")
NUMBER = re.compile(r"-?\d+\.\d+")


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _snippets() -> list[tuple[str, str, str | None, str]]:
    runs = []
    for page in PAGES:
        text = page.read_text()
        for match in MARKER.finditer(text):
            body = match["body"]
            if body.startswith("not run:"):
                continue
            names, _, printed = body.partition("; prints ")
            expected = json.loads(printed) if printed else {}
            line = text[: match.start()].count("\n") + 1
            for backend in names.split():
                runs.append((f"{_name(page)}:{line}-{backend}", backend, expected.get(backend), match["code"]))
    return runs


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_snippet_has_a_marker(page):
    text = page.read_text()
    assert len(BLOCKS.findall(text)) == len(MARKER.findall(text)), f"a ```python block of {_name(page)} has no marker"
    for match in MARKER.finditer(text):
        body = match["body"]
        if not body.startswith("not run:"):
            names = body.partition("; prints ")[0].split()
            assert names and set(names) <= set(KINDS), f"{_name(page)}: unknown snippet marker {body!r}"


def test_the_docs_pages_are_searched():
    assert any(page.parent.name == "docs" for page in PAGES)


SNIPPETS = _snippets()


@pytest.mark.parametrize(("backend", "expected", "code"), [s[1:] for s in SNIPPETS], ids=[s[0] for s in SNIPPETS])
def test_snippet_runs_with_only_its_framework(backend, expected, code, run_snippet):
    result = run_snippet(code, backend)
    assert result.returncode == 0, result.stderr[-3000:]
    if expected is not None:
        printed = result.stdout.strip().splitlines()[-1]
        assert NUMBER.sub("#", printed) == NUMBER.sub("#", expected), printed
        got, quoted = [float(x) for x in NUMBER.findall(printed)], [float(x) for x in NUMBER.findall(expected)]
        assert got == pytest.approx(quoted, rel=0.03), printed
