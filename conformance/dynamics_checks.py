"""Checks of the dynamics layer: ODE trajectories, their gradients under Direct, Checkpoint and
Backsolve, and classical strong-constraint 4D-Var (DESIGN section 5).

They call each backend's numpy-level helpers (``rollout_numpy``, ``trajectory_loss_and_grads``,
``strong_4dvar_numpy``), so identical numpy inputs go in and numpy comes out.
"""

from __future__ import annotations

import functools

import numpy as np

from pipekit_cycle import lorenz63

from .cases import UNIT_ROUNDOFF, tolerance
from .registry import Measurement, Pair, register, relative_error

__all__ = ["SYSTEMS"]

SYSTEMS = {
    # system: (dt, n_steps, initial state)
    "lorenz63": (0.01, 30, np.array([[1.0, 2.0, 20.0], [-3.0, 1.5, 25.0]])),
    "lorenz96": (0.05, 12, 8.0 + np.sin(np.arange(12.0))[None, :] * np.array([[1.0], [0.5]])),
}
# Backsolve is approximate: it is held to the exact gradient with a tolerance tied to the
# adaptive solver's tolerances (100x of 1e-9 relative, measured 5e-9 on this case).
BACKSOLVE_SOLVER = {"solver": "dopri5", "rtol": 1e-9, "atol": 1e-9}
BACKSOLVE_TOLERANCE = 1e-6
# Two quasi-Newton minimisers (BFGS, L-BFGS) stop on the same test but take different paths:
# the analyses agree to the minimiser's tolerance, not to rounding (issue: 1e-5).
FOURDVAR_TOLERANCE = 1e-5
# float32 depth of one RK4 step (`conformance.cases` explains the bound 2 N u): four vector-field
# evaluations (Lorenz63 and Lorenz96 chain at most 4 operations per component) each followed by
# a stage update (2), and the weighted sum of the stages (6).
RK4_STEP = 4 * (4 + 2) + 6


def _rollout_depth(n_steps: int) -> int:
    return n_steps * RK4_STEP


def _gradient_depth(system: str, n_steps: int) -> int:
    """The trajectory loss (a sum over every state of the trajectory) and its reverse pass."""
    _, _, x0 = SYSTEMS[system]
    return 3 * _rollout_depth(n_steps) + (n_steps + 1) * x0.size


def _minimum_tolerance(dtype: str) -> float:
    """Where two minimisers may stop: the float64 minimiser tolerance, or, coarser, how well
    rounding locates a minimum at all: the cost is quadratic there, so a step of relative size
    below sqrt(u) changes it by less than its rounding; each analysis is within sqrt(u) of the
    minimum, two within 2 sqrt(u) (float32: 4.9e-4)."""
    return max(FOURDVAR_TOLERANCE, 2.0 * UNIT_ROUNDOFF[dtype] ** 0.5)


def _target(system: str) -> np.ndarray:
    _, n_steps, x0 = SYSTEMS[system]
    return 0.1 * np.cos(np.arange((n_steps + 1) * x0.shape[-1] * 2.0)).reshape(2, n_steps + 1, x0.shape[-1])


@register("dynamics_trajectory", tuple(SYSTEMS))
def _trajectory(pair: Pair, system: str) -> Measurement:
    dt, n_steps, x0 = SYSTEMS[system]
    got = pair.candidate.rollout_numpy(system, x0.astype(pair.dtype), n_steps, dt)
    want = pair.reference.rollout_numpy(system, x0.astype(pair.dtype), n_steps, dt)
    limit = tolerance(pair.dtype, "forward", _rollout_depth(n_steps))
    return Measurement(relative_error(got, want), limit, f"RK4, {n_steps} steps")


@register("dynamics_gradients", tuple(f"{s}/{a}" for s in SYSTEMS for a in ("direct", "checkpoint")))
def _gradients(pair: Pair, case: str) -> Measurement:
    system, adjoint = case.split("/")
    dt, n_steps, x0 = SYSTEMS[system]
    results = [
        backend.trajectory_loss_and_grads(
            system, x0.astype(pair.dtype), n_steps, dt, target=_target(system).astype(pair.dtype), adjoint=adjoint
        )
        for backend in (pair.candidate, pair.reference)
    ]
    (loss_c, grads_c), (loss_r, grads_r) = results
    error = max(relative_error(loss_c, loss_r), relative_error(grads_c, grads_r))
    limit = tolerance(pair.dtype, "gradient", _gradient_depth(system, n_steps))
    return Measurement(error, limit, "trajectory loss, d/dx0 and d/dparameters")


@register("dynamics_backsolve", ("lorenz63/short_window",))
def _backsolve(pair: Pair, case: str) -> Measurement:
    """The candidate's Backsolve gradient against the reference's exact (Direct) one."""
    dt, _, x0 = SYSTEMS["lorenz63"]
    n_steps = 20
    target = _target("lorenz63")[:, : n_steps + 1]
    _, backsolve = pair.candidate.trajectory_loss_and_grads(
        "lorenz63", x0, n_steps, dt, target=target, adjoint="backsolve", **BACKSOLVE_SOLVER
    )
    _, direct = pair.reference.trajectory_loss_and_grads(
        "lorenz63", x0, n_steps, dt, target=target, adjoint="direct", **BACKSOLVE_SOLVER
    )
    # The adaptive solve's own error, or (float32, where 1e-9 is below rounding) the rounding of
    # the exact gradient through the same window.
    limit = max(BACKSOLVE_TOLERANCE, tolerance(pair.dtype, "gradient", _gradient_depth("lorenz63", n_steps)))
    return Measurement(relative_error(backsolve, direct), limit, "backsolve vs direct, dopri5 at 1e-9")


@functools.cache
def _fourdvar_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    problem = lorenz63(1, 21, obs_every=5, obs_fraction=2 / 3, seed=3)
    background = problem.truth[0, 0] + np.array([1.5, -1.0, 2.0])
    return background, problem.obs[0], problem.truth[0, 0]


@register("strong_fourdvar", ("lorenz63",))
def _strong_fourdvar(pair: Pair, case: str) -> Measurement:
    background, obs, _ = _fourdvar_problem()
    kwargs = {"background_cov": np.full(3, 4.0), "obs_var": 2.0}
    analyses = [
        backend.strong_4dvar_numpy(case, background.astype(pair.dtype), obs.astype(pair.dtype), 0.01, **kwargs)
        for backend in (pair.candidate, pair.reference)
    ]
    limit = _minimum_tolerance(pair.dtype)
    return Measurement(relative_error(*analyses), limit, "analysis x0 (BFGS vs L-BFGS)")
