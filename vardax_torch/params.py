"""Parameters across backends: a flat ``dict[str, numpy.ndarray]`` keyed by the canonical names of
`pipekit_cycle.params.schema` (which are exactly the ``named_parameters`` of a `FourDVarNet`)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from pipekit_cycle.params import schema, validate_params

from .model import FourDVarNet

__all__ = ["export_params", "import_params"]


def export_params(model: FourDVarNet) -> dict[str, np.ndarray]:
    """``{schema name: numpy array}`` in the model's dtype (copies, detached)."""
    expected = schema(model.config)
    params = {name: p.detach().cpu().numpy().copy() for name, p in model.named_parameters()}
    if set(params) != set(expected):  # the module tree IS the schema; guard against drift
        raise RuntimeError(f"model parameters {sorted(params)} do not match the schema {sorted(expected)}")
    return params


def import_params(model: FourDVarNet, params: Mapping[str, np.ndarray]) -> FourDVarNet:
    """Load ``params`` into ``model`` (in place, under ``no_grad``, cast to the model's dtype)
    and return it. Everything is validated first (`pipekit_cycle.params.validate_params`:
    names, shapes, one float dtype, finite values), so a bad mapping changes nothing."""
    arrays = validate_params(params, model.config)
    tensors = {name: torch.from_numpy(np.array(a, copy=True)).to(model.dtype) for name, a in arrays.items()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[name])
    return model
