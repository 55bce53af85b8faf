"""The package's version (pyproject.toml's) in every page's footer."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def on_config(config):
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    config["copyright"] = f"pipekit-cycle / vardax {version}"
    return config
