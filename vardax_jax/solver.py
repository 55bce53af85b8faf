r"""The inner solves of a 4DVarNet: WHAT is computed is the model's ``solver``; HOW it is
differentiated is the adjoint's, which owns the loop (DESIGN 3.2).

``solver="learned"`` (DESIGN 3.1), cost per sample ``(B,)``:

.. math::

    U(x) = w_{obs} \sum m (x - y)^2 + w_{prior} \sum (x - \phi(x))^2 ,

``x_0 = m y``, carry zeros; ``K`` times ``g = dU/dx(x_k)``, ``u, carry = grad_mod(g, x_k, carry)``,
``x_{k+1} = x_k - alpha u``.

(``cost="sum"`` and ``step_rule="alpha"``; the other costs and step rules are the model's
components, `vardax_jax.components`, which the solve calls without reading the config's strings.)

``solver="fixed_point"``: ``x <- T(x) = m y + (1 - m) phi(x)`` from ``x_0 = m y``, at most
``K = n_solver_steps`` iterations, stopping by optimistix's ``FixedPointIteration`` test at
the config's ``fixed_point_rtol/atol``.

Both hand their loop to ``adjoint.apply(primal_fn, rewrite_fn, inputs, tags)`` (optimistix's
protocol): the learned solve directly, the fixed point through ``optx.fixed_point``. The
solvers never look at the adjoint's type, so any ``optx.AbstractAdjoint`` plugs in.

What a solve reads from the model: ``prior``, ``grad_mod``, ``cost``, ``step_rule``,
``config`` and ``solver_adjoint``; it imports nothing from `vardax_jax.model` and calls
nothing back. The model's call checks the batch and resolves the adjoint once, then hands
both over.

Examples
--------
```python
import numpy as np
import pipekit_cycle as pk
import vardax_jax as vd

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

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from pipekit_cycle.adjoints import AdjointSpec, check_solver_adjoint
from pipekit_cycle.errors import fixed_point_not_converged

from .adjoints import KStepAdjoint, RecursiveCheckpointAdjoint, to_native_adjoint

if TYPE_CHECKING:
    from .model import AbstractBatch, AbstractFourDVarNet

__all__ = [
    "fixedpoint_map",
    "fixedpoint_unrolled",
    "solve_4dvarnet",
    "solve_4dvarnet_checkpointed",
    "solve_4dvarnet_kstep",
    "solve_4dvarnet_unrolled",
    "solver_step",
    "variational_cost",
]

State = Float[Array, "batch time *space"]


def variational_cost(model: AbstractFourDVarNet, x: State, batch: AbstractBatch) -> Float[Array, " batch"]:
    """``U(x)`` per sample ``(B,)``: the misfits ``sum(m (x - y)^2)`` and ``sum((x - phi(x))^2)``
    of each sample, combined by the model's cost component (`SumCost`: weighted sums, samples
    independent; `MeanCost`: each sample's share of the batch-wide means, as ocean4dvarnet).

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

    x = batch.input  # at x = y the observation term is 0 on the observed points
    cost = vd.to_numpy(vd.variational_cost(model, x, batch))
    assert cost.shape == (4,)  # one cost per window (cost="sum")
    misfit = (vd.to_numpy(x) - vd.to_numpy(model.prior(x))) ** 2
    assert np.allclose(cost, cfg.prior_weight * misfit.sum(axis=(1, 2)), rtol=1e-5)
    ```
    """
    axes = tuple(range(1, x.ndim))
    obs = jnp.sum(batch.mask * (x - batch.input) ** 2, axis=axes)
    prior = jnp.sum((x - model.prior(x)) ** 2, axis=axes)
    return model.cost(obs, prior, batch.mask, x)


def solver_step(model, batch, x: State, carry, step=0):
    """Learned step number ``step`` (from 0): ``u, carry = grad_mod(g, x, carry)`` at
    ``g = dU/dx``, then the model's step rule (`AlphaStep`: ``x - alpha u``; `AnnealedStep`:
    ``x - (u / (k + 1) + lr_grad (k + 1) / K g)``); returns ``(x, carry)``."""
    grad = jax.grad(lambda z: jnp.sum(variational_cost(model, z, batch)))(x)
    update, carry = model.grad_mod(grad, x, carry)
    return model.step_rule(x, update, grad, step), carry


def _learned_primal(inputs):
    model, batch, while_loop = inputs
    x0 = batch.mask * batch.input
    n_steps = model.config.n_solver_steps

    def body(val):
        i, x, carry = val
        return (i + 1, *solver_step(model, batch, x, carry, i))

    init = (jnp.array(0), x0, model.grad_mod.init_carry(x0))
    _, x, _ = while_loop(lambda val: val[0] < n_steps, body, init, max_steps=n_steps)
    return x, None


def _learned_rewrite(root, residual, inputs):
    # Reached only when an implicit adjoint is forced past the model's own check.
    raise ValueError('ImplicitAdjoint needs solver="fixed_point": the learned solve\'s output is not a fixed point')


def _solve_learned(model, batch, adjoint) -> State:
    x, _ = adjoint.apply(_learned_primal, _learned_rewrite, (model, batch), frozenset())
    return x


def fixedpoint_map(x: State, args) -> tuple[State, State]:
    """``T(x) = m y + (1 - m) phi(x)``; the aux output is ``x`` itself, so the solve reports its
    last iterate and the residual ``max|x_{n+1} - x_n|`` is exact."""
    model, batch = args
    return batch.mask * batch.input + (1 - batch.mask) * model.prior(x), x


def _warn_not_converged(max_steps: int, rtol: float, atol: float, converged, residual) -> None:
    if not bool(converged):
        warnings.warn(fixed_point_not_converged(max_steps, float(residual), rtol, atol), stacklevel=2)


def _solve_fixed_point(model, batch, adjoint) -> State:
    config = model.config
    rtol, atol, max_steps = float(config.fixed_point_rtol), float(config.fixed_point_atol), config.n_solver_steps
    sol = optx.fixed_point(
        fixedpoint_map,
        optx.FixedPointIteration(rtol=rtol, atol=atol),
        batch.mask * batch.input,
        args=(model, batch),
        has_aux=True,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=False,
    )
    if rtol > 0 or atol > 0:  # both 0: exactly n_solver_steps iterations were asked for
        residual = jnp.max(jnp.abs(jax.lax.stop_gradient(sol.value - sol.aux)))
        converged = sol.result == optx.RESULTS.successful
        warn = ft.partial(_warn_not_converged, max_steps, rtol, atol)
        jax.debug.callback(warn, converged, residual)
    return sol.value


_SOLVERS = {"learned": _solve_learned, "fixed_point": _solve_fixed_point}


def solve_4dvarnet(
    model: AbstractFourDVarNet, batch: AbstractBatch, adjoint: AdjointSpec | str | optx.AbstractAdjoint | None = None
) -> State:
    """The model's inner solve (``model.config.solver``) on ``batch``, differentiated by
    ``adjoint`` (a spec or any ``optx.AbstractAdjoint``; ``None``: ``model.solver_adjoint``).
    The value does not depend on the adjoint. Nothing is checked here: the model's call,
    ``model(batch, adjoint=...)``, checks the batch and the adjoint, then comes here.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

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


def _unrolled_while_loop(cond_fun, body_fun, init_val, *, max_steps, **kwargs):
    del kwargs

    def step(val, _):
        return jax.lax.cond(cond_fun(val), body_fun, lambda v: v, val), None

    return jax.lax.scan(step, init_val, length=max_steps)[0]


class _Unrolled(optx.AbstractAdjoint):
    """Plain backprop through every step (a scan of ``max_steps`` guarded steps): the reference."""

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        del rewrite_fn, tags
        return primal_fn((*inputs, _unrolled_while_loop))


def solve_4dvarnet_unrolled(model: AbstractFourDVarNet, batch: AbstractBatch) -> State:
    """The model's solve with plain backprop through every step (the reference; memory O(K)).

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

    reference = vd.to_numpy(vd.solve_4dvarnet_unrolled(model, batch))
    assert reference.shape == (4, 5, 16)
    assert np.allclose(reference, vd.to_numpy(vd.solve_4dvarnet(model, batch)), atol=1e-6)  # same value
    ```
    """
    return solve_4dvarnet(model, batch, _Unrolled())


def solve_4dvarnet_checkpointed(
    model: AbstractFourDVarNet, batch: AbstractBatch, checkpoints: int | None = None
) -> State:
    """The solve under `RecursiveCheckpointAdjoint` ``(checkpoints)``: exact gradient, memory
    ``O(checkpoints)`` states (``None``: ``pipekit_cycle.checkpoint_schedule``, ``ceil(log2 K)``).

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

    x = vd.to_numpy(vd.solve_4dvarnet_checkpointed(model, batch, checkpoints=2))
    assert pk.checkpoint_schedule(cfg.n_solver_steps, None) == 2  # the default for K = 3: ceil(log2 3)
    assert np.allclose(x, vd.to_numpy(vd.solve_4dvarnet_unrolled(model, batch)), atol=1e-6)
    ```
    """
    return solve_4dvarnet(model, batch, RecursiveCheckpointAdjoint(checkpoints))


def solve_4dvarnet_kstep(model: AbstractFourDVarNet, batch: AbstractBatch, k: int) -> State:
    """The solve under `KStepAdjoint` ``(k)``: the steps before the last ``k`` run with state AND
    carry cut from the graph, the last ``k`` carry the gradient.

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

    x = vd.to_numpy(vd.solve_4dvarnet_kstep(model, batch, k=1))  # gradient through the last step only
    assert np.allclose(x, vd.to_numpy(vd.solve_4dvarnet_unrolled(model, batch)), atol=1e-6)  # same value
    ```
    """
    return solve_4dvarnet(model, batch, KStepAdjoint(k))


def fixedpoint_unrolled(model: AbstractFourDVarNet, batch: AbstractBatch, n_iterations: int) -> State:
    """Plain backprop through exactly ``n_iterations`` iterations ``x <- T(x)`` from ``x_0 = m y``,
    no stopping test (the reference the implicit gradient is checked against).

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

    x = vd.to_numpy(vd.fixedpoint_unrolled(model, batch, n_iterations=4))
    observed = vd.to_numpy(batch.mask) == 1
    assert x.shape == (4, 5, 16)
    assert (x[observed] == vd.to_numpy(batch.input)[observed]).all()  # T(x) keeps y where m = 1
    ```
    """
    x0 = batch.mask * batch.input
    return jax.lax.fori_loop(0, n_iterations, lambda _, x: fixedpoint_map(x, (model, batch))[0], x0)


solve_4dvarnet_jit = eqx.filter_jit(solve_4dvarnet)
