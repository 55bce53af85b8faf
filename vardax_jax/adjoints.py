"""Native (optimistix) adjoints of the learned inner solve, and the spec -> native mapping.

| spec (`pipekit_cycle`)            | native here                                   |
|-----------------------------------|-----------------------------------------------|
| ``RecursiveCheckpointAdjoint(c)`` | ``optx.RecursiveCheckpointAdjoint(checkpoints=c)`` |
| ``TruncatedAdjoint(k)``           | `KStepAdjoint` ``(k)`` (`OneStepAdjoint` = k 1) |
| ``ImplicitAdjoint(...)``          | `ImplicitAdjoint` (an ``optx.ImplicitAdjoint``) |
| ``DirectAdjoint``, ``BacksolveAdjoint`` | ``ValueError``: dynamics layer only     |
"""

from __future__ import annotations

import functools as ft
import warnings
from typing import Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx

import pipekit_cycle as pk
from pipekit_cycle.adjoints import DYNAMICS, LINEAR_SOLVERS
from pipekit_cycle.errors import ConvergenceWarning

__all__ = [
    "AbstractAdjoint",
    "FixedPointNeumann",
    "ImplicitAdjoint",
    "KStepAdjoint",
    "OneStepAdjoint",
    "RecursiveCheckpointAdjoint",
    "nondiff",
    "resolve_checkpoints",
    "to_native_adjoint",
    "to_optimistix_adjoint",
    "to_spec",
]

AbstractAdjoint = optx.AbstractAdjoint
RecursiveCheckpointAdjoint = optx.RecursiveCheckpointAdjoint
DEFAULT_MAX_STEPS = 1000


def resolve_checkpoints(checkpoints: int | None, n_steps: int) -> int:
    """Checkpoints actually stored for ``n_steps`` steps.

    ``None`` picks ``ceil(log2(n_steps))`` (at least 1): the binomial (treeverse) schedule then
    costs ``O(K log K)`` recomputation for ``O(log K)`` stored states, so memory is
    logarithmic in K. equinox's own default is ``O(sqrt(K))``; we prefer the smaller memory
    because the inner step (a gradient of the cost) is cheap to recompute.
    """
    if checkpoints is None:
        checkpoints = max(1, (n_steps - 1).bit_length())
    return max(1, min(checkpoints, n_steps))


def nondiff(tree: Any) -> Any:
    """``lax.stop_gradient`` on every inexact array leaf of ``tree``; other leaves unchanged."""
    return jtu.tree_map(lambda x: jax.lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree)


class KStepAdjoint(optx.AbstractAdjoint):
    """Truncated backpropagation: only the last ``k`` steps carry the gradient.

    For the 4DVarNet inner solve (K fixed steps) the first ``max(K - k, 0)`` steps run on
    ``stop_gradient`` of the model and batch, so neither the state nor the LSTM carry are
    linearised, then ``min(k, K)`` live steps follow. The forward value is the full solve's;
    ``k >= K`` is the exact gradient.

    As the ``adjoint=`` of ``optx.minimise`` / ``root_find`` / ``fixed_point`` (Bolte, Pauwels &
    Vaiter 2023, "one-step differentiation of iterative algorithms"): the solve first runs
    to completion without gradient (``y*``, ``n`` steps). If ``n <= k`` it is re-run from
    ``y0`` with a checkpointed loop, so the gradient is exactly the unrolled one; otherwise
    ``k`` differentiable solver steps are taken from ``stop_gradient(y*)`` (warm start). For
    Newton's method at convergence ``k = 1`` gives the implicit-function-theorem gradient.
    The reported ``num_steps`` and ``result`` are those of the full solve. Reverse mode only
    (the live loop is equinox's checkpointed while loop).
    """

    k: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"KStepAdjoint.k must be an int >= 1, got {self.k!r}")

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        del rewrite_fn, tags
        fn, solver, y0, args, options, max_steps, f_struct, aux_struct, solve_tags = inputs
        # 1. The full solve, without gradient: nothing inside it is linearised.
        lax_loop = ft.partial(eqxi.while_loop, kind="lax")
        y_star, (n_full, result_full, *_) = primal_fn((*nondiff(inputs), lax_loop))
        y_star = nondiff(y_star)
        # 2. The live solve: from y0 when k covers every step taken (exact gradient), else
        #    warm-started from y*. `where` keeps one live loop instead of a `cond` of two.
        exact = n_full <= self.k
        y_start = jtu.tree_map(lambda a, b: jnp.where(exact, a, b), y0, y_star)
        live_steps = self.k if max_steps is None else min(self.k, max_steps)
        live_loop = ft.partial(eqxi.while_loop, kind="checkpointed", checkpoints=resolve_checkpoints(None, live_steps))
        live_inputs = (fn, solver, y_start, args, options, live_steps, f_struct, aux_struct, solve_tags)
        y, (n_live, result_live, state, static_state, aux, stats) = primal_fn((*live_inputs, live_loop))
        num_steps = jnp.where(exact, n_live, n_full)
        result = optx.RESULTS.where(exact, result_live, result_full)
        return y, (num_steps, result, state, static_state, aux, stats)


def OneStepAdjoint() -> KStepAdjoint:
    """``KStepAdjoint(k=1)``: one-step differentiation."""
    return KStepAdjoint(1)


class FixedPointNeumann(lx.AbstractLinearSolver):
    r"""Neumann series for the operator ``A = J - I`` that optimistix linearises at a fixed point.

    optimistix writes a fixed point ``y = T(y)`` as the root of ``T(y) - y``, so the implicit
    backward solves ``(J - I) x = b`` with ``J = dT/dy``; for ``||J|| < 1``
    ``x = -\sum_j J^j b``. The series stops when ``max_i |J^j b|_i / (atol + rtol |x_i|) < 1``
    or after ``max_steps`` terms (``max_steps_reached``). The transpose is the same series on
    ``A^T = J^T - I``, which is what reverse mode calls. Use it for fixed points only.
    """

    rtol: float
    atol: float
    max_steps: int = DEFAULT_MAX_STEPS

    def init(self, operator, options):
        del options
        return operator

    def compute(self, state, vector, options):
        del options
        operator = state

        def apply_j(v):  # J v = A v + v
            return (jtu.tree_map(jnp.add, operator.mv(v), v))

        def cond(carry):
            step, term, total = carry
            scale = jtu.tree_map(lambda t: self.atol + self.rtol * jnp.abs(t), total)
            ratio = jtu.tree_map(lambda a, s: jnp.max(jnp.abs(a) / s), term, scale)
            return (step < self.max_steps) & (jnp.max(jnp.stack(jtu.tree_leaves(ratio))) >= 1)

        def body(carry):
            step, term, total = carry
            term = apply_j(term)
            return step + 1, term, jtu.tree_map(jnp.add, total, term)

        step, _, total = jax.lax.while_loop(cond, body, (jnp.array(0), vector, vector))
        result = lx.RESULTS.where(step < self.max_steps, lx.RESULTS.successful, lx.RESULTS.max_steps_reached)
        return jtu.tree_map(jnp.negative, total), result, {"num_steps": step}

    def transpose(self, state, options):
        return state.transpose(), options

    def conj(self, state, options):
        return lx.conj(state), options

    def assume_full_rank(self):
        return True


def _warn_backward_not_converged(name: str, rtol: float, atol: float, stopped_early, num_steps) -> None:
    if bool(stopped_early):
        warnings.warn(
            ConvergenceWarning(
                f"implicit adjoint: the {name} solve of (I - dT/dx)^T lambda = g did not converge in "
                f"{int(num_steps)} steps (rtol={rtol}, atol={atol}); its last iterate is used"
            ),
            stacklevel=2,
        )


class WarnIfStoppedShort(lx.AbstractLinearSolver):
    """An iterative lineax solver that, when it stops short of its tolerance (out of steps,
    or GMRES's breakdown or stagnation), emits a `ConvergenceWarning` and returns its last
    iterate instead of raising at run time.

    optimistix solves the implicit backward system with ``throw=True``, so such a solve would
    abort the training step; vardax_torch warns and goes on, and both backends must behave
    alike. A singular operator or a non-finite input still raises.
    """

    solver: lx.AbstractLinearSolver
    name: str = eqx.field(static=True)

    def init(self, operator, options):
        return self.solver.init(operator, options)

    def compute(self, state, vector, options):
        solution, result, stats = self.solver.compute(state, vector, options)
        short = (lx.RESULTS.max_steps_reached, lx.RESULTS.breakdown, lx.RESULTS.stagnation)
        stopped = ft.reduce(jnp.logical_or, [result == r for r in short])
        solver = self.solver
        warn = ft.partial(_warn_backward_not_converged, self.name, getattr(solver, "rtol", None),
                          getattr(solver, "atol", None))
        jax.debug.callback(warn, stopped, stats.get("num_steps", getattr(solver, "max_steps", -1)))
        return solution, lx.RESULTS.where(stopped, lx.RESULTS.successful, result), stats

    def transpose(self, state, options):
        return self.solver.transpose(state, options)

    def conj(self, state, options):
        return self.solver.conj(state, options)

    def assume_full_rank(self):
        return self.solver.assume_full_rank()


def _linear_solver(name: str, rtol: float, atol: float, max_steps: int | None) -> lx.AbstractLinearSolver:
    steps = DEFAULT_MAX_STEPS if max_steps is None else max_steps
    if name in ("auto", "gmres"):  # "auto" is GMRES in both backends (backend contract)
        return WarnIfStoppedShort(lx.GMRES(rtol=rtol, atol=atol, max_steps=steps), "gmres")
    if name == "neumann":
        return WarnIfStoppedShort(FixedPointNeumann(rtol=rtol, atol=atol, max_steps=steps), "neumann")
    if name == "dense":
        return lx.LU()
    raise ValueError(f"linear_solver must be one of {', '.join(LINEAR_SOLVERS)}; got {name!r}")


class ImplicitAdjoint(optx.ImplicitAdjoint):
    r"""``optx.ImplicitAdjoint`` that also carries the fixed-point tolerances.

    The 4DVarNet inner solve becomes the fixed point ``x* = m y + (1 - m) phi(x*)``, iterated
    until ``max_i |x_{n+1} - x_n|_i / (atol + rtol |x_{n+1}|_i) < 1`` or ``max_steps``
    (``None``: 1000); the backward solves ``(I - dT/dx)^T lambda = dL/dx*`` matrix-free with
    ``linear_solver_name``: ``gmres`` (``auto``), ``neumann`` (`FixedPointNeumann`) or
    ``dense`` (materialised Jacobian, LU).
    """

    rtol: float = 1e-6
    atol: float = 1e-6
    max_steps: int | None = eqx.field(static=True, default=None)
    linear_solver_name: str = eqx.field(static=True, default="auto")

    def __init__(
        self, linear_solver: str = "auto", rtol: float = 1e-6, atol: float = 1e-6, max_steps: int | None = None
    ):
        spec = pk.ImplicitAdjoint(linear_solver=linear_solver, rtol=rtol, atol=atol, max_steps=max_steps)  # validates
        self.rtol, self.atol, self.max_steps = spec.rtol, spec.atol, spec.max_steps
        self.linear_solver_name = spec.linear_solver
        self.linear_solver = _linear_solver(spec.linear_solver, spec.rtol, spec.atol, spec.max_steps)

    @property
    def iteration_max_steps(self) -> int:
        return DEFAULT_MAX_STEPS if self.max_steps is None else self.max_steps


def to_native_adjoint(spec: Any, layer: str = pk.INNER_SOLVE) -> Any:
    """The optimistix adjoint for ``spec`` at ``layer`` (see the module table).

    A native ``optx.AbstractAdjoint`` passes through unchanged; a spec is mapped by its class
    name and fields (``pipekit_cycle.as_adjoint_spec``), strings are parsed; a spec of the
    wrong layer raises the shared ``ValueError``. ``layer="dynamics"`` delegates to
    ``vardax_jax.dynamics.to_dynamics_adjoint``.
    """
    if layer == DYNAMICS:
        from .dynamics import to_dynamics_adjoint

        return to_dynamics_adjoint(spec)
    if isinstance(spec, optx.AbstractAdjoint):
        return spec
    coerced = pk.check_layer(spec, layer)
    if isinstance(coerced, pk.RecursiveCheckpointAdjoint):
        return optx.RecursiveCheckpointAdjoint(checkpoints=coerced.checkpoints)
    if isinstance(coerced, pk.TruncatedAdjoint):
        return KStepAdjoint(k=coerced.k)
    if isinstance(coerced, pk.ImplicitAdjoint):
        return ImplicitAdjoint(coerced.linear_solver, coerced.rtol, coerced.atol, coerced.max_steps)
    raise ValueError(f"no inner-solve adjoint for {coerced!r}")  # unreachable after check_layer


to_optimistix_adjoint = to_native_adjoint


def to_spec(native: Any) -> pk.AdjointSpec:
    """The `pipekit_cycle` spec of a native inner-solve adjoint (inverse of `to_native_adjoint`)."""
    if isinstance(native, ImplicitAdjoint):
        return pk.ImplicitAdjoint(native.linear_solver_name, native.rtol, native.atol, native.max_steps)
    if isinstance(native, optx.ImplicitAdjoint):
        return pk.ImplicitAdjoint()
    if isinstance(native, optx.RecursiveCheckpointAdjoint):
        return pk.RecursiveCheckpointAdjoint(native.checkpoints)
    if isinstance(native, KStepAdjoint):
        return pk.TruncatedAdjoint(native.k)
    raise ValueError(f"no pipekit_cycle spec describes the adjoint {native!r}")
