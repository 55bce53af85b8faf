"""KStepAdjoint as the ``adjoint=`` of optimistix's own solves (issue 32).

What an adjoint may never change: with no gradient taken, the solve under ``KStepAdjoint(k)`` is
``optx.RecursiveCheckpointAdjoint``'s very program (the lowered StableHLO is the same text), so its
value, dtypes (weak types included), ``result`` and step count are the default's, bit for bit;
with a gradient taken they are the default's too, and for ``k`` at least the step count the
gradient is the default's (exact) one. Checked on the two cases the issue reported, then on every
optimistix solver family, in float64, in float32 and in float32 data with ``jax_enable_x64`` on
(optimistix's own test setting, where weakly typed Python floats are float64).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import optimistix as optx
import pytest

import vardax_jax as vd

MAX_STEPS = 64
KS = (1, 2, MAX_STEPS // 2, 10**6)  # one step, two, a middle value, more than the solve can take


def _program(lowered) -> str:
    """A lowered module's text without source locations (which name the adjoint's file)."""
    lines = lowered.as_text().splitlines()
    return "\n".join(re.sub(r"\s*loc\(.*$", "", line) for line in lines if not line.startswith("#loc"))


def _assert_bits(got, want) -> None:
    """Same leaves, dtypes, weak types and bytes (so -0.0 and NaN payloads count too)."""
    got, want = jtu.tree_leaves(got), jtu.tree_leaves(want)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.dtype, g.shape, g.weak_type) == (w.dtype, w.shape, w.weak_type)
        assert np.asarray(g).tobytes() == np.asarray(w).tobytes(), (np.asarray(g), np.asarray(w))


def _outputs(sol: optx.Solution):
    """What a solve computes: its value, result, step count and final solver state."""
    return sol.value, sol.result._value, sol.stats["num_steps"], eqx.filter(sol.state, eqx.is_array)


# --- the two reported cases --------------------------------------------------------------------


def test_bfgs_float32_keeps_the_weak_step_size():
    """optimistix's test_bfgs_float32 under x64: the backtracking step size is a weak float64
    (from a Python float) in a float32 solve; it crashed with k = 1 and 2 when the warm-up made
    it a strong float64 (``y_eval`` f32 -> f64)."""

    def solve(scale, adjoint):
        sol = optx.root_find(lambda y, a: a * y**2, optx.BFGS(rtol=1e-3, atol=1e-6), jnp.array(1.0, jnp.float32),
                             scale, adjoint=adjoint)
        return jnp.sum(sol.value), _outputs(sol)

    scale = jnp.array(1.0, jnp.float32)
    forward = jax.jit(lambda a, adj: solve(a, adj)[1], static_argnums=1)
    reference = forward(scale, optx.RecursiveCheckpointAdjoint())
    assert reference[0].dtype == jnp.float32
    grad = jax.jit(jax.value_and_grad(solve, has_aux=True), static_argnums=1)
    (_, grad_reference), _ = grad(scale, optx.RecursiveCheckpointAdjoint())
    for k in (1, 2):
        _assert_bits(forward(scale, vd.KStepAdjoint(k)), reference)
        (_, outputs), gradient = grad(scale, vd.KStepAdjoint(k))
        _assert_bits(outputs, grad_reference)
        assert gradient.dtype == jnp.float32 and np.isfinite(gradient)


def _rosenbrock(tree, args):  # optimistix's tests/helpers.py, least-squares form
    y, _ = jfu.ravel_pytree(tree)
    return 100 * (y[1:] - y[:-1]), args - y[:-1]


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_long_adam_least_squares_is_the_default_bit_for_bit(dtype):
    """optimistix's test_least_squares[rosenbrock-...-OptaxMinimiser(adam)]: 10000 steps, the
    step bound reached. Splitting the loop changed the value from about 1000 steps on (7e-5 at
    3000: Adam on Rosenbrock amplifies a last-bit difference); now every k runs the default's
    program without a gradient, and the same value with one."""
    solver = optx.OptaxMinimiser(optax.adam(learning_rate=3e-3), rtol=1e-8, atol=1e-8)
    init = [jnp.array(1.5, dtype), jnp.array(1.5, dtype)]

    def solve(args, adjoint):
        sol = optx.least_squares(_rosenbrock, solver, init, args=args, max_steps=10_000, throw=False,
                                 adjoint=adjoint)
        return jnp.sum(jnp.stack(sol.value)), _outputs(sol)

    args = jnp.array(1.0, dtype)
    reference = _outputs(optx.least_squares(_rosenbrock, solver, init, args=args, max_steps=10_000, throw=False))
    assert int(reference[2]) == 10_000 and int(reference[1]) == int(optx.RESULTS.nonlinear_max_steps_reached._value)
    for k in (1, 2, 10**6):
        sol = optx.least_squares(_rosenbrock, solver, init, args=args, max_steps=10_000, throw=False,
                                 adjoint=vd.KStepAdjoint(k))
        _assert_bits(_outputs(sol), reference)
    grad = jax.jit(jax.value_and_grad(solve, has_aux=True), static_argnums=1)
    (_, grad_reference), _ = grad(args, optx.RecursiveCheckpointAdjoint())
    (_, outputs), gradient = grad(args, vd.KStepAdjoint(1))
    _assert_bits(outputs, grad_reference)
    assert np.isfinite(gradient)


# --- every solver family ---------------------------------------------------------------------


def _quadratic(y, theta):
    return 0.5 * jnp.sum(jnp.arange(1, y.size + 1, dtype=y.dtype) * (y - theta) ** 2)


def _rosenbrock_residuals(y, theta):
    return 10 * (y[1:] - y[:-1] ** 2), theta - y[:-1]


def _rosenbrock_cost(y, theta):
    return sum(jnp.sum(r**2) for r in _rosenbrock_residuals(y, theta))


def _cubic(y, theta):  # y^3 + y - 2 at theta = 1
    return y**3 + y - 2 * theta


def _contraction(y, theta):
    return 0.5 * jnp.cos(y) + theta


_TOL = 1e-6
# family: (entry point, solver, problem, initial value (None: scalar bracket [-3, 3]))
FAMILIES: dict[str, tuple[Callable, optx.AbstractIterativeSolver, Callable, float | None]] = {
    "FixedPointIteration": (optx.fixed_point, optx.FixedPointIteration(_TOL, _TOL), _contraction, 0.0),
    "Newton": (optx.root_find, optx.Newton(_TOL, _TOL), _cubic, 1.0),
    "Chord": (optx.root_find, optx.Chord(_TOL, _TOL), _cubic, 1.0),
    "Bisection": (optx.root_find, optx.Bisection(_TOL, _TOL), _cubic, None),
    "GradientDescent": (optx.minimise, optx.GradientDescent(0.4, _TOL, _TOL), _quadratic, 0.0),
    "BFGS": (optx.minimise, optx.BFGS(_TOL, _TOL), _rosenbrock_cost, 0.5),
    "LBFGS": (optx.minimise, optx.LBFGS(_TOL, _TOL), _rosenbrock_cost, 0.5),
    "NonlinearCG": (optx.minimise, optx.NonlinearCG(_TOL, _TOL), _quadratic, 0.0),
    "NelderMead": (optx.minimise, optx.NelderMead(_TOL, _TOL), _quadratic, 0.0),
    "OptaxMinimiser(adam)": (optx.minimise, optx.OptaxMinimiser(optax.adam(0.1), _TOL, _TOL), _quadratic, 0.0),
    "GaussNewton": (optx.least_squares, optx.GaussNewton(_TOL, _TOL), _rosenbrock_residuals, 0.5),
    "LevenbergMarquardt": (optx.least_squares, optx.LevenbergMarquardt(_TOL, _TOL), _rosenbrock_residuals, 0.5),
    "Dogleg": (optx.least_squares, optx.Dogleg(_TOL, _TOL), _rosenbrock_residuals, 0.5),
}
# optimistix 0.1.0's own default fails on these with float32 data under x64 (mixed float64
# state, type errors in its lax.cond/scan/lineax): nothing for an adjoint to be compared with.
_X64_FLOAT32_UNSUPPORTED = {"FixedPointIteration", "LBFGS", "NelderMead", "LevenbergMarquardt", "Dogleg"}
PRECISIONS = ("float64", "float32", "float32-x64")
CASES = [
    pytest.param(family, precision, id=f"{family}-{precision}")
    for precision in PRECISIONS
    for family in FAMILIES
    if not (precision == "float32-x64" and family in _X64_FLOAT32_UNSUPPORTED)
]


def _precision(precision: str):
    """(dtype, context): float32 runs with x64 off, as JAX's float32 world, or on ("-x64")."""
    if precision == "float32":
        return jnp.float32, jax.enable_x64(False)
    return getattr(jnp, precision.removesuffix("-x64")), contextlib.nullcontext()


def _solve(family: str, dtype, adjoint) -> Callable:
    entry, solver, fn, start = FAMILIES[family]
    if start is None:
        y0, options = jnp.zeros((), dtype), {"lower": jnp.array(-3.0, dtype), "upper": jnp.array(3.0, dtype)}
    else:
        y0, options = jnp.full((3,), start, dtype), None

    def solve(theta):
        sol = entry(fn, solver, y0, theta, options=options, adjoint=adjoint, max_steps=MAX_STEPS, throw=False)
        return jnp.sum(jnp.sin(sol.value)), _outputs(sol)

    return solve


def _lower(family: str, dtype, adjoint, theta, *, gradient: bool = False):
    solve = _solve(family, dtype, adjoint)
    return jax.jit(jax.value_and_grad(solve, has_aux=True) if gradient else lambda th: solve(th)[1]).lower(theta)


@pytest.mark.parametrize(("family", "precision"), CASES)
def test_every_family_without_gradient_is_the_default_program(family, precision):
    """Every k lowers to the default's very program (so the same bits, by construction); the
    bits are compared too, at k = 1."""
    dtype, context = _precision(precision)
    with context:
        theta = jnp.array(1.2, dtype)
        lowered = _lower(family, dtype, optx.RecursiveCheckpointAdjoint(), theta)
        program, reference = _program(lowered), lowered.compile()(theta)
        assert reference[0].dtype == dtype and "stablehlo.while" in program
        for k in KS:
            lowered = _lower(family, dtype, vd.KStepAdjoint(k), theta)
            assert _program(lowered) == program, f"k={k}: not the default's program"
            if k == 1:
                _assert_bits(lowered.compile()(theta), reference)


GRADIENT_CASES = [case for case in CASES if case.values[1] != "float32-x64"]


@pytest.mark.parametrize(("family", "precision"), GRADIENT_CASES)
def test_every_family_with_gradient(family, precision):
    """Under a gradient: the default's outputs, bit for bit, and a finite gradient, at k = 1
    (a restart from a kept carry) and at the middle value; there, when it covers every step
    (+ 1 for the line-search methods, whose output lags their last step), the default's
    gradient."""
    dtype, context = _precision(precision)
    with context:
        theta = jnp.array(1.2, dtype)
        ks = (1, MAX_STEPS // 2)
        adjoints = (optx.RecursiveCheckpointAdjoint(), *(vd.KStepAdjoint(k) for k in ks))

        @jax.jit
        def gradients(th):
            return [jax.value_and_grad(_solve(family, dtype, adjoint), has_aux=True)(th) for adjoint in adjoints]

        ((_, reference), exact), *truncated = gradients(theta)
        n_steps = int(reference[2])
        for k, ((_, outputs), gradient) in zip(ks, truncated, strict=True):
            _assert_bits(outputs, reference)
            assert gradient.dtype == dtype and np.isfinite(gradient)
            if k >= n_steps + 1:
                tolerance = 1e-12 if dtype == jnp.float64 else 1e-5
                np.testing.assert_allclose(gradient, exact, rtol=tolerance, atol=tolerance, err_msg=f"k={k}")


@pytest.mark.parametrize("family", ["BFGS", "Newton"])
def test_k_beyond_max_steps_is_the_default_adjoint(family):
    """k >= max_steps: every step is one of the last k, and the loop, gradient included, is
    `vardax_jax.RecursiveCheckpointAdjoint`'s very program."""
    theta = jnp.array(1.2)
    for gradient in (False, True):
        want = _program(_lower(family, jnp.float64, vd.RecursiveCheckpointAdjoint(), theta, gradient=gradient))
        for k in (MAX_STEPS, 10**6):
            assert _program(_lower(family, jnp.float64, vd.KStepAdjoint(k), theta, gradient=gradient)) == want


# --- what else the adjoint promises ------------------------------------------------------------


def _fixed_point_loss(theta, adjoint, max_steps=MAX_STEPS):
    solver = optx.FixedPointIteration(_TOL, _TOL)
    sol = optx.fixed_point(_contraction, solver, jnp.zeros(2), theta, adjoint=adjoint, max_steps=max_steps, throw=False)
    return jnp.sum(sol.value)


@pytest.mark.parametrize("adjoint", [optx.RecursiveCheckpointAdjoint(), vd.KStepAdjoint(2)], ids=["default", "k=2"])
def test_forward_mode_raises_as_the_default(adjoint):
    """Both loops are custom VJPs: jax.jvp is refused the same way (optx.ImplicitAdjoint is
    the adjoint for forward mode)."""
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda th: _fixed_point_loss(th, adjoint), (jnp.ones(2),), (jnp.ones(2),))


def test_vmap_of_the_gradient_is_per_example():
    """Each example stops at its own step count, so each restarts from its own kept carry."""
    thetas = jnp.array([[0.1, 0.2], [1.0, -3.0], [2.0, 0.5]])
    grad = jax.jit(jax.grad(_fixed_point_loss), static_argnums=1)
    batched = jax.jit(jax.vmap(jax.grad(_fixed_point_loss), in_axes=(0, None)), static_argnums=1)(
        thetas, vd.KStepAdjoint(3))
    for theta, gradient in zip(thetas, batched, strict=True):
        np.testing.assert_array_equal(gradient, grad(theta, vd.KStepAdjoint(3)))


def test_restart_memory_does_not_grow_with_k_without_a_step_bound():
    """max_steps=None: the carries kept to restart the last k steps are two for every k (the
    old warm-up kept a ring of k); what grows is the checkpointed last k steps, log2 k carries.
    XLA's temporary bytes of the compiled gradient, on a 2048-unknown problem."""
    dim = 2048

    def temp_bytes(k):
        def loss(theta):
            solver = optx.GradientDescent(learning_rate=0.4, rtol=1e-10, atol=1e-10)
            sol = optx.minimise(lambda y, th: 0.5 * jnp.sum(y**2) - jnp.sum(th * y), solver, jnp.zeros(dim), theta,
                                adjoint=vd.KStepAdjoint(k), max_steps=None, throw=False)
            return jnp.sum(sol.value)

        return jax.jit(jax.grad(loss)).lower(jnp.ones(dim)).compile().memory_analysis().temp_size_in_bytes

    vector = 8 * dim  # the carry of gradient descent is a few such vectors
    assert temp_bytes(256) - temp_bytes(4) < 64 * vector  # a ring of 252 more carries: > 1000 vectors
