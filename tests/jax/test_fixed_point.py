"""solver="fixed_point": x <- m y + (1 - m) phi(x) under every adjoint (DESIGN 3.2)."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
import pytest
from jax.flatten_util import ravel_pytree

import pipekit_cycle as pk
import vardax_jax as vd
from vardax_jax import solver
from vardax_jax.adjoints import WarnIfStoppedShort

B, T = 2, 4


def _batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal(shape)
    obs[rng.random(shape) < 0.5] = np.nan
    return vd.make_batch(obs, target=rng.standard_normal(shape))


def _model(state_shape, n_steps=60, tol=1e-12, scale=0.3, **kwargs):
    # Shrinking the prior's output layer makes T a contraction, so the fixed point exists.
    cfg = pk.FourDVarNetConfig(state_shape=state_shape, n_time=T, hidden_dim=2, prior_hidden_dim=4,
                               n_solver_steps=n_steps, solver="fixed_point", fixed_point_rtol=tol,
                               fixed_point_atol=tol, **kwargs)
    model = vd.build_model(cfg, seed=0)
    return eqx.tree_at(lambda m: m.prior.conv_out.weight, model, model.prior.conv_out.weight * scale)


def _grads(solve, model, batch):
    """Gradient of the MSE w.r.t. (parameters, batch), flattened."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, b):
        return jnp.mean((solve(eqx.combine(p, static), b) - b.target) ** 2)

    return ravel_pytree(jax.jit(jax.grad(loss, argnums=(0, 1)))(params, batch))[0]


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.fixture(scope="module", params=[(8,), (4, 5)], ids=["1d", "2d"])
def case(request):
    model = _model(request.param, padding="circular" if len(request.param) == 2 else "zeros")
    batch = _batch((B, T, *request.param))
    return model, batch, _grads(lambda m, b: solver.fixedpoint_unrolled(m, b, 200), model, batch)


def test_every_adjoint_computes_the_same_forward(case):
    model, batch, _ = case
    outputs = [np.asarray(model(batch, adjoint=a)) for a in ("checkpoint", "checkpoint:3", "truncated:2", "implicit")]
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])
    fixed = solver.fixedpoint_map(outputs[0], (model, batch))[0]
    assert float(jnp.max(jnp.abs(fixed - outputs[0]))) < 1e-11  # it IS a fixed point


@pytest.mark.parametrize(("name", "solver_type"), [("gmres", lx.GMRES), ("neumann", vd.FixedPointNeumann),
                                                    ("dense", lx.LU)])
def test_implicit_matches_backprop_through_a_long_converged_iteration(case, name, solver_type):
    model, batch, reference = case
    adjoint = vd.to_optimistix_adjoint(pk.ImplicitAdjoint(name, rtol=1e-12, atol=1e-12))
    lineax_solver = adjoint.lineax_solver
    native = lineax_solver.solver if name != "dense" else lineax_solver
    assert isinstance(native, solver_type) and adjoint.linear_solver == name
    assert _rel(_grads(lambda m, b: m(b, adjoint=adjoint), model, batch), reference) < 1e-9
    checkpointed = _grads(lambda m, b: m(b, adjoint="checkpoint"), model.with_adjoint("checkpoint"), batch)
    assert _rel(checkpointed, reference) < 1e-9


def test_implicit_matches_float64_finite_differences(case):
    model, batch, _ = case
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = ravel_pytree(params)
    direction = jnp.asarray(np.random.default_rng(3).standard_normal(flat.shape))

    def loss(vector, adjoint):
        return jnp.mean((eqx.combine(unravel(vector), static)(batch, adjoint=adjoint) - batch.target) ** 2)

    grad = jax.grad(loss)(flat, "implicit")
    eps = 1e-6
    fd = (loss(flat + eps * direction, "checkpoint") - loss(flat - eps * direction, "checkpoint")) / (2 * eps)
    assert abs(float(grad @ direction) - float(fd)) <= 1e-7 * abs(float(fd))


def test_truncation_covering_every_iteration_is_the_checkpointed_gradient(case):
    model, batch, _ = case
    exact = _grads(lambda m, b: m(b, adjoint="checkpoint"), model, batch)
    assert _rel(_grads(lambda m, b: m(b, adjoint=pk.TruncatedAdjoint(60)), model, batch), exact) < 1e-13
    # k = 1 < iterations: the last iteration only, a biased gradient
    assert _rel(_grads(lambda m, b: m(b, adjoint=pk.TruncatedAdjoint(1)), model, batch), exact) > 1e-3


def test_stopping_rule_belongs_to_the_solver():
    model, batch = _model((8,), n_steps=3, tol=1e-10), _batch((B, T, 8))
    message = r"did not converge in n_solver_steps=3 steps: residual max\|x_\(n\+1\) - x_n\| = \d\.\d+e"
    for adjoint in ("checkpoint", "truncated:1", "implicit"):
        with pytest.warns(pk.ConvergenceWarning, match=message):
            jax.block_until_ready(model(batch, adjoint=adjoint))
            jax.effects_barrier()
    converged = _model((8,), n_steps=100, tol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pk.ConvergenceWarning)
        jax.block_until_ready(converged(batch))
        jax.effects_barrier()
    exactly = _model((8,), n_steps=3, tol=0.0)  # no tolerance: exactly n_solver_steps, no warning
    x = batch.mask * batch.input
    for _ in range(3):
        x = solver.fixedpoint_map(x, (exactly, batch))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", pk.ConvergenceWarning)
        np.testing.assert_array_equal(np.asarray(exactly(batch)), np.asarray(x))
        jax.effects_barrier()


def test_implicit_needs_the_fixed_point_solver():
    cfg = pk.FourDVarNetConfig(state_shape=(8,), n_time=T)
    with pytest.raises(ValueError, match='solver="fixed_point"'):
        cfg.replace(solver_adjoint=pk.ImplicitAdjoint())
    model = vd.build_model(cfg, seed=0)
    for call in (lambda: model(_batch((B, T, 8)), adjoint="implicit"), lambda: model.with_adjoint("implicit")):
        with pytest.raises(ValueError, match='solver="fixed_point"'):
            call()


def test_auto_is_gmres_and_tolerances_travel():
    adjoint = vd.to_native_adjoint(pk.ImplicitAdjoint(rtol=1e-9, atol=1e-7, max_steps=30))
    assert isinstance(adjoint, vd.ImplicitAdjoint) and isinstance(adjoint, optx.ImplicitAdjoint)
    assert adjoint.linear_solver == "auto"
    gmres = adjoint.lineax_solver.solver
    assert isinstance(adjoint.lineax_solver, WarnIfStoppedShort) and isinstance(gmres, lx.GMRES)
    assert (gmres.rtol, gmres.atol, gmres.max_steps) == (1e-9, 1e-7, 30)
    assert (adjoint.rtol, adjoint.atol, adjoint.max_steps) == (1e-9, 1e-7, 30)


@pytest.mark.parametrize("name", ["gmres", "neumann"])
def test_backward_solve_out_of_steps_warns_like_torch(case, name):
    """optimistix would raise at run time; like vardax_torch, the last iterate is used, with a
    ConvergenceWarning, and the gradient stays finite and close to the converged one."""
    model, batch, reference = case
    short = vd.ImplicitAdjoint(name, rtol=1e-14, atol=1e-14, max_steps=2)
    with pytest.warns(pk.ConvergenceWarning) as record:
        grad = _grads(lambda m, b: m(b, adjoint=short), model, batch)
        jax.effects_barrier()
    messages = [str(w.message) for w in record]
    assert any(f"implicit adjoint: the {name} solve" in m and "did not converge in 2 steps" in m for m in messages)
    assert bool(jnp.all(jnp.isfinite(grad))) and _rel(grad, reference) < 0.5


def _temp_bytes(n_steps, adjoint):
    model = _model((64,), n_steps=n_steps, tol=0.0)
    batch = _batch((4, T, 64))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, b):
        return jnp.mean((eqx.combine(p, static)(b, adjoint=adjoint) - b.target) ** 2)

    return jax.jit(jax.grad(loss)).lower(params, batch).compile().memory_analysis().temp_size_in_bytes


def test_implicit_memory_independent_of_iteration_count(record_property):
    temp = {steps: _temp_bytes(steps, vd.ImplicitAdjoint("neumann")) for steps in (50, 400)}
    record_property("implicit_temp_bytes", temp)
    assert temp[400] <= temp[50]
