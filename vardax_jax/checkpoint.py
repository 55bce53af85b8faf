"""Optimizer state to and from flat numpy dicts, for checkpoints that resume bit-exactly."""

from __future__ import annotations

from typing import Any

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
    """
    return {_name(i): np.atleast_1d(leaf) for i, leaf in enumerate(jax.tree_util.tree_leaves(opt_state))}


def import_optimizer_state(optimizer: Any, opt_state: optax.OptState, arrays: dict[str, np.ndarray]) -> optax.OptState:
    """``opt_state``'s structure filled with ``arrays`` (from `export_optimizer_state`).

    ``optimizer`` is unused in JAX (the state is a value) and kept for the torch twin's
    signature. Names, shapes and dtypes are checked before anything is built.
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
