r"""Seeded Lorenz problems, simulated in numpy, identical for every backend.

Lorenz-63: :math:`\dot x = \sigma (y - x),\ \dot y = x (\rho - z) - y,\ \dot z = x y - \beta z`
with the standard :math:`\sigma = 10, \rho = 28, \beta = 8/3`.
Lorenz-96: :math:`\dot x_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F` (periodic, ``N = 40``, ``F = 8``).

Both are integrated with classical RK4 at the documented ``dt``. Each window starts from an
independent random initial state spun up onto the attractor; observations are the truth plus
Gaussian noise at the observed entries (``mask``), NaN elsewhere. Arrays are shaped
``(windows, T, N)``, ready for ``make_batch(problem.obs, target=problem.truth)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

__all__ = [
    "Problem",
    "lorenz63",
    "lorenz63_vector_field",
    "lorenz96",
    "lorenz96_vector_field",
    "rk4_step",
]

L63_SIGMA, L63_RHO, L63_BETA = 10.0, 28.0, 8.0 / 3.0
L96_FORCING = 8.0


@dataclasses.dataclass(frozen=True)
class Problem:
    """A data-assimilation data set: ``truth``, ``obs`` (NaN where unobserved) and ``mask``
    (1.0 observed, 0.0 not), each ``(windows, T, N)``; ``dt`` the time step between rows;
    ``system`` and ``parameters`` say what was simulated.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk

    problem = pk.lorenz96(n_windows=6, window_length=5, state_dim=8, seed=0)
    assert problem.truth.shape == problem.obs.shape == problem.mask.shape == (6, 5, 8)
    assert (np.isnan(problem.obs) == (problem.mask == 0)).all()  # NaN exactly where unobserved
    train, held_out = problem.split(4)
    assert train.truth.shape[0] == 4 and held_out.truth.shape[0] == 2
    ```
    """

    truth: np.ndarray
    obs: np.ndarray
    mask: np.ndarray
    dt: float
    system: str
    parameters: dict[str, float]
    obs_noise_std: float

    def split(self, n_first: int) -> tuple[Problem, Problem]:
        """The first ``n_first`` windows and the rest (e.g. train / held-out)."""
        if not 0 < n_first < self.truth.shape[0]:
            raise ValueError(f"n_first must be in [1, {self.truth.shape[0] - 1}], got {n_first}")
        head = dataclasses.replace(self, truth=self.truth[:n_first], obs=self.obs[:n_first], mask=self.mask[:n_first])
        tail = dataclasses.replace(self, truth=self.truth[n_first:], obs=self.obs[n_first:], mask=self.mask[n_first:])
        return head, tail


def lorenz63_vector_field(
    state: np.ndarray, sigma: float = L63_SIGMA, rho: float = L63_RHO, beta: float = L63_BETA
) -> np.ndarray:
    """Lorenz-63 tendencies of ``state`` (``(..., 3)``)."""
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def lorenz96_vector_field(state: np.ndarray, forcing: float = L96_FORCING) -> np.ndarray:
    """Lorenz-96 tendencies of ``state`` (``(..., N)``, periodic in the last axis)."""
    return (np.roll(state, -1, axis=-1) - np.roll(state, 2, axis=-1)) * np.roll(state, 1, axis=-1) - state + forcing


def rk4_step(field: Callable[[np.ndarray], np.ndarray], state: np.ndarray, dt: float) -> np.ndarray:
    """One classical Runge-Kutta 4 step of ``dx/dt = field(x)``."""
    k1 = field(state)
    k2 = field(state + 0.5 * dt * k1)
    k3 = field(state + 0.5 * dt * k2)
    k4 = field(state + dt * k3)
    return state + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _check(name: str, value: float, *, positive: bool = True, integer: bool = False) -> None:
    if integer and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not np.isfinite(value) or (value <= 0 if positive else value < 0):
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value!r}")


def _simulate(
    field: Callable[[np.ndarray], np.ndarray],
    initial: np.ndarray,
    *,
    n_windows: int,
    window_length: int,
    dt: float,
    spinup_steps: int,
    obs_every: int,
    obs_fraction: float,
    obs_noise_std: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    state = initial
    for _ in range(spinup_steps):
        state = rk4_step(field, state, dt)
    steps = [state]
    for _ in range(window_length - 1):
        state = rk4_step(field, state, dt)
        steps.append(state)
    truth = np.stack(steps, axis=1)  # (windows, T, N)
    observed_time = (np.arange(window_length) % obs_every == 0)[None, :, None]
    observed_component = rng.random(truth.shape) < obs_fraction
    mask = (observed_time & observed_component).astype(np.float64)
    noise = obs_noise_std * rng.standard_normal(truth.shape)
    obs = np.where(mask > 0, truth + noise, np.nan)
    return truth, obs, mask


def lorenz63(
    n_windows: int = 32,
    window_length: int = 200,
    *,
    dt: float = 0.01,
    obs_every: int = 8,
    obs_fraction: float = 1.0,
    obs_noise_var: float = 2.0,
    spinup_steps: int = 1000,
    sigma: float = L63_SIGMA,
    rho: float = L63_RHO,
    beta: float = L63_BETA,
    seed: int = 0,
) -> Problem:
    """Lorenz-63 windows ``(n_windows, window_length, 3)``.

    Defaults follow Fablet et al. (2021): ``dt = 0.01``, the full state observed every 8
    steps, Gaussian noise of variance 2, windows of 200 steps. ``obs_fraction`` < 1 also
    drops components at random.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk

    problem = pk.lorenz63(n_windows=3, window_length=16, spinup_steps=100, seed=0)
    assert problem.truth.shape == (3, 16, 3) and problem.system == "lorenz63"
    assert np.isfinite(problem.truth).all()
    assert np.array_equal(pk.lorenz63(n_windows=3, window_length=16, spinup_steps=100, seed=0).obs,
                          problem.obs, equal_nan=True)  # seeded: the same data again
    ```
    """
    for name, value in (("n_windows", n_windows), ("window_length", window_length), ("obs_every", obs_every)):
        _check(name, value, integer=True)
    _check("dt", dt)
    _check("obs_noise_var", obs_noise_var, positive=False)
    _check("spinup_steps", spinup_steps, positive=False, integer=True)
    if not 0.0 < obs_fraction <= 1.0:
        raise ValueError(f"obs_fraction must be in (0, 1], got {obs_fraction!r}")
    rng = np.random.default_rng(seed)
    initial = np.array([1.0, 1.0, 25.0]) + rng.standard_normal((n_windows, 3)) * np.array([8.0, 8.0, 8.0])
    truth, obs, mask = _simulate(
        lambda s: lorenz63_vector_field(s, sigma, rho, beta),
        initial,
        n_windows=n_windows,
        window_length=window_length,
        dt=dt,
        spinup_steps=spinup_steps,
        obs_every=obs_every,
        obs_fraction=obs_fraction,
        obs_noise_std=float(np.sqrt(obs_noise_var)),
        rng=rng,
    )
    return Problem(
        truth, obs, mask, dt, "lorenz63", {"sigma": sigma, "rho": rho, "beta": beta}, float(np.sqrt(obs_noise_var))
    )


def lorenz96(
    n_windows: int = 32,
    window_length: int = 10,
    *,
    state_dim: int = 40,
    forcing: float = L96_FORCING,
    dt: float = 0.05,
    obs_every: int = 1,
    obs_fraction: float = 0.5,
    obs_noise_var: float = 1.0,
    spinup_steps: int = 500,
    seed: int = 0,
) -> Problem:
    """Lorenz-96 windows ``(n_windows, window_length, state_dim)``.

    ``dt = 0.05`` is the customary step (about 6 hours of atmospheric time); by default half
    the components, drawn at random per time, are observed at every step with noise
    variance 1.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    assert problem.truth.shape == (4, 5, 16) and problem.system == "lorenz96"
    assert 0 < problem.mask.mean() < 1  # some entries observed, some not
    ```
    """
    for name, value in (
        ("n_windows", n_windows),
        ("window_length", window_length),
        ("state_dim", state_dim),
        ("obs_every", obs_every),
    ):
        _check(name, value, integer=True)
    if state_dim < 4:
        raise ValueError(f"state_dim must be >= 4 for Lorenz-96, got {state_dim}")
    _check("dt", dt)
    _check("obs_noise_var", obs_noise_var, positive=False)
    _check("spinup_steps", spinup_steps, positive=False, integer=True)
    if not 0.0 < obs_fraction <= 1.0:
        raise ValueError(f"obs_fraction must be in (0, 1], got {obs_fraction!r}")
    rng = np.random.default_rng(seed)
    initial = forcing + rng.standard_normal((n_windows, state_dim))
    truth, obs, mask = _simulate(
        lambda s: lorenz96_vector_field(s, forcing),
        initial,
        n_windows=n_windows,
        window_length=window_length,
        dt=dt,
        spinup_steps=spinup_steps,
        obs_every=obs_every,
        obs_fraction=obs_fraction,
        obs_noise_std=float(np.sqrt(obs_noise_var)),
        rng=rng,
    )
    return Problem(truth, obs, mask, dt, "lorenz96", {"forcing": forcing}, float(np.sqrt(obs_noise_var)))


