"""assert_adjoint_calibrated: random-probe comparison of a cheap adjoint with the exact one."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import vardax_jax as vd
from vardax_jax import solver

K = 4


@pytest.fixture(scope="module")
def case():
    model = vd.FourDVarNet1D(8, 3, hidden_dim=2, prior_hidden_dim=3, n_solver_steps=K, key=jr.PRNGKey(0))
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((2, 3, 8))
    obs[rng.random(obs.shape) < 0.5] = np.nan
    batch = vd.make_batch(obs)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def solve_with(fn):
        return jax.jit(lambda p: fn(eqx.combine(p, static), batch))

    return params, solve_with


def test_exact_kstep_is_calibrated(case):
    """KStepAdjoint is reverse-mode only (its live loop is equinox's checkpointed one): "auto"
    compares VJPs."""
    params, solve_with = case
    exact = solve_with(solver.solve_4dvarnet_unrolled)
    full = solve_with(lambda m, b: solver.solve_4dvarnet_kstep(m, b, K))
    error = vd.assert_adjoint_calibrated(full, exact, params, key=jr.PRNGKey(1), n_probes=3)
    assert error < 1e-12


def test_truncated_is_not_calibrated(case):
    params, solve_with = case
    exact = solve_with(solver.solve_4dvarnet_unrolled)
    one_step = solve_with(lambda m, b: solver.solve_4dvarnet_kstep(m, b, 1))
    message = r"max relative vjp error \d\.\d+e[-+]\d+ over 3 probes exceeds threshold 0.05"
    with pytest.raises(AssertionError, match=message):
        vd.assert_adjoint_calibrated(one_step, exact, params, key=jr.PRNGKey(1), n_probes=3)
    loose = vd.assert_adjoint_calibrated(one_step, exact, params, key=jr.PRNGKey(1), n_probes=3, threshold=10.0)
    assert 0.05 < loose <= 10.0


def test_checkpointed_falls_back_to_vjps(case):
    """equinox's checkpointed while loop has no forward mode: "auto" compares VJPs instead."""
    params, solve_with = case
    checkpointed = solve_with(solver.solve_4dvarnet_checkpointed)
    exact = solve_with(solver.solve_4dvarnet_unrolled)
    with pytest.raises(Exception):  # noqa: B017 - whatever JAX raises for a jvp of the loop
        jax.jvp(checkpointed, (params,), (jax.tree.map(jnp.ones_like, params),))
    error = vd.assert_adjoint_calibrated(checkpointed, exact, params, key=jr.PRNGKey(2), n_probes=3)
    assert error < 1e-10
