r"""Dynamics layer: ODE vector fields, a torchdiffeq forward model and strong-constraint 4D-Var.

The forward model integrates an autonomous ODE :math:`\dot x = f_\theta(x)`. Its gradients
(w.r.t. the initial state and the vector-field parameters :math:`\theta`) follow an adjoint
spec of the ``"dynamics"`` layer, mapped onto torchdiffeq / torch mechanisms by
`to_dynamics_adjoint`:

| spec                          | native                                                        |
|-------------------------------|---------------------------------------------------------------|
| ``DirectAdjoint``             | `DirectOdeint`: backprop through ``torchdiffeq.odeint``       |
| ``RecursiveCheckpointAdjoint``| `CheckpointedOdeint(checkpoints)`: ``torch.utils.checkpoint`` per segment |
| ``BacksolveAdjoint``          | `BacksolveOdeint(rtol, atol)`: ``torchdiffeq.odeint_adjoint`` |
| ``Truncated``/``Implicit``    | ``ValueError``: they belong to the ``inner_solve`` layer      |

Conventions shared with ``vardax_jax.dynamics`` (same names, same numbers):

* a state is ``(..., N)``; ``rollout(state, n_steps)`` returns the trajectory
  ``(..., n_steps + 1, N)`` (time on the second-to-last axis, like the ``(windows, T, N)``
  arrays of `pipekit_cycle.problems`), row 0 being ``state`` itself;
* ``solver="rk4"`` is torchdiffeq's ``"rk4"``, Kutta's 3/8-rule fourth-order Runge--Kutta
  method, with the constant step ``dt / substeps`` (``options={"step_size": ...}``). (Every
  four-stage fourth-order RK method has the same stability polynomial, so on a linear ODE it
  equals the classical RK4 of `pipekit_cycle.problems.rk4_step` to rounding; on a nonlinear
  one they differ by O(dt^5) per step.) ``solver="dopri5"`` is adaptive with ``rtol``/``atol``.
* error messages are ``pipekit_cycle.validation.DYNAMICS_MESSAGES``, shared by both backends.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal

import numpy as np
import torch
import torchdiffeq
from torch import nn
from torch.utils.checkpoint import checkpoint

from pipekit_cycle import ConvergenceWarning, check_layer
from pipekit_cycle import adjoints as specs
from pipekit_cycle.adjoints import checkpoint_schedule
from pipekit_cycle.problems import L63_BETA, L63_RHO, L63_SIGMA, L96_FORCING
from pipekit_cycle.validation import SOLVERS
from pipekit_cycle.validation import check_count as _check_count
from pipekit_cycle.validation import check_state_shape as _check_state
from pipekit_cycle.validation import check_tolerance as _check_tolerance
from pipekit_cycle.validation import dynamics_message as _message

__all__ = [
    "BacksolveOdeint",
    "CheckpointedOdeint",
    "DirectOdeint",
    "LinearField",
    "Lorenz63",
    "Lorenz96",
    "StrongFourDVar",
    "TorchDiffEqForwardModel",
    "field_parameters",
    "make_forward_model",
    "make_vector_field",
    "rollout_numpy",
    "strong_4dvar_numpy",
    "to_dynamics_adjoint",
    "trajectory_loss_and_grads",
]

SolverName = Literal["rk4", "dopri5"]
DEFAULT_RTOL: Final = 1e-6
DEFAULT_ATOL: Final = 1e-8


def _check_dt(dt: Any) -> float:
    """``dt`` as a float if it is a finite number > 0."""
    try:
        value = float(dt)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(_message("dt", dt=dt)) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(_message("dt", dt=value))
    return value


def _scalar_parameter(value: Any, dtype: torch.dtype | None) -> nn.Parameter:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return nn.Parameter(torch.as_tensor(value, dtype=dtype).clone())


# --------------------------------------------------------------------------------------------
# Vector fields
# --------------------------------------------------------------------------------------------


class Lorenz63(nn.Module):
    r"""Lorenz-63: :math:`\dot x = \sigma (y - x),\ \dot y = x (\rho - z) - y,\ \dot z = x y - \beta z`.

    ``sigma``, ``rho``, ``beta`` are 0-d ``nn.Parameter`` s, so gradients w.r.t. them are taken
    like any other parameter. ``forward(state)`` maps ``(..., 3)`` to tendencies ``(..., 3)``.
    """

    state_dim: ClassVar[int] = 3
    parameter_names: ClassVar[tuple[str, ...]] = ("sigma", "rho", "beta")

    def __init__(
        self, sigma: Any = L63_SIGMA, rho: Any = L63_RHO, beta: Any = L63_BETA, *, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.sigma = _scalar_parameter(sigma, dtype)
        self.rho = _scalar_parameter(rho, dtype)
        self.beta = _scalar_parameter(beta, dtype)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        x, y, z = state[..., 0], state[..., 1], state[..., 2]
        return torch.stack([self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z], dim=-1)


class Lorenz96(nn.Module):
    r"""Lorenz-96: :math:`\dot x_i = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F`, periodic in ``i``.

    ``forcing`` (:math:`F`) is a 0-d ``nn.Parameter``; ``state_dim`` (``N >= 4``) is fixed.
    """

    parameter_names: ClassVar[tuple[str, ...]] = ("forcing",)

    def __init__(self, state_dim: int = 40, forcing: Any = L96_FORCING, *, dtype: torch.dtype | None = None) -> None:
        if isinstance(state_dim, bool) or not isinstance(state_dim, (int, np.integer)) or state_dim < 4:
            raise ValueError(f"state_dim must be an int >= 4 for Lorenz-96, got {state_dim!r}")
        super().__init__()
        self.state_dim = int(state_dim)
        self.forcing = _scalar_parameter(forcing, dtype)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        ahead = torch.roll(state, -1, dims=-1)  # x_{i+1}
        behind2 = torch.roll(state, 2, dims=-1)  # x_{i-2}
        behind = torch.roll(state, 1, dims=-1)  # x_{i-1}
        return (ahead - behind2) * behind - state + self.forcing


class LinearField(nn.Module):
    r"""The linear ODE :math:`\dot x = A x` (``matrix`` :math:`A`, ``(N, N)``).

    Its rollout is linear in the initial state, which makes 4D-Var a quadratic problem with a
    closed-form solution (the linear-Gaussian check).
    """

    parameter_names: ClassVar[tuple[str, ...]] = ("matrix",)

    def __init__(self, matrix: Any, *, dtype: torch.dtype | None = None) -> None:
        shape = tuple(np.shape(matrix))
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(_message("matrix", shape=shape))
        super().__init__()
        self.matrix = _scalar_parameter(np.asarray(matrix), dtype)

    @property
    def state_dim(self) -> int:
        return self.matrix.shape[0]

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return state @ self.matrix.T


def field_parameters(field: nn.Module) -> dict[str, np.ndarray]:
    """The vector field's parameters by name (``field.parameter_names``), as numpy arrays."""
    return {name: getattr(field, name).detach().cpu().numpy() for name in field.parameter_names}


# --------------------------------------------------------------------------------------------
# Adjoints
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DirectOdeint:
    """Backprop through every step of ``torchdiffeq.odeint``; memory linear in the steps."""


@dataclasses.dataclass(frozen=True)
class CheckpointedOdeint:
    """``torch.utils.checkpoint`` (non-reentrant) over ``checkpoints`` integration segments.

    Only each segment's starting state is stored; the backward re-integrates one segment at a
    time. ``pipekit_cycle.checkpoint_schedule(n_steps, checkpoints)`` segments (``None``:
    ``ceil(log2 n_steps)``, as many stored states as diffrax gets in vardax_jax).
    """

    checkpoints: int | None = None


@dataclasses.dataclass(frozen=True)
class BacksolveOdeint:
    """``torchdiffeq.odeint_adjoint``: the continuous adjoint integrated backwards in time.

    ``rtol``/``atol`` are its ``adjoint_rtol``/``adjoint_atol`` (both ``None``: the forward's).
    """

    rtol: float | None = None
    atol: float | None = None


NativeDynamicsAdjoint = DirectOdeint | CheckpointedOdeint | BacksolveOdeint


def to_dynamics_adjoint(spec: Any = None) -> NativeDynamicsAdjoint:
    """Map an adjoint spec of the ``"dynamics"`` layer onto torchdiffeq / torch's own mechanism.

    ``None`` is the layer's default, ``RecursiveCheckpointAdjoint()``. A native adjoint
    (`DirectOdeint`, `CheckpointedOdeint`, `BacksolveOdeint`) passes through unchanged.
    ``BacksolveAdjoint(rtol, atol)``: with both ``None`` the backward solve uses the forward's
    tolerances; otherwise ``(rtol, atol)`` (a missing one is ``DEFAULT_RTOL``/``DEFAULT_ATOL``),
    applied when the forward solver is adaptive (a fixed-step solver steps the adjoint on its
    own grid). Specs of the ``inner_solve`` layer raise ``ValueError`` naming it.
    """
    if spec is None:
        spec = specs.RecursiveCheckpointAdjoint()
    if isinstance(spec, (DirectOdeint, CheckpointedOdeint, BacksolveOdeint)):
        return spec
    spec = check_layer(spec, specs.DYNAMICS)
    if isinstance(spec, specs.DirectAdjoint):
        return DirectOdeint()
    if isinstance(spec, specs.RecursiveCheckpointAdjoint):
        return CheckpointedOdeint(checkpoints=spec.checkpoints)
    if isinstance(spec, specs.BacksolveAdjoint):
        if spec.rtol is None and spec.atol is None:
            return BacksolveOdeint()
        rtol = DEFAULT_RTOL if spec.rtol is None else spec.rtol
        atol = DEFAULT_ATOL if spec.atol is None else spec.atol
        return BacksolveOdeint(rtol=rtol, atol=atol)
    # check_layer only lets the dynamics specs above through.
    raise AssertionError(f"unmapped dynamics spec {spec!r}")


# --------------------------------------------------------------------------------------------
# Forward model
# --------------------------------------------------------------------------------------------


class TorchDiffEqForwardModel(nn.Module):
    r"""ODE forward model :math:`\dot x = f_\theta(x)` integrated with torchdiffeq.

    ``step(state, dt)`` integrates ``state`` (``(..., N)``) over ``dt``; ``rollout(state,
    n_steps)`` returns the trajectory ``(..., n_steps + 1, N)`` at times ``0, dt, ..., n_steps
    dt`` (row 0 is ``state``). ``solver="rk4"``: torchdiffeq's ``"rk4"`` (3/8 rule) with the
    constant step ``dt / substeps``; ``"dopri5"``: adaptive with ``rtol``/``atol``, first step
    ``dt / substeps``, at most ``max_steps`` steps. Gradients follow ``adjoint`` (a dynamics spec
    or a native adjoint, stored native; see `to_dynamics_adjoint`). The vector field is a
    sub-module, so ``parameters()`` are its parameters. Immutable: `with_adjoint` returns a new
    model sharing the vector field. Satisfies `pipekit_cycle.ForwardModel`.
    """

    def __init__(
        self,
        vector_field: nn.Module,
        dt: float,
        *,
        solver: SolverName = "rk4",
        substeps: int = 1,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        max_steps: int = 4096,
        adjoint: Any = None,
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(_message("solver", value=solver))
        super().__init__()
        self.vector_field = vector_field
        self._dt = _check_dt(dt)
        self._adjoint = to_dynamics_adjoint(adjoint)
        self.solver = solver
        self.substeps = _check_count("substeps", substeps, 1)
        self.rtol = _check_tolerance("rtol", rtol)
        self.atol = _check_tolerance("atol", atol)
        self.max_steps = _check_count("max_steps", max_steps, 1)

    @property
    def dt(self) -> float:
        return self._dt

    @property
    def adjoint(self) -> NativeDynamicsAdjoint:
        return self._adjoint

    @property
    def state_dim(self) -> int:
        return self.vector_field.state_dim

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vector_field.parameters()).dtype

    def with_adjoint(self, spec: Any) -> TorchDiffEqForwardModel:
        """A new model differentiated by ``spec`` (``ValueError`` for a spec of another layer)."""
        native = to_dynamics_adjoint(spec)
        # A shallow copy shares the vector field (and so its parameters); only the adjoint differs.
        model = copy.copy(self)
        model._modules = dict(self._modules)
        model._adjoint = native
        return model

    def step(self, state: Any, dt: float | None = None) -> torch.Tensor:
        """Integrate ``state`` (``(..., N)``) over ``dt`` (default: the model's ``dt``)."""
        dt = self.dt if dt is None else _check_dt(dt)
        return self._solve(state, dt, 1)[..., -1, :]

    def rollout(self, state: Any, n_steps: int) -> torch.Tensor:
        """The trajectory ``(..., n_steps + 1, N)``: ``state`` then ``n_steps`` steps of ``dt``."""
        n_steps = _check_count("n_steps", n_steps, 0)
        return self._solve(state, self.dt, n_steps)

    def forward(self, state: Any, n_steps: int) -> torch.Tensor:
        """`rollout` (``nn.Module`` call syntax)."""
        return self.rollout(state, n_steps)

    def _tendency(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        del t  # autonomous
        return self.vector_field(y)

    def _odeint_kwargs(self, h: float) -> dict[str, Any]:
        if self.solver == "rk4":
            return {"method": "rk4", "options": {"step_size": h}}
        return {
            "method": "dopri5",
            "rtol": self.rtol,
            "atol": self.atol,
            "options": {"first_step": h, "max_num_steps": self.max_steps},
        }

    def _integrate(self, state: torch.Tensor, n_steps: int, dt: float) -> torch.Tensor:
        # Times 0, dt, ..., n dt from 0: the field is autonomous, so every segment of a
        # checkpointed rollout sees the same grid as the whole window.
        times = torch.arange(n_steps + 1, dtype=state.dtype, device=state.device) * dt
        return torchdiffeq.odeint(self._tendency, state, times, **self._odeint_kwargs(dt / self.substeps))

    def _solve(self, state: Any, dt: float, n_steps: int) -> torch.Tensor:
        state = torch.as_tensor(state, dtype=self.dtype)
        _check_state("state", tuple(state.shape), self.state_dim)
        if n_steps == 0:
            return state.unsqueeze(-2)
        adjoint = self._adjoint
        if isinstance(adjoint, DirectOdeint):
            ys = self._integrate(state, n_steps, dt)
        elif isinstance(adjoint, CheckpointedOdeint):
            ys = self._integrate_checkpointed(state, n_steps, dt, adjoint.checkpoints)
        else:
            times = torch.arange(n_steps + 1, dtype=state.dtype, device=state.device) * dt
            kwargs = self._odeint_kwargs(dt / self.substeps)
            if self.solver == "dopri5":
                kwargs["adjoint_rtol"] = adjoint.rtol
                kwargs["adjoint_atol"] = adjoint.atol
            ys = torchdiffeq.odeint_adjoint(
                self._tendency, state, times, adjoint_params=tuple(self.vector_field.parameters()), **kwargs
            )
        return torch.movedim(ys, 0, -2)  # (times, ..., N) -> (..., times, N)

    def _integrate_checkpointed(
        self, state: torch.Tensor, n_steps: int, dt: float, checkpoints: int | None
    ) -> torch.Tensor:
        segments = checkpoint_schedule(n_steps, checkpoints)  # the project's one schedule
        bounds = np.linspace(0, n_steps, segments + 1).round().astype(int)
        pieces = [state.unsqueeze(0)]
        current = state
        for start, stop in itertools.pairwise(bounds):
            # Non-reentrant checkpoint: the segment's activations are dropped and recomputed
            # from its starting state on the backward; parameters used inside are tracked.
            ys = checkpoint(self._integrate, current, int(stop - start), dt, use_reentrant=False)
            pieces.append(ys[1:])
            current = ys[-1]
        return torch.cat(pieces, dim=0)


# --------------------------------------------------------------------------------------------
# Strong-constraint 4D-Var
# --------------------------------------------------------------------------------------------


def _check_covariances(background_cov: Any, obs_var: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy checks shared word for word with the JAX backend; returns (cov, obs_var)."""
    cov = np.asarray(background_cov, dtype=np.float64)
    if cov.shape == (n,):
        if not (np.all(np.isfinite(cov)) and np.all(cov > 0)):
            raise ValueError(_message("background_cov", n=n, what="non-positive or non-finite variances"))
    elif cov.shape == (n, n):
        if not (np.all(np.isfinite(cov)) and np.allclose(cov, cov.T)):
            raise ValueError(_message("background_cov", n=n, what="a non-symmetric matrix"))
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError(_message("background_cov", n=n, what="a matrix that is not positive definite")) from None
    else:
        raise ValueError(_message("background_cov", n=n, what=f"shape {cov.shape}"))
    var = np.asarray(obs_var, dtype=np.float64)
    if var.shape not in ((), (n,)):
        raise ValueError(_message("obs_var", n=n, what=f"shape {var.shape}"))
    if not (np.all(np.isfinite(var)) and np.all(var > 0)):
        raise ValueError(_message("obs_var", n=n, what="non-positive or non-finite values"))
    return cov, var


class StrongFourDVar(nn.Module):
    r"""Strong-constraint 4D-Var over the initial state, minimised with ``torch.optim.LBFGS``.

    .. math::
        J(x_0) = \tfrac12 (x_0 - x_b)^\top B^{-1} (x_0 - x_b)
               + \tfrac12 \sum_{t=0}^{T-1} \sum_i m_{t,i}\, (x_{t,i} - y_{t,i})^2 / r_i,
        \qquad x_t = \mathcal{M}_t(x_0)\ (\text{the model's rollout})

    ``H`` is the identity restricted by the mask ``m = isfinite(obs)`` (``obs`` has NaN where
    unobserved), ``R = diag(r)`` with ``obs_var`` a scalar or ``(N,)`` variances, ``B`` is
    ``background_cov`` given as ``(N,)`` variances (diagonal) or a full SPD ``(N, N)`` matrix
    (applied through its Cholesky factor). ``xb`` is ``(..., N)`` and ``obs`` ``(..., T, N)``
    with ``T = n_steps + 1`` (``n_steps=None``: taken from ``obs``); windows in the leading
    axes are independent and their costs are summed. ``__call__(xb, obs)`` returns the analysis
    ``x_a = argmin J``, started from ``xb``; L-BFGS (strong Wolfe line search, history of
    ``max_steps``) stops on optimistix's Cauchy test with ``rtol``/``atol`` (an iteration
    changes ``x0`` by less than ``atol + rtol max|x0|`` and ``J`` by less than ``atol + rtol |J|``)
    or after ``max_steps`` iterations (then a `pipekit_cycle.ConvergenceWarning`).
    Gradients of ``J`` follow the forward model's adjoint.
    """

    def __init__(
        self,
        forward_model: TorchDiffEqForwardModel,
        background_cov: Any,
        obs_var: Any,
        *,
        n_steps: int | None = None,
        rtol: float = 1e-10,
        atol: float = 1e-10,
        max_steps: int = 500,
    ) -> None:
        n = forward_model.state_dim
        cov, var = _check_covariances(background_cov, obs_var, n)
        super().__init__()
        dtype = forward_model.dtype
        self.forward_model = forward_model
        self.register_buffer("background_cov", torch.as_tensor(cov, dtype=dtype))
        self.register_buffer("obs_var", torch.as_tensor(var, dtype=dtype))
        chol = torch.as_tensor(np.linalg.cholesky(cov), dtype=dtype) if cov.ndim == 2 else None
        self.register_buffer("_background_chol", chol)
        self.n_steps = None if n_steps is None else _check_count("n_steps", n_steps, 0)
        self.rtol = _check_tolerance("rtol", rtol)
        self.atol = _check_tolerance("atol", atol)
        self.max_steps = _check_count("max_steps", max_steps, 1)

    def _prepare(self, xb: Any, obs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        dtype = self.forward_model.dtype
        n = self.forward_model.state_dim
        xb = torch.as_tensor(xb, dtype=dtype)
        obs = torch.as_tensor(obs, dtype=dtype)
        _check_state("xb", tuple(xb.shape), n)
        _check_state("obs", tuple(obs.shape), n, expected="(..., T, N)")
        if obs.ndim != xb.ndim + 1 or obs.shape[:-2] != xb.shape[:-1]:
            raise ValueError(
                _message("state_shape", name="obs", expected=f"{(*xb.shape[:-1], 'T', n)}", n=n, shape=tuple(obs.shape))
            )
        n_steps = obs.shape[-2] - 1 if self.n_steps is None else self.n_steps
        if obs.shape[-2] != n_steps + 1:
            raise ValueError(_message("obs_time", expected=n_steps + 1, got=obs.shape[-2]))
        mask = torch.isfinite(obs)
        return xb, torch.where(mask, obs, torch.zeros_like(obs)), mask.to(dtype), n_steps

    def _cost(
        self, x0: torch.Tensor, xb: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, n_steps: int
    ) -> torch.Tensor:
        d = x0 - xb
        if self._background_chol is None:
            background = torch.sum(d * d / self.background_cov)
        else:
            # B^{-1} d through the Cholesky factor L (B = L L^T), for each window in the batch.
            flat = d.reshape(-1, d.shape[-1])
            solved = torch.cholesky_solve(flat.T, self._background_chol).T
            background = torch.sum(flat * solved)
        trajectory = self.forward_model.rollout(x0, n_steps)
        innovation = mask * (trajectory - y)
        observation = torch.sum(innovation * innovation / self.obs_var)
        return 0.5 * (background + observation)

    def cost(self, x0: Any, xb: Any, obs: Any) -> torch.Tensor:
        """:math:`J(x_0)` (a scalar: the sum over windows)."""
        xb, y, mask, n_steps = self._prepare(xb, obs)
        x0 = torch.as_tensor(x0, dtype=xb.dtype)
        _check_state("x0", tuple(x0.shape), self.forward_model.state_dim)
        return self._cost(x0, xb, y, mask, n_steps)

    def _converged(self, x: torch.Tensor, value: float, x_previous: torch.Tensor, value_previous: float) -> bool:
        # optimistix's Cauchy termination (max norm): both the step and the change of J are small.
        step_small = float(torch.max(torch.abs(x - x_previous))) < self.atol + self.rtol * float(
            torch.max(torch.abs(x))
        )
        return step_small and abs(value - value_previous) < self.atol + self.rtol * abs(value)

    def forward(self, xb: Any, obs: Any) -> torch.Tensor:
        """The analysis :math:`x_a = \\arg\\min_{x_0} J(x_0)`, shaped like ``xb``."""
        xb, y, mask, n_steps = self._prepare(xb, obs)
        x0 = xb.detach().clone().requires_grad_(True)
        # One L-BFGS iteration per ``step`` call (history kept in the optimizer's state), its own
        # tests switched off, so that the stopping rule is optimistix's Cauchy test, as in JAX.
        optimizer = torch.optim.LBFGS(
            [x0],
            lr=1.0,
            max_iter=1,
            # LBFGS caps the line search at max_eval - 1 evaluations: allow the usual 25.
            max_eval=26,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            history_size=self.max_steps,
            line_search_fn="strong_wolfe",
        )

        cache: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            # Each one-iteration ``step`` re-evaluates J where the last line search ended:
            # serve that point from the cache instead of integrating the window again.
            if "x" in cache and torch.equal(cache["x"], x0.detach()):
                x0.grad = cache["grad"].clone()
                return cache["value"]
            optimizer.zero_grad()
            value = self._cost(x0, xb, y, mask, n_steps)
            value.backward()
            cache.update(x=x0.detach().clone(), grad=x0.grad.detach().clone(), value=value.detach())
            return value

        previous: tuple[torch.Tensor, float] | None = None
        for _ in range(self.max_steps):
            start = x0.detach().clone()
            value = float(optimizer.step(closure).detach())  # J at ``start``; then x0 moves one iteration
            if previous is not None and self._converged(start, value, *previous):
                break
            previous = (start, value)
        else:
            warnings.warn(
                ConvergenceWarning(
                    f"StrongFourDVar: L-BFGS did not converge in {self.max_steps} steps (max_steps={self.max_steps})"
                ),
                stacklevel=2,
            )
        return x0.detach()


# --------------------------------------------------------------------------------------------
# numpy-in, numpy-out helpers (the conformance suite calls these in both backends)
# --------------------------------------------------------------------------------------------

_FLOAT64: Final = torch.float64


def make_vector_field(
    system: str, parameters: Mapping[str, Any] | None = None, *, state_dim: int | None = None
) -> nn.Module:
    """``"lorenz63"`` (``sigma, rho, beta``), ``"lorenz96"`` (``forcing``; ``state_dim``, default
    40) or ``"linear"`` (``matrix``, required) with ``parameters`` by name (missing ones default),
    in float64."""
    given = dict(parameters or {})
    allowed = {"lorenz63": Lorenz63.parameter_names, "lorenz96": Lorenz96.parameter_names, "linear": ("matrix",)}
    if system not in allowed:
        raise ValueError(_message("system", value=system))
    if not set(given) <= set(allowed[system]):
        raise ValueError(_message("parameters", system=system, allowed=sorted(allowed[system]), given=sorted(given)))
    if system == "lorenz63":
        return Lorenz63(**given, dtype=_FLOAT64)
    if system == "lorenz96":
        return Lorenz96(40 if state_dim is None else state_dim, **given, dtype=_FLOAT64)
    if "matrix" not in given:
        raise ValueError(_message("matrix", shape=None))
    return LinearField(given["matrix"], dtype=_FLOAT64)


def make_forward_model(
    system: str,
    dt: float,
    *,
    parameters: Mapping[str, Any] | None = None,
    state_dim: int | None = None,
    **options: Any,
) -> TorchDiffEqForwardModel:
    """`make_vector_field` wrapped in a `TorchDiffEqForwardModel` (``options``: solver, substeps,
    rtol, atol, max_steps, adjoint)."""
    return TorchDiffEqForwardModel(make_vector_field(system, parameters, state_dim=state_dim), dt, **options)


def _state_dim_of(system: str, x0: np.ndarray) -> int | None:
    return int(np.shape(x0)[-1]) if system == "lorenz96" and np.ndim(x0) >= 1 else None


def rollout_numpy(
    system: str,
    x0: np.ndarray,
    n_steps: int,
    dt: float,
    *,
    parameters: Mapping[str, Any] | None = None,
    **options: Any,
) -> np.ndarray:
    """The trajectory ``(..., n_steps + 1, N)`` from ``x0`` (``(..., N)``), as numpy."""
    model = make_forward_model(system, dt, parameters=parameters, state_dim=_state_dim_of(system, x0), **options)
    with torch.no_grad():
        return model.rollout(np.asarray(x0), n_steps).numpy()


def trajectory_loss_and_grads(
    system: str,
    x0: np.ndarray,
    n_steps: int,
    dt: float,
    *,
    target: np.ndarray | None = None,
    parameters: Mapping[str, Any] | None = None,
    adjoint: Any = "direct",
    **options: Any,
) -> tuple[float, dict[str, np.ndarray]]:
    r""":math:`L = \tfrac12 \sum (x_t - \mathrm{target}_t)^2` over the rollout (``target``
    ``(..., n_steps + 1, N)``, default zeros) and its gradients under ``adjoint``, as numpy:
    ``{"x0": dL/dx0, <parameter name>: dL/dtheta, ...}``."""
    model = make_forward_model(
        system, dt, parameters=parameters, state_dim=_state_dim_of(system, x0), adjoint=adjoint, **options
    )
    state = torch.as_tensor(np.asarray(x0), dtype=model.dtype).clone().requires_grad_(True)
    trajectory = model.rollout(state, n_steps)
    reference = torch.zeros_like(trajectory) if target is None else torch.as_tensor(target, dtype=model.dtype)
    loss = 0.5 * torch.sum((trajectory - reference) ** 2)
    loss.backward()
    grads = {
        name: getattr(model.vector_field, name).grad.detach().numpy() for name in model.vector_field.parameter_names
    }
    return float(loss.detach()), {"x0": state.grad.detach().numpy(), **grads}


def strong_4dvar_numpy(
    system: str,
    xb: np.ndarray,
    obs: np.ndarray,
    dt: float,
    *,
    background_cov: np.ndarray,
    obs_var: Any,
    parameters: Mapping[str, Any] | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 500,
    **options: Any,
) -> np.ndarray:
    """The `StrongFourDVar` analysis for ``xb`` (``(..., N)``) and ``obs`` (``(..., T, N)``,
    NaN where unobserved), as numpy; ``options`` configure the forward model."""
    model = make_forward_model(system, dt, parameters=parameters, state_dim=_state_dim_of(system, xb), **options)
    var = StrongFourDVar(model, background_cov, obs_var, rtol=rtol, atol=atol, max_steps=max_steps)
    return var(np.asarray(xb), np.asarray(obs)).numpy()
