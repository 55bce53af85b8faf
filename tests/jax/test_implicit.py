"""ImplicitAdjoint: the fixed point x* = m y + (1 - m) phi(x*), differentiated by the IFT."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
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


def _contractive(model, scale=0.3):
    # Shrinking the prior's output layer makes T a contraction, so the fixed point exists.
    return eqx.tree_at(lambda m: m.prior.conv_out.weight, model, model.prior.conv_out.weight * scale)


def _grads(solve, model, batch):
    """Gradient of the MSE w.r.t. (parameters, batch), flattened."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, b):
        return jnp.mean((solve(eqx.combine(p, static), b) - b.target) ** 2)

    return ravel_pytree(jax.jit(jax.grad(loss, argnums=(0, 1)))(params, batch))[0]


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.fixture(scope="module")
def case1d():
    model = _contractive(vd.FourDVarNet1D(8, T, hidden_dim=2, prior_hidden_dim=4, key=jr.PRNGKey(0)))
    batch = _batch((B, T, 8))
    return model, batch, _grads(lambda m, b: solver.fixedpoint_unrolled(m, b, 200), model, batch)


@pytest.mark.parametrize(
    ("name", "solver_type"), [("gmres", lx.GMRES), ("neumann", vd.FixedPointNeumann), ("dense", lx.LU)]
)
def test_implicit_1d_matches_long_unrolled_iteration(case1d, name, solver_type):
    model, batch, reference = case1d
    adjoint = vd.to_optimistix_adjoint(pk.ImplicitAdjoint(name, rtol=1e-12, atol=1e-12))
    native = adjoint.linear_solver.solver if name != "dense" else adjoint.linear_solver
    assert isinstance(native, solver_type) and adjoint.linear_solver_name == name
    grad = _grads(lambda m, b: solver.solve_4dvarnet_1d_fixedpoint(m, b, adjoint), model, batch)
    assert _rel(grad, reference) < 1e-6


def test_auto_is_gmres_and_tolerances_travel():
    adjoint = vd.to_native_adjoint(pk.ImplicitAdjoint(rtol=1e-9, atol=1e-7, max_steps=30))
    assert isinstance(adjoint, vd.ImplicitAdjoint) and isinstance(adjoint, optx.ImplicitAdjoint)
    gmres = adjoint.linear_solver.solver
    assert isinstance(adjoint.linear_solver, WarnIfStoppedShort) and isinstance(gmres, lx.GMRES)
    assert (gmres.rtol, gmres.atol, gmres.max_steps) == (1e-9, 1e-7, 30)
    assert (adjoint.rtol, adjoint.atol, adjoint.max_steps) == (1e-9, 1e-7, 30)


def test_implicit_2d_matches_long_unrolled_iteration():
    model = _contractive(vd.FourDVarNet2D(3, 4, 5, hidden_dim=2, prior_hidden_dim=3, padding="circular",
                                          solver_adjoint=pk.ImplicitAdjoint("dense", rtol=1e-12, atol=1e-12),
                                          key=jr.PRNGKey(1)))
    batch = _batch((B, 3, 4, 5), seed=1)
    reference = _grads(lambda m, b: solver.fixedpoint_unrolled(m, b, 200), model, batch)
    assert _rel(_grads(lambda m, b: m(b), model, batch), reference) < 1e-6  # the model solves the fixed point
    with pytest.raises(ValueError, match="1D model"):
        solver.solve_4dvarnet_1d_fixedpoint(model, batch)


def test_fixed_point_solution_and_warning(case1d):
    model, batch, _ = case1d
    implicit = model.with_adjoint(pk.ImplicitAdjoint(rtol=1e-10, atol=1e-10))
    with warnings.catch_warnings():
        warnings.simplefilter("error", pk.ConvergenceWarning)
        x = jax.block_until_ready(implicit(batch))
        jax.effects_barrier()
    fixed = batch.mask * batch.input + (1 - batch.mask) * model.prior(x)
    assert float(jnp.max(jnp.abs(fixed - x))) < 1e-8
    message = r"after 3 steps \(max_steps=3\): residual max\|x_\(n\+1\) - x_n\| = \d\.\d+e"
    with pytest.warns(pk.ConvergenceWarning, match=message):
        jax.block_until_ready(solver.solve_4dvarnet_1d_fixedpoint(model, batch, vd.ImplicitAdjoint(max_steps=3)))
        jax.effects_barrier()


@pytest.mark.parametrize("name", ["gmres", "neumann"])
def test_backward_solve_out_of_steps_warns_like_torch(case1d, name):
    """optimistix would raise at run time; like vardax_torch, the last iterate is used, with a
    ConvergenceWarning, and the gradient stays finite and close to the converged one."""
    model, batch, reference = case1d
    short = vd.ImplicitAdjoint(name, rtol=1e-14, atol=1e-14, max_steps=2)
    with pytest.warns(pk.ConvergenceWarning) as record:
        grad = _grads(lambda m, b: solver.solve_4dvarnet_1d_fixedpoint(m, b, short), model, batch)
        jax.effects_barrier()
    messages = [str(w.message) for w in record]
    assert any(f"implicit adjoint: the {name} solve" in m and "did not converge in 2 steps" in m for m in messages)
    assert 1e-6 < _rel(grad, reference) < 0.5


def _temp_bytes(max_steps, solve):
    model = _contractive(vd.FourDVarNet1D(64, 8, hidden_dim=2, prior_hidden_dim=8, key=jr.PRNGKey(0)))
    batch = _batch((4, 8, 64))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, b):
        return jnp.mean((solve(eqx.combine(p, static), b, max_steps) - b.target) ** 2)

    return jax.jit(jax.grad(loss)).lower(params, batch).compile().memory_analysis().temp_size_in_bytes


def test_implicit_memory_independent_of_iteration_count(record_property):
    def implicit(m, b, steps):
        return solver.solve_4dvarnet_1d_fixedpoint(m, b, vd.ImplicitAdjoint("neumann", max_steps=steps))

    temp = {steps: _temp_bytes(steps, implicit) for steps in (50, 400)}
    record_property("implicit_temp_bytes", temp)
    print("implicit compiled temp bytes (max_steps 50, 400):", temp)
    assert temp[400] <= temp[50]
