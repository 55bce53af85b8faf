"""The SSH OSSE (`pipekit_cycle.ssh.simulate`): what it returns, its observing system (four
nadirs, a SWOT-like swath), its cache, the 1.5-layer model by name, and the statistics of the
two-layer ocean with its jet on a small box (the default box's are measured by
``python -m benchmarks.ssh_ocean_statistics`` and reported in the module docstring)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipekit_cycle.ssh import (
    DEFAULT_INSTRUMENTS,
    INSTRUMENTS,
    START_DATE,
    TwoLayerQG,
    TwoLayerSettings,
    cache_directory,
    coverage,
    observe,
    simulate,
    simulated,
    ssh_osse,
)
from pipekit_cycle.ssh.observations import KM_PER_DEG

# A short spin-up on a 32-point box: seconds, for the tests of everything but the statistics.
QUICK = TwoLayerSettings(spinup_days=10, box_points=32)


@pytest.fixture(scope="module")
def run():
    return simulate(8, shape=(32, 40), seed=0, settings=QUICK, instruments=("jason-like", "swot-like"), cache=False)


def test_arrays_dates_land_and_tracks(run):
    assert run.truth.shape == run.obs.shape == run.mask.shape == (8, 32, 40)
    assert run.land.shape == (32, 40) and run.land.dtype == bool and not run.land.any()
    assert run.time.dtype == np.dtype("datetime64[D]") and run.time[0] == START_DATE == np.datetime64("2012-10-01")
    assert np.all(np.diff(run.time) == np.timedelta64(1, "D")) and run.days.tolist() == list(range(8))
    np.testing.assert_allclose(np.diff(run.lat), 10 / 128)
    np.testing.assert_allclose(np.diff(run.lon), 10 / 128)
    assert run.lat[0] == 33.0 and run.lon[0] == -65.0
    assert run.dy_km == pytest.approx(KM_PER_DEG * 10 / 128)
    assert run.dx_km == pytest.approx(run.dy_km * math.cos(math.radians(run.lat.mean())))
    np.testing.assert_array_equal(np.isfinite(run.obs), run.mask)
    assert run.model == "two_layer" and [s.name for s in run.instruments] == ["jason-like", "swot-like"]
    # The gridded observations are the tracks binned by day and cell (a mean where both see it).
    total, count = np.zeros(run.truth.shape), np.zeros(run.truth.shape)
    for track in run.tracks.values():
        assert track.time.dtype == np.dtype("datetime64[D]") and len(track) == track.lat.size == track.lon.size
        day = ((track.time - START_DATE) / np.timedelta64(1, "D")).astype(int)
        row = np.rint((track.lat - run.lat[0]) / run.dx_deg).astype(int)
        column = np.rint((track.lon - run.lon[0]) / run.dx_deg).astype(int)
        np.add.at(total, (day, row, column), track.value)
        np.add.at(count, (day, row, column), 1)
    np.testing.assert_array_equal(count > 0, run.mask)
    np.testing.assert_allclose(run.obs[run.mask], (total / np.maximum(count, 1))[run.mask], rtol=0, atol=1e-15)


def test_track_noise_is_each_instruments_own():
    truth_run = simulate(30, shape=(40, 40), seed=2, settings=QUICK, instruments=("envisat-like", "swot-like"),
                         cache=False)
    for name, noise_std in (("swot-like", 0.01), ("envisat-like", 0.03)):
        track = truth_run.tracks[name]
        day = ((track.time - START_DATE) / np.timedelta64(1, "D")).astype(int)
        row = np.rint((track.lat - truth_run.lat[0]) / truth_run.dx_deg).astype(int)
        column = np.rint((track.lon - truth_run.lon[0]) / truth_run.dx_deg).astype(int)
        error = track.value - truth_run.truth[day, row, column]
        assert error.size > 200
        assert abs(error.std() - noise_std) < 0.2 * noise_std and abs(error.mean()) < 0.2 * noise_std


def test_an_instrument_keeps_its_observations_when_others_join():
    truth = np.zeros((10, 48, 48))
    lat, lon = 33.0 + 10 / 128 * np.arange(48), -65.0 + 10 / 128 * np.arange(48)
    time = START_DATE + np.arange(10)
    _, _, alone = observe(truth, lat=lat, lon=lon, time=time, instruments=("gfo-like",), seed=3)
    _, _, together = observe(truth, lat=lat, lon=lon, time=time, instruments=(*DEFAULT_INSTRUMENTS, "swot-like"),
                             seed=3)
    for field in ("time", "lat", "lon", "value"):
        np.testing.assert_array_equal(getattr(alone["gfo-like"], field), getattr(together["gfo-like"], field))
    _, _, other_seed = observe(truth, lat=lat, lon=lon, time=time, instruments=("gfo-like",), seed=4)
    assert len(other_seed["gfo-like"]) != len(alone["gfo-like"]) or not np.array_equal(
        other_seed["gfo-like"].value, alone["gfo-like"].value)


class _PhaseZero:
    """An rng stand-in whose pass phases are zero: a pass goes through the first grid point."""

    def uniform(self, low: float, high: float) -> float:
        return low


def test_swath_sees_two_bands_either_side_of_the_nadir_gap():
    swot = INSTRUMENTS["swot-like"]
    assert (swot.swath_km, swot.gap_km, swot.noise_std) == (50.0, 20.0, 0.01)
    dx = dy = 2.0  # km: fine enough to see the bands' edges
    x, y = dx * np.arange(200), dy * np.arange(3)
    seen = coverage(swot, n_days=1, x_km=x, y_km=y, lat_mid=38.0, rng=_PhaseZero())[0, 0]
    # Along the first row (y = 0) the ascending pass crosses x = 0: across-track distance x cos h.
    heading = math.asin(math.cos(math.radians(77.6)) / math.cos(math.radians(38.0)))
    across = x * math.cos(heading)
    near = across < 200.0  # the descending pass, also through x = 0, sees the same band here
    np.testing.assert_array_equal(seen[near], (across[near] >= 10.0) & (across[near] < 60.0))


def test_observed_fractions_match_the_closed_form():
    x_km, y_km = 6.8 * np.arange(128), 8.7 * np.arange(128)
    lat_mid = 38.0

    def expected(satellite) -> float:
        h = math.asin(math.cos(math.radians(satellite.inclination_deg)) / math.cos(math.radians(lat_mid)))
        spacing = 360.0 / satellite.revs_per_day * KM_PER_DEG * math.cos(math.radians(lat_mid)) * math.cos(h)
        width = 2 * satellite.swath_km if satellite.swath_km else max(6.8 * math.cos(h), 8.7 * abs(math.sin(h)))
        return 2 * width / spacing

    rng = np.random.default_rng(0)
    swath = coverage(INSTRUMENTS["swot-like"], n_days=21, x_km=x_km, y_km=y_km, lat_mid=lat_mid, rng=rng)
    assert swath.mean() == pytest.approx(expected(INSTRUMENTS["swot-like"]), rel=0.1)  # 9.2 %
    nadirs = [coverage(INSTRUMENTS[name], n_days=35, x_km=x_km, y_km=y_km, lat_mid=lat_mid, rng=rng)
              for name in DEFAULT_INSTRUMENTS]
    total = sum(expected(INSTRUMENTS[name]) for name in DEFAULT_INSTRUMENTS)
    assert np.mean([mask.mean() for mask in nadirs]) * 4 == pytest.approx(total, rel=0.1)  # 2.35 %
    assert 0.02 < total < 0.03


def test_same_arguments_same_arrays_with_and_without_the_cache(tmp_path, monkeypatch):
    cold = simulate(6, shape=(16, 16), seed=1, settings=QUICK, cache=False)
    first = simulate(6, shape=(16, 16), seed=1, settings=QUICK, cache=tmp_path)
    files = sorted(path.name for path in tmp_path.iterdir())
    assert len(files) == 2 and not any(name.endswith(".tmp") for name in files)  # spin-up and maps
    np.testing.assert_array_equal(first.truth, cold.truth)
    np.testing.assert_array_equal(first.obs, cold.obs)

    def fail(*args, **kwargs):
        raise AssertionError("the model ran although the cache holds the run")

    with monkeypatch.context() as patched:
        patched.setattr(TwoLayerQG, "run_days", fail)
        warm = simulate(6, shape=(16, 16), seed=1, settings=QUICK, cache=tmp_path)
        shorter = simulate(4, shape=(16, 16), seed=1, settings=QUICK, cache=tmp_path)
    np.testing.assert_array_equal(warm.truth, cold.truth)
    np.testing.assert_array_equal(shorter.truth, cold.truth[:4])
    longer = simulate(9, shape=(16, 16), seed=1, settings=QUICK, cache=tmp_path)  # from the cached spin-up
    np.testing.assert_array_equal(longer.truth[:6], cold.truth)
    for path in tmp_path.iterdir():  # a damaged cache is recomputed, not believed
        path.write_bytes(b"not an array")
    np.testing.assert_array_equal(simulate(6, shape=(16, 16), seed=1, settings=QUICK, cache=tmp_path).truth, cold.truth)
    assert all(np.load(path).size > 0 for path in tmp_path.iterdir())
    other = simulate(6, shape=(16, 16), seed=2, settings=QUICK, cache=tmp_path)
    assert np.abs(other.truth - cold.truth).mean() > 0.3 * cold.truth.std()


def test_cache_directory_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEKIT_CACHE", str(tmp_path / "here"))
    assert cache_directory() == tmp_path / "here"
    simulate(2, shape=(16, 16), seed=0, settings=QUICK)
    assert len(list((tmp_path / "here").iterdir())) == 2
    monkeypatch.setenv("PIPEKIT_CACHE", "off")
    assert cache_directory() is None and cache_directory(tmp_path) == tmp_path
    monkeypatch.delenv("PIPEKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory() == tmp_path / "xdg" / "pipekit_cycle"


def test_windows_of_one_seed_show_the_same_ocean():
    small = simulate(3, shape=(16, 16), seed=0, settings=QUICK, cache=False)
    large = simulate(3, shape=(32, 24), seed=0, settings=QUICK, cache=False)
    np.testing.assert_array_equal(small.truth, large.truth[:, :16, :16])
    assert small.parameters["box_lat"] == large.parameters["box_lat"] == 32


def test_the_one_and_half_layer_model_by_name():
    old = simulate(3, shape=(32, 32), seed=0, model="one_and_half_layer", cache=False)
    np.testing.assert_array_equal(old.truth, ssh_osse(n_days=3, shape=(32, 32), seed=0).truth)
    assert old.model == "one_and_half_layer" and old.parameters["drag_days"] == 50.0


def test_gridded_simulated_is_the_default_two_layer_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPEKIT_CACHE", str(tmp_path))
    data = simulated(n_days=4, grid=16, seed=0)
    run = simulate(4, shape=(16, 16), seed=0)
    np.testing.assert_array_equal(data.truth, run.truth)
    np.testing.assert_array_equal(data.obs, run.obs, strict=True)
    assert data.time.tolist() == [0.0, 1.0, 2.0, 3.0] and data.noise_std == 0.03
    assert data.source == "simulate(4, shape=(16, 16), seed=0)" and run.parameters["box_lat"] == 64


def _isotropic_slope(ssh: np.ndarray, dx: float, dy: float, shortest: float, longest: float) -> float:
    """Log-log slope of the time-mean isotropic power spectrum of periodic maps between two
    wavelengths (km), one point per shell of width 2 pi / (the longer side)."""
    _, ny, nx = ssh.shape
    kx, ky = 2 * np.pi * np.fft.fftfreq(nx, dx), 2 * np.pi * np.fft.fftfreq(ny, dy)
    k = np.hypot(kx[None, :], ky[:, None])
    power = (np.abs(np.fft.fft2(ssh)) ** 2).mean(axis=0)
    dk = 2 * np.pi / max(nx * dx, ny * dy)
    spectrum = np.bincount(np.rint(k / dk).astype(int).ravel(), power.ravel())
    shells = dk * np.arange(spectrum.size)
    band = (shells >= 2 * np.pi / longest) & (shells <= 2 * np.pi / shortest)
    return float(np.polyfit(np.log(shells[band]), np.log(spectrum[band]), 1)[0])


def _kurtosis(values: np.ndarray) -> float:
    anomaly = values - values.mean()
    return float((anomaly**4).mean() / (anomaly**2).mean() ** 2)


def _skewness(values: np.ndarray) -> float:
    anomaly = values - values.mean()
    return float((anomaly**3).mean() / (anomaly**2).mean() ** 1.5)


def test_statistics_of_the_two_layer_ocean_on_a_small_box(tmp_path):
    # The whole periodic 64-point box (5°): the default settings (a jet a quarter of the way up
    # the box), spun up 200 days, 150 days.
    run = simulate(150, shape=(64, 64), seed=0, settings=TwoLayerSettings(box_points=64), cache=tmp_path)
    ssh = run.truth - run.truth.mean(axis=(1, 2), keepdims=True)
    assert 0.15 < ssh.std() < 0.4  # m: the jet's step and its eddies
    profile = ssh.mean(axis=(0, 2))
    assert profile.max() - profile.min() > 0.4  # m: the jet's step in SSH ...
    assert profile[8] > 0.1 > -0.1 > profile[24]  # ... high south of its axis (row 16), low north
    assert _kurtosis(ssh) < 2.5  # bimodal: the two sides of the jet, not a Gaussian
    slope = _isotropic_slope(ssh, run.dx_km, run.dy_km, 70.0, 250.0)
    assert -5.5 < slope < -3.5
    kx = 2 * np.pi * np.fft.fftfreq(64, run.dx_km)
    ky = 2 * np.pi * np.fft.fftfreq(64, run.dy_km)
    laplacian = np.fft.ifft2(-(kx[None, :] ** 2 + ky[:, None] ** 2) * np.fft.fft2(ssh)).real
    assert _kurtosis(laplacian) > 3.3  # fat-tailed vorticity: the rings and the jet's meanders
    anomaly = ssh - ssh.mean(axis=0)
    correlation = [(anomaly[lag:] * anomaly[: 150 - lag]).mean() / (anomaly**2).mean() for lag in range(40)]
    efold = int(np.argmax(np.array(correlation) < 1 / math.e))
    assert 5 <= efold <= 30  # days
    halves = anomaly[:75].std(), anomaly[75:].std()
    assert halves[1] == pytest.approx(halves[0], rel=0.35)  # spun up: statistically steady


def test_without_a_jet_the_box_holds_eddies_alone(tmp_path):
    # jet_speed=0 and a uniform shear: the earlier configuration, symmetric: no step, no skewness.
    settings = TwoLayerSettings(box_points=64, u1=0.08, jet_speed=0.0)
    run = simulate(60, shape=(64, 64), seed=0, settings=settings, cache=tmp_path)
    ssh = run.truth - run.truth.mean(axis=(1, 2), keepdims=True)
    profile = ssh.mean(axis=(0, 2))
    assert profile.max() - profile.min() < 0.2  # m: no step (the jet makes 0.4 m and more)
    assert abs(_skewness(ssh)) < 0.3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_days": 0}, "n_days must be an integer >= 1"),
        ({"shape": (16,)}, "shape must be a pair"),
        ({"shape": (4, 16)}, "shape\\[0\\] must be an integer >= 8"),
        ({"model": "three_layer"}, "model must be one of"),
        ({"instruments": ("jason",)}, "instruments must be names of"),
        ({"instruments": ("jason-like", "jason-like")}, "distinct names"),
        ({"model": "one_and_half_layer", "settings": QUICK}, "takes none"),
        ({"lat0": -2.0, "dx_deg": 0.01}, "from the equator"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str):
    arguments = {"n_days": 2, "shape": (16, 16), "settings": QUICK, "cache": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate(arguments.pop("n_days"), **arguments)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"deformation_km": 0.0}, "deformation_km must be a number > 0"), ({"box_points": 8}, "box_points"),
     ({"u1": float("nan")}, "u1 must be a finite number"),
     ({"jet_position": 1.0}, "jet_position must be a fraction of the box in \\[0, 1\\)"),
     ({"jet_width_km": -3.0}, "jet_width_km must be a number > 0")],
)
def test_bad_settings_raise(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        TwoLayerSettings(**kwargs)
