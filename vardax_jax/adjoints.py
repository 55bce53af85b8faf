"""Native (optimistix) adjoints, and the spec -> native mapping.

| spec (`pipekit_cycle`)            | native here                                        |
|-----------------------------------|----------------------------------------------------|
| ``RecursiveCheckpointAdjoint(c)`` | `RecursiveCheckpointAdjoint` ``(c)`` (an ``optx.RecursiveCheckpointAdjoint``) |
| ``TruncatedAdjoint(k)``           | `KStepAdjoint` ``(k)`` (`OneStepAdjoint`: k = 1)     |
| ``ImplicitAdjoint(...)``          | `ImplicitAdjoint` (an ``optx.ImplicitAdjoint``)      |
| ``DirectAdjoint``, ``BacksolveAdjoint`` | ``ValueError``: dynamics layer only          |

Every native adjoint is an ``optx.AbstractAdjoint`` and owns its loop: a solve hands
``apply(primal_fn, rewrite_fn, inputs, tags)`` a ``primal_fn`` that runs its loop with the
``while_loop`` the adjoint appends to ``inputs`` (optimistix's protocol), so the same adjoint
works as the ``adjoint=`` of ``optx.minimise`` / ``root_find`` / ``fixed_point`` and of the
4DVarNet solves in `vardax_jax.solver`. Nothing here reads the layout of ``inputs``.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_jax as vd

native = vd.adjoints.to_native_adjoint(pk.TruncatedAdjoint(k=2))  # a spec -> this backend's own adjoint
assert isinstance(native, vd.adjoints.KStepAdjoint)
```
"""

from __future__ import annotations

import functools as ft
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import optimistix as optx
from jaxtyping import PyTree

import pipekit_cycle as pk
from pipekit_cycle.adjoints import DYNAMICS, LINEAR_SOLVERS, checkpoint_schedule
from pipekit_cycle.errors import ConvergenceWarning

if TYPE_CHECKING:
    import diffrax

__all__ = [
    "AbstractAdjoint",
    "FixedPointNeumann",
    "ImplicitAdjoint",
    "KStepAdjoint",
    "OneStepAdjoint",
    "RecursiveCheckpointAdjoint",
    "nondiff",
    "to_native_adjoint",
    "to_optimistix_adjoint",
    "to_spec",
]

AbstractAdjoint = optx.AbstractAdjoint
"""optimistix's ``optx.AbstractAdjoint`` itself, under the name both backends share. Every
native adjoint here is one, and a subclass defined outside the package plugs into the solves
unchanged: its ``apply(primal_fn, rewrite_fn, inputs, tags)`` runs the loop by calling
``primal_fn`` with a ``while_loop`` appended to ``inputs`` (optimistix's protocol).

Examples
--------
```python
import equinox as eqx
import jax
import numpy as np
import pipekit_cycle as pk
import vardax_jax as vd

problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.build_model(cfg, seed=0)
batch = vd.make_batch(problem.obs, target=problem.truth)


class Unrolled(vd.AbstractAdjoint):  # plain backprop: optimistix's protocol, a while loop appended
    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        def while_loop(cond_fun, body_fun, init_val, *, max_steps, **kwargs):
            for _ in range(max_steps):
                init_val = jax.lax.cond(cond_fun(init_val), body_fun, lambda v: v, init_val)
            return init_val

        return primal_fn((*inputs, while_loop))


@eqx.filter_jit
def gradients(model):
    grads = eqx.filter_grad(vd.train_loss_fn)(model, batch)
    return jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))


exact = gradients(model)  # under the default RecursiveCheckpointAdjoint: exact
mine = gradients(model.with_adjoint(Unrolled()))
assert all(np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(mine, exact, strict=True))
```
"""
DEFAULT_MAX_STEPS = 1000


def nondiff(tree: PyTree) -> PyTree:
    """``lax.stop_gradient`` on every inexact array leaf of ``tree``; other leaves unchanged."""
    return jtu.tree_map(lambda x: jax.lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree)


def _checkpointed_while_loop(cond_fun, body_fun, init_val, *, checkpoints: int | None, max_steps=None, **kwargs):
    # The shared schedule needs the step bound; without one equinox needs an explicit count.
    if max_steps is not None:
        checkpoints = checkpoint_schedule(max_steps, checkpoints)
    return eqxi.while_loop(cond_fun, body_fun, init_val, max_steps=max_steps, kind="checkpointed",
                           checkpoints=checkpoints, **kwargs)


class RecursiveCheckpointAdjoint(optx.RecursiveCheckpointAdjoint):
    """``optx.RecursiveCheckpointAdjoint`` whose ``checkpoints=None`` is the project's one rule,
    ``pipekit_cycle.checkpoint_schedule(max_steps, None) = ceil(log2 max_steps)`` stored states
    (equinox's online binomial checkpointing; exact gradient, ``O(n log n)`` recomputation).
    Reverse mode only, like its base.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    assert vd.to_native_adjoint("checkpoint") == vd.RecursiveCheckpointAdjoint()  # the default
    assert pk.checkpoint_schedule(64, None) == 6  # states stored for K = 64 by checkpoints=None
    # Exact under any schedule; fewer stored states recompute more steps.
    loss, grads = vd.loss_and_grads(model, batch, adjoint=vd.RecursiveCheckpointAdjoint(checkpoints=1))
    ```
    """

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        del rewrite_fn, tags
        return primal_fn((*inputs, ft.partial(_checkpointed_while_loop, checkpoints=self.checkpoints)))


def _checkpoint_count(max_steps: int | None) -> int:
    # equinox's checkpointed loop needs a count when there is no step bound; it is only read
    # when that loop is differentiated, which the K-step loop's primal never is.
    return 1 if max_steps is None else checkpoint_schedule(max(max_steps, 1), None)


def _truncated_while_loop(cond_fun: Callable, body_fun: Callable, init_val: Any, *, k: int,
                          max_steps: int | None = None, buffers: Callable | None = None, **kwargs) -> Any:
    r"""``while_loop`` whose value is the default loop's and whose gradient flows through the last
    ``k`` steps only.

    With ``n`` the number of steps the loop takes (known only once it stops),
    ``s = \max(n - k, 0)`` and ``y_{i+1} = f(y_i, \theta)`` the body (``\theta``: everything it
    closes over), the value is ``y_n`` and the gradient is that of

    .. math::

        y_n = f^{\,n - s}(\bar y_s, \theta), \qquad
        \bar y_s = y_s \text{ held constant unless } s = 0 ,

    that is, the chain rule through steps ``s, ..., n - 1`` only.

    * No gradient taken: optimistix's default loop itself (equinox's checkpointed loop, the
      loop of ``optx.RecursiveCheckpointAdjoint``), so values, dtypes (weak types included) and
      the step count are the default's, bit for bit.
    * ``k >= max_steps``: every step is one of the last ``k``, and the loop is
      `RecursiveCheckpointAdjoint` ``()``'s, gradient (the exact one) included.
    * Otherwise `_kstep_loop`, a custom VJP. Forward: one loop of the same body that also keeps
      the carries at the last two multiples of ``k`` (memory: two carries, for every ``k``),
      written as equinox's differentiated checkpointed loop writes its checkpoints, so that XLA
      compiles the body alike and the value is the default's under a gradient too (measured on
      every optimistix solver family; XLA's fusion, not this code, owns those last bits).
      Backward: from the kept carry at or before ``s``, fewer than ``k`` steps replayed without
      a graph, then the ``n - s`` last steps differentiated in equinox's checkpointed loop
      (``ceil(log2 k)`` stored carries).
    """
    del kwargs
    if max_steps is not None and k >= max_steps:
        return eqxi.while_loop(cond_fun, body_fun, init_val, max_steps=max_steps, buffers=buffers,
                               kind="checkpointed", checkpoints=_checkpoint_count(max_steps))
    # As equinox's loops do first: Python scalars in the carry become (weakly typed) arrays, so
    # the body below is traced at the carry's own types, weak ones included.
    init_val = jtu.tree_map(jnp.array, init_val)
    body = eqx.filter_closure_convert(body_fun, init_val)
    cond = nondiff(eqx.filter_closure_convert(cond_fun, init_val))
    return _kstep_loop((init_val, body), cond, k, max_steps, buffers)


@eqx.filter_custom_vjp
def _kstep_loop(vjp_arg, cond_fun, k, max_steps, buffers):
    # Not differentiated: the default loop, so this program is optimistix's own.
    del k
    init_val, body_fun = vjp_arg
    return eqxi.while_loop(cond_fun, body_fun, init_val, max_steps=max_steps, buffers=buffers,
                           kind="checkpointed", checkpoints=_checkpoint_count(max_steps))


def _keep_if(save, index, slots, value):
    # equinox's way to write a checkpoint: one in-place update per step, a no-op unless `save`.
    kept = jnp.where(save, value, jax.lax.dynamic_index_in_dim(slots, index, keepdims=False))
    return jax.lax.dynamic_update_index_in_dim(slots, kept, index, 0)


@_kstep_loop.def_fwd
def _kstep_loop_fwd(perturbed, vjp_arg, cond_fun, k, max_steps, buffers):
    del perturbed, buffers  # whole carries are kept; `buffers` only saves copies
    init_val, body_fun = vjp_arg

    def fwd_body(carry):
        step, next_kept, kept, val = carry
        # Slot (i // k) % 2 keeps the carry entering step i (and i), for the last two multiples i
        # of k. Whether to keep is read from the carry, never folded from `k`, so that the
        # bookkeeping around the body has one shape for every k, as in equinox's checkpointed
        # forward: XLA then compiles the body's arithmetic alike (k = 1 rounded differently).
        keep = step == next_kept
        kept = jtu.tree_map(ft.partial(_keep_if, keep, (next_kept // k) % 2), kept, (step, val))
        next_kept = jnp.where(keep, next_kept + k, next_kept)
        return step + 1, next_kept, kept, body_fun(val)

    zero = jnp.array(0)
    kept = jtu.tree_map(lambda x: jnp.stack([x, x]), (zero, init_val))
    n, _, kept, val = eqxi.while_loop(lambda carry: cond_fun(carry[-1]), fwd_body, (zero, zero, kept, init_val),
                                      max_steps=max_steps, kind="lax")
    return val, (n, kept)


def _counted(body_fun: Callable, carry: tuple[Any, Any]) -> tuple[Any, Any]:
    step, val = carry
    return step + 1, body_fun(val)


@_kstep_loop.def_bwd
def _kstep_loop_bwd(residuals, grad_out, perturbed, vjp_arg, cond_fun, k, max_steps, buffers):
    del cond_fun, buffers  # the backward replays exactly the n steps the forward took
    n, (kept_steps, kept) = residuals
    # Run eagerly, a perturbed input can arrive here as a Python scalar: make it an array so
    # that it is differentiated.
    init_val, body_fun = jtu.tree_map(lambda x, p: jnp.asarray(x) if p else x, vjp_arg, perturbed)
    init_perturbed, body_perturbed = perturbed
    first_live = jnp.maximum(n - k, 0)
    # The later kept step at or before s (one always is: they are the last two multiples of k
    # below n, or 0). Chosen from the kept steps themselves, so the replay's length is data to
    # XLA for every k, and the forward loop's outputs are all used alike.
    slot = jnp.argmax(jnp.where(kept_steps <= first_live, kept_steps, -1))
    restart = jtu.tree_map(lambda x: jax.lax.dynamic_index_in_dim(x, slot, keepdims=False), (kept_steps, kept))
    _, start = eqxi.while_loop(lambda carry: carry[0] < first_live, ft.partial(_counted, nondiff(body_fun)),
                               restart, kind="lax")
    bound = k if max_steps is None else min(k, max_steps)
    live_steps = n - first_live
    # Only what the caller differentiates (not, say, a float64 numpy constant of the body
    # under float32, which equinox's backward could not mix with float32 cotangents).
    start_diff, start_nondiff = eqx.partition(start, init_perturbed)
    body_diff, body_nondiff = eqx.partition(body_fun, body_perturbed)

    def live(diff_val, diff_body):
        # Exactly the forward's last n - s steps: a step count, not `cond_fun`, stops it.
        body = eqx.combine(diff_body, body_nondiff)
        _, out = eqxi.while_loop(lambda carry: carry[0] < live_steps, ft.partial(_counted, body),
                                 (jnp.array(0), eqx.combine(diff_val, start_nondiff)), max_steps=bound,
                                 kind="checkpointed", checkpoints=checkpoint_schedule(bound, None))
        return out

    # Only the outputs that have a cotangent are differentiated: a symbolic-zero cotangent made
    # an explicit zero would meet the body's own infinities (optimistix divides by atol + rtol|y|,
    # 0 when both tolerances are) and turn 0 * inf into NaN.
    has_cotangent = jtu.tree_map(lambda x, g: g is not None and eqx.is_inexact_array(x), init_val, grad_out,
                                 is_leaf=lambda x: x is None)

    def live_differentiated(diff_val, diff_body):
        return eqx.filter(live(diff_val, diff_body), has_cotangent)

    _, vjp_fn = eqx.filter_vjp(live_differentiated, start_diff, body_diff)
    cotangent = eqx.filter(grad_out, has_cotangent)
    grad_start, grad_body = vjp_fn(cotangent)
    # The carry at s is the initial one only when s = 0; before that nothing is differentiated.
    grad_init = jtu.tree_map(lambda g: jnp.where(first_live == 0, g, jnp.zeros_like(g)), grad_start)
    return grad_init, grad_body


class KStepAdjoint(optx.AbstractAdjoint):
    r"""Truncated backpropagation: the solve runs as it would, and only its last ``k`` steps
    carry the gradient (state AND every other part of the loop's carry are cut before them).

    With ``n`` the number of steps the solve takes (a fixed ``K`` for the learned 4DVarNet
    solve; up to ``max_steps`` for a solve with a stopping test):

    .. math::

        \frac{\partial y_n}{\partial \theta} \approx \sum_{j=n-k}^{n-1}
        \Big(\prod_{i=j+1}^{n-1} \frac{\partial s}{\partial y}(y_i)\Big)
        \frac{\partial s}{\partial \theta}(y_j) ,

    the chain rule through the steps ``y_{i+1} = s(y_i, \theta)`` from ``n - k`` on. On a
    linear fixed point ``y = A y + \theta`` this is the truncated Neumann series
    ``\sum_{j<k} A^j``; for Newton at convergence ``k = 1`` is the implicit-function-theorem
    gradient (Bolte, Pauwels & Vaiter 2023); ``k >= n`` is the exact (unrolled) gradient.
    Works as the ``adjoint=`` of ``optx.minimise``, ``optx.root_find``, ``optx.fixed_point`` and
    ``optx.least_squares`` through the ``while_loop`` alone (see `_truncated_while_loop`), and
    never changes what the solve computes: with no gradient taken the solve is
    ``optx.RecursiveCheckpointAdjoint``'s very program, and with one its forward runs the same
    body in one loop that XLA compiles alike (tested on every optimistix solver family): the
    value, its dtypes (weak types included), the step count and the result are the default's,
    bit for bit, at every ``k``; ``k >= max_steps`` is
    `RecursiveCheckpointAdjoint` ``()`` itself. optimistix's line-search
    methods (gradient descent, nonlinear CG, BFGS, Gauss-Newton, Levenberg-Marquardt, Dogleg)
    return their last accepted point and carry the next proposal, so there ``k`` updates of
    the output are ``k + 1`` loop steps, and ``k + 1`` are differentiated (on a quadratic,
    GradientDescent(lr) then gives exactly ``\sum_{j<k} lr (I - lr H)^j``). A line search that
    rejects its last proposals near convergence makes the last steps' gradient exactly zero
    (it is the true truncated gradient): take k large enough to reach accepted steps.

    Cost: the forward runs the ``n`` steps once and keeps the carries at the last two multiples
    of ``k`` (two carries for every ``k``, with or without ``max_steps``; ``n`` is known only
    when the solve stops); the backward replays fewer than ``k`` steps from the kept carry at
    or before ``n - k`` without a graph, then differentiates the last ``min(n, k)`` steps in
    equinox's checkpointed loop (``ceil(log2 k)`` stored carries), so memory grows as
    ``log2 k`` and never with ``n`` (measured: ``benchmarks/kstep_memory.py``).

    Reverse mode only: ``jax.jvp`` (forward mode) raises ``TypeError``, as it does through
    ``optx.RecursiveCheckpointAdjoint``; both are custom VJPs. Forward mode through a solve
    needs ``optx.ImplicitAdjoint``.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import optimistix as optx
    import pipekit_cycle as pk
    import vardax_jax as vd

    assert vd.to_native_adjoint(pk.TruncatedAdjoint(k=3)) == vd.KStepAdjoint(k=3)


    def fn(y, a):  # KStepAdjoint is also the adjoint= of optimistix's own solves; here y* = 2 a
        return 0.5 * y + a


    solver = optx.FixedPointIteration(rtol=1e-10, atol=1e-10)
    solution = optx.fixed_point(fn, solver, jnp.zeros(2), args=jnp.ones(2), adjoint=vd.KStepAdjoint(k=3))
    ```
    """

    k: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        pk.TruncatedAdjoint(self.k)  # the shared validation and words

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        del rewrite_fn, tags
        return primal_fn((*inputs, ft.partial(_truncated_while_loop, k=self.k + _proposal_lag(inputs))))


# optimistix's line-search methods return the last ACCEPTED point and carry the next proposal
# `y_eval` in their state, so the loop's last step evaluates a proposal the output never sees:
# k updates of the output take k + 1 loop steps there.
_LAGGING_SOLVERS = (optx.AbstractGradientDescent, optx.AbstractQuasiNewton, optx.AbstractGaussNewton)


def _proposal_lag(inputs) -> int:
    is_solver = lambda x: isinstance(x, optx.AbstractIterativeSolver)  # noqa: E731
    solvers = [leaf for leaf in jtu.tree_leaves(inputs, is_leaf=is_solver) if is_solver(leaf)]
    return int(any(isinstance(solver, _LAGGING_SOLVERS) for solver in solvers))


class OneStepAdjoint(KStepAdjoint):
    """`KStepAdjoint` with ``k = 1``: only the solve's last step carries the gradient.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    adjoint = vd.OneStepAdjoint()
    assert isinstance(adjoint, vd.KStepAdjoint) and adjoint.k == 1
    assert vd.to_native_adjoint(pk.TruncatedAdjoint(k=1)) == adjoint
    ```
    """

    k: int = eqx.field(static=True, default=1, init=False)


class FixedPointNeumann(lx.AbstractLinearSolver):
    r"""Neumann series for the operator ``A = J - I`` that optimistix linearises at a fixed point.

    optimistix writes a fixed point ``y = T(y)`` as the root of ``T(y) - y``, so the implicit
    backward solves ``(J - I) x = b`` with ``J = dT/dy``; for ``||J|| < 1``
    ``x = -\sum_j J^j b``. The series stops when ``max_i |J^j b|_i / (atol + rtol |x_i|) < 1``
    or after ``max_steps`` terms (``max_steps_reached``). The transpose is the same series on
    ``A^T = J^T - I``, which is what reverse mode calls. Use it for fixed points only.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import lineax as lx
    import numpy as np
    import vardax_jax as vd

    jacobian = 0.5 * jnp.eye(2)  # dT/dy of a contraction
    operator = lx.MatrixLinearOperator(jacobian - jnp.eye(2))  # A = J - I
    solution = lx.linear_solve(operator, jnp.array([1.0, 2.0]), vd.FixedPointNeumann(rtol=1e-6, atol=1e-6))
    assert np.allclose(solution.value, [-2.0, -4.0], atol=1e-4)  # x = -sum_j J^j b = -2 b
    ```
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
    r"""``optx.ImplicitAdjoint`` configured by the spec's fields, ``linear_solver`` included.

    The backward solves ``(I - dT/dx)^T lambda = dL/dx*`` at the solve's output ``x*`` (which
    must be a fixed point: the 4DVarNet ``solver="fixed_point"``, or any optimistix solve)
    matrix-free with ``linear_solver``: ``"gmres"`` (``"auto"``), ``"neumann"``
    (`FixedPointNeumann`, for fixed points) or ``"dense"`` (materialised Jacobian, LU), to the
    tolerances ``rtol``, ``atol`` and ``max_steps`` (``None``: 1000), which are the backward
    solve's only. An iterative solve that stops short warns `ConvergenceWarning` and uses its
    last iterate (as vardax_torch does). The forward runs in a plain ``lax`` loop.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=30,
                               solver="fixed_point", solver_adjoint=pk.ImplicitAdjoint("neumann"))
    model = vd.build_model(cfg, seed=0)
    assert model.solver_adjoint == vd.ImplicitAdjoint("neumann")
    loss, grads = vd.loss_and_grads(model, vd.make_batch(problem.obs, target=problem.truth))
    try:  # the learned solver's output is not a fixed point
        pk.FourDVarNetConfig(state_shape=(16,), n_time=5, solver_adjoint=pk.ImplicitAdjoint())
    except ValueError as error:
        print(error)
    ```
    """

    linear_solver: str = eqx.field(static=True, default="auto")  # type: ignore[assignment]
    rtol: float = eqx.field(static=True, default=1e-6)
    atol: float = eqx.field(static=True, default=1e-6)
    max_steps: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        pk.ImplicitAdjoint(self.linear_solver, self.rtol, self.atol, self.max_steps)  # type: ignore[arg-type]

    @property
    def lineax_solver(self) -> lx.AbstractLinearSolver:
        """The lineax solver of the backward system."""
        return _linear_solver(self.linear_solver, self.rtol, self.atol, self.max_steps)

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        return optx.ImplicitAdjoint(linear_solver=self.lineax_solver).apply(primal_fn, rewrite_fn, inputs, tags)


def to_native_adjoint(
    spec: pk.AdjointSpec | str | optx.AbstractAdjoint | diffrax.AbstractAdjoint | None, layer: str = pk.INNER_SOLVE
) -> optx.AbstractAdjoint | diffrax.AbstractAdjoint:
    """The optimistix adjoint for ``spec`` at ``layer`` (see the module table).

    A native ``optx.AbstractAdjoint`` passes through unchanged; a spec is mapped by its class
    name and fields (``pipekit_cycle.as_adjoint_spec``), strings are parsed; a spec of the
    wrong layer raises the shared ``ValueError``. ``layer="dynamics"`` delegates to
    ``vardax_jax.dynamics.to_dynamics_adjoint``.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    assert vd.to_native_adjoint(pk.TruncatedAdjoint(k=2)) == vd.KStepAdjoint(k=2)
    assert vd.to_native_adjoint("checkpoint:4") == vd.RecursiveCheckpointAdjoint(checkpoints=4)
    native = vd.KStepAdjoint(k=3)
    assert vd.to_native_adjoint(native) is native  # a native adjoint passes through
    try:
        vd.to_native_adjoint("backsolve")  # a spec of the dynamics layer
    except ValueError as error:
        print(error)
    ```
    """
    if layer == DYNAMICS:
        from .dynamics import to_dynamics_adjoint

        return to_dynamics_adjoint(spec)
    if isinstance(spec, optx.AbstractAdjoint):
        return spec
    coerced = pk.check_layer(spec, layer)
    if isinstance(coerced, pk.RecursiveCheckpointAdjoint):
        return RecursiveCheckpointAdjoint(checkpoints=coerced.checkpoints)
    if isinstance(coerced, pk.TruncatedAdjoint):
        return OneStepAdjoint() if coerced.k == 1 else KStepAdjoint(k=coerced.k)
    if isinstance(coerced, pk.ImplicitAdjoint):
        return ImplicitAdjoint(coerced.linear_solver, coerced.rtol, coerced.atol, coerced.max_steps)
    raise ValueError(f"no inner-solve adjoint for {coerced!r}")  # unreachable after check_layer


to_optimistix_adjoint = to_native_adjoint
"""`to_native_adjoint` under the backend's own name (the same function; vardax_torch's is
``to_torch_adjoint``).

Examples
--------
```python
import pipekit_cycle as pk
import vardax_jax as vd

assert vd.to_optimistix_adjoint is vd.to_native_adjoint
assert vd.to_optimistix_adjoint(pk.TruncatedAdjoint(k=2)) == vd.KStepAdjoint(k=2)
```
"""


def to_spec(native: optx.AbstractAdjoint) -> pk.AdjointSpec:
    """The `pipekit_cycle` spec of a native inner-solve adjoint (inverse of `to_native_adjoint`)."""
    if isinstance(native, ImplicitAdjoint):
        return pk.ImplicitAdjoint(native.linear_solver, native.rtol, native.atol, native.max_steps)  # type: ignore[arg-type]
    if isinstance(native, optx.ImplicitAdjoint):
        return pk.ImplicitAdjoint()
    if isinstance(native, optx.RecursiveCheckpointAdjoint):
        return pk.RecursiveCheckpointAdjoint(native.checkpoints)
    if isinstance(native, KStepAdjoint):
        return pk.TruncatedAdjoint(native.k)
    raise ValueError(f"no pipekit_cycle spec describes the adjoint {native!r}")
