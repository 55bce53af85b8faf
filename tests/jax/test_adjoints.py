"""Spec -> optimistix mapping, and KStepAdjoint as the adjoint= of optimistix solves."""

import dataclasses

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optax
import optimistix as optx
import pytest

import pipekit_cycle as pk
import vardax_jax as vd


def test_every_spec_maps():
    assert vd.to_optimistix_adjoint is vd.to_native_adjoint
    assert vd.to_native_adjoint(pk.TruncatedAdjoint(3)) == vd.KStepAdjoint(k=3)
    one = vd.to_native_adjoint("truncated")
    assert type(one) is vd.OneStepAdjoint and isinstance(one, vd.KStepAdjoint) and one.k == 1 == vd.OneStepAdjoint().k
    checkpoint = vd.to_native_adjoint(pk.RecursiveCheckpointAdjoint(8))
    assert isinstance(checkpoint, optx.RecursiveCheckpointAdjoint) and checkpoint.checkpoints == 8
    assert isinstance(vd.KStepAdjoint(2), optx.AbstractAdjoint)
    implicit = vd.to_native_adjoint(pk.ImplicitAdjoint("neumann", rtol=1e-8, atol=1e-9, max_steps=40))
    assert isinstance(implicit, optx.ImplicitAdjoint) and isinstance(implicit, vd.ImplicitAdjoint)
    fields = (implicit.linear_solver, implicit.rtol, implicit.atol, implicit.max_steps)
    assert fields == ("neumann", 1e-8, 1e-9, 40)
    assert isinstance(implicit.lineax_solver.solver, vd.FixedPointNeumann)  # inside WarnIfStoppedShort
    assert isinstance(vd.to_native_adjoint(pk.ImplicitAdjoint("dense")).lineax_solver, lx.LU)


@pytest.mark.parametrize("spec", [pk.DirectAdjoint(), pk.BacksolveAdjoint()])
def test_dynamics_only_specs_are_refused(spec):
    with pytest.raises(ValueError, match="belongs to the 'dynamics' layer") as info:
        vd.to_native_adjoint(spec)
    with pytest.raises(ValueError) as shared:
        pk.check_layer(spec, "inner_solve")
    assert str(info.value) == str(shared.value)


def test_native_passes_through_and_foreign_specs_map():
    for native in (optx.ImplicitAdjoint(), optx.RecursiveCheckpointAdjoint(3), vd.KStepAdjoint(2), vd.OneStepAdjoint()):
        assert vd.to_native_adjoint(native) is native

    @dataclasses.dataclass(frozen=True)
    class TruncatedAdjoint:  # same name and fields, another library
        k: int = 5

    assert vd.to_native_adjoint(TruncatedAdjoint()) == vd.KStepAdjoint(5)
    with pytest.raises(TypeError):
        vd.to_native_adjoint(object())
    with pytest.raises(ValueError, match="TruncatedAdjoint.k must be an int >= 1"):  # the spec's words
        vd.KStepAdjoint(0)


def _root(y, theta):
    return y**3 + y - theta


def _minimise(y, theta):
    return jnp.sum((y - theta) ** 2) + 0.1 * jnp.sum(y**4)


def _fixed(y, theta):
    return 0.5 * jnp.tanh(y) + theta


def _objective(kind, adjoint):
    y0 = jnp.zeros(3)

    def f(theta):
        if kind == "root_find":
            sol = optx.root_find(_root, optx.Newton(rtol=1e-10, atol=1e-10), y0, theta, adjoint=adjoint, max_steps=32)
        elif kind == "minimise":
            sol = optx.minimise(_minimise, optx.BFGS(rtol=1e-10, atol=1e-10), y0, theta, adjoint=adjoint, max_steps=64)
        else:
            solver = optx.FixedPointIteration(rtol=1e-10, atol=1e-10)
            sol = optx.fixed_point(_fixed, solver, y0, theta, adjoint=adjoint, max_steps=64)
        return jnp.sum(jnp.sin(sol.value)), sol.stats["num_steps"]

    return jax.jit(jax.value_and_grad(f, has_aux=True))


THETA = jnp.array([0.3, -0.7, 1.2])


@pytest.mark.parametrize("kind", ["root_find", "minimise", "fixed_point"])
def test_kstep_in_optimistix_with_k_covering_all_steps_is_unrolled(kind):
    (value, n_steps), exact = _objective(kind, optx.RecursiveCheckpointAdjoint())(THETA)
    n_steps = int(n_steps)
    assert n_steps > 2
    (value_k, steps_k), grad_k = _objective(kind, vd.KStepAdjoint(n_steps))(THETA)
    assert float(value_k) == float(value) and int(steps_k) == n_steps
    assert float(jnp.max(jnp.abs(grad_k - exact))) <= 1e-12 * float(jnp.max(jnp.abs(exact)))
    if kind == "fixed_point":  # a linearly convergent solver: k = 2 < n is biased
        (value_2, steps_2), grad_2 = _objective(kind, vd.KStepAdjoint(2))(THETA)
        assert abs(float(value_2) - float(value)) < 1e-8 and int(steps_2) == n_steps
        assert float(jnp.max(jnp.abs(grad_2 - exact))) > 1e-2


def test_one_step_newton_equals_implicit():
    """Bolte, Pauwels & Vaiter (2023): one Newton step from the converged root is the IFT."""
    (_, n_steps), implicit = _objective("root_find", optx.ImplicitAdjoint())(THETA)
    assert int(n_steps) > 1
    (_, _), one_step = _objective("root_find", vd.OneStepAdjoint())(THETA)
    assert float(jnp.max(jnp.abs(one_step - implicit))) <= 1e-12


# --- KStepAdjoint as optimistix's adjoint: the last k steps of the solve itself ------------

RNG = np.random.default_rng(0)
N = 4
_A = RNG.standard_normal((N, N))
A = jnp.asarray(0.5 * _A / np.linalg.norm(_A, 2))  # a contraction
_H = RNG.standard_normal((N, N))
H = jnp.asarray(_H @ _H.T + N * np.eye(N))
LR = 0.5 / float(np.linalg.eigvalsh(np.asarray(H)).max())


def _linear_fixed_point(adjoint, **kwargs):
    def solve(theta):
        solver = optx.FixedPointIteration(rtol=1e-12, atol=1e-12)
        return optx.fixed_point(lambda y, th: A @ y + th, solver, jnp.zeros(N), theta, adjoint=adjoint,
                                max_steps=kwargs.get("max_steps", 200), throw=False).value

    return solve


@pytest.mark.parametrize("k", [1, 2, 5, 10])
def test_kstep_fixed_point_is_the_truncated_neumann_series(k):
    jacobian = jax.jacrev(_linear_fixed_point(vd.KStepAdjoint(k)))(jnp.ones(N))
    series = sum(jnp.linalg.matrix_power(A, j) for j in range(k))
    assert float(jnp.max(jnp.abs(jacobian - series))) <= 1e-10


@pytest.mark.parametrize("k", [1, 3, 7])
def test_kstep_gradient_descent_is_the_truncated_series(k):
    def solve(theta):
        gd = optx.GradientDescent(learning_rate=LR, rtol=1e-12, atol=1e-12)
        return optx.minimise(lambda y, th: 0.5 * y @ H @ y - th @ y, gd, jnp.zeros(N), theta,
                             adjoint=vd.KStepAdjoint(k), max_steps=10_000, throw=False).value

    jacobian = jax.jacrev(solve)(jnp.ones(N))
    step = jnp.eye(N) - LR * H
    series = sum(LR * jnp.linalg.matrix_power(step, j) for j in range(k))
    assert float(jnp.max(jnp.abs(jacobian - series))) <= 1e-10


def test_kstep_forward_is_the_solve_own():
    """The bugs of a warm start from y*: Bisection's root, Adam's value, a fixed point cut at
    max_steps (all measured on optimistix's own solvers)."""

    def bisect(adjoint):
        return optx.root_find(lambda y, _: y**3 + y - 2.0, optx.Bisection(rtol=1e-10, atol=1e-10), jnp.array(0.0),
                              options={"lower": -3.0, "upper": 3.0}, adjoint=adjoint, max_steps=200)

    reference, truncated = bisect(optx.RecursiveCheckpointAdjoint()), bisect(vd.KStepAdjoint(1))
    assert float(truncated.value) == float(reference.value) and abs(float(truncated.value) - 1.0) < 1e-8
    assert truncated.result == optx.RESULTS.successful

    def adam(adjoint):
        solver = optx.OptaxMinimiser(optax.adam(1e-2), rtol=1e-8, atol=1e-8)
        return optx.minimise(lambda y, th: jnp.sum((y - th) ** 2), solver, jnp.zeros(N), jnp.ones(N),
                             adjoint=adjoint, max_steps=50, throw=False).value

    reference_adam = adam(optx.RecursiveCheckpointAdjoint())
    np.testing.assert_array_equal(np.asarray(adam(vd.KStepAdjoint(1))), np.asarray(reference_adam))
    cut = _linear_fixed_point(vd.KStepAdjoint(1), max_steps=3)(jnp.ones(N))
    y = jnp.zeros(N)
    for _ in range(3):
        y = A @ y + jnp.ones(N)
    np.testing.assert_array_equal(np.asarray(cut), np.asarray(y))


@pytest.mark.parametrize("k", [1, 2, 7])
def test_kstep_minimisers_do_not_return_a_silent_zero(k):
    """k steps of gradient descent and Adam move the gradient off zero."""
    for solver in (optx.GradientDescent(learning_rate=0.1, rtol=1e-10, atol=1e-10),
                   optx.OptaxMinimiser(optax.adam(1e-2), rtol=1e-10, atol=1e-10)):
        def loss(theta, solver=solver):
            return jnp.sum(optx.minimise(lambda y, th: jnp.sum((y - th) ** 2) + 0.1 * jnp.sum(y**4), solver,
                                         jnp.zeros(N), theta, adjoint=vd.KStepAdjoint(k), max_steps=256,
                                         throw=False).value)

        assert float(jnp.min(jnp.abs(jax.grad(loss)(jnp.ones(N))))) > 1e-4


def test_kstep_apply_reads_nothing_of_the_inputs_layout():
    """KStepAdjoint.apply only appends its while loop, as optimistix's own adjoints do: a
    primal_fn with any inputs of its own runs through it."""

    def primal_fn(inputs):
        theta, scale, while_loop = inputs
        _, y = while_loop(lambda c: c[0] < 6, lambda c: (c[0] + 1, scale * c[1] + theta), (0, jnp.zeros(())),
                          max_steps=6)
        return y, None

    grad = jax.grad(lambda th: vd.KStepAdjoint(2).apply(primal_fn, None, (th, 0.5), frozenset())[0])(1.0)
    assert float(grad) == 1.5  # 1 + 0.5: the last two steps of y <- y / 2 + theta
