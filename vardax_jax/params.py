"""Parameters as a flat ``dict[str, numpy.ndarray]`` named by ``pipekit_cycle.params.schema``.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_jax as vd

cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
params = vd.params.export_params(vd.build_model(cfg, seed=0))
assert {name: a.shape for name, a in params.items()} == pk.schema(cfg)  # the shared names
```
"""

from __future__ import annotations

import functools as ft
from collections.abc import Mapping
from typing import TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from pipekit_cycle.params import schema, validate_params

if TYPE_CHECKING:
    from .model import AbstractFourDVarNet

__all__ = ["export_params", "import_params"]


def get_param(tree, name: str):
    """The node of ``tree`` (a model, or its gradients) at the dotted canonical ``name``, e.g.
    ``"prior.conv_in.weight"``; the one place a schema name is read as a path."""
    return ft.reduce(getattr, name.split("."), tree)


def export_params(model: AbstractFourDVarNet) -> dict[str, np.ndarray]:
    """Every parameter under its canonical name, as numpy in the model's dtype.

    Examples
    --------
    ```python
    from pathlib import Path
    import tempfile
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    params = vd.export_params(model)  # {canonical name: numpy array}
    assert {name: array.shape for name, array in params.items()} == pk.schema(cfg)
    path = Path(tempfile.mkdtemp()) / "model.safetensors"
    pk.save_params(path, params, cfg)  # loadable by either backend
    ```
    """
    return {name: np.asarray(get_param(model, name)) for name in schema(model.config)}


def import_params(model: AbstractFourDVarNet, params: Mapping[str, np.ndarray]) -> AbstractFourDVarNet:
    """A new model holding ``params`` (validated against the schema first, then cast to the
    model's dtype); ``model`` itself is unchanged.

    Examples
    --------
    ```python
    from pathlib import Path
    import tempfile
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    path = Path(tempfile.mkdtemp()) / "model.safetensors"
    pk.save_params(path, vd.export_params(model), cfg)
    params, config = pk.load_params(path)  # written by either backend
    restored = vd.import_params(vd.build_model(config, seed=1), params)
    assert (vd.to_numpy(restored(batch)) == vd.to_numpy(model(batch))).all()
    ```
    """
    arrays = validate_params(params, model.config)
    names = list(schema(model.config))
    return eqx.tree_at(
        lambda m: [get_param(m, name) for name in names],
        model,
        [jnp.asarray(arrays[name], model.dtype) for name in names],
    )
