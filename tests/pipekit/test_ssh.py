import math

import numpy as np
import pytest

from pipekit_cycle.ssh import SSHOSSE, ssh_osse
from pipekit_cycle.ssh.osse import DEFAULT_CONSTELLATION, GRAVITY, KM_PER_DEG, Satellite, _rk4, _Spectral


@pytest.fixture(scope="module")
def small() -> SSHOSSE:
    return ssh_osse(shape=(64, 64), n_days=30, seed=0)


def _expected_fraction(osse: SSHOSSE) -> float:
    """Closed form of the mean observed fraction: per pass kind, width / perpendicular spacing."""
    lat_mid = math.radians(float(osse.lat.mean()))
    total = 0.0
    for satellite in osse.satellites:
        h = math.asin(math.cos(math.radians(satellite.inclination_deg)) / math.cos(lat_mid))
        spacing = 360.0 / satellite.revs_per_day * KM_PER_DEG * math.cos(lat_mid) * math.cos(h)
        width = max(osse.dx_km * math.cos(h), osse.dy_km * abs(math.sin(h)))
        total += 2 * width / spacing
    return total


def test_shapes_coordinates_and_observations(small: SSHOSSE):
    assert small.truth.shape == small.obs.shape == small.mask.shape == (30, 64, 64)
    assert small.mask.dtype == bool and small.truth.dtype == np.float64
    np.testing.assert_allclose(small.lat[[0, -1]], [33.0, 33.0 + 63 * 10 / 128])
    np.testing.assert_allclose(small.lon[[0, -1]], [-65.0, -65.0 + 63 * 10 / 128])
    np.testing.assert_array_equal(small.time, np.arange(30.0))
    assert small.dt_days == 1.0 and small.dx_deg == 10 / 128
    np.testing.assert_allclose(small.dy_km, KM_PER_DEG * 10 / 128)
    np.testing.assert_allclose(small.dx_km, small.dy_km * math.cos(math.radians(small.lat.mean())))
    np.testing.assert_array_equal(np.isfinite(small.obs), small.mask)
    noise = (small.obs - small.truth)[small.mask]
    assert noise.size > 2000
    assert abs(noise.std() - 0.03) < 0.003 and abs(noise.mean()) < 0.003
    # Realistic mesoscale amplitudes (m): a standard deviation of 5-20 cm, peaks below a metre.
    assert 0.05 < small.truth.std() < 0.2 and np.abs(small.truth).max() < 1.0
    f0 = small.parameters["f0"]
    assert f0 == pytest.approx(2 * 7.2921e-5 * math.sin(math.radians(small.lat.mean())))
    assert small.parameters["beta"] > 0 and len(small.satellites) == 4


def test_same_seed_same_arrays_other_seed_other_arrays(small: SSHOSSE):
    again = ssh_osse(shape=(64, 64), n_days=30, seed=0)
    for name in ("truth", "obs", "mask"):
        np.testing.assert_array_equal(getattr(again, name), getattr(small, name))
    other = ssh_osse(shape=(64, 64), n_days=30, seed=1)
    assert np.abs(other.truth - small.truth).mean() > 0.5 * small.truth.std()
    assert (other.mask != small.mask).any()


def test_tracks_move_and_observed_fraction(small: SSHOSSE):
    for day in range(small.mask.shape[0] - 1):
        assert (small.mask[day] != small.mask[day + 1]).any()
    fraction = small.observed_fraction()
    np.testing.assert_allclose(fraction, small.mask.mean(axis=(1, 2)))
    assert 0.01 <= fraction.mean() <= 0.05
    assert fraction.max() < 0.1
    # The default 128 x 128 box (masks only: no model run needed for the geometry).
    wide = ssh_osse(shape=(128, 128), n_days=60, spinup_days=0, energy_input=1e-12)
    fractions = wide.observed_fraction()
    assert 0.01 <= fractions.mean() <= 0.05 and fractions.max() <= 0.06
    assert fractions.mean() == pytest.approx(_expected_fraction(wide), rel=0.1)
    # A track is a line of single cells: at most two observed cells per grid row and pass.
    one = ssh_osse(shape=(128, 128), n_days=12, spinup_days=0, energy_input=1e-12, satellites=DEFAULT_CONSTELLATION[:1])
    assert one.mask.sum(axis=2).max() <= 2  # one ascending and one descending pass, one cell each
    assert one.mask.any(axis=(1, 2)).mean() > 0.3


def test_no_satellites_no_observations():
    empty = ssh_osse(shape=(32, 32), n_days=3, spinup_days=0, n_satellites=0)
    assert not empty.mask.any() and np.isnan(empty.obs).all()


def _ke_spectrum(osse: SSHOSSE) -> tuple[np.ndarray, np.ndarray]:
    """Time-mean isotropic kinetic-energy spectrum of the geostrophic flow, shells of width dk."""
    psi = osse.truth * GRAVITY / osse.parameters["f0"]
    _, ny, nx = psi.shape
    kx = 2 * np.pi * np.fft.fftfreq(nx, osse.dx_km)
    ky = 2 * np.pi * np.fft.fftfreq(ny, osse.dy_km)
    k = np.hypot(kx[None, :], ky[:, None])
    density = 0.5 * k**2 * (np.abs(np.fft.fft2(psi)) ** 2).mean(axis=0)
    dk = 2 * np.pi / (nx * osse.dx_km)
    shells = np.rint(k / dk).astype(int)
    return dk * np.arange(shells.max() + 1), np.bincount(shells.ravel(), density.ravel())


def test_energy_spectrum_slope_in_the_enstrophy_cascade_range():
    osse = ssh_osse(n_days=8, seed=2)  # the default grid: the range spans a factor of two
    k, spectrum = _ke_spectrum(osse)
    k_forcing = 2 * np.pi / osse.parameters["forcing_wavelength_km"]
    k_cutoff = (2 / 3) * np.pi / max(osse.dx_km, osse.dy_km)
    inertial = (k >= 2 * k_forcing) & (k <= k_cutoff / 2)
    assert inertial.sum() >= 7
    slope = np.polyfit(np.log(k[inertial]), np.log(spectrum[inertial]), 1)[0]
    # Measured: about -4.5 (k^-3 for a pure enstrophy cascade, steepened by the drag).
    assert -5.0 < slope < -3.5
    # Energy peaks at large scales and the dissipation range drops fast past the cutoff.
    assert np.argmax(spectrum) <= 2 * k_forcing / k[1]
    assert spectrum[k <= k_cutoff][-1] < 1e-3 * spectrum[inertial][0]


def test_flow_is_smooth_in_time_and_statistically_steady(small: SSHOSSE):
    anomaly = small.truth - small.truth.mean(axis=0)
    lag1 = (anomaly[1:] * anomaly[:-1]).mean() / (anomaly**2).mean()
    assert lag1 > 0.8
    daily_std = small.truth.std(axis=(1, 2))
    assert daily_std[-5:].mean() == pytest.approx(daily_std[:5].mean(), rel=0.4)


def test_jacobian_conserves_energy_and_enstrophy():
    # J(psi, q) on a dealiased field: sum(psi * J) = sum(q * J) = 0 (Galerkin truncation).
    spectral = _Spectral.build((32, 48), 5e3, 6e3, 30e3)
    rng = np.random.default_rng(0)
    q = np.fft.rfft2(rng.standard_normal((32, 48))) * spectral.dealias
    tendency = spectral.tendency(q, beta=1.6e-11)
    psi = spectral.q_to_psi * q
    weights = np.where(spectral.kx == 0, 1.0, 2.0)
    scale = np.sum(weights * np.abs(q) * np.abs(tendency))
    assert abs(np.sum(weights * np.conj(psi) * tendency).real) < 1e-10 * np.sum(weights * np.abs(psi * tendency))
    assert abs(np.sum(weights * np.conj(q) * tendency).real) < 1e-10 * scale


def test_single_mode_is_a_rossby_wave():
    # One Fourier mode has J(psi, q) = 0; it propagates with omega = -beta kx / (k² + 1/Ld²).
    spectral = _Spectral.build((16, 16), 10e3, 10e3, 30e3)
    beta = 1.8e-11
    q = np.zeros(spectral.k2.shape, dtype=complex)
    q[2, 3] = 1e-8 * 16 * 16  # weak: a strong single wave is itself unstable (triad instability)
    kx, k2 = spectral.kx[0, 3], spectral.k2[2, 3]
    omega = -beta * kx / (k2 + 1 / 30e3**2)
    dt, steps = 6 * 3600.0, 400  # 100 days: omega t is about 0.9 rad
    state = q
    for _ in range(steps):
        state = _rk4(spectral, state, dt, beta)
    np.testing.assert_allclose(state[2, 3], q[2, 3] * np.exp(-1j * omega * dt * steps), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_days": 0}, "n_days must be an integer >= 1"),
        ({"shape": (64,)}, "shape must be a pair"),
        ({"shape": (4, 64)}, "shape\\[0\\] must be an integer >= 8"),
        ({"n_satellites": 5}, "n_satellites must be <= 4"),
        ({"noise_std": -1.0}, "noise_std must be a number >= 0"),
        ({"drag_days": 0.0}, "drag_days must be a finite number > 0"),
        ({"forcing_wavelength_km": 5.0}, "forcing_wavelength_km must be resolved"),
        ({"lat0": -2.0, "dx_deg": 0.01}, "away from the equator"),
        ({"satellites": ("jason",)}, "tuple of Satellite"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        ssh_osse(**{"shape": (16, 16), "n_days": 1, "spinup_days": 0, **kwargs})


def test_satellite_validation():
    with pytest.raises(ValueError, match="subcycle_step"):
        Satellite("x", 66.0, 12.8, 10, 10)
    with pytest.raises(ValueError, match="inclination_deg"):
        Satellite("x", 0.0, 12.8, 10, 3)
    polar = Satellite("low", 20.0, 14.0, 10, 3)
    with pytest.raises(ValueError, match="never reaches"):
        ssh_osse(shape=(32, 32), n_days=1, spinup_days=0, satellites=(polar,))
