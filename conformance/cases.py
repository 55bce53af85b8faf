"""The problems every check runs on: small 1D and 2D models and identical numpy data."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from pipekit_cycle import FourDVarNetConfig, ImplicitAdjoint, ocean4dvarnet_config, parse_adjoint, schema
from pipekit_cycle.adjoints import AdjointSpec

__all__ = [
    "CASES",
    "FLOAT64_TOLERANCES",
    "UNIT_ROUNDOFF",
    "Case",
    "adjoint_for",
    "adjoints_for",
    "batch_coupled",
    "config",
    "contractive",
    "cost_depth",
    "entries",
    "gradient_depth",
    "layer_depth",
    "loss_depth",
    "observations",
    "reference_adjoint",
    "rounding_bound",
    "solve_depth",
    "tolerance",
    "trajectory_depth",
]

# DESIGN 4: float64 relative 1e-10 on forward values, 1e-8 on gradients. float32: derived from
# each check's depth (`rounding_bound`, below), not one number for every check.
FLOAT64_TOLERANCES = {"forward": 1e-10, "gradient": 1e-8, "exact": 0.0}
# Implicit-vs-unrolled compares a finite-difference directional derivative (float64 only).
FINITE_DIFFERENCE_TOLERANCE = 1e-6
# Prior weights are scaled by this factor where a check needs T(x) = m y + (1 - m) phi(x) to
# contract, so that the fixed point exists and the iteration converges.
CONTRACTIVE_SCALE = 0.5




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


def reference_adjoint(text: str, what: str) -> str:
    """The adjoint the reference computes ``what`` (``"forward"`` or ``"gradient"``) with when
    the candidate runs ``text``: the same quantity, one compiled program fewer per variant.

    An adjoint never changes the forward value (DESIGN 3.2; `forward_invariance` holds each
    backend to that bit for bit), so every forward is compared with the reference's default
    solve; a checkpoint schedule changes memory, never the gradient, so ``checkpoint:N`` is
    compared with the reference's ``checkpoint``.
    """
    if what == "forward" or text.startswith("checkpoint"):
        return "checkpoint"
    return text


# --- float32 tolerances: derived from the depth of each check (issue 38) -------------------------
#
# Each elementary float32 operation returns the exact result of its rounded inputs times
# (1 + d), |d| <= u = 2**-24 (the unit roundoff). A result that chains N such operations along
# its longest dependency path, in a computation whose steps do not amplify earlier errors
# (condition <= 1 per step), is within gamma_N = N u / (1 - N u) ~ N u of the exact value,
# relative to its scale (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1-3.4;
# a dot product or sum of n terms is a chain of n). Two backends that each stay within N u of
# the exact value differ by at most 2 N u: `rounding_bound`. Nothing is fitted to the errors
# measured; N comes from the case's config and parameter schema:
#
# * a layer chains its longest dot product, forward or backward: max(fan_in, fan_out) x kernel
#   (`layer_depth`); a model chains the sum over its layers (parallel branches counted too, an
#   over-count that keeps the bound an upper bound);
# * a learned solver step computes dU/dx (the prior forward and backward, 2 D_prior), the
#   modulator (D_mod) and `POINTWISE` elementwise operations; ocean4dvarnet's normalised
#   modulator adds one RMS over the whole batch (a sum of every entry) per step;
# * K learned steps chain K steps. A fixed-point iteration contracts: an error made at one
#   iteration is multiplied by rho at each later one, so the iteration chains at most
#   step / (1 - rho) however many it runs (rho <= `FIXED_POINT_CONTRACTION`);
# * a loss adds the mean over the batch's entries and the output component (a prior call);
#   reverse mode runs every step's transpose, which differentiates dU/dx once more: a gradient
#   chains the loss plus twice the solve;
# * one Adam step adds `ADAM_STEP`: its bias correction 1 - beta2**t cancels, which multiplies
#   the rounding of beta2**t by beta2 / (1 - beta2) (1000 units for beta2 = 0.999), plus the
#   moment updates, square root and division; a trajectory of S steps chains S of them.
#
# Checks within one backend (two evaluation orders of the same value) use the same bound. The
# table of docs/conformance.md puts bounds next to the errors measured on the machines at hand.

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
# Elementwise roundings of one solver step besides its convolutions: the cost's residual and
# weight (3), the gradient's combination (3), four gates (sigmoid/tanh, a few units each: 8),
# the cell and hidden updates (4), the step x - alpha u (2).
POINTWISE = 20
# The contraction factor of the fixed-point cases' map T (prior weights x `CONTRACTIVE_SCALE`):
# the ratio of successive steps, measured in float64, is 0.002 at the initial parameters and
# 0.18 after the trajectory's five Adam steps; the bound takes 1/2.
FIXED_POINT_CONTRACTION = 0.5
# beta2 / (1 - beta2) for beta2 = 0.999, rounded up, plus the moments, sqrt and division (8).
ADAM_STEP = 1000 + 8


def rounding_bound(dtype: str, depth: int) -> float:
    """``2 N u``: how far two backends that each chain ``N = depth`` roundings of unit
    roundoff ``u`` may be apart, relative to the result's scale."""
    return 2.0 * depth * UNIT_ROUNDOFF[dtype]


def tolerance(dtype: str, kind: str, depth: int) -> float:
    """The tolerance of a comparison: ``kind`` ``"exact"`` is 0 (bit for bit); otherwise float64
    is DESIGN 4's fixed tolerance of ``kind`` (``"forward"``, ``"gradient"``) and float32 the
    derived `rounding_bound` of a check chaining ``depth`` operations."""
    if kind == "exact":
        return 0.0
    if dtype == "float64":
        return FLOAT64_TOLERANCES[kind]
    return rounding_bound(dtype, depth)


def layer_depth(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> int:
    """Sum over the weights named ``prefix*`` (rank >= 2: ``(out, in, *kernel)``) of the longest
    dot product each chains, forward or backward: ``max(in, out) * prod(kernel)``."""
    return sum(
        max(shape[0], shape[1]) * math.prod(shape[2:])
        for name, shape in shapes.items()
        if name.startswith(prefix) and name.endswith("weight") and len(shape) >= 2
    )


def entries(case_name: str) -> int:
    """The entries of the case's batch, ``B * T * prod(state_shape)``: the length of its sums."""
    case = CASES[case_name]
    return case.batch_size * case.config.n_time * math.prod(case.config.state_shape)


def _prior_depth(case_name: str) -> int:
    return layer_depth(schema(CASES[case_name].config), "prior.")


def _step_depth(case_name: str) -> int:
    base = CASES[case_name].config
    if base.solver == "fixed_point":  # T(x) = m y + (1 - m) phi(x)
        return _prior_depth(case_name) + POINTWISE
    step = 2 * _prior_depth(case_name) + layer_depth(schema(base), "grad_mod.") + POINTWISE
    return step + (entries(case_name) if batch_coupled(case_name) else 0)


def solve_depth(case_name: str) -> int:
    """The roundings the inner solve's output chains."""
    base = CASES[case_name].config
    if base.solver == "fixed_point":
        return math.ceil(_step_depth(case_name) / (1.0 - FIXED_POINT_CONTRACTION))
    return base.n_solver_steps * _step_depth(case_name)


def cost_depth(case_name: str) -> int:
    """``U(x)`` per sample: one prior call, the residuals, and the sums over the entries."""
    return _prior_depth(case_name) + POINTWISE + entries(case_name)


def loss_depth(case_name: str) -> int:
    """The training loss: the solve, the output component (at most a prior call), the mean."""
    return solve_depth(case_name) + _prior_depth(case_name) + entries(case_name)


def gradient_depth(case_name: str) -> int:
    """The loss and its parameter gradients: the loss, then the transpose of every step."""
    return loss_depth(case_name) + 2 * solve_depth(case_name)


def trajectory_depth(case_name: str, steps: int) -> int:
    """Parameters and losses after ``steps`` Adam steps, each a gradient and an update."""
    return steps * (gradient_depth(case_name) + ADAM_STEP)
