r"""The inner solves of a 4DVarNet: WHAT is computed is the model's ``solver``; HOW it is
differentiated is the adjoint's, which owns the loop (DESIGN 3.2).

``solver="learned"`` (DESIGN 3.1)::

    U(x)   = obs_weight * sum(m (x - y)^2) + prior_weight * sum((x - phi(x))^2)     per sample (B,)
    x_0    = m * y ;  carry_0 = zeros
    K times:  g = dU/dx (x_k);  u, carry = grad_mod(g, x_k, carry);  x_{k+1} = x_k - alpha * u

(``cost="sum"`` and ``step_rule="alpha"``; the other costs and step rules are the model's
components, `vardax_torch.components`, which the solve calls without reading the config's strings.)

``solver="fixed_point"``: ``x <- T(x) = m y + (1 - m) phi(x)`` from ``x_0 = m y``, at most
``K = n_solver_steps`` iterations, stopping once
``max |x_{n+1} - x_n| / (fixed_point_atol + fixed_point_rtol |x_{n+1}|) < 1`` (optimistix's
``FixedPointIteration`` test, as in vardax_jax).

Both hand ``adjoint.loop(step, carry, args, K, converged=...)`` their step, initial carry and
the tensors the step reads (the model's parameters by name, ``y`` and ``m``); the step calls
the model's modules through ``torch.func.functional_call`` on those tensors, so a recomputed
step is bit-identical to the original and nothing is stored on a module.

What a solve reads from the model: ``prior``, ``grad_mod``, ``cost``, ``step_rule``,
``config`` and ``solver_adjoint``, and its parameters; it imports nothing from
`vardax_torch.model` and calls nothing back. The model's call checks the batch and resolves
the adjoint once, then hands both over.

Examples
--------
```python
import numpy as np
import pipekit_cycle as pk
import vardax_torch as vd

cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.build_model(cfg, seed=0)
x = vd.solver.solve_4dvarnet(model, vd.make_batch(np.zeros((2, 5, 16))))
assert tuple(x.shape) == (2, 5, 16)
```
"""

from __future__ import annotations

import functools as ft
import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pipekit_cycle.adjoints import AdjointSpec, check_solver_adjoint
from pipekit_cycle.errors import fixed_point_not_converged

from .adjoints import AbstractAdjoint, Args, Carry, KStepAdjoint, RecursiveCheckpointAdjoint, iterate, to_native_adjoint

if TYPE_CHECKING:
    from .model import Batch1D, Batch2D, FourDVarNet

__all__ = [
    "fixedpoint_map",
    "fixedpoint_unrolled",
    "solve_4dvarnet",
    "solve_4dvarnet_checkpointed",
    "solve_4dvarnet_kstep",
    "solve_4dvarnet_unrolled",
    "variational_cost",
]


def _module_params(args: Args, prefix: str) -> dict[str, Tensor]:
    return {name[len(prefix):]: t for name, t in args.items() if name.startswith(prefix)}


def _prior(model: nn.Module, args: Args, x: Tensor) -> Tensor:
    return functional_call(model.prior, _module_params(args, "prior."), (x,))


def _cost(model: nn.Module, args: Args, x: Tensor) -> Tensor:
    def per_sample(z: Tensor) -> Tensor:
        return z.flatten(1).sum(dim=1)

    obs, prior = per_sample(args["m"] * (x - args["y"]) ** 2), per_sample((x - _prior(model, args, x)) ** 2)
    return model.cost(obs, prior, args["m"], x)


def variational_cost(model: FourDVarNet, x: Tensor, batch: Batch1D | Batch2D) -> Tensor:
    """``U(x)`` per sample ``(B,)``: the misfits ``sum(m (x - y)^2)`` and ``sum((x - phi(x))^2)``
    of each sample, combined by the model's cost component (`SumCost`: weighted sums, samples
    independent; `MeanCost`: each sample's share of the batch-wide means, as ocean4dvarnet).

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

    x = batch.input  # at x = y the observation term is 0 on the observed points
    cost = vd.to_numpy(vd.variational_cost(model, x, batch))
    assert cost.shape == (4,)  # one cost per window (cost="sum")
    misfit = (vd.to_numpy(x) - vd.to_numpy(model.prior(x))) ** 2
    assert np.allclose(cost, cfg.prior_weight * misfit.sum(axis=(1, 2)), rtol=1e-5)
    ```
    """
    return _cost(model, _args(model, batch), x)


def _args(model: nn.Module, batch: Batch1D | Batch2D) -> dict[str, Tensor]:
    return {**dict(model.named_parameters()), "y": batch.input, "m": batch.mask}


def _learned_step(model: nn.Module, args: Args, carry: Carry) -> Carry:
    # carry = (x, k, *modulator carry); k, the step number, is a float tensor (no gradient).
    x, count, *modulator = carry
    live = torch.is_grad_enabled()
    with torch.enable_grad():
        # dU/dx needs x in a graph; a state that carries no gradient gets a fresh leaf.
        xg = x if live and x.requires_grad else x.detach().requires_grad_()
        (g,) = torch.autograd.grad(_cost(model, args, xg).sum(), xg, create_graph=live)
    if not live:
        xg, g = xg.detach(), g.detach()
    x = x if live else xg
    update, modulator = functional_call(model.grad_mod, _module_params(args, "grad_mod."), (g, x, tuple(modulator)))
    return model.step_rule(x, update, g, count), count + 1, *modulator


def _solve_learned(model: nn.Module, batch: Batch1D | Batch2D, adjoint: AbstractAdjoint) -> Tensor:
    x0 = batch.mask * batch.input
    count = torch.zeros((), dtype=x0.dtype, device=x0.device)
    step = ft.partial(_learned_step, model)
    carry = (x0, count, *model.grad_mod.init_carry(x0))
    return adjoint.loop(step, carry, _args(model, batch), model.config.n_solver_steps)[0]


def fixedpoint_map(model: nn.Module, args: Args, carry: Carry) -> Carry:
    """``T(x) = m * y + (1 - m) * phi(x)`` on the carry ``(x,)``."""
    (x,) = carry
    return (args["m"] * args["y"] + (1 - args["m"]) * _prior(model, args, x),)


def _fixed_point_error(rtol: float, atol: float, old: Carry, new: Carry) -> Tensor:
    # The test of optimistix's FixedPointIteration: max |x_new - x_old| / (atol + rtol |x_new|).
    return ((new[0] - old[0]).abs() / (atol + rtol * new[0].abs())).max()


def _solve_fixed_point(model: nn.Module, batch: Batch1D | Batch2D, adjoint: AbstractAdjoint) -> Tensor:
    config = model.config
    rtol, atol, max_steps = float(config.fixed_point_rtol), float(config.fixed_point_atol), config.n_solver_steps
    step = ft.partial(fixedpoint_map, model)
    last: dict[str, Tensor] = {}  # the last step's residual, for the warning below

    def converged(old: Carry, new: Carry) -> bool:
        last["error"], last["residual"] = _fixed_point_error(rtol, atol, old, new), (new[0] - old[0]).abs().max()
        return bool(last["error"] < 1)

    tolerance = rtol > 0 or atol > 0  # both 0: exactly n_solver_steps iterations were asked for
    (x,) = adjoint.loop(step, (batch.mask * batch.input,), _args(model, batch), max_steps,
                        converged=converged if tolerance else None)
    if tolerance and last and not bool(last["error"] < 1):
        warnings.warn(fixed_point_not_converged(max_steps, float(last["residual"]), rtol, atol), stacklevel=3)
    return x


_SOLVERS = {"learned": _solve_learned, "fixed_point": _solve_fixed_point}


def solve_4dvarnet(
    model: FourDVarNet, batch: Batch1D | Batch2D, adjoint: AdjointSpec | str | AbstractAdjoint | None = None
) -> Tensor:
    """The model's inner solve (``model.config.solver``) on ``batch``, differentiated by
    ``adjoint`` (a spec or any `AbstractAdjoint`; ``None``: ``model.solver_adjoint``). The value
    does not depend on the adjoint. Under ``torch.no_grad()`` the loop runs once without a
    graph. Nothing is checked here: the model's call, ``model(batch, adjoint=...)``, checks
    the batch and the adjoint, then comes here.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    x = vd.solve_4dvarnet(model, batch, adjoint="truncated:1")
    y = vd.solve_4dvarnet(model, batch, adjoint="checkpoint")
    assert (vd.to_numpy(x) == vd.to_numpy(y)).all()  # an adjoint never changes the value
    ```
    """
    native = model.solver_adjoint if adjoint is None else to_native_adjoint(adjoint)
    # The public entry refuses what cannot differentiate this solve (implicit on the learned one)
    # before any work; the model's call has checked the same already.
    check_solver_adjoint(model.config.solver, native)
    return _SOLVERS[model.config.solver](model, batch, native)


class _Unrolled(AbstractAdjoint):
    """Plain backprop through every step: the reference."""

    def loop(self, step, carry, args, max_steps, *, converged=None):
        return iterate(step, tuple(carry), args, max_steps, converged, graph=torch.is_grad_enabled())[0]


def solve_4dvarnet_unrolled(model: FourDVarNet, batch: Batch1D | Batch2D) -> Tensor:
    """The model's solve with plain backprop through every step (the exact reference; memory O(K)).

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

    reference = vd.to_numpy(vd.solve_4dvarnet_unrolled(model, batch))
    assert reference.shape == (4, 5, 16)
    assert np.allclose(reference, vd.to_numpy(vd.solve_4dvarnet(model, batch)), atol=1e-6)  # same value
    ```
    """
    return solve_4dvarnet(model, batch, _Unrolled())


def solve_4dvarnet_checkpointed(model: FourDVarNet, batch: Batch1D | Batch2D, checkpoints: int | None = None) -> Tensor:
    """The solve under `RecursiveCheckpointAdjoint` ``(checkpoints)``: exact gradient, memory
    ``O(checkpoints)`` carries (``None``: ``pipekit_cycle.checkpoint_schedule``, ``ceil(log2 K)``).

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

    x = vd.to_numpy(vd.solve_4dvarnet_checkpointed(model, batch, checkpoints=2))
    assert pk.checkpoint_schedule(cfg.n_solver_steps, None) == 2  # the default for K = 3: ceil(log2 3)
    assert np.allclose(x, vd.to_numpy(vd.solve_4dvarnet_unrolled(model, batch)), atol=1e-6)
    ```
    """
    return solve_4dvarnet(model, batch, RecursiveCheckpointAdjoint(checkpoints))


def solve_4dvarnet_kstep(model: FourDVarNet, batch: Batch1D | Batch2D, k: int) -> Tensor:
    """The solve under `KStepAdjoint` ``(k)``: the steps before the last ``k`` run with state AND
    carry cut from the graph, the last ``k`` carry the gradient.

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

    x = vd.to_numpy(vd.solve_4dvarnet_kstep(model, batch, k=1))  # gradient through the last step only
    assert np.allclose(x, vd.to_numpy(vd.solve_4dvarnet_unrolled(model, batch)), atol=1e-6)  # same value
    ```
    """
    return solve_4dvarnet(model, batch, KStepAdjoint(k))


def fixedpoint_unrolled(model: FourDVarNet, batch: Batch1D | Batch2D, n_iterations: int) -> Tensor:
    """Plain backprop through exactly ``n_iterations`` iterations ``x <- T(x)`` from ``x_0 = m y``,
    no stopping test (the reference the implicit gradient is checked against).

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

    x = vd.to_numpy(vd.fixedpoint_unrolled(model, batch, n_iterations=4))
    observed = vd.to_numpy(batch.mask) == 1
    assert x.shape == (4, 5, 16)
    assert (x[observed] == vd.to_numpy(batch.input)[observed]).all()  # T(x) keeps y where m = 1
    ```
    """
    args = _args(model, batch)
    return iterate(ft.partial(fixedpoint_map, model), (batch.mask * batch.input,), args, n_iterations,
                   graph=torch.is_grad_enabled())[0][0]
