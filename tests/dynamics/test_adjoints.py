"""Adjoints of the dynamics layer: spec mapping, exact gradients across backends, backsolve."""

from __future__ import annotations

import diffrax
import numpy as np
import pytest

import pipekit_cycle as pc
from pipekit_cycle.problems import lorenz63_vector_field
from vardax_jax import dynamics as jd
from vardax_torch import dynamics as td

X63 = np.array([[1.0, 2.0, 20.0], [-5.0, -6.0, 22.0]])
X96 = 8.0 + np.array([0.1, -0.3, 0.2, 0.5, -0.4, 0.0])
# A point on the attractor (pipekit_cycle.problems.lorenz63(1, 10, spinup_steps=500).truth[0, 0]).
ON_ATTRACTOR = pc.lorenz63(1, 2, spinup_steps=500).truth[0, 0]


def grad_rel(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest relative error over the named gradients (norm of the difference / norm of b)."""
    assert a.keys() == b.keys()
    return max(float(np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k])) for k in b)


def test_specs_map_to_each_librarys_mechanism():
    assert jd.to_dynamics_adjoint(pc.DirectAdjoint()) == diffrax.DirectAdjoint()
    # diffrax's own classes, with the project's schedule (checkpoints) and backward step rule.
    assert jd.to_dynamics_adjoint(pc.RecursiveCheckpointAdjoint(4)) == jd.ScheduledCheckpointAdjoint(4)
    assert jd.to_dynamics_adjoint(None) == jd.ScheduledCheckpointAdjoint(None)
    assert isinstance(jd.to_dynamics_adjoint(None), diffrax.RecursiveCheckpointAdjoint)
    backsolve = jd.to_dynamics_adjoint(pc.BacksolveAdjoint(rtol=1e-7))
    assert isinstance(backsolve, jd.MatchedBacksolveAdjoint) and isinstance(backsolve, diffrax.BacksolveAdjoint)
    assert backsolve.kwargs["stepsize_controller"].rtol == 1e-7
    assert backsolve.kwargs["stepsize_controller"].atol == jd.DEFAULT_ATOL
    assert jd.to_dynamics_adjoint("backsolve").kwargs == {}

    assert td.to_dynamics_adjoint(pc.DirectAdjoint()) == td.DirectOdeint()
    assert td.to_dynamics_adjoint(pc.RecursiveCheckpointAdjoint(4)) == td.CheckpointedOdeint(4)
    assert td.to_dynamics_adjoint(None) == td.CheckpointedOdeint(None)
    assert td.to_dynamics_adjoint(pc.BacksolveAdjoint(rtol=1e-7)) == td.BacksolveOdeint(1e-7, td.DEFAULT_ATOL)
    assert td.to_dynamics_adjoint("backsolve") == td.BacksolveOdeint(None, None)


def test_native_adjoints_pass_through_unchanged():
    for native in (diffrax.DirectAdjoint(), diffrax.BacksolveAdjoint(), diffrax.ImplicitAdjoint()):
        assert jd.to_dynamics_adjoint(native) is native
    for native in (td.DirectOdeint(), td.CheckpointedOdeint(3), td.BacksolveOdeint(1e-9, 1e-9)):
        assert td.to_dynamics_adjoint(native) is native


@pytest.mark.parametrize("spec", [pc.TruncatedAdjoint(2), pc.ImplicitAdjoint(), "truncated:1"])
def test_inner_solve_specs_raise_naming_their_layer(spec):
    messages = []
    for backend in (jd, td):
        with pytest.raises(ValueError, match="belongs to the 'inner_solve' layer") as error:
            backend.to_dynamics_adjoint(spec)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert "does not apply at the 'dynamics' layer" in messages[0]


@pytest.mark.parametrize(
    ("system", "x0", "dt", "n_steps"),
    [("lorenz63", X63, 0.01, 40), ("lorenz96", X96, 0.05, 12)],
)
def test_exact_gradients_agree_across_backends(system, x0, dt, n_steps):
    results = {}
    for adjoint in ("direct", "checkpoint:3"):
        for backend in (jd, td):
            results[backend.__name__, adjoint] = backend.trajectory_loss_and_grads(
                system, x0, n_steps, dt, adjoint=adjoint, substeps=2
            )
    reference_loss, reference = results["vardax_torch.dynamics", "direct"]
    assert set(reference) == {"x0", *jd.make_vector_field(system, state_dim=x0.shape[-1]).parameter_names}
    for (name, adjoint), (loss, grads) in results.items():
        assert loss == pytest.approx(reference_loss, rel=1e-12), (name, adjoint)
        # Measured: at most 7e-16 (Lorenz-63) and 1.1e-14 (Lorenz-96) relative.
        assert grad_rel(grads, reference) < 1e-8, (name, adjoint, grad_rel(grads, reference))


def test_exact_gradient_matches_finite_differences():
    """The agreed gradient is the right one: central differences of a numpy 3/8-rule rollout."""

    def loss(x0: np.ndarray, sigma: float) -> float:
        y, total = x0, 0.5 * np.sum(x0**2)
        for _ in range(10):
            k1 = lorenz63_vector_field(y, sigma)
            k2 = lorenz63_vector_field(y + 0.01 * k1 / 3, sigma)
            k3 = lorenz63_vector_field(y + 0.01 * (k2 - k1 / 3), sigma)
            k4 = lorenz63_vector_field(y + 0.01 * (k1 - k2 + k3), sigma)
            y = y + 0.01 * (k1 + 3 * (k2 + k3) + k4) / 8
            total += 0.5 * np.sum(y**2)
        return total

    _, grads = td.trajectory_loss_and_grads("lorenz63", X63[0], 10, 0.01, adjoint="direct")
    eps = 1e-5
    fd_x0 = [(loss(X63[0] + eps * e, 10.0) - loss(X63[0] - eps * e, 10.0)) / (2 * eps) for e in np.eye(3)]
    fd_sigma = (loss(X63[0], 10.0 + eps) - loss(X63[0], 10.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(grads["x0"], fd_x0, rtol=1e-7)
    np.testing.assert_allclose(grads["sigma"], fd_sigma, rtol=1e-6)


@pytest.mark.parametrize("backend", [jd, td], ids=["jax", "torch"])
def test_backsolve_matches_direct_to_the_solver_tolerance_on_a_short_window(backend):
    tol = 1e-9
    options = {"solver": "dopri5", "rtol": tol, "atol": tol, "max_steps": 64}
    _, direct = backend.trajectory_loss_and_grads("lorenz63", ON_ATTRACTOR, 20, 0.01, adjoint="direct", **options)
    _, backsolve = backend.trajectory_loss_and_grads("lorenz63", ON_ATTRACTOR, 20, 0.01, adjoint="backsolve", **options)
    # Measured: 5.2e-9 (jax) and 6.4e-9 (torch) relative: a few times the solver tolerance.
    assert grad_rel(backsolve, direct) < 100 * tol


def test_backsolve_diverges_on_a_long_chaotic_window():
    """One forward-model step of 1.25 time units (125 RK4 substeps): the backsolve re-integrates
    the state backwards along the whole window, where Lorenz-63's contracting direction
    (Lyapunov exponent about -14.6) becomes an exponentially expanding one."""
    measured = {}
    for backend in (jd, td):
        grads = {}
        for adjoint in ("checkpoint", "backsolve"):
            _, grads[adjoint] = backend.trajectory_loss_and_grads(
                "lorenz63", ON_ATTRACTOR, 1, 1.25, adjoint=adjoint, substeps=125
            )
        error = grad_rel(grads["backsolve"], grads["checkpoint"])
        measured[backend.__name__] = error if np.isfinite(error) else np.inf
    # Measured: 2.66 relative error in both backends (torch: 0.017 at 1 time unit, 106 at 1.5,
    # NaN at 1.75).
    assert all(error > 0.5 for error in measured.values()), measured
