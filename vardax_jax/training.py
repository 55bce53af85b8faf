"""Losses, gradients, the optax optimizer and the (jitted) train / eval steps.

Optimizer (backend contract): ``g <- g * c / max(||g||, c)`` (global-norm clip), then coupled
weight decay ``g <- g + wd * p``, then Adam or plain SGD.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, Float, Scalar

import pipekit_cycle as pk
from pipekit_cycle.validation import require_target

from .adjoints import nondiff
from .model import check_batch
from .params import _get

__all__ = [
    "eval_step",
    "loss_and_grads",
    "make_optimizer",
    "reconstruction_loss",
    "train_loss_fn",
    "train_step",
]


def reconstruction_loss(pred: Float[Array, "..."], target: Float[Array, "..."]) -> Scalar:
    """Mean squared error over all elements."""
    return jnp.mean((pred - target) ** 2)


def train_loss_fn(model, batch, *, adjoint: Any = None) -> Scalar:
    """``reconstruction_loss(model(batch), batch.target)``; needs ``batch.target``."""
    require_target(batch.target, "train_loss_fn")
    check_batch(model, batch)
    return reconstruction_loss(model(batch, adjoint=adjoint), batch.target)


@eqx.filter_jit
def _value_and_grad(model, batch, adjoint):
    return eqx.filter_value_and_grad(lambda m: train_loss_fn(m, batch, adjoint=adjoint))(model)


def loss_and_grads(model, batch, *, adjoint: Any = None) -> tuple[float, dict[str, np.ndarray]]:
    """The loss and its gradients keyed by schema names (what conformance compares)."""
    require_target(batch.target, "train_loss_fn")
    check_batch(model, batch)
    loss, grads = _value_and_grad(model, batch, adjoint)
    return float(loss), {name: np.asarray(_get(grads, name)) for name in pk.schema(model.config)}


def make_optimizer(optimizer_config: pk.OptimizerConfig, model) -> tuple[optax.GradientTransformation, Any]:
    """The optax chain of ``optimizer_config`` and its state on the model's parameters."""
    cfg = optimizer_config
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    if cfg.name == "adam":
        parts.append(optax.adam(cfg.lr, b1=cfg.betas[0], b2=cfg.betas[1], eps=cfg.eps))
    else:
        parts.append(optax.sgd(cfg.lr))
    optimizer = optax.chain(*parts)
    return optimizer, optimizer.init(eqx.filter(model, eqx.is_inexact_array))


@eqx.filter_jit
def _train_step(model, batch, optimizer, opt_state):
    loss, grads = eqx.filter_value_and_grad(train_loss_fn)(model, batch)
    params = eqx.filter(model, eqx.is_inexact_array)
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jtu.tree_leaves(grads)]))
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), new_opt_state, loss, finite


def train_step(model, batch, optimizer, opt_state):
    """One jitted optimizer step on `train_loss_fn`; returns ``(model, opt_state, loss)``.

    Finiteness is checked on the host after the step: a non-finite loss or gradient raises
    ``FloatingPointError`` and the new values are discarded (the caller keeps its own).
    """
    require_target(batch.target, "train_loss_fn")
    check_batch(model, batch)
    new_model, new_opt_state, loss, finite = _train_step(model, batch, optimizer, opt_state)
    if not bool(finite):
        raise FloatingPointError(f"non-finite loss or gradient in train_step (loss={float(loss)}); nothing was updated")
    return new_model, new_opt_state, loss


@eqx.filter_jit
def _eval(model, batch):
    return train_loss_fn(nondiff(model), batch)


def eval_step(model, batch) -> Scalar:
    """The training loss, without any gradient."""
    require_target(batch.target, "train_loss_fn")
    check_batch(model, batch)
    return _eval(model, batch)
