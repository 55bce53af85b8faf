"""The inner-solve loops: RecursiveCheckpoint (exact, sublinear memory) and KStepAdjoint."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optimistix as optx
import pytest
from jax.flatten_util import ravel_pytree

import pipekit_cycle as pk
import vardax_jax as vd
from vardax_jax import solver

B, T, N, H, K = 2, 4, 8, 4, 4


def _batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal(shape)
    obs[rng.random(shape) < 0.5] = np.nan
    return vd.make_batch(obs, target=rng.standard_normal(shape))


def _grad(solve, model, batch):
    """Gradient of the MSE w.r.t. the model's parameters, flattened."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p):
        return jnp.mean((solve(eqx.combine(p, static), batch) - batch.target) ** 2)

    return ravel_pytree(jax.jit(jax.grad(loss))(params))[0]


def _rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.fixture(scope="module")
def setup():
    model = vd.FourDVarNet1D(N, T, hidden_dim=H, prior_hidden_dim=H, n_solver_steps=K, key=jr.PRNGKey(0))
    batch = _batch((B, T, N))
    exact = _grad(solver.solve_4dvarnet_unrolled, model, batch)
    one_step = _grad(lambda m, b: solver.solve_4dvarnet_kstep(m, b, 1), model, batch)
    return model, batch, exact, one_step


@pytest.mark.parametrize("checkpoints", [None, 2])
def test_checkpointed_gradient_equals_unrolled(setup, checkpoints):
    model, batch, exact, _one_step = setup
    grad = _grad(lambda m, b: solver.solve_4dvarnet_checkpointed(m, b, checkpoints), model, batch)
    assert _rel(grad, exact) < 1e-10


def test_checkpointed_through_model_and_2d():
    model = vd.FourDVarNet2D(3, 4, 5, hidden_dim=2, prior_hidden_dim=2, n_solver_steps=2, padding="circular",
                             solver_adjoint=pk.RecursiveCheckpointAdjoint(3), key=jr.PRNGKey(1))
    batch = _batch((B, 3, 4, 5), seed=1)
    exact = _grad(solver.solve_4dvarnet_unrolled, model, batch)
    assert _rel(_grad(lambda m, b: m(b), model, batch), exact) < 1e-10


def test_kstep_forward_bit_identical_for_every_k(setup):
    """Bit for bit against the default adjoint (DESIGN 3.2); the unrolled reference is another
    XLA program (a scan), equal to rounding."""
    model, batch, _, _ = setup
    default = model(batch)
    unrolled = eqx.filter_jit(solver.solve_4dvarnet_unrolled)(model, batch)
    np.testing.assert_allclose(np.asarray(default), np.asarray(unrolled), rtol=1e-13, atol=1e-15)
    for k in range(1, K + 2):
        assert np.array_equal(model(batch, adjoint=pk.TruncatedAdjoint(k)), default), k


def test_kstep_gradient_exact_iff_k_covers_every_step(setup):
    model, batch, exact, one_step = setup
    assert _rel(_grad(lambda m, b: m(b, adjoint=vd.KStepAdjoint(K)), model, batch), exact) < 1e-12
    assert _rel(one_step, exact) > 1e-3


def test_kstep_cuts_state_and_lstm_carry(setup):
    """k = 1: the gradient equals that of one step started from the warm-up's (x, carry) fed in
    as constants, so the gate weights get nothing through the warm-up."""
    model, batch, exact, one_step = setup
    x0 = batch.mask * batch.input
    def warm_up(m, b):
        step = lambda _, xc: solver.solver_step(m, b, *xc)  # noqa: E731
        return jax.lax.fori_loop(0, K - 1, step, (x0, m.grad_mod.init_carry(x0)))

    warm_x, warm_carry = jax.jit(warm_up)(model, batch)
    warm_x, warm_carry = jax.device_get((warm_x, warm_carry))  # plain constants

    def one_live_step(m, b):
        return solver.solver_step(m, b, jnp.asarray(warm_x), jax.tree.map(jnp.asarray, warm_carry))[0]

    params, _static = eqx.partition(model, eqx.is_inexact_array)
    k1 = one_step
    constant_start = _grad(one_live_step, model, batch)
    np.testing.assert_allclose(k1, constant_start, rtol=1e-12, atol=1e-15)
    # ... and the gate-weight gradient really differs from the full one (the carry path is cut).
    gates_slice = ravel_pytree(eqx.tree_at(lambda p: p.grad_mod.gates.weight, jax.tree.map(jnp.zeros_like, params),
                                           jnp.ones_like(params.grad_mod.gates.weight)))[0].astype(bool)
    assert _rel(k1[gates_slice], exact[gates_slice]) > 1e-3


def _temp_bytes(n_steps, solve):
    model = vd.FourDVarNet1D(64, 8, hidden_dim=8, prior_hidden_dim=8, n_solver_steps=n_steps, key=jr.PRNGKey(0))
    batch = _batch((4, 8, 64))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, b):
        return jnp.mean((solve(eqx.combine(p, static), b) - b.target) ** 2)

    return jax.jit(jax.grad(loss)).lower(params, batch).compile().memory_analysis().temp_size_in_bytes


def test_memory_checkpointed_sublinear_unrolled_linear_kstep_flat(record_property):
    solves = {
        "unrolled": solver.solve_4dvarnet_unrolled,
        "checkpointed": solver.solve_4dvarnet_checkpointed,
        "kstep1": lambda m, b: solver.solve_4dvarnet_kstep(m, b, 1),
    }
    temp = {(name, k): _temp_bytes(k, solve) for name, solve in solves.items() for k in (8, 64)}
    for key, value in temp.items():
        record_property(f"temp_bytes_{key[0]}_K{key[1]}", value)
    print("compiled temp bytes (K=8, K=64):", temp)
    assert temp["unrolled", 64] > 5 * temp["unrolled", 8]
    assert temp["checkpointed", 64] <= 3 * temp["checkpointed", 8]
    assert temp["kstep1", 64] <= 1.3 * temp["kstep1", 8]


class PythonUnrolledAdjoint(optx.AbstractAdjoint):
    """A user's own adjoint, defined outside the package: plain backprop through a Python loop
    of guarded steps (optimistix's protocol: append a while loop to the inputs)."""

    def apply(self, primal_fn, rewrite_fn, inputs, tags):
        def while_loop(cond_fun, body_fun, init_val, *, max_steps, **kwargs):
            val = init_val
            for _ in range(max_steps):
                val = jax.lax.cond(cond_fun(val), body_fun, lambda v: v, val)
            return val

        return primal_fn((*inputs, while_loop))


@pytest.mark.parametrize("solver_name", ["learned", "fixed_point"])
def test_an_adjoint_from_outside_the_package_plugs_in(solver_name):
    cfg = pk.FourDVarNetConfig(state_shape=(N,), n_time=T, hidden_dim=H, prior_hidden_dim=H, n_solver_steps=K,
                               solver=solver_name)
    model = vd.build_model(cfg, seed=0).with_adjoint(PythonUnrolledAdjoint())
    batch = _batch((B, T, N))
    assert isinstance(model.solver_adjoint, PythonUnrolledAdjoint)
    exact = _grad(lambda m, b: m(b, adjoint=pk.RecursiveCheckpointAdjoint()), model, batch)
    assert _rel(_grad(lambda m, b: m(b), model, batch), exact) < 1e-12
    np.testing.assert_array_equal(np.asarray(model(batch)), np.asarray(model(batch, adjoint="checkpoint")))
