"""Optimizer state to and from flat numpy dicts, for checkpoints that resume bit-exactly.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_jax as vd

cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.build_model(cfg, seed=0)
optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-3), model)
arrays = vd.checkpoint.export_optimizer_state(opt_state)
assert arrays["opt_state.0000"].tolist() == [0]  # optax's Adam state exists before the first step
```
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["export_optimizer_state", "import_optimizer_state"]


def _name(index: int) -> str:
    return f"opt_state.{index:04d}"


def export_optimizer_state(opt_state: optax.OptState) -> dict[str, np.ndarray]:
    """Every array leaf of ``opt_state`` in tree order, named ``opt_state.0000``, ``...0001``.

    Scalars (Adam's step count) travel with shape ``(1,)``: safetensors has no 0-d tensors.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
    model, opt_state, loss = vd.train_step(model, batch, optimizer, opt_state)
    arrays = vd.export_optimizer_state(opt_state)  # flat numpy arrays, as a checkpoint file holds them
    assert arrays["opt_state.0000"].tolist() == [1]  # the first leaf: Adam's step count, shape (1,)
    assert all(isinstance(a, np.ndarray) and a.ndim >= 1 for a in arrays.values())
    ```
    """
    return {_name(i): np.atleast_1d(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state))}


def import_optimizer_state(
    optimizer: optax.GradientTransformation, opt_state: optax.OptState, arrays: dict[str, np.ndarray]
) -> optax.OptState:
    """``opt_state``'s structure filled with ``arrays`` (from `export_optimizer_state`).

    ``optimizer`` is unused in JAX (the state is a value) and kept for the torch twin's
    signature. Names, shapes and dtypes are checked before anything is built.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
    model, opt_state, loss = vd.train_step(model, batch, optimizer, opt_state)
    arrays = vd.export_optimizer_state(opt_state)  # flat numpy arrays, as a checkpoint file holds them
    assert arrays["opt_state.0000"].tolist() == [1]  # the first leaf: Adam's step count, shape (1,)
    restored = vd.import_optimizer_state(optimizer, opt_state, arrays)  # e.g. after a restart
    again = vd.export_optimizer_state(restored)
    assert again.keys() == arrays.keys() and all(np.array_equal(again[k], arrays[k]) for k in arrays)
    ```
    """
    del optimizer
    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    expected = {_name(i) for i in range(len(leaves))}
    if set(arrays) != expected:
        raise ValueError(
            f"optimizer state names do not match: missing {sorted(expected - set(arrays))}, "
            f"unexpected {sorted(set(arrays) - expected)}"
        )
    restored = []
    for i, leaf in enumerate(leaves):
        value = np.asarray(arrays[_name(i)])
        if value.shape != np.atleast_1d(leaf).shape or value.dtype != jnp.asarray(leaf).dtype:
            raise ValueError(
                f"optimizer state {_name(i)!r} must be {jnp.asarray(leaf).dtype}{list(jnp.shape(leaf))}, "
                f"got {value.dtype}{list(value.shape)}"
            )
        restored.append(jnp.asarray(value.reshape(jnp.shape(leaf))))
    return jax.tree_util.tree_unflatten(treedef, restored)
