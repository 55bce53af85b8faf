import math

import numpy as np
import pytest

from pipekit_cycle.ssh.baselines import linear_interpolation_time, optimal_interpolation

SPACE, TIME = 3.0, 3.0  # covariance scales of the Gaussian-process sample (grid units, days)


def _gaussian_sqrt(n: int, scale: float) -> np.ndarray:
    """A square root of the 1-D Gaussian covariance matrix exp(-d² / (2 scale²))."""
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    values, vectors = np.linalg.eigh(np.exp(-0.5 * (d / scale) ** 2))
    return vectors * np.sqrt(np.clip(values, 0.0, None))


@pytest.fixture(scope="module")
def process() -> tuple[np.ndarray, np.ndarray]:
    """A sample of the separable Gaussian space-time process (variance 1, mean 0.5) and its noisy
    observations at 6 % of the points (noise variance 0.01)."""
    rng = np.random.default_rng(0)
    nt, ny, nx = 16, 24, 24
    z = rng.standard_normal((nt, ny, nx))
    field = 0.5 + np.einsum(
        "ta,yb,xc,abc->tyx", _gaussian_sqrt(nt, TIME), _gaussian_sqrt(ny, SPACE), _gaussian_sqrt(nx, SPACE), z
    )
    mask = rng.random(field.shape) < 0.06
    obs = np.where(mask, field + 0.1 * rng.standard_normal(field.shape), np.nan)
    return field, obs


def _dense_posterior_mean(obs: np.ndarray, noise_var: float, signal_var: float) -> np.ndarray:
    """The global OI written out: every grid point against every observation."""
    t, y, x = (c.ravel().astype(float) for c in np.meshgrid(*map(np.arange, obs.shape), indexing="ij"))
    seen = np.isfinite(obs).ravel()
    mean = np.nanmean(obs)

    def cov(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return signal_var * np.exp(
            -0.5 * ((y[a, None] - y[None, b]) ** 2 + (x[a, None] - x[None, b]) ** 2) / SPACE**2
            - 0.5 * (t[a, None] - t[None, b]) ** 2 / TIME**2
        )

    o = np.flatnonzero(seen)
    gram = cov(o, o) + noise_var * np.eye(o.size)
    weights = np.linalg.solve(gram, obs.ravel()[o] - mean)
    return (mean + cov(np.arange(t.size), o) @ weights).reshape(obs.shape)


def test_global_oi_is_the_gaussian_posterior_mean(process):
    _, obs = process
    whole = optimal_interpolation(
        obs,
        space_scale=SPACE,
        time_scale=TIME,
        noise_var=0.01,
        signal_var=1.0,
        patch_size=obs.shape[1:],
        halo=1e3,
        time_window=1e3,
        time_block=obs.shape[0],
    )
    np.testing.assert_allclose(whole, _dense_posterior_mean(obs, 0.01, 1.0), rtol=0, atol=1e-9)


def test_local_oi_beats_linear_interpolation_on_a_gaussian_process(process):
    field, obs = process
    local = optimal_interpolation(obs, space_scale=SPACE, time_scale=TIME, noise_var=0.01, patch_size=8, time_block=4)
    linear = linear_interpolation_time(obs)
    exact = _dense_posterior_mean(obs, 0.01, 1.0)

    def rmse(estimate: np.ndarray) -> float:
        return float(np.sqrt(np.mean((estimate - field) ** 2)))

    assert rmse(local) < 0.7 * rmse(linear)
    # Local patches with a two-scale halo lose little against the global posterior mean.
    assert rmse(local) < 1.1 * rmse(exact)
    assert np.sqrt(np.mean((local - exact) ** 2)) < 0.25 * rmse(exact)
    # Overlapping patches are blended into a complete field too.
    blended = optimal_interpolation(
        obs, space_scale=SPACE, time_scale=TIME, noise_var=0.01, patch_size=8, patch_stride=4
    )
    assert np.isfinite(blended).all() and rmse(blended) < 1.1 * rmse(exact)


def test_oi_interpolates_the_observations_without_noise():
    rng = np.random.default_rng(2)
    truth = rng.standard_normal((6, 20, 20))
    obs = np.where(rng.random(truth.shape) < 0.05, truth, np.nan)
    seen = np.isfinite(obs)
    estimate = optimal_interpolation(obs, space_scale=1.0, time_scale=1.0, noise_var=1e-10, patch_size=10)
    np.testing.assert_allclose(estimate[seen], obs[seen], rtol=0, atol=1e-6)
    # Far from every observation the estimate relaxes to the observations' mean.
    lonely = np.full((3, 30, 30), np.nan)
    lonely[1, 2, 2] = 4.0
    lonely[1, 3, 2] = 2.0
    far = optimal_interpolation(lonely, space_scale=1.0, time_scale=1.0, noise_var=0.1, patch_size=10)
    assert far[1, 25, 25] == pytest.approx(3.0, abs=1e-9)


def test_oi_in_degrees_matches_oi_in_km():
    rng = np.random.default_rng(3)
    obs = np.where(rng.random((5, 12, 14)) < 0.1, rng.standard_normal((5, 12, 14)), np.nan)
    lat, lon = 35.0 + 0.1 * np.arange(12), -60.0 + 0.1 * np.arange(14)
    km_per_deg = 6371.0 * math.pi / 180
    kwargs = {"space_scale": 25.0, "time_scale": 2.0, "noise_var": 0.1, "patch_size": 6}
    in_degrees = optimal_interpolation(obs, lat=lat, lon=lon, **kwargs)
    in_km = optimal_interpolation(
        obs, dx=0.1 * km_per_deg * math.cos(math.radians(lat.mean())), dy=0.1 * km_per_deg, **kwargs
    )
    np.testing.assert_allclose(in_degrees, in_km, rtol=0, atol=1e-10)


def test_linear_interpolation_is_exact_for_a_field_linear_in_time():
    rng = np.random.default_rng(4)
    time = np.cumsum(rng.uniform(0.5, 2.0, 12))  # irregular times
    a, b = rng.standard_normal((2, 1, 5, 7))
    field = a + b * time[:, None, None]
    keep = rng.random(field.shape) < 0.3
    keep[[0, -1]] = True  # every point observed at both ends
    obs = np.where(keep, field, np.nan)
    np.testing.assert_allclose(linear_interpolation_time(obs, time=time), field, rtol=0, atol=1e-12)


def test_linear_interpolation_ends_and_unobserved_points():
    obs = np.full((6, 1, 3), np.nan)
    obs[2, 0, 0], obs[4, 0, 0] = 1.0, 3.0
    obs[3, 0, 1] = 5.0
    filled = linear_interpolation_time(obs)
    np.testing.assert_allclose(filled[:, 0, 0], [1, 1, 1, 2, 3, 3])  # nearest beyond the ends
    np.testing.assert_allclose(filled[:, 0, 1], 5.0)  # one observation: constant
    np.testing.assert_allclose(filled[:, 0, 2], 3.0)  # never observed: the mean of all observations
    np.testing.assert_array_equal(linear_interpolation_time(np.full((3, 2, 2), np.nan)), 0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"space_scale": 0.0}, "space_scale must be a finite number > 0"),
        ({"noise_var": -1.0}, "noise_var must be a number >= 0"),
        ({"patch_size": 0}, "patch_size must be an int >= 1"),
        ({"time_block": 0}, "time_block must be an int >= 1"),
        ({"lat": np.arange(8.0)}, "lat and lon must be given together"),
        ({"lat": np.arange(7.0), "lon": np.arange(8.0)}, "lat and lon must be 1-D of lengths 8 and 8"),
        ({"time": np.zeros(4)}, "time must be 4 finite, strictly increasing"),
    ],
)
def test_oi_errors(kwargs: dict, match: str):
    obs = np.full((4, 8, 8), np.nan)
    obs[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match=match):
        optimal_interpolation(obs, **{"space_scale": 1.0, "time_scale": 1.0, "noise_var": 0.1, **kwargs})


def test_obs_shape_errors():
    with pytest.raises(ValueError, match="non-empty time axis 0"):
        linear_interpolation_time(np.zeros((0, 5)))
    with pytest.raises(ValueError, match=r"\(time, lat, lon\)"):
        optimal_interpolation(np.zeros((4, 5)), space_scale=1.0, time_scale=1.0, noise_var=0.1)
    with pytest.raises(ValueError, match="infinities"):
        optimal_interpolation(np.full((2, 3, 3), np.inf), space_scale=1.0, time_scale=1.0, noise_var=0.1)
