"""The README's Python snippets run as shown, each in an environment with only the framework it
imports (the other one's import is blocked), and print the numbers the README quotes.

Every ```python block is preceded by a marker line:
``<!-- snippet: vardax_torch vardax_jax -->`` (run with each backend named: the block's
``import vardax_X as vd`` line is switched to it), optionally ``; prints {"vardax_jax": "..."}``
(the last line it prints, per backend; its numbers are compared to 3 % relative, because 100
float32 training steps land a percent apart on CPUs with different vector units, while a broken
snippet lands far off), or ``<!-- snippet: not run: why -->`` for a fragment
that needs the reader's own data or backend. A block without a marker fails the test, so a new
snippet is tested or says why not.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"<!-- snippet: (?P<body>.*?) -->\s*\n```python\n(?P<code>.*?)```", re.S)
BLOCKS = re.compile(r"```python\n")
OTHER = {"vardax_jax": "torch", "vardax_torch": "jax"}
NUMBER = re.compile(r"-?\d+\.\d+")

# Imports of the other framework fail in the child, as on a machine without it.
BLOCKER = """
import importlib.abc, sys
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == {other!r} or name.startswith({other!r} + "."):
            raise ImportError(f"No module named {{name!r}} (blocked: this snippet must not need it)")
        return None
sys.meta_path.insert(0, _Absent())
"""


def _snippets() -> list[tuple[str, str, str | None, str]]:
    text = README.read_text()
    found = list(MARKER.finditer(text))
    runs = []
    for match in found:
        body = match["body"]
        if body.startswith("not run:"):
            continue
        names, _, printed = body.partition("; prints ")
        expected = json.loads(printed) if printed else {}
        line = text[: match.start()].count("\n") + 1
        for backend in names.split():
            runs.append((f"line{line}-{backend}", backend, expected.get(backend), match["code"]))
    return runs


def test_every_snippet_has_a_marker():
    text = README.read_text()
    assert len(BLOCKS.findall(text)) == len(MARKER.findall(text)), "a ```python block has no <!-- snippet: --> line"


@pytest.mark.parametrize(("backend", "expected", "code"), [s[1:] for s in _snippets()], ids=[s[0] for s in _snippets()])
def test_snippet_runs_with_only_its_framework(backend, expected, code):
    code = re.sub(r"vardax_(jax|torch) as vd\b", f"{backend} as vd", code)
    program = BLOCKER.format(other=OTHER[backend]) + code
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=600,
                            cwd=README.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    if expected is not None:
        printed = result.stdout.strip().splitlines()[-1]
        assert NUMBER.sub("#", printed) == NUMBER.sub("#", expected), printed
        got, quoted = [float(x) for x in NUMBER.findall(printed)], [float(x) for x in NUMBER.findall(expected)]
        assert got == pytest.approx(quoted, rel=0.03), printed
