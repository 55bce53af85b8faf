"""Vector fields and ODE forward models of both backends, against numpy and against each other."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import pipekit_cycle as pc
from pipekit_cycle.problems import lorenz63_vector_field, lorenz96_vector_field, rk4_step
from vardax_jax import dynamics as jd
from vardax_torch import dynamics as td

F64 = torch.float64


def three_eighths_step(field, y: np.ndarray, h: float) -> np.ndarray:
    """Kutta's 3/8 rule in numpy: the independent reference for ``solver="rk4"``."""
    k1 = field(y)
    k2 = field(y + h * k1 / 3)
    k3 = field(y + h * (k2 - k1 / 3))
    k4 = field(y + h * (k1 - k2 + k3))
    return y + h * (k1 + 3 * (k2 + k3) + k4) / 8


def numpy_rollout(step, field, x0: np.ndarray, n_steps: int, dt: float, substeps: int) -> np.ndarray:
    states, y = [x0], x0
    for _ in range(n_steps):
        for _ in range(substeps):
            y = step(field, y, dt / substeps)
        states.append(y)
    return np.stack(states, axis=-2)


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


X63 = np.array([[1.0, 2.0, 20.0], [-5.0, -6.0, 22.0]])
X96 = 8.0 + np.array([[0.1, -0.3, 0.2, 0.5, -0.4, 0.0], [1.0, 0.5, -0.5, 0.2, 0.1, -1.0]])


def test_vector_fields_match_numpy_with_non_default_parameters():
    expected63 = lorenz63_vector_field(X63, 9.0, 27.0, 2.5)
    np.testing.assert_allclose(jd.Lorenz63(9.0, 27.0, 2.5)(jnp.asarray(X63)), expected63, rtol=1e-15)
    np.testing.assert_allclose(
        td.Lorenz63(9.0, 27.0, 2.5, dtype=F64)(torch.tensor(X63)).detach().numpy(), expected63, rtol=1e-15
    )
    expected96 = lorenz96_vector_field(X96, 7.5)
    np.testing.assert_allclose(jd.Lorenz96(6, 7.5)(jnp.asarray(X96)), expected96, rtol=1e-15)
    np.testing.assert_allclose(
        td.Lorenz96(6, 7.5, dtype=F64)(torch.tensor(X96)).detach().numpy(), expected96, rtol=1e-15
    )
    matrix = np.array([[0.0, 1.0, 0.0], [-1.0, -0.1, 0.0], [0.0, 0.0, -0.5]])
    np.testing.assert_allclose(jd.LinearField(matrix)(jnp.asarray(X63)), X63 @ matrix.T, rtol=1e-15)
    assert td.field_parameters(td.Lorenz63(dtype=F64)) == pytest.approx({"sigma": 10.0, "rho": 28.0, "beta": 8 / 3})
    assert jd.field_parameters(jd.Lorenz96(6)) == {"forcing": 8.0}


@pytest.mark.parametrize("backend", [jd, td], ids=["jax", "torch"])
def test_rk4_is_kuttas_three_eighths_rule(backend):
    reference = numpy_rollout(three_eighths_step, lorenz63_vector_field, X63, 30, 0.01, 2)
    trajectory = backend.rollout_numpy("lorenz63", X63, 30, 0.01, substeps=2)
    assert trajectory.shape == (2, 31, 3)
    assert rel(trajectory, reference) < 1e-13
    # Not the classical RK4 of pipekit_cycle.problems: measured 7.2e-9 relative over 30 steps.
    classical = numpy_rollout(rk4_step_field, lorenz63_vector_field, X63, 30, 0.01, 2)
    assert 1e-10 < rel(trajectory, classical) < 1e-6


def rk4_step_field(field, y, h):
    return rk4_step(field, y, h)


@pytest.mark.parametrize(
    ("system", "x0", "dt", "n_steps"),
    [("lorenz63", X63, 0.01, 60), ("lorenz96", X96, 0.05, 20)],
)
def test_trajectories_agree_across_backends(system, x0, dt, n_steps):
    jax_trajectory = jd.rollout_numpy(system, x0, n_steps, dt, substeps=2)
    torch_trajectory = td.rollout_numpy(system, x0, n_steps, dt, substeps=2)
    assert jax_trajectory.shape == torch_trajectory.shape == (2, n_steps + 1, x0.shape[-1])
    np.testing.assert_array_equal(jax_trajectory[:, 0], x0)
    # Measured: 5.6e-16 (Lorenz-63), 2.7e-15 (Lorenz-96) relative.
    assert rel(jax_trajectory, torch_trajectory) < 1e-12


def test_linear_rollout_is_the_rk4_propagator():
    """Every 4-stage order-4 RK has the stability polynomial of the classical RK4, so on
    dx/dt = A x the rollout is P^t x0 with P built from pipekit_cycle.problems.rk4_step."""
    matrix = np.array([[-0.2, 1.0, 0.0], [-1.0, -0.1, 0.3], [0.0, -0.3, -0.5]])
    propagator = rk4_step(lambda s: s @ matrix.T, np.eye(3), 0.1).T
    expected = np.stack([np.linalg.matrix_power(propagator, t) @ X63[0] for t in range(11)])
    for backend in (jd, td):
        trajectory = backend.rollout_numpy("linear", X63[0], 10, 0.1, parameters={"matrix": matrix})
        assert rel(trajectory, expected) < 1e-13


@pytest.mark.parametrize("backend", [jd, td], ids=["jax", "torch"])
def test_step_is_one_row_of_rollout(backend):
    model = backend.make_forward_model("lorenz63", 0.01, substeps=2)
    trajectory = np.asarray(backend.rollout_numpy("lorenz63", X63, 3, 0.01, substeps=2))
    first = model.step(X63)
    np.testing.assert_allclose(np.asarray(first.detach() if backend is td else first), trajectory[:, 1], rtol=1e-14)
    # An explicit dt overrides the model's: one step of 0.02 with 2 substeps of 0.01 each.
    coarse = backend.make_forward_model("lorenz63", 0.02, substeps=2)
    fine = model.step(X63, 0.02)
    expected = coarse.step(X63)
    fine, expected = (t.detach().numpy() for t in (fine, expected)) if backend is td else (fine, expected)
    assert rel(fine, expected) < 1e-14
    np.testing.assert_allclose(np.asarray(model.rollout(X63[0], 0).tolist()), X63[:1])


def test_dopri5_agrees_with_rk4_to_its_tolerance():
    fine = jd.rollout_numpy("lorenz63", X63, 20, 0.01, substeps=20)
    for backend in (jd, td):
        adaptive = backend.rollout_numpy("lorenz63", X63, 20, 0.01, solver="dopri5", rtol=1e-10, atol=1e-10)
        # Measured 7.8e-11 (jax) and 1.4e-10 (torch) relative to a 400-step RK4 reference.
        assert rel(adaptive, fine) < 1e-8


@pytest.mark.parametrize("backend", [jd, td], ids=["jax", "torch"])
def test_forward_model_protocol_and_with_adjoint(backend):
    model = backend.make_forward_model("lorenz63", 0.01)
    assert isinstance(model, pc.ForwardModel)
    assert model.dt == 0.01
    default = backend.to_dynamics_adjoint(pc.RecursiveCheckpointAdjoint())
    assert model.adjoint == default
    direct = model.with_adjoint(pc.DirectAdjoint())
    assert direct is not model and model.adjoint == default
    assert direct.adjoint == backend.to_dynamics_adjoint("direct")
    # The parameters are shared, not copied.
    assert all(a is b for a, b in zip(parameter_leaves(direct), parameter_leaves(model), strict=True))
    with pytest.raises(ValueError, match="'inner_solve'"):
        model.with_adjoint(pc.TruncatedAdjoint(2))


def parameter_leaves(model) -> list:
    if isinstance(model, torch.nn.Module):
        return list(model.vector_field.parameters())
    return jax.tree_util.tree_leaves(model.vector_field)


def test_rollout_with_a_step_that_rounds_badly():
    """n_steps * dt and arange(n_steps + 1)[-1] * dt differ in the last bit for dt = 0.05, n = 9:
    the save times must still lie inside the integration interval."""
    x0 = np.linspace(-1.0, 1.0, 3) + np.array([0.0, 1.0, 20.0])
    jax_path = jd.rollout_numpy("lorenz63", x0, 9, 0.05)
    torch_path = td.rollout_numpy("lorenz63", x0, 9, 0.05)
    assert jax_path.shape == (10, 3)
    np.testing.assert_allclose(jax_path, torch_path, rtol=1e-12)
