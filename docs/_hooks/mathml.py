r"""A mkdocs hook: the formulas of every page as MathML, which the browser renders itself.

pymdownx.arithmatex (generic mode) wraps each formula in ``<span class="arithmatex">\(...\)</span>``
or ``<div class="arithmatex">\[...\]</div>`` and leaves the rendering to a script. Here
latex2mathml (pure Python, the docs extra) converts them when the site is built, so no script,
font or stylesheet is fetched when it is built or read; browsers draw MathML themselves
(MathML Core: Chromium 109 and later, Firefox, Safari). A formula latex2mathml cannot convert
keeps its LaTeX source, and the build log says which (at info level).
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any

from latex2mathml.converter import convert

log = logging.getLogger("mkdocs.hooks.mathml")

_MATH = re.compile(r'<(?P<tag>span|div) class="arithmatex">(?P<tex>.*?)</(?P=tag)>', re.S)
_DELIMITERS = ((r"\(", r"\)"), (r"\[", r"\]"), ("$$", "$$"), ("$", "$"))


def latex_of(wrapped: str) -> str:
    """The LaTeX inside arithmatex's delimiters (HTML entities decoded)."""
    tex = html.unescape(wrapped).strip()
    for start, end in _DELIMITERS:
        if tex.startswith(start) and tex.endswith(end) and len(tex) >= len(start) + len(end):
            return tex[len(start) : len(tex) - len(end)].strip()
    return tex


def mathml_of(content: str) -> str:
    """``content`` (a page's HTML) with every arithmatex formula replaced by its MathML."""

    def replace(match: re.Match[str]) -> str:
        tex = latex_of(match["tex"])
        display = "block" if match["tag"] == "div" else "inline"
        try:
            mathml = convert(tex, display=display)
        except Exception as error:  # latex2mathml raises its own types, and others on odd input
            log.info("formula left as LaTeX (%s: %s): %s", type(error).__name__, error, tex)
            return match[0]
        return f'<{match["tag"]} class="arithmatex">{mathml}</{match["tag"]}>'

    return _MATH.sub(replace, content)


def on_page_content(html: str, **kwargs: Any) -> str:
    return mathml_of(html)
