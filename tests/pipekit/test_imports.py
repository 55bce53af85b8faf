"""pipekit_cycle must never import a backend framework."""

import json
import subprocess
import sys

FORBIDDEN = ("jax", "jaxlib", "torch", "equinox", "optax", "optimistix", "diffrax", "lineax", "torchdiffeq")


def test_pipekit_cycle_imports_no_backend_framework():
    script = f"""
import importlib, json, pkgutil, sys
import pipekit_cycle
names = [m.name for m in pkgutil.walk_packages(pipekit_cycle.__path__, "pipekit_cycle.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
print(json.dumps({{"submodules": names, "loaded": loaded}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "pipekit_cycle.adjoints" in report["submodules"]
    assert "pipekit_cycle.params" in report["submodules"]
    assert len(report["submodules"]) >= 8
    assert report["loaded"] == []


def test_spec_table_lists_every_spec():
    from pipekit_cycle.__main__ import spec_table

    table = spec_table()
    assert "| TruncatedAdjoint | `truncated:1` | yes | no |" in table
    assert "| DirectAdjoint | `direct` | no | yes |" in table
    assert len(table.splitlines()) == 2 + 5
