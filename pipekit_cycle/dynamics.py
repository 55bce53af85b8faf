r"""The framework-free half of the dynamics layer (DESIGN 5): every check, default and message
that ``vardax_jax.dynamics`` and ``vardax_torch.dynamics`` share, written once.

Nothing here imports a framework: arguments arrive as Python numbers, numpy arrays and plain
shapes, and what comes back is the same. The backends keep only what needs their framework
(vector fields, the ODE solve, the 4D-Var cost and its minimiser) and call this module for the
rest, so both raise the same exception with the same words
(``pipekit_cycle.validation.DYNAMICS_MESSAGES``) and resolve the same defaults.

Conventions of both backends (same names, same numbers):

* a state is ``(..., N)``; ``rollout(state, n_steps)`` returns the trajectory
  ``(..., n_steps + 1, N)`` (time on the second-to-last axis, like the ``(windows, T, N)``
  arrays of `pipekit_cycle.problems`), row 0 being ``state`` itself;
* ``solver="rk4"`` is Kutta's 3/8-rule fourth-order Runge--Kutta method with the constant step
  ``dt / substeps`` (torchdiffeq's ``"rk4"``). Every four-stage fourth-order RK method has the
  same stability polynomial, so on a linear ODE it equals the classical RK4 of
  `pipekit_cycle.problems.rk4_step` to rounding; on a nonlinear one they differ by
  :math:`O(\Delta t^5)` per step. ``solver="dopri5"`` is adaptive with ``rtol``/``atol``;
* strong-constraint 4D-Var minimises over the initial state :math:`x_0`

  .. math::
      J(x_0) = \tfrac12 (x_0 - x_b)^\top B^{-1} (x_0 - x_b)
             + \tfrac12 \sum_{t=0}^{T-1} \sum_i m_{t,i}\, (x_{t,i} - y_{t,i})^2 / r_i,
      \qquad x_t = \mathcal{M}_t(x_0)\ (\text{the model's rollout}),

  with ``H`` the identity restricted by the mask ``m = isfinite(obs)`` (``obs`` has NaN where
  unobserved), ``R = diag(r)`` from ``obs_var`` (a scalar or ``(N,)`` variances) and ``B`` from
  ``background_cov`` (``(N,)`` variances, diagonal, or a full SPD ``(N, N)`` matrix applied
  through its Cholesky factor). ``xb`` is ``(..., N)`` and ``obs`` ``(..., T, N)`` with
  ``T = n_steps + 1``; windows in the leading axes are independent and their costs are summed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, Literal, NamedTuple, TypeVar, cast

import numpy as np
import numpy.typing as npt

from . import adjoints as specs
from .errors import ConvergenceWarning
from .validation import INTEGRATORS, check_count, check_state_shape, check_tolerance, dynamics_message

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_RTOL",
    "FIELD_PARAMETERS",
    "FOURDVAR_ATOL",
    "FOURDVAR_MAX_STEPS",
    "FOURDVAR_RTOL",
    "L96_STATE_DIM",
    "BackgroundPrior",
    "DynamicsApi",
    "FourDVarSettings",
    "SolverName",
    "SolverSettings",
    "backsolve_tolerances",
    "check_covariances",
    "check_dt",
    "check_fourdvar_settings",
    "check_l96_state_dim",
    "check_solver_settings",
    "check_square_matrix",
    "field_arguments",
    "fourdvar_not_converged",
    "map_dynamics_spec",
    "state_dim_of",
    "window_steps",
]

SolverName = Literal["rk4", "dopri5"]

# Forward model: dopri5's tolerances (and a BacksolveAdjoint's missing one), its step cap.
DEFAULT_RTOL: Final = 1e-6
DEFAULT_ATOL: Final = 1e-8
DEFAULT_MAX_STEPS: Final = 4096
# StrongFourDVar: the minimiser's Cauchy-test tolerances and iteration cap.
FOURDVAR_RTOL: Final = 1e-10
FOURDVAR_ATOL: Final = 1e-10
FOURDVAR_MAX_STEPS: Final = 500

L96_STATE_DIM: Final = 40
# The parameters each named system takes (its vector field's ``parameter_names``).
FIELD_PARAMETERS: Final[Mapping[str, tuple[str, ...]]] = {
    "lorenz63": ("sigma", "rho", "beta"),
    "lorenz96": ("forcing",),
    "linear": ("matrix",),
}

T = TypeVar("T")
Field = TypeVar("Field")
Model = TypeVar("Model")


# --------------------------------------------------------------------------------------------
# Forward model settings
# --------------------------------------------------------------------------------------------


def check_dt(dt: Any) -> float:
    """``dt`` as a float if it is a finite number :math:`\\Delta t > 0`, else ``ValueError``."""
    try:
        value = float(dt)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a torch tensor of many elements
        raise ValueError(dynamics_message("dt", dt=dt)) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(dynamics_message("dt", dt=value))
    return value


class SolverSettings(NamedTuple):
    """A forward model's checked solver settings (unpack them onto the model's attributes)."""

    solver: SolverName
    substeps: int
    rtol: float
    atol: float
    max_steps: int


def check_solver_settings(solver: Any, substeps: Any, rtol: Any, atol: Any, max_steps: Any) -> SolverSettings:
    """Check a forward model's solver arguments, in this order: ``solver`` one of
    ``INTEGRATORS``, ``substeps >= 1`` and ``max_steps >= 1`` ints, ``rtol``/``atol`` finite > 0."""
    if solver not in INTEGRATORS:
        raise ValueError(dynamics_message("solver", value=solver))
    return SolverSettings(
        solver=solver,
        substeps=check_count("substeps", substeps, 1),
        rtol=check_tolerance("rtol", rtol),
        atol=check_tolerance("atol", atol),
        max_steps=check_count("max_steps", max_steps, 1),
    )


# --------------------------------------------------------------------------------------------
# Adjoint specs of the dynamics layer
# --------------------------------------------------------------------------------------------


def backsolve_tolerances(spec: specs.BacksolveAdjoint) -> tuple[float, float] | tuple[None, None]:
    """The backward solve's ``(rtol, atol)``: ``(None, None)`` (the forward's own) when the spec
    gives neither, else the spec's with a missing one ``DEFAULT_RTOL``/``DEFAULT_ATOL``."""
    if spec.rtol is None and spec.atol is None:
        return None, None
    return (DEFAULT_RTOL if spec.rtol is None else spec.rtol, DEFAULT_ATOL if spec.atol is None else spec.atol)


def map_dynamics_spec(
    spec: Any,
    native: type | tuple[type, ...],
    *,
    direct: Callable[[], T],
    checkpoint: Callable[[int | None], T],
    backsolve: Callable[[float | None, float | None], T],
) -> T:
    """Map an adjoint spec of the ``"dynamics"`` layer onto a backend's mechanism.

    ``None`` is the layer's default, ``RecursiveCheckpointAdjoint()``. An instance of
    ``native`` (the backend's own adjoints) passes through unchanged; it is recognised before
    the spec coercion, since a native class may share a spec's name. Otherwise the spec is
    coerced by `pipekit_cycle.check_layer` (a spec of the ``inner_solve`` layer is a
    ``ValueError`` naming it) and built with ``direct()``, ``checkpoint(checkpoints)`` or
    ``backsolve(rtol, atol)`` (`backsolve_tolerances`: both ``None`` means the forward's).
    """
    if spec is None:
        spec = specs.RecursiveCheckpointAdjoint()
    if isinstance(spec, native):
        return cast(T, spec)
    spec = specs.check_layer(spec, specs.DYNAMICS)
    if isinstance(spec, specs.DirectAdjoint):
        return direct()
    if isinstance(spec, specs.RecursiveCheckpointAdjoint):
        return checkpoint(spec.checkpoints)
    if isinstance(spec, specs.BacksolveAdjoint):
        return backsolve(*backsolve_tolerances(spec))
    # check_layer only lets the dynamics specs above through.
    raise AssertionError(f"unmapped dynamics spec {spec!r}")


# --------------------------------------------------------------------------------------------
# Vector fields
# --------------------------------------------------------------------------------------------


def check_l96_state_dim(state_dim: Any) -> int:
    """``state_dim`` as an int if it is one :math:`N \\ge 4` (Lorenz-96 reaches back to
    :math:`x_{i-2}` and ahead to :math:`x_{i+1}`), else ``ValueError``."""
    if isinstance(state_dim, bool) or not isinstance(state_dim, (int, np.integer)) or state_dim < 4:
        raise ValueError(f"state_dim must be an int >= 4 for Lorenz-96, got {state_dim!r}")
    return int(state_dim)


def check_square_matrix(matrix: Any) -> None:
    """``ValueError`` unless ``matrix`` (any array-like) has a square shape ``(N, N)``."""
    shape = tuple(np.shape(matrix))
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(dynamics_message("matrix", shape=shape))


def field_arguments(
    system: str, parameters: Mapping[str, Any] | None = None, *, state_dim: int | None = None
) -> dict[str, Any]:
    """The keyword arguments of the vector field named ``system`` (a key of
    ``FIELD_PARAMETERS``): ``parameters`` by name (missing ones keep the field's defaults),
    plus ``state_dim`` (default ``L96_STATE_DIM``) for ``"lorenz96"``; ``"linear"`` requires
    ``matrix``. An unknown system or parameter name is a ``ValueError``."""
    given = dict(parameters or {})
    if system not in FIELD_PARAMETERS:
        raise ValueError(dynamics_message("system", value=system))
    allowed = FIELD_PARAMETERS[system]
    if not set(given) <= set(allowed):
        raise ValueError(dynamics_message("parameters", system=system, allowed=sorted(allowed), given=sorted(given)))
    if system == "lorenz96":
        return {"state_dim": L96_STATE_DIM if state_dim is None else state_dim, **given}
    if system == "linear" and "matrix" not in given:
        raise ValueError(dynamics_message("matrix", shape=None))
    return given


def state_dim_of(system: str, x0: Any) -> int | None:
    """The ``state_dim`` a numpy helper builds ``system`` with for the state ``x0``: its last
    axis for Lorenz-96 (whose size is free), ``None`` (the field's own) otherwise."""
    return int(np.shape(x0)[-1]) if system == "lorenz96" and np.ndim(x0) >= 1 else None


# --------------------------------------------------------------------------------------------
# Strong-constraint 4D-Var
# --------------------------------------------------------------------------------------------


class BackgroundPrior(NamedTuple):
    """Checked float64 covariances of 4D-Var: ``background_cov`` ``(N,)`` or ``(N, N)``,
    ``obs_var`` ``()`` or ``(N,)``, and ``background_chol``, the lower Cholesky factor
    :math:`L` of a full :math:`B = L L^\\top` (``None`` for diagonal variances)."""

    background_cov: np.ndarray
    obs_var: np.ndarray
    background_chol: np.ndarray | None


def _check_background_cov(background_cov: Any, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    # Returns (B, its Cholesky factor or None): the factorisation is the positive-definiteness
    # test, so it is computed once and kept.
    cov = np.asarray(background_cov, dtype=np.float64)
    if cov.shape == (n,):
        if not (np.all(np.isfinite(cov)) and np.all(cov > 0)):
            raise ValueError(dynamics_message("background_cov", n=n, what="non-positive or non-finite variances"))
        return cov, None
    if cov.shape != (n, n):
        raise ValueError(dynamics_message("background_cov", n=n, what=f"shape {cov.shape}"))
    if not (np.all(np.isfinite(cov)) and np.allclose(cov, cov.T)):
        raise ValueError(dynamics_message("background_cov", n=n, what="a non-symmetric matrix"))
    try:
        return cov, np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(
            dynamics_message("background_cov", n=n, what="a matrix that is not positive definite")
        ) from None


def check_covariances(background_cov: Any, obs_var: Any, n: int) -> BackgroundPrior:
    """Check 4D-Var's :math:`B` and :math:`R` for the state dimension ``n``: ``background_cov``
    finite variances ``(n,)`` > 0 or a symmetric positive definite ``(n, n)`` matrix,
    ``obs_var`` finite, > 0 and ``()`` or ``(n,)``; else ``ValueError``."""
    cov, chol = _check_background_cov(background_cov, n)
    var = np.asarray(obs_var, dtype=np.float64)
    if var.shape not in ((), (n,)):
        raise ValueError(dynamics_message("obs_var", n=n, what=f"shape {var.shape}"))
    if not (np.all(np.isfinite(var)) and np.all(var > 0)):
        raise ValueError(dynamics_message("obs_var", n=n, what="non-positive or non-finite values"))
    return BackgroundPrior(cov, var, chol)


class FourDVarSettings(NamedTuple):
    """`StrongFourDVar`'s checked settings (unpack them onto its attributes)."""

    n_steps: int | None
    rtol: float
    atol: float
    max_steps: int


def check_fourdvar_settings(n_steps: Any, rtol: Any, atol: Any, max_steps: Any) -> FourDVarSettings:
    """``n_steps`` ``None`` (taken from ``obs``) or an int >= 0, ``rtol``/``atol`` finite > 0,
    ``max_steps`` an int >= 1; else ``ValueError``."""
    return FourDVarSettings(
        n_steps=None if n_steps is None else check_count("n_steps", n_steps, 0),
        rtol=check_tolerance("rtol", rtol),
        atol=check_tolerance("atol", atol),
        max_steps=check_count("max_steps", max_steps, 1),
    )


def window_steps(xb_shape: tuple[int, ...], obs_shape: tuple[int, ...], n: int, n_steps: int | None) -> int:
    """The number of model steps of a 4D-Var window, :math:`T - 1`, after checking that ``xb``
    is ``(..., n)`` and ``obs`` ``(..., T, n)`` with the same leading axes and, when
    ``n_steps`` is given, :math:`T = n_{steps} + 1`; else ``ValueError``."""
    xb_shape, obs_shape = tuple(xb_shape), tuple(obs_shape)
    check_state_shape("xb", xb_shape, n)
    check_state_shape("obs", obs_shape, n, expected="(..., T, N)")
    if len(obs_shape) != len(xb_shape) + 1 or obs_shape[:-2] != xb_shape[:-1]:
        expected = f"{(*xb_shape[:-1], 'T', n)}"
        raise ValueError(dynamics_message("state_shape", name="obs", expected=expected, n=n, shape=obs_shape))
    steps = obs_shape[-2] - 1 if n_steps is None else n_steps
    if obs_shape[-2] != steps + 1:
        raise ValueError(dynamics_message("obs_time", expected=steps + 1, got=obs_shape[-2]))
    return steps


def fourdvar_not_converged(method: str, steps: int, max_steps: int) -> ConvergenceWarning:
    """The warning of a `StrongFourDVar` minimisation (``method``: ``"BFGS"``, ``"L-BFGS"``)
    that stopped after ``steps`` iterations without meeting its tolerance."""
    return ConvergenceWarning(f"StrongFourDVar: {method} did not converge in {steps} steps (max_steps={max_steps})")


# --------------------------------------------------------------------------------------------
# Builders by name and the numpy-in, numpy-out helpers (the conformance suite calls these)
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DynamicsApi(Generic[Field, Model]):
    """A backend's builders and numpy helpers, written once over its classes and three hooks.

    A backend makes one and exports the bound methods (``make_vector_field = api.make_vector_field``
    and so on), so their arguments, defaults and checks cannot drift apart between backends.

    ``fields`` maps each system of ``FIELD_PARAMETERS`` to its vector-field class (or a partial
    of it fixing the dtype); ``forward_model(field, dt, **options)`` and ``fourdvar(model,
    background_cov, obs_var, rtol=, atol=, max_steps=)`` are the backend's classes;
    ``rollout(model, x0, n_steps)`` returns the trajectory as numpy (without recording
    gradients where the framework would); ``loss_and_grads(model, x0, n_steps, target)`` is
    `trajectory_loss_and_grads` on a built model; ``to_numpy`` turns an analysis into numpy.
    """

    fields: Mapping[str, Callable[..., Field]]
    forward_model: Callable[..., Model]
    fourdvar: Callable[..., Callable[[np.ndarray, np.ndarray], Any]]
    rollout: Callable[[Model, np.ndarray, int], np.ndarray]
    loss_and_grads: Callable[[Model, np.ndarray, int, np.ndarray | None], tuple[float, dict[str, np.ndarray]]]
    to_numpy: Callable[[Any], np.ndarray]

    def make_vector_field(
        self, system: str, parameters: Mapping[str, npt.ArrayLike] | None = None, *, state_dim: int | None = None
    ) -> Field:
        """``"lorenz63"`` (``sigma, rho, beta``), ``"lorenz96"`` (``forcing``; ``state_dim``,
        default 40) or ``"linear"`` (``matrix``, required) with ``parameters`` by name (missing
        ones default; see `field_arguments`), in the dtype ``fields`` builds (vardax_torch: float64).

        Examples
        --------
        ```python
        import vardax_jax as vd

        field = vd.make_vector_field("lorenz96", {"forcing": 8.0}, state_dim=8)
        assert isinstance(field, vd.Lorenz96) and field.state_dim == 8
        assert field.parameter_names == ("forcing",)  # what its gradients are keyed by
        ```
        """
        arguments = field_arguments(system, parameters, state_dim=state_dim)  # checks ``system`` first
        return self.fields[system](**arguments)

    def make_forward_model(
        self,
        system: str,
        dt: float,
        *,
        parameters: Mapping[str, npt.ArrayLike] | None = None,
        state_dim: int | None = None,
        **options: Any,
    ) -> Model:
        """`make_vector_field` wrapped in the backend's forward model (``options``: solver,
        substeps, rtol, atol, max_steps, adjoint).

        Examples
        --------
        ```python
        import numpy as np
        import vardax_jax as vd

        model = vd.make_forward_model("lorenz63", 0.01)  # dt = 0.01
        trajectory = vd.to_numpy(model.rollout(np.array([1.0, 1.0, 1.0]), 5))
        assert trajectory.shape == (6, 3)  # the initial state, then 5 steps
        assert np.allclose(trajectory[0], 1.0)
        ```
        """
        return self.forward_model(self.make_vector_field(system, parameters, state_dim=state_dim), dt, **options)

    def _model_for(self, system: str, dt: float, x0: Any, parameters: Any, options: dict[str, Any]) -> Model:
        # Lorenz-96's size comes from the state it is started from.
        return self.make_forward_model(system, dt, parameters=parameters, state_dim=state_dim_of(system, x0), **options)

    def rollout_numpy(
        self,
        system: str,
        x0: np.ndarray,
        n_steps: int,
        dt: float,
        *,
        parameters: Mapping[str, npt.ArrayLike] | None = None,
        **options: Any,
    ) -> np.ndarray:
        """The trajectory ``(..., n_steps + 1, N)`` from ``x0`` (``(..., N)``), as numpy.

        Examples
        --------
        ```python
        import numpy as np
        import vardax_jax as vd

        x0 = np.full((2, 8), 8.0)  # two Lorenz-96 states of N = 8 at the fixed point x_i = F
        x0[1, 0] += 0.01  # the second one perturbed
        trajectory = vd.rollout_numpy("lorenz96", x0, n_steps=4, dt=0.05)
        assert isinstance(trajectory, np.ndarray) and trajectory.shape == (2, 5, 8)
        assert np.allclose(trajectory[0], 8.0)  # the fixed point stays put
        ```
        """
        return self.rollout(self._model_for(system, dt, x0, parameters, options), np.asarray(x0), n_steps)

    def trajectory_loss_and_grads(
        self,
        system: str,
        x0: np.ndarray,
        n_steps: int,
        dt: float,
        *,
        target: np.ndarray | None = None,
        parameters: Mapping[str, npt.ArrayLike] | None = None,
        adjoint: Any = "direct",
        **options: Any,
    ) -> tuple[float, dict[str, np.ndarray]]:
        r""":math:`L = \tfrac12 \sum (x_t - \mathrm{target}_t)^2` over the rollout (``target``
        ``(..., n_steps + 1, N)``, default zeros) and its gradients under ``adjoint``, as numpy:
        ``{"x0": dL/dx0, <parameter name>: dL/dtheta, ...}``.

        Examples
        --------
        ```python
        import numpy as np
        import vardax_jax as vd

        x0 = np.array([1.0, 2.0])
        zero = {"matrix": np.zeros((2, 2))}  # A = 0
        loss, grads = vd.trajectory_loss_and_grads("linear", x0, n_steps=3, dt=0.1, parameters=zero)
        # A = 0: the 4 states of the rollout all equal x0, so L = 4 |x0|^2 / 2 = 10 and dL/dx0 = 4 x0
        assert np.isclose(loss, 10.0) and np.allclose(grads["x0"], [4.0, 8.0])
        assert grads["matrix"].shape == (2, 2)
        ```
        """
        model = self._model_for(system, dt, x0, parameters, {**options, "adjoint": adjoint})
        return self.loss_and_grads(model, np.asarray(x0), n_steps, target)

    def strong_4dvar_numpy(
        self,
        system: str,
        xb: np.ndarray,
        obs: np.ndarray,
        dt: float,
        *,
        background_cov: np.ndarray,
        obs_var: npt.ArrayLike,
        parameters: Mapping[str, npt.ArrayLike] | None = None,
        rtol: float = FOURDVAR_RTOL,
        atol: float = FOURDVAR_ATOL,
        max_steps: int = FOURDVAR_MAX_STEPS,
        **options: Any,
    ) -> np.ndarray:
        """The `StrongFourDVar` analysis for ``xb`` (``(..., N)``) and ``obs`` (``(..., T, N)``,
        NaN where unobserved), as numpy; ``options`` configure the forward model.

        Examples
        --------
        ```python
        import numpy as np
        import vardax_jax as vd

        obs = np.ones((2, 2))  # (T, N): both components observed at T = 2 times (n_steps = 1)
        xa = vd.strong_4dvar_numpy("linear", np.zeros(2), obs, 0.1, background_cov=np.ones(2), obs_var=1.0,
                                   parameters={"matrix": np.zeros((2, 2))})
        # A = 0 (x stays put), B = R = 1: x_a = (xb + sum_t y_t) / (1 + T) = 2 / 3
        assert np.allclose(xa, 2 / 3, atol=1e-4)
        ```
        """
        model = self._model_for(system, dt, xb, parameters, options)
        var = self.fourdvar(model, background_cov, obs_var, rtol=rtol, atol=atol, max_steps=max_steps)
        return self.to_numpy(var(np.asarray(xb), np.asarray(obs)))
