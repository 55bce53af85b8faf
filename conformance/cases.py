"""The problems every check runs on: small 1D and 2D models and identical numpy data."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from pipekit_cycle import FourDVarNetConfig, ImplicitAdjoint, ocean4dvarnet_config, parse_adjoint
from pipekit_cycle.adjoints import AdjointSpec

__all__ = [
    "CASES",
    "TOLERANCES",
    "Case",
    "adjoint_for",
    "adjoints_for",
    "batch_coupled",
    "config",
    "contractive",
    "observations",
    "tolerance",
]

# DESIGN 4: float64 relative 1e-10 on forward values, 1e-8 on gradients; float32 1e-4.
TOLERANCES = {
    "float64": {"forward": 1e-10, "gradient": 1e-8, "exact": 0.0},
    "float32": {"forward": 1e-4, "gradient": 1e-4, "exact": 0.0},
}
# Implicit-vs-unrolled compares a finite-difference directional derivative (float64 only).
FINITE_DIFFERENCE_TOLERANCE = 1e-6
# Prior weights are scaled by this factor where a check needs T(x) = m y + (1 - m) phi(x) to
# contract, so that the fixed point exists and the iteration converges.
CONTRACTIVE_SCALE = 0.5


def tolerance(dtype: str, kind: str) -> float:
    return TOLERANCES[dtype][kind]


@dataclasses.dataclass(frozen=True)
class Case:
    """A model configuration and the shape of its data."""

    name: str
    config: FourDVarNetConfig
    batch_size: int
    seed: int


_LEARNED_1D = FourDVarNetConfig(
    state_shape=(8,), n_time=4, hidden_dim=4, prior_hidden_dim=4, kernel_size=3, n_solver_steps=4, alpha=0.05
)
_LEARNED_2D = FourDVarNetConfig(
    state_shape=(5, 6), n_time=3, hidden_dim=3, prior_hidden_dim=3, kernel_size=3, n_solver_steps=3, alpha=0.05,
    padding="circular",
)
# The fixed-point solver: at most 80 iterations, stopping at the tolerance `config` sets.
FIXED_POINT_STEPS = 80
# Per dtype, the tightest fixed-point tolerance the iteration reaches (float32: its rounding).
FIXED_POINT_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}

# ocean4dvarnet's architecture (DESIGN 7): batch-wide mean costs and gradient RMS, the annealed
# step, a down-sampled modulator. Dropout 0: a training step refuses dropout (it is not applied).
_OCEAN4DVARNET_2D = ocean4dvarnet_config(
    (6, 6), 3, n_step=3, hidden_dim=3, prior_hidden_dim=3, grad_mod_downsample=2, lbd=1.2, dropout=0.0
)

CASES: dict[str, Case] = {
    "1d": Case("1d", _LEARNED_1D, batch_size=3, seed=0),
    "2d": Case("2d", _LEARNED_2D, batch_size=2, seed=1),
    "1d-fp": Case("1d-fp", _LEARNED_1D.replace(solver="fixed_point", n_solver_steps=FIXED_POINT_STEPS), 3, 0),
    "2d-fp": Case("2d-fp", _LEARNED_2D.replace(solver="fixed_point", n_solver_steps=FIXED_POINT_STEPS), 2, 1),
    "2d-o4d": Case("2d-o4d", _OCEAN4DVARNET_2D, batch_size=2, seed=2),
}


def batch_coupled(case_name: str) -> bool:
    """Whether a sample's solution depends on its batch-mates (ocean4dvarnet's batch-wide means
    and gradient RMS), so solving a batch is not solving each sample alone."""
    base = CASES[case_name].config
    return base.cost == "mean" or base.grad_mod == "convlstm_normalized"


def config(case_name: str, dtype: str) -> FourDVarNetConfig:
    """The case's config; a fixed-point case gets the stopping tolerance fit for ``dtype``."""
    base = CASES[case_name].config
    if base.solver != "fixed_point":
        return base
    tol = FIXED_POINT_TOLERANCE[dtype]
    return base.replace(fixed_point_rtol=tol, fixed_point_atol=tol)


def adjoints_for(case_name: str, texts: tuple[str, ...]) -> tuple[str, ...]:
    """The adjoints of ``texts`` that apply to the case's solver (Implicit: fixed point only)."""
    fixed_point = CASES[case_name].config.solver == "fixed_point"
    return tuple(text for text in texts if fixed_point or not text.startswith("implicit"))


@functools.cache
def observations(case_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(obs, truth)`` in float64: half the entries observed with noise, NaN elsewhere."""
    case = CASES[case_name]
    rng = np.random.default_rng(case.seed)
    shape = (case.batch_size, case.config.n_time, *case.config.state_shape)
    truth = np.sin(np.linspace(0.0, 3.0, int(np.prod(shape)))).reshape(shape) + 0.3 * rng.standard_normal(shape)
    observed = rng.random(shape) < 0.5
    obs = np.where(observed, truth + 0.1 * rng.standard_normal(shape), np.nan)
    return obs, truth


def adjoint_for(text: str, dtype: str) -> AdjointSpec:
    """The spec a check runs for ``text``; Implicit gets tolerances fit for ``dtype``."""
    spec = parse_adjoint(text)
    if isinstance(spec, ImplicitAdjoint):  # the backward linear solve's tolerances
        tight = 1e-13 if dtype == "float64" else 1e-6
        return ImplicitAdjoint(spec.linear_solver, rtol=tight, atol=tight, max_steps=2000)
    return spec


def contractive(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``params`` with every prior weight scaled by `CONTRACTIVE_SCALE`."""
    return {
        name: value * CONTRACTIVE_SCALE if name.startswith("prior.") and name.endswith(".weight") else value
        for name, value in params.items()
    }
