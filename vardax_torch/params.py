"""Parameters across backends: a flat ``dict[str, numpy.ndarray]`` keyed by the canonical names of
`pipekit_cycle.params.schema` (which are exactly the ``named_parameters`` of a `FourDVarNet`).

Examples
--------
```python
import pipekit_cycle as pk
import vardax_torch as vd

cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
params = vd.params.export_params(vd.build_model(cfg, seed=0))
assert {name: a.shape for name, a in params.items()} == pk.schema(cfg)  # the shared names
```
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from pipekit_cycle.params import schema, validate_params

from .model import FourDVarNet

__all__ = ["export_params", "import_params"]


def export_params(model: FourDVarNet) -> dict[str, np.ndarray]:
    """``{schema name: numpy array}`` in the model's dtype (copies, detached).

    Examples
    --------
    ```python
    from pathlib import Path
    import tempfile
    import pipekit_cycle as pk
    import vardax_torch as vd

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
    expected = schema(model.config)
    params = {name: p.detach().cpu().numpy().copy() for name, p in model.named_parameters()}
    if set(params) != set(expected):  # the module tree IS the schema; guard against drift
        raise RuntimeError(f"model parameters {sorted(params)} do not match the schema {sorted(expected)}")
    return params


def import_params(model: FourDVarNet, params: Mapping[str, np.ndarray]) -> FourDVarNet:
    """Load ``params`` into ``model`` (in place, under ``no_grad``, cast to the model's dtype)
    and return it. Everything is validated first (`pipekit_cycle.params.validate_params`:
    names, shapes, one float dtype, finite values), so a bad mapping changes nothing.

    Examples
    --------
    ```python
    from pathlib import Path
    import tempfile
    import pipekit_cycle as pk
    import vardax_torch as vd

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
    tensors = {name: torch.from_numpy(np.array(a, copy=True)).to(model.dtype) for name, a in arrays.items()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[name])
    return model
