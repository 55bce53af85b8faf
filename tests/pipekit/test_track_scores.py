"""The 2021a data challenge's along-track scores against independent references: scipy's
``RegularGridInterpolator`` for the map at the track, closed forms and xarray's daily resampling
for the RMSE score, and ``scipy.signal.welch`` plus ``scipy.interpolate.interp1d`` called as the
challenge's ``mod_spectral.py`` / ``mod_plot.py`` call them for the effective resolution."""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import scipy.signal
from scipy.interpolate import RegularGridInterpolator, interp1d

from pipekit_cycle.ssh import AlongTrack
from pipekit_cycle.ssh import track_metrics as ts
from pipekit_cycle.ssh.track_metrics import (
    DELTA_X_KM,
    along_track_rmse_score,
    along_track_spectrum,
    effective_resolution,
    interpolate_map_to_track,
    track_scores,
)

DAY = np.timedelta64(1, "D")
SAMPLE = np.timedelta64(943_400, "us")  # Cryosat-2's 1 Hz spacing in time


def _track(time, lat=None, lon=None, value=None) -> AlongTrack:
    """A track at ``time``; the coordinates and values left out are zeros."""
    lat, lon, value = (np.zeros(time.size) if given is None else given for given in (lat, lon, value))
    return AlongTrack("c2", time, lat, lon, value)


def _rgi(field, t_days, lat, lon, points) -> np.ndarray:
    interpolator = RegularGridInterpolator((t_days, lat, lon), field, method="linear", bounds_error=False)
    return interpolator(np.stack(points, axis=-1))


# --------------------------------------------------------------------------- map at the track


@pytest.fixture(scope="module")
def grid():
    rng = np.random.default_rng(0)
    dates = np.datetime64("2017-01-01") + np.array([0, 1, 2, 4, 5, 7])  # a missing day or two
    lat = np.sort(30.0 + 10.0 * rng.random(9))
    lon = np.sort(-80.0 + 20.0 * rng.random(11))  # -180..180
    field = rng.normal(size=(dates.size, lat.size, lon.size))
    return dates, lat, lon, field


def _random_points(rng, n, dates, lat, lon):
    t_days = (dates - dates[0]) / DAY
    t = rng.uniform(t_days[0] - 0.5, t_days[-1] + 0.5, n)  # some before and after the map
    time = dates[0].astype("datetime64[ns]") + (t * 86400e9).astype(np.int64).astype("timedelta64[ns]")
    return (
        time,
        rng.uniform(lat[0] - 0.5, lat[-1] + 0.5, n),
        rng.uniform(lon[0] - 0.5, lon[-1] + 0.5, n),
    )


def test_interpolation_is_scipy_trilinear(grid):
    dates, lat, lon, field = grid
    time, q_lat, q_lon = _random_points(np.random.default_rng(1), 4000, dates, lat, lon)
    got = interpolate_map_to_track(field, dates=dates, lat=lat, lon=lon, track=_track(time, q_lat, q_lon))
    want = _rgi(field, (dates - dates[0]) / DAY, lat, lon, ((time - dates[0]) / DAY, q_lat, q_lon))
    assert np.array_equal(np.isnan(got), np.isnan(want)) and 0.2 < np.isnan(got).mean() < 0.6
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def test_interpolation_nan_cells_and_nodes_as_scipy(grid):
    dates, lat, lon, field = grid
    field = field.copy()
    field[np.random.default_rng(2).random(field.shape) < 0.1] = np.nan  # land
    rng = np.random.default_rng(3)
    time, q_lat, q_lon = _random_points(rng, 3000, dates, lat, lon)
    # A third of the points on grid nodes, in every coordinate: the cell chosen there matters.
    on = rng.random(3000) < 0.33
    time[on] = dates[rng.integers(0, dates.size, on.sum())]
    q_lat[on], q_lon[on] = lat[rng.integers(0, lat.size, on.sum())], lon[rng.integers(0, lon.size, on.sum())]
    got = interpolate_map_to_track(field, dates=dates, lat=lat, lon=lon, track=_track(time, q_lat, q_lon))
    want = _rgi(field, (dates - dates[0]) / DAY, lat, lon, ((time - dates[0]) / DAY, q_lat, q_lon))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("convention", ["track 0..360, map -180..180", "track -180..180, map 0..360"])
def test_interpolation_longitude_conventions(grid, convention):
    dates, lat, lon, field = grid
    time, q_lat, q_lon = _random_points(np.random.default_rng(4), 2000, dates, lat, lon)
    want = _rgi(field, (dates - dates[0]) / DAY, lat, lon, ((time - dates[0]) / DAY, q_lat, q_lon))
    if convention.startswith("track 0..360"):
        track, map_lon = _track(time, q_lat, q_lon + 360.0), lon
    else:
        track, map_lon = _track(time, q_lat, q_lon), lon + 360.0
    got = interpolate_map_to_track(field, dates=dates, lat=lat, lon=map_lon, track=track)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def test_interpolation_decreasing_lat_dateline_and_global_maps():
    rng = np.random.default_rng(5)
    dates = np.datetime64("2017-03-01") + np.arange(4)
    t_days = np.arange(4.0)
    time = dates[0].astype("datetime64[ms]") + (rng.uniform(0, 3, 500) * 86400e3).astype("timedelta64[ms]")
    q_t = (time - dates[0]) / DAY
    # North to south latitudes, a map across the dateline (170°E .. 170°W), track in 0..360.
    lat = np.linspace(50.0, 40.0, 6)
    unwrapped = np.linspace(170.0, 190.0, 9)
    field = rng.normal(size=(4, 6, 9))
    q_lat, q_lon = rng.uniform(39.0, 51.0, 500), rng.uniform(168.0, 192.0, 500)
    got = interpolate_map_to_track(
        field, dates=dates, lat=lat, lon=(unwrapped + 180.0) % 360.0 - 180.0, track=_track(time, q_lat, q_lon)
    )
    want = _rgi(field[:, ::-1], t_days, lat[::-1], unwrapped, (q_t, q_lat, q_lon))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    # A global map wraps: points between its last longitude and 360° read its first column too.
    lon = np.arange(0.0, 360.0, 2.5)
    field = rng.normal(size=(4, 6, lon.size))
    q_lon = rng.uniform(-180.0, 180.0, 500)
    got = interpolate_map_to_track(field, dates=dates, lat=lat, lon=lon, track=_track(time, q_lat, q_lon))
    closed = np.concatenate([field, field[:, :, :1]], axis=2)[:, ::-1]
    want = _rgi(closed, t_days, lat[::-1], np.append(lon, 360.0), (q_t, q_lat, q_lon % 360.0))
    assert np.isfinite(got[(q_lat >= 40) & (q_lat <= 50)]).all()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


# --------------------------------------------------------------------------- RMSE score


def _challenge_rmse_score(time, ref, mapped):
    """The challenge's daily statistics (``mod_write.write_timeserie_stat``): xarray's 1-day
    resampling, the days with fewer than 10 points masked, then the masked mean and std."""
    import xarray as xr

    def daily(values):
        da = xr.DataArray(values, coords=[time], dims="time")
        return np.sqrt(np.square(da).resample(time="1D").mean()).values, da.resample(time="1D").count().values

    rmse, count = daily(ref - mapped)
    rms, _ = daily(ref)
    score = np.ma.masked_where(count < 10, 1.0 - rmse / rms)
    score = np.ma.masked_invalid(score)
    return float(np.ma.mean(score)), float(np.ma.std(score))


def test_rmse_score_closed_forms():
    # 6 days of 24 hourly points, values +-0.4 m (RMS 0.4 m every day), and a 7th day of 5 points.
    time = np.datetime64("2017-01-01T00:30", "ns") + np.arange(6 * 24 + 5) * np.timedelta64(1, "h")
    value = np.where(np.arange(time.size) % 2 == 0, 0.4, -0.4)
    value[-5:] = 3.0  # too few points that day: not scored
    track = _track(time, value=value)
    assert along_track_rmse_score(track, value) == (1.0, 0.0)
    for c in (0.05, -0.12):
        mu, sigma = along_track_rmse_score(track, value + c)
        assert mu == pytest.approx(1.0 - abs(c) / 0.4, abs=1e-12) and sigma == pytest.approx(0.0, abs=1e-12)
    mu, sigma = along_track_rmse_score(track, np.zeros_like(value))
    assert mu == pytest.approx(0.0, abs=1e-12) and sigma == pytest.approx(0.0, abs=1e-12)
    # Errors of 0.04 m on even days and 0.12 m on odd ones: daily scores 0.9 and 0.7.
    error = np.where(((time - time[0]) // DAY) % 2 == 0, 0.04, 0.12)
    mu, sigma = along_track_rmse_score(track, value + error)
    assert mu == pytest.approx(0.8, abs=1e-12) and sigma == pytest.approx(0.1, abs=1e-12)
    assert all(math.isnan(x) for x in along_track_rmse_score(track, value + 0.1, min_count=100))


def test_rmse_score_is_the_challenges_daily_statistics():
    rng = np.random.default_rng(6)
    n = 3000
    seconds = np.sort(rng.uniform(0, 20 * 86400, n))
    seconds[rng.random(n) < 0.3] += 25 * 86400  # sparse days further on, some under 10 points
    seconds = np.sort(np.concatenate([seconds, 60 * 86400 + rng.uniform(0, 86400, 7)]))
    time = np.datetime64("2017-01-01", "ns") + (seconds * 1e9).astype("timedelta64[ns]")
    ref = 0.5 + 0.3 * rng.normal(size=time.size)
    mapped = ref + rng.normal(size=time.size) * rng.uniform(0.02, 0.2, time.size)
    mapped[rng.random(time.size) < 0.05] = np.nan  # the challenge drops these points first
    keep = np.isfinite(mapped)
    want = _challenge_rmse_score(time[keep], ref[keep], mapped[keep])
    got = along_track_rmse_score(_track(time, value=ref), mapped)
    np.testing.assert_allclose(got, want, rtol=1e-12)


# --------------------------------------------------------------------------- spectral score


def _challenge_resolution(time, ref, mapped, length_km=1000.0, delta_x=DELTA_X_KM):
    """Effective resolution (km) and Welch spectra as ``mod_spectral.compute_spectral_scores`` and
    ``mod_plot.find_wavelength_05_crossing`` compute them, NaN points dropped first as in
    ``mod_interp.interp_on_alongtrack``. Raises where the challenge's code raises."""
    keep = np.isfinite(ref) & np.isfinite(mapped)
    time, ref, mapped = time[keep], ref[keep], mapped[keep]
    npt = int(length_km / delta_x)
    cut = np.where(np.diff(time) > 4 * np.timedelta64(1, "s"))[0]
    lengths = np.insert(np.diff(cut), [0], cut[0])
    ref_segments, map_segments = [], []
    for piece in np.where(lengths >= npt)[0]:
        first, last = (cut[piece - 1] if piece >= 1 else 0), cut[piece]
        for start in range(first, last - npt, int(npt * 0.25)):
            ref_segments.append(ref[start : start + npt])
            map_segments.append(mapped[start : start + npt])
    ref_flat, map_flat = np.asarray(ref_segments).flatten(), np.asarray(map_segments).flatten()
    options = {"fs": 1.0 / delta_x, "nperseg": npt, "scaling": "density", "noverlap": 0}
    wavenumber, psd_ref = scipy.signal.welch(ref_flat, **options)
    _, psd_study = scipy.signal.welch(map_flat, **options)
    _, psd_diff = scipy.signal.welch(map_flat - ref_flat, **options)

    def resolution() -> float:
        with np.errstate(divide="ignore"):
            return float(interp1d(1.0 - psd_diff / psd_ref, 1.0 / wavenumber)(0.5))

    return resolution, (wavenumber, psd_ref, psd_study, psd_diff, len(ref_segments))


@pytest.fixture(scope="module")
def passes():
    """Forty 1 Hz passes of 200 to 900 points, an hour or more apart, with a red SSH signal."""
    rng = np.random.default_rng(7)
    times, values, start = [], [], np.datetime64("2017-01-01T03:00", "ns")
    for n in rng.integers(200, 900, 40):
        times.append(start + np.arange(n) * SAMPLE)
        start = times[-1][-1] + rng.integers(1, 30) * np.timedelta64(1, "h")
        k = np.fft.rfftfreq(n, d=DELTA_X_KM)
        spectrum = (rng.normal(size=k.size) + 1j * rng.normal(size=k.size)) / (1.0 + (k * 300.0) ** 2)
        values.append(0.1 * np.fft.irfft(spectrum, n))
    return times, values


def _low_passed(values, wavelength_km):
    out = []
    for v in values:
        k = np.fft.rfftfreq(v.size, d=DELTA_X_KM)
        out.append(np.fft.irfft(np.fft.rfft(v) * (k < 1.0 / wavelength_km), v.size))
    return np.concatenate(out)


def _check_against_challenge(time, ref, mapped):
    resolution, (wavenumber, psd_ref, psd_study, psd_diff, n_segments) = _challenge_resolution(time, ref, mapped)
    spectrum = along_track_spectrum(_track(time, value=ref), mapped)
    assert spectrum.n_segments == n_segments > 0
    np.testing.assert_allclose(spectrum.wavenumber, wavenumber, rtol=1e-14)
    for got, want in ((spectrum.psd_ref, psd_ref), (spectrum.psd_study, psd_study), (spectrum.psd_diff, psd_diff)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * want.max())
    got = effective_resolution(_track(time, value=ref), mapped)
    return got, resolution


@pytest.mark.parametrize("wavelength_km", [120.0, 250.0])
def test_effective_resolution_of_a_low_passed_truth(passes, wavelength_km):
    times, values = passes
    time, ref = np.concatenate(times), np.concatenate(values)
    got, resolution = _check_against_challenge(time, ref, _low_passed(values, wavelength_km))
    want = resolution()
    assert got == pytest.approx(want, rel=1e-6)
    assert got == pytest.approx(wavelength_km, rel=0.15)  # the cut-off, within a spectral bin


def test_effective_resolution_of_a_noisy_map_with_holes(passes):
    times, values = passes
    time, ref = np.concatenate(times), np.concatenate(values)
    rng = np.random.default_rng(8)
    mapped = _low_passed(values, 80.0) + 0.2 * ref.std() * rng.normal(size=ref.size)
    mapped[rng.random(ref.size) < 0.002] = np.nan  # dropped before the pieces are cut
    got, resolution = _check_against_challenge(time, ref, mapped)
    assert got == pytest.approx(resolution(), rel=1e-6) and 80.0 < got < 1000.0
    # The same in another time unit.
    us = time.astype("datetime64[us]")
    assert effective_resolution(_track(us, value=ref), mapped) == pytest.approx(got, rel=1e-12)


def test_effective_resolution_without_a_crossing(passes):
    times, values = passes
    time, ref = np.concatenate(times), np.concatenate(values)
    nyquist = 2 * DELTA_X_KM  # 156 points a segment: the last bin is the Nyquist wavenumber
    _, resolution = _check_against_challenge(time, ref, ref.copy())
    with pytest.raises(ValueError):  # the challenge's interp1d: 0.5 below every score (all 1)
        resolution()
    assert effective_resolution(_track(time, value=ref), ref) == pytest.approx(nyquist, rel=1e-12)
    noise = 10.0 * ref.std() * np.random.default_rng(9).normal(size=ref.size)
    got, resolution = _check_against_challenge(time, ref, ref + noise)
    with pytest.raises(ValueError):  # every score below 0.5
        resolution()
    assert got == math.inf and effective_resolution(_track(time, value=ref), np.zeros_like(ref)) == math.inf


def test_effective_resolution_without_segments(passes):
    times, values = passes
    short = np.concatenate([t[:150] for t in times])  # each pass under 156 points
    value = np.concatenate([v[:150] for v in values])
    spectrum = along_track_spectrum(_track(short, value=value), value)
    assert spectrum.n_segments == 0 and np.isnan(spectrum.psd_ref).all()
    assert math.isnan(effective_resolution(_track(short, value=value), value))
    one_pass = times[0]  # no gap at all: the pieces end at the gaps, so none (as in the challenge)
    assert math.isnan(effective_resolution(_track(one_pass, value=values[0]), values[0]))


# --------------------------------------------------------------------------- all of it, and bad input


def test_track_scores_on_a_map(passes):
    times, _ = passes
    dates = np.datetime64("2017-01-01") + np.arange(60)
    lat, lon = np.linspace(20.0, 50.0, 31), np.linspace(280.0, 320.0, 41)
    slope = 0.01 * lat[None, :, None] + 0.002 * lon + 0.003 * np.arange(60.0)[:, None, None]
    time = np.concatenate(times)
    assert time[-1] < dates[-1]
    q_lat = 21.0 + 28.0 * np.linspace(0, 1, time.size) ** 2
    q_lon = -79.0 + 38.0 * np.random.default_rng(10).random(time.size)  # -180..180 on a 0..360 map
    truth = 0.01 * q_lat + 0.002 * (q_lon + 360.0) + 0.003 * (time - dates[0]) / DAY  # read exactly
    scores = track_scores(slope + 0.02, dates=dates, lat=lat, lon=lon, track=_track(time, q_lat, q_lon, truth))
    assert set(scores) == {"mu", "sigma", "lambda_x_km", "n_points", "n_segments"}
    assert scores["n_points"] == time.size and scores["n_segments"] > 0
    days = (time - time[0].astype("datetime64[D]")) // DAY
    daily = [1 - 0.02 / np.sqrt(np.mean(truth[days == d] ** 2)) for d in np.unique(days) if (days == d).sum() >= 10]
    assert scores["mu"] == pytest.approx(np.mean(daily), abs=1e-9)
    assert scores["sigma"] == pytest.approx(np.std(daily), abs=1e-9)
    # Points within 0.25° of the map's edges are not scored.
    q_lat[:100] = 20.1
    scores = track_scores(slope, dates=dates, lat=lat, lon=lon, track=_track(time, q_lat, q_lon, truth))
    assert scores["n_points"] == time.size - 100 and scores["mu"] == pytest.approx(1.0, abs=1e-9)


def test_bad_input_is_refused(grid):
    dates, lat, lon, field = grid
    time = dates[0] + np.arange(5) * np.timedelta64(6, "h")
    track = _track(time, np.full(5, 35.0), np.full(5, -70.0), np.ones(5))
    with pytest.raises(ValueError, match=r"field must be \(time, lat, lon\)"):
        interpolate_map_to_track(field[0], dates=dates, lat=lat, lon=lon, track=track)
    with pytest.raises(ValueError, match=r"field must be \(time, lat, lon\)"):
        interpolate_map_to_track(field[:, :, :-1], dates=dates, lat=lat, lon=lon, track=track)
    with pytest.raises(ValueError, match="dates must be a 1-D datetime64"):
        interpolate_map_to_track(field, dates=np.arange(dates.size), lat=lat, lon=lon, track=track)
    with pytest.raises(ValueError, match="dates must be strictly increasing"):
        interpolate_map_to_track(field, dates=dates[::-1], lat=lat, lon=lon, track=track)
    with pytest.raises(ValueError, match="lon must increase"):
        interpolate_map_to_track(field, dates=dates, lat=lat, lon=lon[::-1], track=track)
    with pytest.raises(ValueError, match="must be 1-D of one length"):
        interpolate_map_to_track(field, dates=dates, lat=lat, lon=lon, track=_track(time, np.zeros(4)))
    with pytest.raises(ValueError, match="one value per track point"):
        along_track_rmse_score(track, np.ones(4))
    with pytest.raises(ValueError, match="min_count and bin_days must be integers"):
        along_track_rmse_score(track, np.ones(5), min_count=0)
    with pytest.raises(ValueError, match="length_km / delta_x_km"):
        along_track_spectrum(track, np.ones(5), length_km=10.0)
    # A track off the map: 0..360 vs -180..180 is fine, but other places or dates are not.
    away = _track(time, np.full(5, 35.0), np.full(5, 10.0), np.ones(5))
    with pytest.raises(ValueError, match="no track point with finite values"):
        track_scores(field, dates=dates, lat=lat, lon=lon, track=away)
    later = _track(time + 30 * DAY, np.full(5, 35.0), np.full(5, 290.0), np.ones(5))
    with pytest.raises(ValueError, match="no track point with finite values"):
        track_scores(field, dates=dates, lat=lat, lon=lon, track=later)
    mapped = interpolate_map_to_track(field, dates=dates, lat=lat, lon=lon, track=away)
    with pytest.raises(ValueError, match="no point where track and map are both finite"):
        along_track_rmse_score(away, mapped)
    with pytest.raises(ValueError, match="no point where track and map are both finite"):
        effective_resolution(away, mapped)


@pytest.mark.parametrize(
    "name", [n for n in ts.__all__ if inspect.isfunction(getattr(ts, n)) or inspect.isclass(getattr(ts, n))]
)
def test_docstring_examples_run(name):
    blocks = re.findall(r"```python\n(.*?)```", inspect.getdoc(getattr(ts, name)) or "", re.S)
    assert blocks, f"{name} has no example"
    for code in blocks:
        exec(code, {})
