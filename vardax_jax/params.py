"""Parameters as a flat ``dict[str, numpy.ndarray]`` named by ``pipekit_cycle.params.schema``."""

from __future__ import annotations

import functools as ft
from collections.abc import Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from pipekit_cycle.params import schema, validate_params

__all__ = ["export_params", "import_params"]


def _get(model, name: str):
    return ft.reduce(getattr, name.split("."), model)


def export_params(model) -> dict[str, np.ndarray]:
    """Every parameter under its canonical name, as numpy in the model's dtype."""
    return {name: np.asarray(_get(model, name)) for name in schema(model.config)}


def import_params(model, params: Mapping[str, np.ndarray]):
    """A new model holding ``params`` (validated against the schema first, then cast to the
    model's dtype); ``model`` itself is unchanged."""
    arrays = validate_params(params, model.config)
    names = list(schema(model.config))
    return eqx.tree_at(
        lambda m: [_get(m, name) for name in names],
        model,
        [jnp.asarray(arrays[name], model.dtype) for name in names],
    )
