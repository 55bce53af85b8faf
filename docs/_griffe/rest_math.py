"""A griffe extension: the docstrings' reST maths and literals, read as Markdown.

The docstrings follow equinox's and diffrax's reST habits (``:math:`x```, ``.. math::`` blocks,
double-backtick literals), which read well in ``help()``; mkdocstrings renders Markdown. This
rewrites them when the API reference is built, leaving the source alone:

* ``:math:`E``` becomes ``$E$`` and an indented ``.. math::`` block ``$$ ... $$``
  (pymdownx.arithmatex picks both up);
* a double-backtick literal becomes a single-backtick one.

Fenced code blocks (the ```python blocks of the ``Examples`` sections) are left as written.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_ROLE = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```.*?^(?P=indent)```[ \t]*$", re.M | re.S)
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*\n(?P<body>(?:(?P=indent)[ \t]+.*\n|[ \t]*\n)+)", re.M)


def _block(match: re.Match[str]) -> str:
    indent = match["indent"]
    body = textwrap.dedent(match["body"]).strip("\n")
    return f"{indent}$$\n{textwrap.indent(body, indent)}\n{indent}$$\n\n"


def _prose(text: str) -> str:
    text = _BLOCK.sub(_block, text)
    text = _ROLE.sub(lambda m: f"${m[1]}$", text)
    return _LITERAL.sub(lambda m: f"`{m[1]}`", text)


def markdown_of(text: str) -> str:
    text = text if text.endswith("\n") else text + "\n"
    pieces, start = [], 0
    for fence in _FENCE.finditer(text):
        pieces += [_prose(text[start : fence.start()]), fence[0]]
        start = fence.end()
    pieces.append(_prose(text[start:]))
    return "".join(pieces).rstrip("\n")


class RestMath(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_of(obj.docstring.value)
