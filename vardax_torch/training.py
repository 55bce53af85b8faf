"""Losses, gradients, the optimizer and the train/eval steps.

Optimizer maths (docs/backend-contract.md, the same trajectory as optax in vardax_jax):
global-norm clipping first, ``g <- g * c / max(||g||, c)`` (optax's ``clip_by_global_norm``,
written by hand: ``torch.nn.utils.clip_grad_norm_`` adds 1e-6 to the norm); then coupled
weight decay ``g <- g + wd * p`` (``torch.optim``'s own ``weight_decay``, which adds exactly
that to the gradient it is given); then ``torch.optim.Adam`` (== ``optax.adam``) or plain
``torch.optim.SGD``.

Examples
--------
```python
import torch
import vardax_torch as vd

x = torch.ones((2, 3))
assert float(vd.training.reconstruction_loss(x, x)) == 0.0
```
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from pipekit_cycle import AdjointSpec, OptimizerConfig
from pipekit_cycle.errors import check_no_dropout_in_training
from pipekit_cycle.validation import require_target

from .adjoints import AbstractAdjoint
from .model import Batch1D, Batch2D, FourDVarNet

M = TypeVar("M", bound=torch.nn.Module)
LossFn = Callable[[Any, Any], Tensor]
TrainStepFn = Callable[[Any, Any, torch.optim.Optimizer, dict | None], tuple[Any, dict, Tensor]]

__all__ = [
    "eval_step",
    "loss_and_grads",
    "make_optimizer",
    "make_train_step",
    "predict",
    "reconstruction_loss",
    "train_loss_fn",
    "train_step",
]


def reconstruction_loss(pred: Tensor, target: Tensor) -> Tensor:
    r"""Mean squared error over the points that have a target: a NaN in ``target`` (land, or
    a cell with no truth) is no target there,

    $$ L = \frac{1}{|V|} \sum_{i \in V} (\hat x_i - x_i)^2, \quad V = \{i : x_i \text{ not NaN}\}, $$

    and contributes neither value nor gradient (NaN when no point has a target); an infinite
    target is a value, whose infinite loss the training step refuses.

    Examples
    --------
    ```python
    import torch
    import vardax_torch as vd

    loss = vd.reconstruction_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0]))
    assert float(loss) == 2.5  # ((1 - 0)^2 + (3 - 1)^2) / 2
    land = vd.reconstruction_loss(torch.tensor([1.0, 3.0, 7.0]), torch.tensor([0.0, 1.0, float("nan")]))
    assert float(land) == 2.5  # the NaN point is left out
    ```
    """
    valid = ~torch.isnan(target)
    error = torch.where(valid, pred - torch.where(valid, target, torch.zeros_like(target)), torch.zeros_like(pred))
    return (error**2).sum() / valid.sum()


def train_loss_fn(
    model: FourDVarNet, batch: Batch1D | Batch2D, *, adjoint: AdjointSpec | str | AbstractAdjoint | None = None
) -> Tensor:
    """``reconstruction_loss(model(batch, adjoint=adjoint), batch.target)``; ``ValueError``
    without a target.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)

    loss = vd.train_loss_fn(model, batch)  # a scalar, differentiable in the model's parameters
    assert np.isclose(float(loss), float(vd.reconstruction_loss(model(batch), batch.target)), rtol=1e-6)
    try:
        vd.train_loss_fn(model, vd.make_batch(problem.obs))  # no target: nothing to compare with
    except ValueError as error:
        assert "batch.target" in str(error)
    else:
        raise AssertionError("a batch without a target must be refused")
    ```
    """
    require_target(batch.target, "train_loss_fn")
    return reconstruction_loss(model(batch, adjoint=adjoint), batch.target)


def _grads(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    # A parameter the loss does not use (the ConvLSTM under ImplicitAdjoint) gets zeros, as
    # jax.grad gives.
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def loss_and_grads(
    model: FourDVarNet, batch: Batch1D | Batch2D, *, adjoint: AdjointSpec | str | AbstractAdjoint | None = None
) -> tuple[float, dict[str, np.ndarray]]:
    """``(float(train_loss_fn), {schema name: gradient})``, differentiated as ``adjoint`` (spec
    or native; ``None``: the model's ``solver_adjoint``).

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)

    loss, grads = vd.loss_and_grads(model, batch)  # a float and numpy gradients
    assert {name: g.shape for name, g in grads.items()} == pk.schema(cfg)  # one per parameter, its shape
    assert np.isclose(loss, float(vd.eval_step(model, batch)), rtol=1e-5)
    ```
    """
    names, params = zip(*model.named_parameters(), strict=True)
    with torch.enable_grad():
        loss = train_loss_fn(model, batch, adjoint=adjoint)
        grads = _grads(loss, list(params))
    return float(loss.detach()), {name: g.detach().cpu().numpy() for name, g in zip(names, grads, strict=True)}


# The update rule by OptimizerConfig.name, chosen once when the optimizer is built; foreach=False:
# the plain single-tensor loop, the textbook formula in order.
_OPTIMIZERS: dict[str, Callable[[list[Tensor], OptimizerConfig], torch.optim.Optimizer]] = {
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                                 weight_decay=cfg.weight_decay, foreach=False),
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=0.0, weight_decay=cfg.weight_decay,
                                               foreach=False),
}


def make_optimizer(optimizer_config: OptimizerConfig, model: FourDVarNet) -> tuple[torch.optim.Optimizer, dict]:
    """``(torch.optim optimizer over model.parameters(), a snapshot of its state_dict())``.

    ``clip_norm`` travels in the param group (key ``"clip_norm"``), so it is part of the
    optimizer state and `train_step` applies it before the optimizer's own update. So does the
    learning-rate schedule (`pipekit_cycle.schedules`): ``"peak_lr"``, ``"lr_schedule"`` and
    ``"scheduled_steps"``, the steps taken along it; before each update the step sets the
    group's ``"lr"`` to ``peak_lr * s(scheduled_steps)`` (optax's schedule, which the JAX
    backend's state counts the same way), so a rate is changed by a new `OptimizerConfig`,
    not by writing ``"lr"``.

    Examples
    --------
    ```python
    import torch
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-3, clip_norm=1.0), model)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["clip_norm"] == 1.0
    warm = pk.OptimizerConfig(name="adam", lr=1e-3, schedule=pk.WarmupCosineSchedule(warmup_steps=10, decay_steps=100))
    optimizer, opt_state = vd.make_optimizer(warm, model)
    model, opt_state, loss = vd.train_step(model, batch, optimizer, opt_state)
    assert opt_state["param_groups"][0]["lr"] == 0.0 and opt_state["param_groups"][0]["scheduled_steps"] == 1
    ```
    """
    cfg = optimizer_config
    optimizer = _OPTIMIZERS[cfg.name](list(model.parameters()), cfg)
    for group in optimizer.param_groups:
        group["clip_norm"] = cfg.clip_norm
        group["peak_lr"], group["lr_schedule"], group["scheduled_steps"] = cfg.lr, cfg.schedule, 0
    return optimizer, snapshot_optimizer(optimizer)


def _schedule(optimizer: torch.optim.Optimizer) -> None:
    """Each group's rate for the step about to be taken, ``peak_lr * s(k)`` with ``k`` the steps
    it has taken (`pipekit_cycle.schedules`), and the count moved on; groups of an optimizer
    not made by `make_optimizer` (no ``"lr_schedule"``) keep their rate."""
    for group in optimizer.param_groups:
        if "lr_schedule" in group:
            group["lr"] = group["peak_lr"] * group["lr_schedule"].factor(group["scheduled_steps"])
            group["scheduled_steps"] += 1


def _clip(grads: list[Tensor], clip_norm: float | None) -> list[Tensor]:
    """``g <- g * c / max(||g||, c)`` with the global norm accumulated in float64 on the
    device, in parameter order: no host sync, and the same bits as summing the host floats
    ``float((g * g).sum())``."""
    if clip_norm is None or not grads:
        return grads
    squared = torch.zeros((), dtype=torch.float64, device=grads[0].device)
    for g in grads:
        squared = squared + (g * g).sum().to(torch.float64)
    scale = torch.clamp(torch.sqrt(squared), min=clip_norm)
    return [g * clip_norm / scale for g in grads]


def _mean_over_ranks(loss: Tensor, grads: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    r"""Under an initialised ``torch.distributed`` process group of :math:`R > 1` ranks (as
    ``torchrun`` starts them), the loss and every gradient averaged over the ranks,
    :math:`\bar g = \frac1R \sum_r g_r` (DistributedDataParallel's rule), in one
    ``all_reduce`` of one flat buffer on the parameters' device (gloo on CPU, nccl on GPU).
    With a mean loss and the same number of windows on every rank this is the gradient of the
    whole batch. Outside a process group, the values unchanged."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return loss, grads
    n_ranks = torch.distributed.get_world_size()
    if n_ranks == 1:
        return loss, grads
    flat = torch.cat([loss.detach().reshape(1), *(g.reshape(-1) for g in grads)])
    torch.distributed.all_reduce(flat)
    flat = flat / n_ranks
    pieces = torch.split(flat, [1, *(g.numel() for g in grads)])
    return pieces[0].reshape(loss.shape), [piece.view_as(g) for piece, g in zip(pieces[1:], grads, strict=True)]


def _check_finite(name: str, loss: Tensor, grads: list[Tensor]) -> None:
    """``FloatingPointError`` unless ``loss`` and every gradient are finite, read with ONE
    device sync (both flags in one tensor, one ``tolist``); only the error path syncs more."""
    grads_ok = [torch.isfinite(g).all() for g in grads]
    all_grads_ok = torch.stack(grads_ok).all() if grads_ok else torch.ones((), dtype=torch.bool, device=loss.device)
    loss_ok, gradients_ok = torch.stack([torch.isfinite(loss).all(), all_grads_ok]).tolist()
    if not loss_ok:
        raise FloatingPointError(f"{name}: non-finite loss {float(loss.detach())}; model and optimizer unchanged")
    if not gradients_ok:
        bad = sum(not bool(ok) for ok in grads_ok)
        raise FloatingPointError(
            f"{name}: non-finite gradient in {bad} parameter tensor(s); model and optimizer unchanged"
        )


# The snapshot each optimizer's state was last copied to (by a step, `make_optimizer` or
# `import_optimizer_state`), forgotten as soon as the optimizer steps or loads state any
# other way: passing that snapshot back is then known to be a no-op, and costs no copy.
_CURRENT: weakref.WeakKeyDictionary[torch.optim.Optimizer, dict] = weakref.WeakKeyDictionary()
_WATCHED: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()


def _forget(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    _CURRENT.pop(optimizer, None)


def snapshot_optimizer(optimizer: torch.optim.Optimizer) -> dict:
    """A deep copy of ``optimizer.state_dict()`` (every buffer cloned: later steps never
    change it), remembered as the optimizer's current state."""
    if optimizer not in _WATCHED:
        optimizer.register_step_post_hook(_forget)
        optimizer.register_load_state_dict_post_hook(_forget)
        _WATCHED.add(optimizer)
    snapshot = copy.deepcopy(optimizer.state_dict())
    _CURRENT[optimizer] = snapshot
    return snapshot


def _hyper_parameters(groups: list[dict]) -> list[dict]:
    return [{key: value for key, value in group.items() if key != "params"} for group in groups]


def _restore(optimizer: torch.optim.Optimizer, opt_state: dict | None) -> None:
    """Make ``optimizer`` hold ``opt_state`` (``None``: keep it as it is). Free when
    ``opt_state`` is the snapshot last taken of it and its hyper-parameters were not changed
    since; otherwise a deep copy is loaded (so the optimizer never writes into ``opt_state``)."""
    if opt_state is None:
        return
    current = _CURRENT.get(optimizer) is opt_state
    if current and _hyper_parameters(opt_state["param_groups"]) == _hyper_parameters(optimizer.param_groups):
        return
    optimizer.load_state_dict(copy.deepcopy(opt_state))


def make_train_step(loss_fn: LossFn, *, name: str = "train_step") -> TrainStepFn:
    """The optimizer step on any loss ``loss_fn(model, batch) -> scalar tensor``.

    ``train_step(model, batch, optimizer, opt_state) -> (model, opt_state, loss)``: the
    gradients of every parameter with ``requires_grad`` (zeros where unused) are checked with
    one device sync; only then is ``opt_state`` loaded into ``optimizer`` (``None``: use it
    as it is; skipped, with no copy, when it is the snapshot the last step returned), the
    gradient clipped by global norm (``"clip_norm"`` of the first param group, from
    `make_optimizer`) and ``optimizer.step()`` run. The model is updated in place and
    returned; ``opt_state`` is a snapshot (deep copy) of the optimizer's new state, never
    changed by later steps; ``loss`` the detached value before the step. Guaranteed: a
    non-finite loss or gradient raises ``FloatingPointError`` naming ``name`` and leaves
    parameters, their ``.grad`` and the optimizer exactly as they were; the same parameters
    with the same ``opt_state`` give the same next step, bit for bit.

    Data parallel: run under ``torchrun`` with ``torch.distributed.init_process_group`` called,
    each rank holding its own shard of the batch and the same parameters (the same seed or
    parameter file); the loss and gradients are averaged over the ranks before the check
    (`_mean_over_ranks`), so every rank takes the same step, the step of the whole batch, and
    a non-finite value on any rank stops all of them. Not wrapped in
    ``DistributedDataParallel``: the step owns its gradient (``torch.autograd.grad``, no
    ``.grad`` between calls), and one ``all_reduce`` of one buffer is what DDP's buckets do.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)


    def loss_fn(model, batch):  # any (model, batch) -> scalar
        return vd.train_loss_fn(model, batch) + 1e-3 * (model(batch) ** 2).mean()


    step = vd.make_train_step(loss_fn, name="damped_step")
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-3), model)
    model, opt_state, loss = step(model, batch, optimizer, opt_state)
    ```
    """

    def train_step(
        model: M, batch: Any, optimizer: torch.optim.Optimizer, opt_state: dict | None
    ) -> tuple[M, dict, Tensor]:
        check_no_dropout_in_training(model, name)
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.enable_grad():
            loss = loss_fn(model, batch)
            grads = _grads(loss, params)
        loss, grads = _mean_over_ranks(loss, grads)
        _check_finite(name, loss, grads)
        _restore(optimizer, opt_state)
        grads = _clip(grads, optimizer.param_groups[0].get("clip_norm"))
        for p, g in zip(params, grads, strict=True):
            p.grad = g.detach()
        _schedule(optimizer)
        optimizer.step()
        for p in params:  # no gradient state left on the module between calls
            p.grad = None
        return model, snapshot_optimizer(optimizer), loss.detach()

    train_step.__name__ = train_step.__qualname__ = name
    return train_step


train_step = make_train_step(train_loss_fn)
"""One optimizer step on `train_loss_fn` (`make_train_step`): ``(model, opt_state, loss)``;
``ValueError`` without ``batch.target``.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_torch as vd

problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.build_model(cfg, seed=0)
batch = vd.make_batch(problem.obs, target=problem.truth)
optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
for _ in range(3):
    model, opt_state, loss = vd.train_step(model, batch, optimizer, opt_state)
print(f"training loss before the third step: {float(loss):.3f}")
```
"""


def eval_step(model: FourDVarNet, batch: Batch1D | Batch2D) -> Tensor:
    """`train_loss_fn` under ``torch.no_grad()`` (the graph-free solve).

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    held_out = pk.lorenz96(n_windows=2, window_length=5, state_dim=16, seed=1)
    loss = vd.eval_step(model, vd.make_batch(held_out.obs, target=held_out.truth))  # no gradient
    print(f"held-out loss {float(loss):.3f}")
    ```
    """
    with torch.no_grad():
        return train_loss_fn(model, batch)


def predict(model: FourDVarNet, batch: Batch1D | Batch2D) -> Tensor:
    """The inference output under ``torch.no_grad()``: the model's output component applied to
    ``x_K = model(batch)``, `PriorOutput` ``phi(x_K)`` (``config.output="prior"``,
    ocean4dvarnet's eval mode) or `StateOutput` ``x_K``.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    x = vd.to_numpy(vd.predict(model, vd.make_batch(problem.obs)))  # no target needed
    assert x.shape == problem.truth.shape  # (windows, T, N)
    ```
    """
    with torch.no_grad():
        return model.output(model(batch), model.prior)
