r"""Dynamics layer: an ODE forward model on torchdiffeq, its adjoints and strong-constraint 4D-Var.

The forward model integrates an autonomous ODE :math:`\dot x = f_\theta(x)` (the vector fields
are `vardax_torch.vector_fields`, re-exported here). Its gradients (w.r.t. the initial state and
the vector-field parameters :math:`\theta`) follow an adjoint of the ``"dynamics"`` layer: the
model hands the adjoint its tendency, initial state, save times, parameters and torchdiffeq
options, and the adjoint runs the integration its way (`AbstractOdeintAdjoint.integrate`), so
an adjoint defined outside the package plugs in. `to_dynamics_adjoint` maps the specs:

| spec                          | native                                                        |
|-------------------------------|---------------------------------------------------------------|
| ``DirectAdjoint``             | `DirectOdeint`: backprop through ``torchdiffeq.odeint``       |
| ``RecursiveCheckpointAdjoint``| `CheckpointedOdeint(checkpoints)`: ``torch.utils.checkpoint`` per segment |
| ``BacksolveAdjoint``          | `BacksolveOdeint(rtol, atol)`: ``torchdiffeq.odeint_adjoint`` |
| ``Truncated``/``Implicit``    | ``ValueError``: they belong to the ``inner_solve`` layer      |

The conventions shared with ``vardax_jax.dynamics`` (shapes, solvers, the 4D-Var cost) and
every check, default and message that needs no framework are `pipekit_cycle.dynamics`.
``solver="rk4"`` is torchdiffeq's own ``"rk4"`` (Kutta's 3/8 rule) taking ``substeps`` equal
steps per save interval.

Examples
--------
```python
import numpy as np
import vardax_torch as vd

trajectory = vd.dynamics.rollout_numpy("lorenz63", np.ones(3), 2, 0.01)  # x0, n_steps, dt
assert trajectory.shape == (3, 3)  # x0, then two steps
```
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import functools
import itertools
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
import torchdiffeq
from torch import nn
from torch.utils.checkpoint import checkpoint

from pipekit_cycle import dynamics as shared
from pipekit_cycle.adjoints import AdjointSpec, checkpoint_schedule
from pipekit_cycle.dynamics import DEFAULT_ATOL, DEFAULT_MAX_STEPS, DEFAULT_RTOL, SolverName
from pipekit_cycle.dynamics import check_dt as _check_dt
from pipekit_cycle.validation import check_count as _check_count
from pipekit_cycle.validation import check_state_shape as _check_state

from .vector_fields import LinearField, Lorenz63, Lorenz96, field_parameters

__all__ = [
    "AbstractOdeintAdjoint",
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

Tendency = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``func(t, y) -> dy/dt``, torchdiffeq's convention."""


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


# --------------------------------------------------------------------------------------------
# Adjoints
# --------------------------------------------------------------------------------------------


class AbstractOdeintAdjoint(abc.ABC):
    r"""How an ODE solve is differentiated; the adjoint runs the integration (DESIGN 5).

    `TorchDiffEqForwardModel` hands `integrate` what ``torchdiffeq.odeint`` takes (the tendency
    ``func(t, y)``, the initial state ``y0``, the increasing save times ``t`` and ``solver``, the
    keyword arguments ``method``, ``options`` and, for an adaptive method, ``rtol``/``atol``) and
    the tensors ``params`` that ``func`` depends on, and never looks at the adjoint's type: a
    subclass written outside the package plugs in. Its value must be
    ``torchdiffeq.odeint(func, y0, t, **solver)``'s, ``(len(t), *y0.shape)``; only how
    gradients reach ``y0`` and ``params`` is the adjoint's to choose.

    Examples
    --------
    ```python
    import numpy as np
    import torch
    import torchdiffeq
    import vardax_torch as vd


    class EveryStepCheckpointed(vd.AbstractOdeintAdjoint):  # store only the state at each save time
        def integrate(self, func, y0, t, *, params, solver):
            states = [y0]
            for start, stop in zip(t[:-1], t[1:]):
                segment = lambda y, t0=start, t1=stop: torchdiffeq.odeint(func, y, torch.stack([t0, t1]), **solver)[-1]
                states.append(torch.utils.checkpoint.checkpoint(segment, states[-1], use_reentrant=False))
            return torch.stack(states)


    field = vd.Lorenz63(dtype=torch.float64)
    model = vd.TorchDiffEqForwardModel(field, 0.01)
    x0 = torch.tensor([1.0, 2.0, 20.0], dtype=torch.float64)


    def grad_rho(adjoint):  # d/d rho of the sum of squares of a 20-step rollout
        loss = model.with_adjoint(adjoint).rollout(x0, 20).square().sum()
        return torch.autograd.grad(loss, field.rho)[0]


    assert torch.allclose(grad_rho(EveryStepCheckpointed()), grad_rho(vd.DirectOdeint()), rtol=1e-12)  # exact
    ```
    """

    @abc.abstractmethod
    def integrate(
        self,
        func: Tendency,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        params: tuple[torch.Tensor, ...],
        solver: Mapping[str, Any],
    ) -> torch.Tensor:
        """The solution at the times ``t``, ``(len(t), *y0.shape)``, differentiable as this adjoint says."""


@dataclasses.dataclass(frozen=True)
class DirectOdeint(AbstractOdeintAdjoint):
    """Backprop through every step of ``torchdiffeq.odeint``; memory linear in the steps.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import torch
    import vardax_torch as vd

    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # x(1) = [[cos 1, sin 1], [-sin 1, cos 1]] x0


    def gradient(adjoint):  # d/dx0 of the sum of x(1), the rollout differentiated by ``adjoint``
        model = vd.TorchDiffEqForwardModel(field, 0.1, adjoint=adjoint)
        x0 = torch.tensor([1.0, 0.0], dtype=field.matrix.dtype, requires_grad=True)
        model.rollout(x0, 10)[-1].sum().backward()
        return x0.grad.numpy()


    exact = [np.cos(1.0) - np.sin(1.0), np.sin(1.0) + np.cos(1.0)]
    assert vd.to_dynamics_adjoint(pk.DirectAdjoint()) == vd.DirectOdeint()
    assert np.allclose(gradient(vd.DirectOdeint()), exact, atol=1e-5)
    ```
    """

    def integrate(
        self,
        func: Tendency,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        params: tuple[torch.Tensor, ...],
        solver: Mapping[str, Any],
    ) -> torch.Tensor:
        del params  # autograd finds them in the graph
        return torchdiffeq.odeint(func, y0, t, **solver)


@dataclasses.dataclass(frozen=True)
class CheckpointedOdeint(AbstractOdeintAdjoint):
    """``torch.utils.checkpoint`` (non-reentrant) over segments of the save times.

    ``pipekit_cycle.checkpoint_schedule(len(t) - 1, checkpoints)`` segments (``None``:
    ``ceil(log2 n)`` for ``n`` save intervals), each a ``torchdiffeq.odeint`` from the last state
    of the one before. Only each segment's starting state is stored; the backward re-integrates
    one segment at a time. With ``solver="rk4"`` a segment steps on the very grid of the whole
    window, so the values are Direct's bit for bit; an adaptive solver restarts its step-size
    control at each segment (torchdiffeq keeps no solver state between calls), so with
    ``"dopri5"`` they agree with Direct's to the solver's tolerance.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import torch
    import vardax_torch as vd

    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # x(1) = [[cos 1, sin 1], [-sin 1, cos 1]] x0


    def gradient(adjoint):  # d/dx0 of the sum of x(1), the rollout differentiated by ``adjoint``
        model = vd.TorchDiffEqForwardModel(field, 0.1, adjoint=adjoint)
        x0 = torch.tensor([1.0, 0.0], dtype=field.matrix.dtype, requires_grad=True)
        model.rollout(x0, 10)[-1].sum().backward()
        return x0.grad.numpy()


    exact = [np.cos(1.0) - np.sin(1.0), np.sin(1.0) + np.cos(1.0)]
    assert vd.to_dynamics_adjoint(pk.RecursiveCheckpointAdjoint(2)) == vd.CheckpointedOdeint(checkpoints=2)
    assert np.allclose(gradient(vd.CheckpointedOdeint(checkpoints=2)), exact, atol=1e-5)  # exact: recomputed
    ```
    """

    checkpoints: int | None = None

    def integrate(
        self,
        func: Tendency,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        params: tuple[torch.Tensor, ...],
        solver: Mapping[str, Any],
    ) -> torch.Tensor:
        del params  # the non-reentrant checkpoint tracks what the segment uses
        n_steps = len(t) - 1
        segments = checkpoint_schedule(n_steps, self.checkpoints)  # the project's one schedule
        bounds = np.linspace(0, n_steps, segments + 1).round().astype(int)
        pieces, current = [y0.unsqueeze(0)], y0
        for start, stop in itertools.pairwise(bounds):
            # The segment's activations are dropped and recomputed from its starting state on
            # the backward; the parameters used inside are tracked, so they get gradients too.
            ys = checkpoint(
                functools.partial(torchdiffeq.odeint, func, **solver), current, t[start : stop + 1],
                use_reentrant=False,
            )
            pieces.append(ys[1:])
            current = ys[-1]
        return torch.cat(pieces, dim=0)


@dataclasses.dataclass(frozen=True)
class BacksolveOdeint(AbstractOdeintAdjoint):
    """``torchdiffeq.odeint_adjoint``: the continuous adjoint integrated backwards in time.

    ``rtol``/``atol`` are its ``adjoint_rtol``/``adjoint_atol`` (both ``None``: the forward's);
    a fixed-step method ignores tolerances, so after ``"rk4"`` the adjoint steps backwards on
    the forward's own grid.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import torch
    import vardax_torch as vd

    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # x(1) = [[cos 1, sin 1], [-sin 1, cos 1]] x0


    def gradient(adjoint):  # d/dx0 of the sum of x(1), the rollout differentiated by ``adjoint``
        model = vd.TorchDiffEqForwardModel(field, 0.1, adjoint=adjoint)
        x0 = torch.tensor([1.0, 0.0], dtype=field.matrix.dtype, requires_grad=True)
        model.rollout(x0, 10)[-1].sum().backward()
        return x0.grad.numpy()


    exact = [np.cos(1.0) - np.sin(1.0), np.sin(1.0) + np.cos(1.0)]
    assert vd.to_dynamics_adjoint(pk.BacksolveAdjoint()) == vd.BacksolveOdeint()
    assert np.allclose(gradient(vd.BacksolveOdeint()), exact, atol=1e-4)  # approximate, close on this grid
    ```
    """

    rtol: float | None = None
    atol: float | None = None

    def integrate(
        self,
        func: Tendency,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        params: tuple[torch.Tensor, ...],
        solver: Mapping[str, Any],
    ) -> torch.Tensor:
        return torchdiffeq.odeint_adjoint(
            func, y0, t, adjoint_params=params, adjoint_rtol=self.rtol, adjoint_atol=self.atol, **solver
        )


def to_dynamics_adjoint(spec: AdjointSpec | str | AbstractOdeintAdjoint | None = None) -> AbstractOdeintAdjoint:
    """Map an adjoint spec of the ``"dynamics"`` layer onto torchdiffeq / torch's own mechanism.

    ``None`` is the layer's default, ``RecursiveCheckpointAdjoint()``; a native adjoint (any
    `AbstractOdeintAdjoint`, a user's own included) passes through unchanged
    (`pipekit_cycle.dynamics.map_dynamics_spec`). ``BacksolveAdjoint(rtol, atol)``: with both
    ``None`` the backward solve uses the forward's tolerances; otherwise ``(rtol, atol)`` (a
    missing one is ``DEFAULT_RTOL``/``DEFAULT_ATOL``), applied when the forward solver is
    adaptive (a fixed-step solver steps the adjoint on its own grid). Specs of the
    ``inner_solve`` layer raise ``ValueError`` naming it.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    assert isinstance(vd.to_dynamics_adjoint(), vd.CheckpointedOdeint)  # the layer's default
    assert isinstance(vd.to_dynamics_adjoint(pk.BacksolveAdjoint()), vd.BacksolveOdeint)
    assert isinstance(vd.to_dynamics_adjoint(pk.DirectAdjoint()), vd.DirectOdeint)
    ```
    """
    return shared.map_dynamics_spec(
        spec,
        AbstractOdeintAdjoint,
        direct=DirectOdeint,
        checkpoint=CheckpointedOdeint,
        backsolve=BacksolveOdeint,
    )


# --------------------------------------------------------------------------------------------
# Forward model
# --------------------------------------------------------------------------------------------


class TorchDiffEqForwardModel(nn.Module):
    r"""ODE forward model :math:`\dot x = f_\theta(x)` integrated with torchdiffeq.

    ``step(state, dt)`` integrates ``state`` (``(..., N)``) over ``dt``; ``rollout(state,
    n_steps)`` returns the trajectory ``(..., n_steps + 1, N)`` at times ``0, dt, ..., n_steps
    dt`` (row 0 is ``state``). ``solver="rk4"``: torchdiffeq's ``"rk4"`` (3/8 rule), ``substeps``
    equal steps per interval ``dt``; ``"dopri5"``: adaptive with ``rtol``/``atol``, first step
    ``dt / substeps``, at most ``max_steps`` steps. Gradients follow ``adjoint`` (a dynamics spec
    or a native adjoint, stored native; see `to_dynamics_adjoint`), which runs the integration
    (`AbstractOdeintAdjoint.integrate`). The vector field is a
    sub-module, so ``parameters()`` are its parameters. Immutable: `with_adjoint` returns a new
    model sharing the vector field. Satisfies `pipekit_cycle.ForwardModel`.

    Examples
    --------
    ```python
    import numpy as np
    import torch
    import vardax_torch as vd

    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # x(t) = (cos t, -sin t) from (1, 0)
    model = vd.TorchDiffEqForwardModel(field, 0.1, substeps=2)  # torchdiffeq's rk4, constant step dt / 2
    x0 = torch.tensor([1.0, 0.0], dtype=field.matrix.dtype)
    trajectory = vd.to_numpy(model.rollout(x0, 10))  # t = 0, 0.1, ..., 1
    assert trajectory.shape == (11, 2)
    assert np.allclose(trajectory[-1], [np.cos(1.0), -np.sin(1.0)], atol=1e-5)
    ```
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
        max_steps: int = DEFAULT_MAX_STEPS,
        adjoint: AdjointSpec | str | AbstractOdeintAdjoint | None = None,
    ) -> None:
        settings = shared.check_solver_settings(solver, substeps, rtol, atol, max_steps)
        super().__init__()
        self.vector_field = vector_field
        self._dt = _check_dt(dt)
        self._adjoint = to_dynamics_adjoint(adjoint)
        self.solver, self.substeps, self.rtol, self.atol, self.max_steps = settings

    @property
    def dt(self) -> float:
        return self._dt

    @property
    def adjoint(self) -> AbstractOdeintAdjoint:
        return self._adjoint

    @property
    def state_dim(self) -> int:
        return self.vector_field.state_dim

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vector_field.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The vector field's device: states given as arrays are placed there."""
        return next(self.vector_field.parameters()).device

    def with_adjoint(self, spec: AdjointSpec | str | AbstractOdeintAdjoint | None) -> TorchDiffEqForwardModel:
        """A new model differentiated by ``spec`` (``ValueError`` for a spec of another layer)."""
        native = to_dynamics_adjoint(spec)
        # A shallow copy shares the vector field (and so its parameters); only the adjoint differs.
        model = copy.copy(self)
        model._modules = dict(self._modules)
        model._adjoint = native
        return model

    def step(self, state: torch.Tensor | npt.ArrayLike, dt: float | None = None) -> torch.Tensor:
        """Integrate ``state`` (``(..., N)``) over ``dt`` (default: the model's ``dt``)."""
        dt = self.dt if dt is None else _check_dt(dt)
        return self._solve(state, dt, 1)[..., -1, :]

    def rollout(self, state: torch.Tensor | npt.ArrayLike, n_steps: int) -> torch.Tensor:
        """The trajectory ``(..., n_steps + 1, N)``: ``state`` then ``n_steps`` steps of ``dt``."""
        n_steps = _check_count("n_steps", n_steps, 0)
        return self._solve(state, self.dt, n_steps)

    def forward(self, state: torch.Tensor | npt.ArrayLike, n_steps: int) -> torch.Tensor:
        """`rollout` (``nn.Module`` call syntax)."""
        return self.rollout(state, n_steps)

    def _tendency(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        del t  # autonomous
        return self.vector_field(y)

    def _odeint_kwargs(self, h: float) -> dict[str, Any]:
        if self.solver == "rk4":
            return {"method": "rk4", "options": {"grid_constructor": functools.partial(_substep_grid, self.substeps)}}
        return {
            "method": "dopri5",
            "rtol": self.rtol,
            "atol": self.atol,
            "options": {"first_step": h, "max_num_steps": self.max_steps},
        }

    def _solve(self, state: Any, dt: float, n_steps: int) -> torch.Tensor:
        state = torch.as_tensor(state, dtype=self.dtype, device=self.device)
        _check_state("state", tuple(state.shape), self.state_dim)
        if n_steps == 0:
            return state.unsqueeze(-2)
        times = torch.arange(n_steps + 1, dtype=state.dtype, device=state.device) * dt
        ys = self._adjoint.integrate(
            self._tendency,
            state,
            times,
            params=tuple(self.vector_field.parameters()),
            solver=self._odeint_kwargs(dt / self.substeps),
        )
        return torch.movedim(ys, 0, -2)  # (times, ..., N) -> (..., times, N)


def _substep_grid(substeps: int, func: Any, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's fixed-step grid: each interval of ``t`` in ``substeps`` equal steps.

    Built from each interval's own end points (not ``t[0] + k h``), so every save time is a grid
    point and the grid of a run of save times is the window's grid restricted to it: an
    integration split at save times (`CheckpointedOdeint`) takes the very steps of the whole one.
    """
    del func, y0
    fractions = torch.arange(substeps, dtype=t.dtype, device=t.device) / substeps
    inner = t[:-1, None] + (t[1:] - t[:-1])[:, None] * fractions
    return torch.cat([inner.reshape(-1), t[-1:]])


# --------------------------------------------------------------------------------------------
# Strong-constraint 4D-Var
# --------------------------------------------------------------------------------------------


class StrongFourDVar(nn.Module):
    r"""Strong-constraint 4D-Var over the initial state, minimised with ``torch.optim.LBFGS``.

    The cost :math:`J(x_0)` and the shapes of ``background_cov`` (:math:`B`), ``obs_var``
    (:math:`R`), ``xb`` and ``obs`` are those of `pipekit_cycle.dynamics`, which also checks
    them (``n_steps=None``: taken from ``obs``). ``__call__(xb, obs)`` returns the analysis
    ``x_a = argmin J``, started from ``xb``; L-BFGS (strong Wolfe line search, history of
    ``max_steps``) stops on optimistix's Cauchy test with ``rtol``/``atol`` (an iteration
    changes ``x0`` by less than ``atol + rtol max|x0|`` and ``J`` by less than ``atol + rtol |J|``)
    or after ``max_steps`` iterations (then a `pipekit_cycle.ConvergenceWarning`).
    Gradients of ``J`` follow the forward model's adjoint.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_torch as vd

    forward = vd.make_forward_model("linear", 0.1, parameters={"matrix": np.zeros((2, 2))})  # A = 0: x stays put
    var = vd.StrongFourDVar(forward, background_cov=np.ones(2), obs_var=1.0)  # B = I, R = 1
    xb, obs = np.zeros(2), np.ones((2, 2))  # obs (T, N): T = 2 times
    xa = vd.to_numpy(var(xb, obs))
    assert np.allclose(xa, 2 / 3, atol=1e-4)  # (xb / B + sum_t y_t / R) / (1 / B + T / R)
    assert float(var.cost(xa, xb, obs)) < float(var.cost(xb, xb, obs))  # J(x_a) < J(x_b)
    ```
    """

    def __init__(
        self,
        forward_model: TorchDiffEqForwardModel,
        background_cov: npt.ArrayLike,
        obs_var: npt.ArrayLike,
        *,
        n_steps: int | None = None,
        rtol: float = shared.FOURDVAR_RTOL,
        atol: float = shared.FOURDVAR_ATOL,
        max_steps: int = shared.FOURDVAR_MAX_STEPS,
    ) -> None:
        prior = shared.check_covariances(background_cov, obs_var, forward_model.state_dim)
        settings = shared.check_fourdvar_settings(n_steps, rtol, atol, max_steps)
        super().__init__()
        dtype, device = forward_model.dtype, forward_model.device
        self.forward_model = forward_model
        self.register_buffer("background_cov", torch.as_tensor(prior.background_cov, dtype=dtype, device=device))
        self.register_buffer("obs_var", torch.as_tensor(prior.obs_var, dtype=dtype, device=device))
        chol = prior.background_chol
        self.register_buffer(
            "_background_chol", None if chol is None else torch.as_tensor(chol, dtype=dtype, device=device)
        )
        self.n_steps, self.rtol, self.atol, self.max_steps = settings

    def _prepare(self, xb: Any, obs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        dtype, device = self.forward_model.dtype, self.forward_model.device
        xb = torch.as_tensor(xb, dtype=dtype, device=device)
        obs = torch.as_tensor(obs, dtype=dtype, device=device)
        n_steps = shared.window_steps(tuple(xb.shape), tuple(obs.shape), self.forward_model.state_dim, self.n_steps)
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

    def cost(
        self, x0: torch.Tensor | npt.ArrayLike, xb: torch.Tensor | npt.ArrayLike, obs: torch.Tensor | npt.ArrayLike
    ) -> torch.Tensor:
        """:math:`J(x_0)` (a scalar: the sum over windows)."""
        xb, y, mask, n_steps = self._prepare(xb, obs)
        x0 = torch.as_tensor(x0, dtype=xb.dtype, device=xb.device)
        _check_state("x0", tuple(x0.shape), self.forward_model.state_dim)
        return self._cost(x0, xb, y, mask, n_steps)

    def _converged(self, x: torch.Tensor, value: float, x_previous: torch.Tensor, value_previous: float) -> bool:
        # optimistix's Cauchy termination (max norm): both the step and the change of J are small.
        step_small = float(torch.max(torch.abs(x - x_previous))) < self.atol + self.rtol * float(
            torch.max(torch.abs(x))
        )
        return step_small and abs(value - value_previous) < self.atol + self.rtol * abs(value)

    def forward(self, xb: torch.Tensor | npt.ArrayLike, obs: torch.Tensor | npt.ArrayLike) -> torch.Tensor:
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
            warnings.warn(shared.fourdvar_not_converged("L-BFGS", self.max_steps, self.max_steps), stacklevel=2)
        return x0.detach()


# --------------------------------------------------------------------------------------------
# numpy-in, numpy-out helpers (the conformance suite calls these in both backends)
# --------------------------------------------------------------------------------------------


def _rollout(model: TorchDiffEqForwardModel, x0: np.ndarray, n_steps: int) -> np.ndarray:
    with torch.no_grad():  # numbers only: no graph to keep
        return model.rollout(x0, n_steps).numpy()


def _loss_and_grads(
    model: TorchDiffEqForwardModel, x0: np.ndarray, n_steps: int, target: np.ndarray | None
) -> tuple[float, dict[str, np.ndarray]]:
    state = torch.as_tensor(x0, dtype=model.dtype).clone().requires_grad_(True)
    trajectory = model.rollout(state, n_steps)
    reference = torch.zeros_like(trajectory) if target is None else torch.as_tensor(target, dtype=model.dtype)
    loss = 0.5 * torch.sum((trajectory - reference) ** 2)
    loss.backward()
    field = model.vector_field
    grads = {name: _to_numpy(getattr(field, name).grad) for name in field.parameter_names}
    return float(loss.detach()), {"x0": _to_numpy(state.grad), **grads}


# Builders by name (in float64, whatever torch's default) and numpy helpers: arguments,
# defaults and checks in pipekit_cycle.dynamics.
_API: Final = shared.DynamicsApi[nn.Module, TorchDiffEqForwardModel](
    fields={
        name: functools.partial(cls, dtype=torch.float64)
        for name, cls in (("lorenz63", Lorenz63), ("lorenz96", Lorenz96), ("linear", LinearField))
    },
    forward_model=TorchDiffEqForwardModel,
    fourdvar=StrongFourDVar,
    rollout=_rollout,
    loss_and_grads=_loss_and_grads,
    to_numpy=_to_numpy,
)
make_vector_field = _API.make_vector_field
make_forward_model = _API.make_forward_model
rollout_numpy = _API.rollout_numpy
trajectory_loss_and_grads = _API.trajectory_loss_and_grads
strong_4dvar_numpy = _API.strong_4dvar_numpy
