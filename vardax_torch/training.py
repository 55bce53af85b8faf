"""Losses, gradients, the optimizer and the train/eval steps.

Optimizer maths (docs/backend-contract.md, the same trajectory as optax in vardax_jax):
global-norm clipping first, ``g <- g * c / max(||g||, c)`` (optax's ``clip_by_global_norm``,
written by hand: ``torch.nn.utils.clip_grad_norm_`` adds 1e-6 to the norm); then coupled
weight decay ``g <- g + wd * p`` (``torch.optim``'s own ``weight_decay``, which adds exactly
that to the gradient it is given); then ``torch.optim.Adam`` (== ``optax.adam``) or plain
``torch.optim.SGD``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from pipekit_cycle import OptimizerConfig
from pipekit_cycle.validation import require_target

from .model import FourDVarNet

__all__ = ["eval_step", "loss_and_grads", "make_optimizer", "reconstruction_loss", "train_loss_fn", "train_step"]


def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements."""
    return ((pred - target) ** 2).mean()


def train_loss_fn(model: FourDVarNet, batch: Any, *, adjoint: Any = None) -> Tensor:
    """``reconstruction_loss(model(batch, adjoint=adjoint), batch.target)``; ``ValueError``
    without a target."""
    require_target(batch.target, "train_loss_fn")
    return reconstruction_loss(model(batch, adjoint=adjoint), batch.target)


def _grads(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    # A parameter the loss does not use (the ConvLSTM under ImplicitAdjoint) gets zeros, as
    # jax.grad gives.
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def loss_and_grads(model: FourDVarNet, batch: Any, *, adjoint: Any = None) -> tuple[float, dict[str, np.ndarray]]:
    """``(float(train_loss_fn), {schema name: gradient})``, differentiated as ``adjoint`` (spec
    or native; ``None``: the model's ``solver_adjoint``)."""
    names, params = zip(*model.named_parameters(), strict=True)
    with torch.enable_grad():
        loss = train_loss_fn(model, batch, adjoint=adjoint)
        grads = _grads(loss, list(params))
    return float(loss.detach()), {name: g.detach().cpu().numpy() for name, g in zip(names, grads, strict=True)}


def make_optimizer(optimizer_config: OptimizerConfig, model: FourDVarNet) -> tuple[torch.optim.Optimizer, dict]:
    """``(torch.optim optimizer over model.parameters(), optimizer.state_dict())``.

    ``clip_norm`` travels in the param group (key ``"clip_norm"``), so it is part of the
    optimizer state and `train_step` applies it before the optimizer's own update."""
    cfg = optimizer_config
    params = list(model.parameters())
    if cfg.name == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
            foreach=False,  # the plain single-tensor loop: the textbook formula, in order
        )
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay, foreach=False)
    for group in optimizer.param_groups:
        group["clip_norm"] = cfg.clip_norm
    return optimizer, optimizer.state_dict()


def _clip(grads: list[Tensor], clip_norm: float | None) -> list[Tensor]:
    if clip_norm is None:
        return grads
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
    return [g * clip_norm / max(norm, clip_norm) for g in grads]


def _is_current(optimizer: torch.optim.Optimizer, opt_state: dict) -> bool:
    """Whether ``opt_state`` is a ``state_dict()`` of ``optimizer`` as it is now: the same
    tensor objects (``state_dict()`` returns references, a fresh dict each call). Then loading
    it would only copy every buffer again, on every step."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = opt_state.get("state", {})
    if len(saved) != len(optimizer.state) or len(opt_state.get("param_groups", ())) != len(optimizer.param_groups):
        return False
    for group, saved_group in zip(optimizer.param_groups, opt_state["param_groups"], strict=True):
        if any(group[key] != value for key, value in saved_group.items() if key != "params"):
            return False
    for index, entry in saved.items():
        live = optimizer.state.get(params[index]) if 0 <= index < len(params) else None
        if live is None or entry.keys() != live.keys() or any(entry[key] is not live[key] for key in entry):
            return False
    return True


def _train_step(
    model: FourDVarNet, batch: Any, optimizer: torch.optim.Optimizer, opt_state: dict,
    loss_fn: Callable[[FourDVarNet, Any], Tensor],
) -> tuple[FourDVarNet, dict, Tensor]:
    if opt_state is not None and not _is_current(optimizer, opt_state):
        optimizer.load_state_dict(opt_state)
    params = list(model.parameters())
    with torch.enable_grad():
        loss = loss_fn(model, batch)
        grads = _grads(loss, params)
    # Check before anything is written: a non-finite step must leave model AND optimizer as
    # they were (nothing has been touched yet).
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"train_step: non-finite loss {float(loss.detach())}; model and optimizer unchanged")
    bad = [i for i, g in enumerate(grads) if not bool(torch.isfinite(g).all())]
    if bad:
        raise FloatingPointError(
            f"train_step: non-finite gradient in {len(bad)} parameter tensor(s); model and optimizer unchanged"
        )
    grads = _clip(grads, optimizer.param_groups[0].get("clip_norm"))
    for p, g in zip(params, grads, strict=True):
        p.grad = g.detach()
    optimizer.step()
    for p in params:  # no gradient state left on the module between calls
        p.grad = None
    return model, optimizer.state_dict(), loss.detach()


def train_step(
    model: FourDVarNet, batch: Any, optimizer: torch.optim.Optimizer, opt_state: dict,
) -> tuple[FourDVarNet, dict, Tensor]:
    """One optimizer step on `train_loss_fn`: ``(model, opt_state, loss)`` (the model updated
    in place and returned; ``opt_state = optimizer.state_dict()``; ``float(loss)`` works).
    ``opt_state`` is loaded into ``optimizer`` first when it is not the optimizer's current
    state. A non-finite loss or gradient raises ``FloatingPointError`` before the optimizer
    or any parameter is touched."""
    return _train_step(model, batch, optimizer, opt_state, train_loss_fn)


def eval_step(model: FourDVarNet, batch: Any) -> Tensor:
    """`train_loss_fn` under ``torch.no_grad()`` (the graph-free solve)."""
    with torch.no_grad():
        return train_loss_fn(model, batch)
