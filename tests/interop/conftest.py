"""ocean4dvarnet's own ``models.py`` (PyPI 1.0.6, installed ``--no-deps`` by ``make test``).

The module imports pandas, pytorch_lightning and kornia at the top for its Lightning module
and metrics; ``GradSolver``, ``BilinAEPriorCost``, ``BaseObsCost`` and ``ConvLstmGradModel``
use none of them. Where one is not installed, an empty stand-in module takes its place for
this import only (``LightningModule`` becomes ``nn.Module``), so the classes under test are
ocean4dvarnet's code, unchanged, without three heavy dependencies in the test environment.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from torch import nn


def _stand_ins() -> dict[str, types.ModuleType]:
    modules: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("pandas") is None:
        modules["pandas"] = types.ModuleType("pandas")
    if importlib.util.find_spec("pytorch_lightning") is None:
        lightning = types.ModuleType("pytorch_lightning")
        lightning.LightningModule = nn.Module  # type: ignore[attr-defined]
        modules["pytorch_lightning"] = lightning
    if importlib.util.find_spec("kornia") is None:
        kornia = types.ModuleType("kornia")
        kornia.filters = types.ModuleType("kornia.filters")  # type: ignore[attr-defined]
        modules["kornia"], modules["kornia.filters"] = kornia, kornia.filters  # type: ignore[attr-defined]
    return modules


def load_models() -> types.ModuleType:
    """``ocean4dvarnet.models``, loaded from its file (the package ``__init__`` imports xarray)."""
    found = importlib.util.find_spec("ocean4dvarnet")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("ocean4dvarnet is not installed: `make test` installs it (pip install --no-deps "
                           "ocean4dvarnet==1.0.6)")
    path = Path(next(iter(found.submodule_search_locations))) / "models.py"
    spec = importlib.util.spec_from_file_location("ocean4dvarnet_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    stand_ins = {name: mod for name, mod in _stand_ins().items() if name not in sys.modules}
    sys.modules.update(stand_ins)
    try:
        spec.loader.exec_module(module)
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return module


@pytest.fixture(scope="session")
def o4d() -> types.ModuleType:
    """ocean4dvarnet's ``models`` module."""
    return load_models()
