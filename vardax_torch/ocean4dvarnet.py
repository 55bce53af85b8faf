"""Models trained with ``ocean4dvarnet`` (the public PyTorch 4DVarNet) brought here: its
``GradSolver``, a Lightning checkpoint file or a state_dict -> canonical parameters and a
`pipekit_cycle.FourDVarNetConfig` (the maths: `pipekit_cycle.ocean4dvarnet`), loadable by both
backends with ``build_model`` + ``import_params``.

No grid is asked for: ``GradSolver`` is fully convolutional, and so are the models built
here, which map any grid of `pipekit_cycle.validation.grid_rule`; the config's
``state_shape`` records the training patch where it is known (`pipekit_cycle.ocean4dvarnet`).

``python -m vardax_torch import-ocean4dvarnet CKPT --out FILE.safetensors --n-step K`` writes
them with ``pipekit_cycle.save_params``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from pipekit_cycle import FourDVarNetConfig
from pipekit_cycle.ocean4dvarnet import from_state_dict

__all__ = ["from_ocean4dvarnet"]


def _numpy_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {
        str(name): value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        for name, value in state_dict.items()
        if isinstance(value, (torch.Tensor, np.ndarray))
    }


def _factor(module: nn.Module) -> int | None:
    """The pooling factor of ocean4dvarnet's ``down`` (``AvgPool2d(d)``; ``Identity``: none)."""
    if isinstance(module, nn.AvgPool2d):
        size = module.kernel_size
        return int(size if isinstance(size, int) else size[0])
    return None


def _solver_settings(solver: nn.Module) -> dict[str, Any]:
    """What a ``GradSolver`` object holds beyond its state_dict."""
    return {
        "n_step": int(solver.n_step),
        "lr_grad": float(solver.lr_grad),
        "lbd": float(solver.lbd),
        "obs_weight": float(getattr(solver.obs_cost, "w", 1.0)),
        "prior_downsample": _factor(solver.prior_cost.down),
        "grad_mod_downsample": _factor(solver.grad_mod.down),
        "bilin_quad": bool(solver.prior_cost.bilin_quad),
        "dropout": float(solver.grad_mod.dropout.p),
    }


def _load_checkpoint(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects would run code.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise ValueError(
            f"{os.fspath(path)}: not loadable as weights ({type(error).__name__}: {error}); if you trust the file, "
            "pass torch.load(path, weights_only=False)['state_dict'] instead"
        ) from error
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{os.fspath(path)}: expected a checkpoint dict, got {type(loaded).__name__}")
    state = loaded.get("state_dict", loaded)
    if not isinstance(state, Mapping):
        raise ValueError(f"{os.fspath(path)}: its 'state_dict' is a {type(state).__name__}, not a mapping")
    return state


def from_ocean4dvarnet(
    obj: nn.Module | str | os.PathLike[str] | Mapping[str, torch.Tensor | np.ndarray], *,
    state_shape: tuple[int, int] | None = None, **settings: Any,
) -> tuple[dict[str, np.ndarray], FourDVarNetConfig]:
    """``(params, config)`` of an ocean4dvarnet model: ``obj`` a ``GradSolver`` (or a module
    holding one as ``.solver``, like ``Lit4dVarNet``), the path of a Lightning checkpoint
    (``torch.load``-ed with ``weights_only=True``) or a state_dict (tensors or arrays).

    From a ``GradSolver`` everything is read (``n_step``, ``lr_grad``, ``lbd``, ``obs_cost.w``,
    the down-sampling factors, ``bilin_quad``, the dropout rate); from a file or a state_dict
    only the sizes are, so ``n_step`` is required and ``settings`` give the rest
    (`pipekit_cycle.ocean4dvarnet_config`'s keywords; ocean4dvarnet's defaults otherwise).
    The parameters keep their dtype (float32 or float64).

    No grid: one conversion maps every grid the rule allows (module docstring).
    ``config.state_shape`` is the training patch of a Lightning module or checkpoint (its
    ``rec_weight``), else the smallest legal grid, a placeholder; ``state_shape``, kept for
    the calls written before, overrides that record and changes nothing else.

    Loaded with ``build_model(config)`` + ``import_params`` in either backend, ``model(batch)``
    is ``GradSolver``'s training-mode output and ``predict(model, batch)`` its eval-mode one,
    on any grid.
    """
    if isinstance(obj, nn.Module):
        solver = obj.solver if hasattr(obj, "solver") and isinstance(obj.solver, nn.Module) else obj
        if not all(hasattr(solver, name) for name in ("prior_cost", "obs_cost", "grad_mod", "n_step")):
            raise TypeError(f"expected an ocean4dvarnet GradSolver, got {type(solver).__name__}")
        known = _solver_settings(solver)
        clash = sorted(set(known) & set(settings))
        if clash:
            raise ValueError(f"{clash} are read from the GradSolver; do not pass them")
        # The whole module's state: a Lit4dVarNet's holds its training patch (rec_weight).
        return from_state_dict(_numpy_state_dict(obj.state_dict()), state_shape=state_shape, **known, **settings)
    if isinstance(obj, (str, os.PathLike)):
        obj = _load_checkpoint(obj)
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a GradSolver, a checkpoint path or a state_dict, got {type(obj).__name__}")
    if "n_step" not in settings:
        raise ValueError("n_step is not stored in a state_dict or checkpoint file: pass n_step=")
    return from_state_dict(_numpy_state_dict(obj), state_shape=state_shape, **settings)
