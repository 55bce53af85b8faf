r"""Dynamics layer: ODE vector fields, a diffrax forward model and strong-constraint 4D-Var.

The forward model integrates an autonomous ODE :math:`\dot x = f_\theta(x)`. Its gradients
(w.r.t. the initial state and the vector-field parameters :math:`\theta`) follow an adjoint
spec of the ``"dynamics"`` layer, mapped onto diffrax's own mechanisms by
`to_dynamics_adjoint`:

| spec                          | native                                               |
|-------------------------------|------------------------------------------------------|
| ``DirectAdjoint``             | ``diffrax.DirectAdjoint()``                          |
| ``RecursiveCheckpointAdjoint``| ``diffrax.RecursiveCheckpointAdjoint(checkpoints)``  |
| ``BacksolveAdjoint``          | ``diffrax.BacksolveAdjoint(...)`` (continuous adjoint)|
| ``Truncated``/``Implicit``    | ``ValueError``: they belong to the ``inner_solve`` layer |

Conventions shared with ``vardax_torch.dynamics`` (same names, same numbers):

* a state is ``(..., N)``; ``rollout(state, n_steps)`` returns the trajectory
  ``(..., n_steps + 1, N)`` (time on the second-to-last axis, like the ``(windows, T, N)``
  arrays of `pipekit_cycle.problems`), row 0 being ``state`` itself;
* ``solver="rk4"`` is Kutta's 3/8-rule fourth-order Runge--Kutta method with the constant
  step ``dt / substeps``. It is what torchdiffeq calls ``"rk4"``; diffrax 0.7 ships no RK4,
  so `ThreeEighthsRK4` gives diffrax the same Butcher tableau. (Every four-stage
  fourth-order RK method has the same stability polynomial, so on a linear ODE it equals the
  classical RK4 of `pipekit_cycle.problems.rk4_step` to rounding; on a nonlinear one they
  differ by O(dt^5) per step.) ``solver="dopri5"`` is adaptive with ``rtol``/``atol``.
* error messages are ``pipekit_cycle.validation.DYNAMICS_MESSAGES``, shared by both backends.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike

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
    "DiffraxForwardModel",
    "LinearField",
    "Lorenz63",
    "Lorenz96",
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

SolverName = Literal["rk4", "dopri5"]
DEFAULT_RTOL: Final = 1e-6
DEFAULT_ATOL: Final = 1e-8


def _default_float() -> Any:
    # The framework's own precision switch decides, as for the rest of the backend.
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def _check_dt(dt: Any) -> Any:
    """``dt`` unchanged if it is a finite number > 0 (traced values are not checked)."""
    if isinstance(dt, jax.core.Tracer):
        return dt
    try:
        value = float(dt)
    except (TypeError, ValueError):
        raise ValueError(_message("dt", dt=dt)) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(_message("dt", dt=value))
    return value


# --------------------------------------------------------------------------------------------
# Vector fields
# --------------------------------------------------------------------------------------------


class Lorenz63(eqx.Module):
    r"""Lorenz-63: :math:`\dot x = \sigma (y - x),\ \dot y = x (\rho - z) - y,\ \dot z = x y - \beta z`.

    ``sigma``, ``rho``, ``beta`` are array fields (0-d), so gradients w.r.t. them are taken like
    any other parameter. ``__call__(state)`` maps ``(..., 3)`` to tendencies ``(..., 3)``.
    """

    sigma: Array
    rho: Array
    beta: Array
    state_dim: ClassVar[int] = 3
    parameter_names: ClassVar[tuple[str, ...]] = ("sigma", "rho", "beta")

    def __init__(
        self, sigma: ArrayLike = L63_SIGMA, rho: ArrayLike = L63_RHO, beta: ArrayLike = L63_BETA, *, dtype: Any = None
    ) -> None:
        dtype = _default_float() if dtype is None else dtype
        self.sigma = jnp.asarray(sigma, dtype)
        self.rho = jnp.asarray(rho, dtype)
        self.beta = jnp.asarray(beta, dtype)

    def __call__(self, state: Array) -> Array:
        x, y, z = state[..., 0], state[..., 1], state[..., 2]
        return jnp.stack([self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z], axis=-1)


class Lorenz96(eqx.Module):
    r"""Lorenz-96: :math:`\dot x_i = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F`, periodic in ``i``.

    ``forcing`` (:math:`F`) is a 0-d array field; ``state_dim`` (``N >= 4``) is static.
    """

    forcing: Array
    state_dim: int = eqx.field(static=True)
    parameter_names: ClassVar[tuple[str, ...]] = ("forcing",)

    def __init__(self, state_dim: int = 40, forcing: ArrayLike = L96_FORCING, *, dtype: Any = None) -> None:
        if isinstance(state_dim, bool) or not isinstance(state_dim, (int, np.integer)) or state_dim < 4:
            raise ValueError(f"state_dim must be an int >= 4 for Lorenz-96, got {state_dim!r}")
        dtype = _default_float() if dtype is None else dtype
        self.state_dim = int(state_dim)
        self.forcing = jnp.asarray(forcing, dtype)

    def __call__(self, state: Array) -> Array:
        ahead = jnp.roll(state, -1, axis=-1)  # x_{i+1}
        behind2 = jnp.roll(state, 2, axis=-1)  # x_{i-2}
        behind = jnp.roll(state, 1, axis=-1)  # x_{i-1}
        return (ahead - behind2) * behind - state + self.forcing


class LinearField(eqx.Module):
    r"""The linear ODE :math:`\dot x = A x` (``matrix`` :math:`A`, ``(N, N)``).

    Its rollout is linear in the initial state, which makes 4D-Var a quadratic problem with a
    closed-form solution (the linear-Gaussian check).
    """

    matrix: Array
    parameter_names: ClassVar[tuple[str, ...]] = ("matrix",)

    def __init__(self, matrix: ArrayLike, *, dtype: Any = None) -> None:
        shape = np.shape(matrix)
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(_message("matrix", shape=tuple(shape)))
        self.matrix = jnp.asarray(matrix, _default_float() if dtype is None else dtype)

    @property
    def state_dim(self) -> int:
        return self.matrix.shape[0]

    def __call__(self, state: Array) -> Array:
        return state @ self.matrix.T


VectorField = Lorenz63 | Lorenz96 | LinearField


def field_parameters(field: eqx.Module) -> dict[str, np.ndarray]:
    """The vector field's parameters by name (``field.parameter_names``), as numpy arrays."""
    return {name: np.asarray(getattr(field, name)) for name in field.parameter_names}


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
    """

    tableau: ClassVar[diffrax.ButcherTableau] = _THREE_EIGHTHS_TABLEAU
    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = staticmethod(_linear_from_k)

    def order(self, terms: Any) -> int:
        del terms
        return 4


def to_dynamics_adjoint(spec: Any = None) -> diffrax.AbstractAdjoint:
    """Map an adjoint spec of the ``"dynamics"`` layer onto diffrax's own mechanism.

    ``None`` is the layer's default, ``RecursiveCheckpointAdjoint()``. A native
    ``diffrax.AbstractAdjoint`` passes through unchanged (checked before the duck-typed name
    mapping, since diffrax's classes share the spec names). ``BacksolveAdjoint(rtol, atol)``:
    with both ``None`` the backward solve uses the forward's step-size controller; otherwise a
    ``PIDController(rtol, atol)`` (a missing one is ``DEFAULT_RTOL``/``DEFAULT_ATOL``), applied
    when the forward solver is adaptive (a fixed-step solver steps the adjoint on its own grid,
    as torchdiffeq does). Specs of the ``inner_solve`` layer raise ``ValueError`` naming it.
    """
    if spec is None:
        spec = specs.RecursiveCheckpointAdjoint()
    if isinstance(spec, diffrax.AbstractAdjoint):
        return spec
    spec = check_layer(spec, specs.DYNAMICS)
    if isinstance(spec, specs.DirectAdjoint):
        return diffrax.DirectAdjoint()
    if isinstance(spec, specs.RecursiveCheckpointAdjoint):
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=spec.checkpoints)
    if isinstance(spec, specs.BacksolveAdjoint):
        if spec.rtol is None and spec.atol is None:
            return diffrax.BacksolveAdjoint()
        rtol = DEFAULT_RTOL if spec.rtol is None else spec.rtol
        atol = DEFAULT_ATOL if spec.atol is None else spec.atol
        return diffrax.BacksolveAdjoint(stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
    # check_layer only lets the dynamics specs above through.
    raise AssertionError(f"unmapped dynamics spec {spec!r}")


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
    dynamics spec or a native diffrax adjoint, stored native; see `to_dynamics_adjoint`).
    Immutable: `with_adjoint` returns a new model. Satisfies `pipekit_cycle.ForwardModel`.
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
        max_steps: int = 4096,
        adjoint: Any = None,
    ) -> None:
        if solver not in SOLVERS:
            raise ValueError(_message("solver", value=solver))
        self.vector_field = vector_field
        self.dt = _check_dt(dt)
        self.adjoint = to_dynamics_adjoint(adjoint)
        self.solver = solver
        self.substeps = _check_count("substeps", substeps, 1)
        self.rtol = _check_tolerance("rtol", rtol)
        self.atol = _check_tolerance("atol", atol)
        self.max_steps = _check_count("max_steps", max_steps, 1)

    @property
    def state_dim(self) -> int:
        return self.vector_field.state_dim

    def with_adjoint(self, spec: Any) -> DiffraxForwardModel:
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

    def _solve_adjoint(self, n_steps: int) -> diffrax.AbstractAdjoint:
        adjoint = self.adjoint
        if type(adjoint) is diffrax.RecursiveCheckpointAdjoint:
            # The project's one schedule: as many stored states as vardax_torch, for n_steps.
            return diffrax.RecursiveCheckpointAdjoint(checkpoints=checkpoint_schedule(n_steps, adjoint.checkpoints))
        if self.solver == "rk4" and isinstance(adjoint, diffrax.BacksolveAdjoint):
            # A fixed-step forward steps the adjoint backwards on the same grid; tolerances only
            # mean something to an adaptive solver (torchdiffeq ignores them there too).
            kwargs = {k: v for k, v in adjoint.kwargs.items() if k != "stepsize_controller"}
            adjoint = diffrax.BacksolveAdjoint(**kwargs)
        return adjoint

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
            adjoint=self._solve_adjoint(n_steps),
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


def _check_covariances(background_cov: Any, obs_var: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy checks shared word for word with the torch backend; returns (chol or std, obs_var)."""
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


class StrongFourDVar(eqx.Module):
    r"""Strong-constraint 4D-Var over the initial state, minimised with ``optimistix.BFGS``.

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
    ``x_a = argmin J``, started from ``xb``; BFGS stops on optimistix's Cauchy test with
    ``rtol``/``atol`` or after ``max_steps`` (then a `pipekit_cycle.ConvergenceWarning`).
    Gradients of ``J`` follow the forward model's adjoint.
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
        rtol: float = 1e-10,
        atol: float = 1e-10,
        max_steps: int = 500,
    ) -> None:
        n = forward_model.state_dim
        cov, var = _check_covariances(background_cov, obs_var, n)
        dtype = forward_model._dtype()
        self.forward_model = forward_model
        self.background_cov = jnp.asarray(cov, dtype)
        self.obs_var = jnp.asarray(var, dtype)
        self._background_chol = jnp.asarray(np.linalg.cholesky(cov), dtype) if cov.ndim == 2 else None
        self.n_steps = None if n_steps is None else _check_count("n_steps", n_steps, 0)
        self.rtol = _check_tolerance("rtol", rtol)
        self.atol = _check_tolerance("atol", atol)
        self.max_steps = _check_count("max_steps", max_steps, 1)

    def _prepare(self, xb: ArrayLike, obs: ArrayLike) -> tuple[Array, Array, Array, int]:
        dtype = self.forward_model._dtype()
        n = self.forward_model.state_dim
        xb = jnp.asarray(xb, dtype)
        obs = jnp.asarray(obs, dtype)
        _check_state("xb", xb.shape, n)
        _check_state("obs", obs.shape, n, expected="(..., T, N)")
        if obs.ndim != xb.ndim + 1 or obs.shape[:-2] != xb.shape[:-1]:
            raise ValueError(
                _message("state_shape", name="obs", expected=f"{(*xb.shape[:-1], 'T', n)}", n=n, shape=obs.shape)
            )
        n_steps = obs.shape[-2] - 1 if self.n_steps is None else self.n_steps
        if obs.shape[-2] != n_steps + 1:
            raise ValueError(_message("obs_time", expected=n_steps + 1, got=obs.shape[-2]))
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
            warnings.warn(
                ConvergenceWarning(
                    f"StrongFourDVar: BFGS did not converge in {int(steps)} steps (max_steps={self.max_steps})"
                ),
                stacklevel=2,
            )
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


def make_vector_field(
    system: str, parameters: Mapping[str, ArrayLike] | None = None, *, state_dim: int | None = None
) -> eqx.Module:
    """``"lorenz63"`` (``sigma, rho, beta``), ``"lorenz96"`` (``forcing``; ``state_dim``, default
    40) or ``"linear"`` (``matrix``, required) with ``parameters`` by name (missing ones default)."""
    given = dict(parameters or {})
    allowed = {"lorenz63": Lorenz63.parameter_names, "lorenz96": Lorenz96.parameter_names, "linear": ("matrix",)}
    if system not in allowed:
        raise ValueError(_message("system", value=system))
    if not set(given) <= set(allowed[system]):
        raise ValueError(_message("parameters", system=system, allowed=sorted(allowed[system]), given=sorted(given)))
    if system == "lorenz63":
        return Lorenz63(**given)
    if system == "lorenz96":
        return Lorenz96(40 if state_dim is None else state_dim, **given)
    if "matrix" not in given:
        raise ValueError(_message("matrix", shape=None))
    return LinearField(given["matrix"])


def make_forward_model(
    system: str,
    dt: float,
    *,
    parameters: Mapping[str, ArrayLike] | None = None,
    state_dim: int | None = None,
    **options: Any,
) -> DiffraxForwardModel:
    """`make_vector_field` wrapped in a `DiffraxForwardModel` (``options``: solver, substeps,
    rtol, atol, max_steps, adjoint)."""
    return DiffraxForwardModel(make_vector_field(system, parameters, state_dim=state_dim), dt, **options)


def _state_dim_of(system: str, x0: np.ndarray) -> int | None:
    return int(np.shape(x0)[-1]) if system == "lorenz96" and np.ndim(x0) >= 1 else None


def rollout_numpy(
    system: str,
    x0: np.ndarray,
    n_steps: int,
    dt: float,
    *,
    parameters: Mapping[str, ArrayLike] | None = None,
    **options: Any,
) -> np.ndarray:
    """The trajectory ``(..., n_steps + 1, N)`` from ``x0`` (``(..., N)``), as numpy."""
    model = make_forward_model(system, dt, parameters=parameters, state_dim=_state_dim_of(system, x0), **options)
    return np.asarray(model.rollout(np.asarray(x0), n_steps))


def trajectory_loss_and_grads(
    system: str,
    x0: np.ndarray,
    n_steps: int,
    dt: float,
    *,
    target: np.ndarray | None = None,
    parameters: Mapping[str, ArrayLike] | None = None,
    adjoint: Any = "direct",
    **options: Any,
) -> tuple[float, dict[str, np.ndarray]]:
    r""":math:`L = \tfrac12 \sum (x_t - \mathrm{target}_t)^2` over the rollout (``target``
    ``(..., n_steps + 1, N)``, default zeros) and its gradients under ``adjoint``, as numpy:
    ``{"x0": dL/dx0, <parameter name>: dL/dtheta, ...}``."""
    model = make_forward_model(
        system, dt, parameters=parameters, state_dim=_state_dim_of(system, x0), adjoint=adjoint, **options
    )
    x0 = jnp.asarray(x0, model._dtype())
    shape = (*x0.shape[:-1], n_steps + 1, x0.shape[-1])
    reference = jnp.zeros(shape, x0.dtype) if target is None else jnp.asarray(target, x0.dtype)
    value, (grad_model, grad_x0) = _trajectory_loss_and_grads((model, x0), reference, n_steps)
    return float(value), {"x0": np.asarray(grad_x0), **field_parameters(grad_model.vector_field)}


@eqx.filter_jit
@eqx.filter_value_and_grad
def _trajectory_loss_and_grads(inputs: tuple[DiffraxForwardModel, Array], reference: Array, n_steps: int) -> Array:
    # Compiled once per model structure and shape, so repeated checks reuse it.
    model, state = inputs
    return 0.5 * jnp.sum((model.rollout(state, n_steps) - reference) ** 2)


def strong_4dvar_numpy(
    system: str,
    xb: np.ndarray,
    obs: np.ndarray,
    dt: float,
    *,
    background_cov: np.ndarray,
    obs_var: Any,
    parameters: Mapping[str, ArrayLike] | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-10,
    max_steps: int = 500,
    **options: Any,
) -> np.ndarray:
    """The `StrongFourDVar` analysis for ``xb`` (``(..., N)``) and ``obs`` (``(..., T, N)``,
    NaN where unobserved), as numpy; ``options`` configure the forward model."""
    model = make_forward_model(system, dt, parameters=parameters, state_dim=_state_dim_of(system, xb), **options)
    var = StrongFourDVar(model, background_cov, obs_var, rtol=rtol, atol=atol, max_steps=max_steps)
    return np.asarray(var(np.asarray(xb), np.asarray(obs)))
