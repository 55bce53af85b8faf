r"""Dynamics layer: an ODE forward model on diffrax, its adjoints and strong-constraint 4D-Var.

The forward model integrates an autonomous ODE :math:`\dot x = f_\theta(x)` (the vector fields
are `vardax_jax.vector_fields`, re-exported here). Its gradients (w.r.t. the initial state and
the vector-field parameters :math:`\theta`) follow an adjoint of the ``"dynamics"`` layer: a
``diffrax.AbstractAdjoint``, handed to ``diffrax.diffeqsolve`` as it is, whose ``loop`` runs the
integration its way, so a user's own diffrax adjoint plugs in. `to_dynamics_adjoint` maps the
specs, once, onto diffrax's mechanisms:

| spec                          | native                                                          |
|-------------------------------|-----------------------------------------------------------------|
| ``DirectAdjoint``             | ``diffrax.DirectAdjoint()``                                     |
| ``RecursiveCheckpointAdjoint``| `ScheduledCheckpointAdjoint(checkpoints)`: the shared schedule  |
| ``BacksolveAdjoint``          | `MatchedBacksolveAdjoint(...)`: the continuous adjoint          |
| ``Truncated``/``Implicit``    | ``ValueError``: they belong to the ``inner_solve`` layer        |

The conventions shared with ``vardax_torch.dynamics`` (shapes, solvers, the 4D-Var cost) and
every check, default and message that needs no framework are `pipekit_cycle.dynamics`.
``solver="rk4"`` is Kutta's 3/8 rule, torchdiffeq's ``"rk4"``: diffrax 0.7 ships no RK4, so
`ThreeEighthsRK4` gives diffrax that Butcher tableau.

Examples
--------
```python
import numpy as np
import vardax_jax as vd

trajectory = vd.dynamics.rollout_numpy("lorenz63", np.ones(3), 2, 0.01)  # x0, n_steps, dt
assert trajectory.shape == (3, 3)  # x0, then two steps
```
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Final

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike

from pipekit_cycle import dynamics as shared
from pipekit_cycle.adjoints import AdjointSpec, checkpoint_schedule
from pipekit_cycle.dynamics import DEFAULT_ATOL, DEFAULT_MAX_STEPS, DEFAULT_RTOL, SolverName
from pipekit_cycle.validation import check_count as _check_count
from pipekit_cycle.validation import check_state_shape as _check_state

from .vector_fields import LinearField, Lorenz63, Lorenz96, field_parameters

__all__ = [
    "DiffraxForwardModel",
    "LinearField",
    "Lorenz63",
    "Lorenz96",
    "MatchedBacksolveAdjoint",
    "ScheduledCheckpointAdjoint",
    "StrongFourDVar",
    "ThreeEighthsRK4",
    "field_parameters",
    "make_forward_model",
    "make_vector_field",
    "rollout_numpy",
    "strong_4dvar_numpy",
    "to_dynamics_adjoint",
    "trajectory_loss_and_grads",
]


def _default_float() -> Any:
    # The framework's own precision switch decides, as for the rest of the backend.
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def _check_dt(dt: Any) -> Any:
    """`pipekit_cycle.dynamics.check_dt`, except that a traced ``dt`` passes unchecked (so a
    rollout can be differentiated with respect to it)."""
    return dt if isinstance(dt, jax.core.Tracer) else shared.check_dt(dt)


# --------------------------------------------------------------------------------------------
# Solver and adjoints
# --------------------------------------------------------------------------------------------

# Kutta's 3/8 rule: c = (0, 1/3, 2/3, 1), b = (1/8, 3/8, 3/8, 1/8). It has no embedded error
# estimate (b_error is zero), so it is only ever run with constant steps.
_THREE_EIGHTHS_TABLEAU = diffrax.ButcherTableau(
    c=np.array([1 / 3, 2 / 3, 1.0]),
    b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]),
    b_error=np.zeros(4),
    a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]), np.array([1.0, -1.0, 1.0])),
)


def _linear_from_k(*, t0: Any, t1: Any, y0: Any, y1: Any, k: Any) -> diffrax.LocalLinearInterpolation:
    # Saves only ever fall on step boundaries, where a linear interpolant returns the step's
    # own endpoint; torchdiffeq's fixed-grid solvers interpolate linearly too.
    del k
    return diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)


class ThreeEighthsRK4(diffrax.AbstractERK):
    r"""Kutta's 3/8-rule RK4 (torchdiffeq's ``"rk4"``) as a diffrax solver; constant steps only.

    .. math::
        k_1 = f(y_0),\ k_2 = f(y_0 + \tfrac{h}{3} k_1),\ k_3 = f(y_0 + h(k_2 - \tfrac13 k_1)),\
        k_4 = f(y_0 + h(k_1 - k_2 + k_3)),\quad y_1 = y_0 + \tfrac{h}{8}(k_1 + 3k_2 + 3k_3 + k_4)

    Examples
    --------
    ```python
    import diffrax
    import jax.numpy as jnp
    import numpy as np
    import vardax_jax as vd

    term = diffrax.ODETerm(lambda t, y, args: -y)  # y' = -y
    solution = diffrax.diffeqsolve(term, vd.ThreeEighthsRK4(), t0=0.0, t1=1.0, dt0=0.1, y0=jnp.array(1.0))
    assert np.isclose(float(solution.ys[-1]), np.exp(-1.0), atol=1e-5)  # fourth order
    ```
    """

    tableau: ClassVar[diffrax.ButcherTableau] = _THREE_EIGHTHS_TABLEAU
    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = staticmethod(_linear_from_k)

    def order(self, terms: Any) -> int:
        del terms
        return 4


class ScheduledCheckpointAdjoint(diffrax.RecursiveCheckpointAdjoint):
    r"""``diffrax.RecursiveCheckpointAdjoint`` storing the project's one schedule of states.

    ``checkpoints`` is the spec's (``None``: the schedule's default). `loop` is handed the
    solve's ``max_steps`` :math:`n` (`DiffraxForwardModel`: the step count plus one under
    ``"rk4"``, the step cap under ``"dopri5"``) and stores
    ``pipekit_cycle.checkpoint_schedule(n, checkpoints)`` states, :math:`\lceil \log_2 n \rceil`
    for ``None`` (diffrax's own default is about :math:`\sqrt{2n}`), the rule of
    `vardax_torch.CheckpointedOdeint` and of both backends' inner solve. With ``max_steps=None``
    it stores ``checkpoints`` (diffrax then needs a number). The forward value and the exact
    gradient are diffrax's; only memory and recomputation follow the schedule.

    Examples
    --------
    ```python
    import diffrax
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    native = vd.to_dynamics_adjoint(pk.RecursiveCheckpointAdjoint())  # the layer's default
    assert native == vd.ScheduledCheckpointAdjoint(checkpoints=None)
    assert isinstance(native, diffrax.RecursiveCheckpointAdjoint)
    term = diffrax.ODETerm(lambda t, y, a: -a * y)  # y(1) = exp(-a) y(0)


    def y1(a, adjoint):  # 100 steps of 0.01, at most 128: ceil(log2 128) = 7 stored states
        solution = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 1.0, 0.01, 1.0, a, adjoint=adjoint, max_steps=128)
        return solution.ys[-1]


    gradient = jax.grad(y1)(2.0, native)
    assert np.isclose(gradient, jax.grad(y1)(2.0, diffrax.DirectAdjoint()), rtol=1e-6)  # exact
    assert np.isclose(gradient, -np.exp(-2.0), rtol=1e-4)  # d/da exp(-a)
    ```
    """

    def loop(self, *, max_steps: int | None, **kwargs: Any) -> Any:
        stored = self.checkpoints if max_steps is None else checkpoint_schedule(max_steps, self.checkpoints)
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=stored).loop(max_steps=max_steps, **kwargs)


class MatchedBacksolveAdjoint(diffrax.BacksolveAdjoint):
    """``diffrax.BacksolveAdjoint`` whose backward step-size controller follows the forward's kind.

    ``kwargs`` are diffrax's (`to_dynamics_adjoint` sets ``stepsize_controller`` from a spec's
    tolerances). `loop` sees the forward solve's controller: an adaptive one, and the backward
    solve uses ``kwargs`` as given; a fixed-step one (``"rk4"``'s constant step), and the
    backward drops ``stepsize_controller`` and steps on the forward's own grid, as
    torchdiffeq's does. Tolerances mean nothing without an error estimate (`ThreeEighthsRK4`'s
    is zero, so a PID controller would only grow its steps).

    Examples
    --------
    ```python
    import diffrax
    import jax
    import jax.numpy as jnp
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    native = vd.to_dynamics_adjoint(pk.BacksolveAdjoint(rtol=1e-3, atol=1e-3))
    assert isinstance(native, vd.MatchedBacksolveAdjoint) and native.kwargs["stepsize_controller"].rtol == 1e-3
    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # x(1) = [[cos 1, sin 1], [-sin 1, cos 1]] x0


    def gradient(adjoint):  # d/dx0 of the sum of x(1): rk4, constant steps of 0.1
        model = vd.DiffraxForwardModel(field, 0.1, adjoint=adjoint)
        return jax.grad(lambda x0: model.rollout(x0, 10)[-1].sum())(jnp.array([1.0, 0.0]))


    # After a fixed-step forward the loose tolerances are not used: the forward's grid is.
    assert np.array_equal(gradient(native), gradient(pk.BacksolveAdjoint()))
    assert np.allclose(gradient(native), [np.cos(1.0) - np.sin(1.0), np.sin(1.0) + np.cos(1.0)], atol=1e-4)
    ```
    """

    def loop(self, *, stepsize_controller: diffrax.AbstractStepSizeController, **kwargs: Any) -> Any:
        # The forward's controller, not an adjoint type, decides: chosen here, inside the adjoint
        # the spec was mapped to, so the forward model hands every adjoint over unlooked-at.
        if isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController):
            return super().loop(stepsize_controller=stepsize_controller, **kwargs)
        on_grid = diffrax.BacksolveAdjoint(**{k: v for k, v in self.kwargs.items() if k != "stepsize_controller"})
        return on_grid.loop(stepsize_controller=stepsize_controller, **kwargs)


def to_dynamics_adjoint(spec: AdjointSpec | str | diffrax.AbstractAdjoint | None = None) -> diffrax.AbstractAdjoint:
    """Map an adjoint spec of the ``"dynamics"`` layer onto diffrax's own mechanism.

    ``None`` is the layer's default, ``RecursiveCheckpointAdjoint()``: a
    `ScheduledCheckpointAdjoint`; ``DirectAdjoint()``: ``diffrax.DirectAdjoint()``. A native
    ``diffrax.AbstractAdjoint`` (a user's own included) passes through unchanged
    (`pipekit_cycle.dynamics.map_dynamics_spec`). ``BacksolveAdjoint(rtol, atol)``: a
    `MatchedBacksolveAdjoint`; with both ``None`` the backward solve uses the forward's
    step-size controller, otherwise a ``PIDController(rtol, atol)`` (a missing one is
    ``DEFAULT_RTOL``/``DEFAULT_ATOL``), applied when the forward solver is adaptive (a
    fixed-step solver steps the adjoint on its own grid, as torchdiffeq does). Specs of the
    ``inner_solve`` layer raise ``ValueError`` naming it.

    Examples
    --------
    ```python
    import diffrax
    import pipekit_cycle as pk
    import vardax_jax as vd

    assert isinstance(vd.to_dynamics_adjoint(), diffrax.RecursiveCheckpointAdjoint)  # the layer's default
    assert isinstance(vd.to_dynamics_adjoint(pk.BacksolveAdjoint()), diffrax.BacksolveAdjoint)
    assert isinstance(vd.to_dynamics_adjoint(pk.DirectAdjoint()), diffrax.DirectAdjoint)
    ```
    """
    return shared.map_dynamics_spec(
        spec,
        diffrax.AbstractAdjoint,
        direct=diffrax.DirectAdjoint,
        checkpoint=lambda checkpoints: ScheduledCheckpointAdjoint(checkpoints=checkpoints),
        backsolve=_backsolve,
    )


def _backsolve(rtol: float | None, atol: float | None) -> MatchedBacksolveAdjoint:
    # rtol = atol = None: the backward solve reuses the forward's step-size controller.
    if rtol is None or atol is None:
        return MatchedBacksolveAdjoint()
    return MatchedBacksolveAdjoint(stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))


# --------------------------------------------------------------------------------------------
# Forward model
# --------------------------------------------------------------------------------------------


def _tendency(t: Any, y: Array, field: eqx.Module) -> Array:
    # The field travels as diffrax's ``args`` (not a closure) so every adjoint, Backsolve
    # included, differentiates its parameters.
    del t
    return field(y)


_TERM: Final = diffrax.ODETerm(_tendency)


class DiffraxForwardModel(eqx.Module):
    r"""ODE forward model :math:`\dot x = f_\theta(x)` integrated with diffrax.

    ``step(state, dt)`` integrates ``state`` (``(..., N)``) over ``dt``; ``rollout(state,
    n_steps)`` returns the trajectory ``(..., n_steps + 1, N)`` at times ``0, dt, ..., n_steps
    dt`` (row 0 is ``state``). ``solver="rk4"``: `ThreeEighthsRK4` with the constant step
    ``dt / substeps``; ``"dopri5"``: ``diffrax.Dopri5`` with ``PIDController(rtol, atol)``,
    first step ``dt / substeps``, at most ``max_steps`` steps. Gradients follow ``adjoint`` (a
    dynamics spec or a native diffrax adjoint, stored native; see `to_dynamics_adjoint`), which
    ``diffrax.diffeqsolve`` gets as it is.
    Immutable: `with_adjoint` returns a new model. Satisfies `pipekit_cycle.ForwardModel`.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_jax as vd

    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # x(t) = (cos t, -sin t) from (1, 0)
    model = vd.DiffraxForwardModel(field, 0.1, substeps=2)  # RK4 (3/8 rule), constant step dt / 2
    trajectory = vd.to_numpy(model.rollout(np.array([1.0, 0.0]), 10))  # t = 0, 0.1, ..., 1
    assert trajectory.shape == (11, 2)
    assert np.allclose(trajectory[-1], [np.cos(1.0), -np.sin(1.0)], atol=1e-5)
    ```
    """

    vector_field: eqx.Module
    dt: float = eqx.field(static=True)
    adjoint: diffrax.AbstractAdjoint
    solver: str = eqx.field(static=True)
    substeps: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __init__(
        self,
        vector_field: eqx.Module,
        dt: float,
        *,
        solver: SolverName = "rk4",
        substeps: int = 1,
        rtol: float = DEFAULT_RTOL,
        atol: float = DEFAULT_ATOL,
        max_steps: int = DEFAULT_MAX_STEPS,
        adjoint: AdjointSpec | str | diffrax.AbstractAdjoint | None = None,
    ) -> None:
        settings = shared.check_solver_settings(solver, substeps, rtol, atol, max_steps)
        self.vector_field = vector_field
        self.dt = _check_dt(dt)
        self.adjoint = to_dynamics_adjoint(adjoint)
        self.solver, self.substeps, self.rtol, self.atol, self.max_steps = settings

    @property
    def state_dim(self) -> int:
        return self.vector_field.state_dim

    def with_adjoint(self, spec: AdjointSpec | str | diffrax.AbstractAdjoint | None) -> DiffraxForwardModel:
        """A new model differentiated by ``spec`` (``ValueError`` for a spec of another layer)."""
        return eqx.tree_at(lambda model: model.adjoint, self, to_dynamics_adjoint(spec))

    def step(self, state: ArrayLike, dt: float | None = None) -> Array:
        """Integrate ``state`` (``(..., N)``) over ``dt`` (default: the model's ``dt``)."""
        dt = self.dt if dt is None else _check_dt(dt)
        return self._solve(state, dt, 1, trajectory=False)

    def rollout(self, state: ArrayLike, n_steps: int) -> Array:
        """The trajectory ``(..., n_steps + 1, N)``: ``state`` then ``n_steps`` steps of ``dt``."""
        n_steps = _check_count("n_steps", n_steps, 0)
        return self._solve(state, self.dt, n_steps, trajectory=True)

    def _solve(self, state: ArrayLike, dt: Any, n_steps: int, *, trajectory: bool) -> Array:
        state = jnp.asarray(state, dtype=self._dtype())
        _check_state("state", state.shape, self.state_dim)
        if n_steps == 0:
            return state[..., None, :]
        h = dt / self.substeps
        if self.solver == "rk4":
            solver: diffrax.AbstractSolver = ThreeEighthsRK4()
            controller: diffrax.AbstractStepSizeController = diffrax.ConstantStepSize()
            # Exactly n_steps * substeps steps are taken (diffrax clips the last one onto t1).
            max_steps = n_steps * self.substeps + 1
        else:
            solver = diffrax.Dopri5()
            controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
            max_steps = self.max_steps
        # t1 is the last save time itself: n_steps * dt computed another way can round below
        # arange(...)[-1] * dt (dt = 0.05, n = 9) and diffrax rejects a save time past t1.
        times = jnp.arange(n_steps + 1, dtype=state.dtype) * dt
        saveat = diffrax.SaveAt(ts=times) if trajectory else diffrax.SaveAt(t1=True)
        solution = diffrax.diffeqsolve(
            _TERM,
            solver,
            t0=0.0,
            t1=times[-1],
            dt0=h,
            y0=state,
            args=self.vector_field,
            saveat=saveat,
            stepsize_controller=controller,
            adjoint=self.adjoint,  # it runs the integration's loop its own way
            max_steps=max_steps,
        )
        ys = solution.ys  # (times, ..., N)
        return jnp.moveaxis(ys, 0, -2) if trajectory else ys[0]

    def _dtype(self) -> Any:
        leaves = [leaf for leaf in jax.tree_util.tree_leaves(self.vector_field) if eqx.is_inexact_array(leaf)]
        return leaves[0].dtype if leaves else _default_float()


# --------------------------------------------------------------------------------------------
# Strong-constraint 4D-Var
# --------------------------------------------------------------------------------------------


class StrongFourDVar(eqx.Module):
    r"""Strong-constraint 4D-Var over the initial state, minimised with ``optimistix.BFGS``.

    The cost :math:`J(x_0)` and the shapes of ``background_cov`` (:math:`B`), ``obs_var``
    (:math:`R`), ``xb`` and ``obs`` are those of `pipekit_cycle.dynamics`, which also checks
    them (``n_steps=None``: taken from ``obs``). ``__call__(xb, obs)`` returns the analysis
    ``x_a = argmin J``, started from ``xb``; BFGS stops on optimistix's Cauchy test with
    ``rtol``/``atol`` or after ``max_steps`` (then a `pipekit_cycle.ConvergenceWarning`).
    Gradients of ``J`` follow the forward model's adjoint.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_jax as vd

    forward = vd.make_forward_model("linear", 0.1, parameters={"matrix": np.zeros((2, 2))})  # A = 0: x stays put
    var = vd.StrongFourDVar(forward, background_cov=np.ones(2), obs_var=1.0)  # B = I, R = 1
    xb, obs = np.zeros(2), np.ones((2, 2))  # obs (T, N): T = 2 times
    xa = vd.to_numpy(var(xb, obs))
    assert np.allclose(xa, 2 / 3, atol=1e-4)  # (xb / B + sum_t y_t / R) / (1 / B + T / R)
    assert float(var.cost(xa, xb, obs)) < float(var.cost(xb, xb, obs))  # J(x_a) < J(x_b)
    ```
    """

    forward_model: DiffraxForwardModel
    background_cov: Array
    obs_var: Array
    n_steps: int | None = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    _background_chol: Array | None

    def __init__(
        self,
        forward_model: DiffraxForwardModel,
        background_cov: ArrayLike,
        obs_var: ArrayLike,
        *,
        n_steps: int | None = None,
        rtol: float = shared.FOURDVAR_RTOL,
        atol: float = shared.FOURDVAR_ATOL,
        max_steps: int = shared.FOURDVAR_MAX_STEPS,
    ) -> None:
        prior = shared.check_covariances(background_cov, obs_var, forward_model.state_dim)
        settings = shared.check_fourdvar_settings(n_steps, rtol, atol, max_steps)
        dtype = forward_model._dtype()
        self.forward_model = forward_model
        self.background_cov = jnp.asarray(prior.background_cov, dtype)
        self.obs_var = jnp.asarray(prior.obs_var, dtype)
        chol = prior.background_chol
        self._background_chol = None if chol is None else jnp.asarray(chol, dtype)
        self.n_steps, self.rtol, self.atol, self.max_steps = settings

    def _prepare(self, xb: ArrayLike, obs: ArrayLike) -> tuple[Array, Array, Array, int]:
        dtype = self.forward_model._dtype()
        xb = jnp.asarray(xb, dtype)
        obs = jnp.asarray(obs, dtype)
        n_steps = shared.window_steps(xb.shape, obs.shape, self.forward_model.state_dim, self.n_steps)
        mask = jnp.isfinite(obs)
        return xb, jnp.where(mask, obs, 0.0), mask.astype(dtype), n_steps

    def _cost(self, x0: Array, xb: Array, y: Array, mask: Array, n_steps: int) -> Array:
        d = x0 - xb
        if self._background_chol is None:
            background = jnp.sum(d * d / self.background_cov)
        else:
            # B^{-1} d through the Cholesky factor L (B = L L^T), for each window in the batch.
            solved = jsl.cho_solve((self._background_chol, True), d.reshape(-1, d.shape[-1]).T).T
            background = jnp.sum(d.reshape(-1, d.shape[-1]) * solved)
        trajectory = self.forward_model.rollout(x0, n_steps)
        innovation = mask * (trajectory - y)
        observation = jnp.sum(innovation * innovation / self.obs_var)
        return 0.5 * (background + observation)

    def cost(self, x0: ArrayLike, xb: ArrayLike, obs: ArrayLike) -> Array:
        """:math:`J(x_0)` (a scalar: the sum over windows)."""
        xb, y, mask, n_steps = self._prepare(xb, obs)
        x0 = jnp.asarray(x0, xb.dtype)
        _check_state("x0", x0.shape, self.forward_model.state_dim)
        return self._cost(x0, xb, y, mask, n_steps)

    def __call__(self, xb: ArrayLike, obs: ArrayLike) -> Array:
        """The analysis :math:`x_a = \\arg\\min_{x_0} J(x_0)`, shaped like ``xb``."""
        xb, y, mask, n_steps = self._prepare(xb, obs)
        value, successful, steps = _minimise(self, xb, y, mask, n_steps)
        if not bool(successful):
            warnings.warn(shared.fourdvar_not_converged("BFGS", int(steps), self.max_steps), stacklevel=2)
        return value


@eqx.filter_jit
def _minimise(var: StrongFourDVar, xb: Array, y: Array, mask: Array, n_steps: int) -> tuple[Array, Array, Array]:
    # Jitted once per problem structure: BFGS then calls the cost and its gradient compiled.
    def objective(x0: Array, args: None) -> Array:
        del args
        return var._cost(x0, xb, y, mask, n_steps)

    solution = optx.minimise(
        objective, optx.BFGS(rtol=var.rtol, atol=var.atol), xb, max_steps=var.max_steps, throw=False
    )
    return solution.value, solution.result == optx.RESULTS.successful, solution.stats["num_steps"]


# --------------------------------------------------------------------------------------------
# numpy-in, numpy-out helpers (the conformance suite calls these in both backends)
# --------------------------------------------------------------------------------------------


def _rollout(model: DiffraxForwardModel, x0: np.ndarray, n_steps: int) -> np.ndarray:
    return np.asarray(model.rollout(x0, n_steps))


def _loss_and_grads(
    model: DiffraxForwardModel, x0: np.ndarray, n_steps: int, target: np.ndarray | None
) -> tuple[float, dict[str, np.ndarray]]:
    state = jnp.asarray(x0, model._dtype())
    shape = (*state.shape[:-1], n_steps + 1, state.shape[-1])
    reference = jnp.zeros(shape, state.dtype) if target is None else jnp.asarray(target, state.dtype)
    value, (grad_model, grad_x0) = _trajectory_loss_and_grads((model, state), reference, n_steps)
    return float(value), {"x0": np.asarray(grad_x0), **field_parameters(grad_model.vector_field)}


@eqx.filter_jit
@eqx.filter_value_and_grad
def _trajectory_loss_and_grads(inputs: tuple[DiffraxForwardModel, Array], reference: Array, n_steps: int) -> Array:
    # Compiled once per model structure and shape, so repeated checks reuse it.
    model, state = inputs
    return 0.5 * jnp.sum((model.rollout(state, n_steps) - reference) ** 2)


# Builders by name and numpy helpers: arguments, defaults and checks in pipekit_cycle.dynamics.
_API: Final = shared.DynamicsApi[eqx.Module, DiffraxForwardModel](
    fields={"lorenz63": Lorenz63, "lorenz96": Lorenz96, "linear": LinearField},
    forward_model=DiffraxForwardModel,
    fourdvar=StrongFourDVar,
    rollout=_rollout,
    loss_and_grads=_loss_and_grads,
    to_numpy=np.asarray,
)
make_vector_field = _API.make_vector_field
make_forward_model = _API.make_forward_model
rollout_numpy = _API.rollout_numpy
trajectory_loss_and_grads = _API.trajectory_loss_and_grads
strong_4dvar_numpy = _API.strong_4dvar_numpy
