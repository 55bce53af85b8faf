r"""The learned inner solve of a 4DVarNet, one loop per adjoint, and the fixed-point solve.

Cost per sample (DESIGN 3.1), ``(B,)``:

.. math::

    U(x) = w_{obs} \sum m (x - y)^2 + w_{prior} \sum (x - \phi(x))^2 .

Solver: ``x_0 = m y``, carry zeros; ``K`` times ``g = dU/dx(x_k)``,
``u, carry = grad_mod(g, x_k, carry)``, ``x_{k+1} = x_k - alpha u``.

Fixed point (Implicit): ``x* = T(x*) = m y + (1 - m) phi(x*)``.
"""

from __future__ import annotations

import functools as ft
import warnings

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from pipekit_cycle.errors import ConvergenceWarning

from .adjoints import ImplicitAdjoint, KStepAdjoint, nondiff, resolve_checkpoints, to_native_adjoint

__all__ = [
    "fixedpoint_map",
    "fixedpoint_unrolled",
    "solve_4dvarnet",
    "solve_4dvarnet_1d_fixedpoint",
    "solve_4dvarnet_2d_fixedpoint",
    "solve_4dvarnet_checkpointed",
    "solve_4dvarnet_kstep",
    "solve_4dvarnet_unrolled",
    "solver_step",
    "variational_cost",
]

State = Float[Array, "batch time *space"]


def variational_cost(model, x: State, batch) -> Float[Array, " batch"]:
    """``U(x)`` per sample: sums over every non-batch axis keep samples independent."""
    axes = tuple(range(1, x.ndim))
    obs = jnp.sum(batch.mask * (x - batch.input) ** 2, axis=axes)
    prior = jnp.sum((x - model.prior(x)) ** 2, axis=axes)
    return model.obs_weight * obs + model.prior_weight * prior


def _initial(model, batch):
    x0 = batch.mask * batch.input
    return x0, model.grad_mod.init_carry(x0)


def solver_step(model, batch, x: State, carry):
    """One step ``x <- x - alpha * grad_mod(dU/dx, x, carry)``; returns ``(x, carry)``."""
    grad = jax.grad(lambda z: jnp.sum(variational_cost(model, z, batch)))(x)
    update, carry = model.grad_mod(grad, x, carry)
    return x - model.alpha * update, carry


def _run(model, batch, x, carry, n_steps: int):
    # fori_loop with static bounds lowers to a scan: reverse-differentiable, stores every step.
    body = lambda _, xc: solver_step(model, batch, *xc)  # noqa: E731
    return jax.lax.fori_loop(0, n_steps, body, (x, carry))


def solve_4dvarnet_unrolled(model, batch) -> State:
    """Plain backprop through ``K = n_solver_steps`` steps (the reference; memory O(K))."""
    x, carry = _initial(model, batch)
    return _run(model, batch, x, carry, model.n_solver_steps)[0]


def solve_4dvarnet_checkpointed(model, batch, checkpoints: int | None = None) -> State:
    """``K`` steps in equinox's checkpointed while loop: exact gradient, memory
    ``O(checkpoints)`` states (``None``: `resolve_checkpoints`, about ``log2 K``)."""
    n_steps = model.n_solver_steps
    x, carry = _initial(model, batch)

    def body(val):
        i, x, carry = val
        return (i + 1, *solver_step(model, batch, x, carry))

    _, x, _ = eqxi.while_loop(
        lambda val: val[0] < n_steps,
        body,
        (jnp.array(0), x, carry),
        max_steps=n_steps,
        kind="checkpointed",
        checkpoints=resolve_checkpoints(checkpoints, n_steps),
    )
    return x


def solve_4dvarnet_kstep(model, batch, k: int) -> State:
    """``max(K - k, 0)`` warm-up steps on ``stop_gradient`` of model and batch (state AND carry
    cut from the graph, nothing linearised), then ``min(k, K)`` live steps."""
    n_steps = model.n_solver_steps
    n_warm = max(n_steps - k, 0)
    x, carry = _initial(model, batch)
    if n_warm:
        x, carry = _run(nondiff(model), nondiff(batch), x, carry, n_warm)
        x, carry = nondiff((x, carry))
    return _run(model, batch, x, carry, n_steps - n_warm)[0]


def solve_4dvarnet(model, batch, adjoint=None) -> State:
    """The inner solve differentiated as ``adjoint`` (spec or native; ``None``: the model's)."""
    adjoint = model.solver_adjoint if adjoint is None else to_native_adjoint(adjoint)
    if isinstance(adjoint, KStepAdjoint):
        return solve_4dvarnet_kstep(model, batch, adjoint.k)
    if isinstance(adjoint, optx.RecursiveCheckpointAdjoint):
        return solve_4dvarnet_checkpointed(model, batch, adjoint.checkpoints)
    if isinstance(adjoint, optx.ImplicitAdjoint):
        return _solve_fixedpoint(model, batch, adjoint)
    raise TypeError(f"no inner-solve loop for the adjoint {adjoint!r}")


def fixedpoint_map(x: State, args) -> tuple[State, State]:
    """``T(x) = m y + (1 - m) phi(x)``; the aux output is ``x`` itself, so the solve reports its
    last iterate and the residual ``max|x_{n+1} - x_n|`` is exact."""
    model, batch = args
    return batch.mask * batch.input + (1 - batch.mask) * model.prior(x), x


def _warn_not_converged(max_steps: int, rtol: float, atol: float, converged, residual, n_steps) -> None:
    if not bool(converged):
        warnings.warn(
            ConvergenceWarning(
                f"fixed-point iteration did not converge after {int(n_steps)} steps (max_steps={max_steps}): "
                f"residual max|x_(n+1) - x_n| = {float(residual):.3e}, rtol={rtol}, atol={atol}"
            ),
            stacklevel=2,
        )


def _solve_fixedpoint(model, batch, adjoint=None) -> State:
    if adjoint is None:
        adjoint = model.solver_adjoint if isinstance(model.solver_adjoint, ImplicitAdjoint) else ImplicitAdjoint()
    adjoint = to_native_adjoint(adjoint)
    rtol, atol = getattr(adjoint, "rtol", 1e-6), getattr(adjoint, "atol", 1e-6)
    max_steps = getattr(adjoint, "iteration_max_steps", 1000)
    x0 = batch.mask * batch.input
    sol = optx.fixed_point(
        fixedpoint_map,
        optx.FixedPointIteration(rtol=rtol, atol=atol),
        x0,
        args=(model, batch),
        has_aux=True,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=False,
    )
    residual = jnp.max(jnp.abs(jax.lax.stop_gradient(sol.value - sol.aux)))
    converged = sol.result == optx.RESULTS.successful
    warn = ft.partial(_warn_not_converged, max_steps, rtol, atol)
    jax.debug.callback(warn, converged, residual, sol.stats["num_steps"])
    return sol.value


def solve_4dvarnet_1d_fixedpoint(model, batch, adjoint=None) -> State:
    """Fixed point ``x* = m y + (1 - m) phi(x*)`` of a 1D model, differentiated by the implicit
    function theorem (``adjoint``: an `ImplicitAdjoint` or spec; ``None``: the model's if it is
    implicit, else the default). Warns `ConvergenceWarning` (residual, steps) when not converged."""
    if model.ndim != 1:
        raise ValueError("solve_4dvarnet_1d_fixedpoint needs a 1D model (FourDVarNet1D)")
    return _solve_fixedpoint(model, batch, adjoint)


def solve_4dvarnet_2d_fixedpoint(model, batch, adjoint=None) -> State:
    """As `solve_4dvarnet_1d_fixedpoint`, for a 2D model (FourDVarNet2D)."""
    if model.ndim != 2:
        raise ValueError("solve_4dvarnet_2d_fixedpoint needs a 2D model (FourDVarNet2D)")
    return _solve_fixedpoint(model, batch, adjoint)


def fixedpoint_unrolled(model, batch, n_iterations: int) -> State:
    """Plain backprop through ``n_iterations`` fixed-point iterations from ``x_0 = m y`` (the
    reference the implicit gradient is checked against)."""
    x0 = batch.mask * batch.input
    return jax.lax.fori_loop(0, n_iterations, lambda _, x: fixedpoint_map(x, (model, batch))[0], x0)


solve_4dvarnet_jit = eqx.filter_jit(solve_4dvarnet)
