"""The SSH mapping job's numpy parts: windows, samples, the blended reconstruction, scores."""

import os

import numpy as np
import pytest

from pipekit_cycle import ssh as mapping
from pipekit_cycle.ssh.patches import patch_origins


def test_windows_cover_every_day():
    assert mapping.window_starts(10, 4).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert mapping.window_starts(10, 4, stride=4).tolist() == [0, 4, 6]
    with pytest.raises(ValueError, match="does not fit"):
        mapping.window_starts(3, 4)


def test_samples_are_the_windows_of_the_patches():
    field = np.random.default_rng(0).standard_normal((9, 12, 10))
    origins = patch_origins((12, 10), 4, 3)
    starts = np.full(len(origins), 2)
    cut = mapping.samples(field, starts, origins, 5, 4)
    r, c = origins[-1]
    np.testing.assert_array_equal(cut[-1], field[2:7, r : r + 4, c : c + 4])


@pytest.mark.parametrize(("size", "stride", "batch_size"), [(4, 2, 3), (4, 3, 7), (5, 5, 1)])
def test_an_identity_predict_gives_the_field_back(size, stride, batch_size):
    field = np.random.default_rng(1).standard_normal((11, 13, 12))
    seen = []
    out = mapping.reconstruct(lambda x: x, field, length=4, size=size, stride=stride, batch_size=batch_size,
                              progress=seen.append)
    np.testing.assert_allclose(out, field, rtol=0, atol=1e-13)
    n = len(mapping.window_starts(11, 4)) * len(patch_origins((13, 12), size, stride))
    assert sum(seen) == n and max(seen) <= batch_size


def test_windows_are_blended_with_the_time_tent():
    # predict returns each window's day index within the window: the blend at day t is the
    # tent-weighted mean over the windows containing t, a closed form.
    length, nt = 3, 6
    out = mapping.reconstruct(lambda x: np.broadcast_to(np.arange(length)[None, :, None, None], x.shape).copy(),
                              np.zeros((nt, 4, 4)), length=length, size=4, stride=4, batch_size=2)
    tau = mapping.time_tent(length)
    for t in range(nt):
        us = [t - s for s in mapping.window_starts(nt, length) if 0 <= t - s < length]
        expected = sum(tau[u] * u for u in us) / sum(tau[u] for u in us)
        np.testing.assert_allclose(out[t], expected, rtol=1e-14)


def test_a_predict_of_another_shape_is_refused():
    with pytest.raises(ValueError, match="shaped like its input"):
        mapping.reconstruct(lambda x: x[:, :1], np.zeros((4, 4, 4)), length=2, size=4, stride=4, batch_size=2)


def test_score_of_a_perfect_and_a_zero_estimate():
    truth = np.random.default_rng(2).standard_normal((8, 8, 8))
    perfect = mapping.score(truth, truth, dx_deg=0.1)
    assert perfect["rmse"] == 0.0 and perfect["mu"] == 1.0 and perfect["sigma"] == 0.0
    zero = mapping.score(np.zeros_like(truth), truth, dx_deg=0.1)
    assert zero["mu"] == pytest.approx(0.0, abs=1e-12) and zero["lambda_x_deg"] is None


@pytest.fixture(scope="module")
def period():
    return mapping.simulated(n_days=3, grid=32, seed=0)


def test_netcdf_round_trip_keeps_fields_grid_and_umask(tmp_path, period):
    path = tmp_path / "map.nc"
    estimate = period.truth + 0.01
    old = os.umask(0o027)
    try:
        mapping.write_netcdf(path, period, {"learned": estimate})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640 and [p.name for p in tmp_path.iterdir()] == ["map.nc"]
    back = mapping.read_netcdf(path, var="truth", obs_var="obs")
    # The maps are written as float32 (CF files of the reconstruction: test_files.py).
    np.testing.assert_array_equal(back.truth, period.truth.astype(np.float32))
    np.testing.assert_array_equal(back.obs, period.obs.astype(np.float32))  # NaN where unobserved, the same places
    np.testing.assert_array_equal(back.lat, period.lat)
    assert back.dx_deg == pytest.approx(period.dx_deg, rel=1e-12) and back.dx_km == pytest.approx(period.dx_km)
    learned = mapping.read_netcdf(path, var="learned", obs_var="obs")
    np.testing.assert_array_equal(learned.truth, estimate.astype(np.float32))


def test_netcdf_errors_name_the_file_and_what_is_wrong(tmp_path, period):
    import xarray as xr  # the netcdf extra, which make setup installs

    dims = ("time", "lat", "lon")
    path = tmp_path / "map.nc"
    mapping.write_netcdf(path, period, {})
    with pytest.raises(ValueError, match=r"map.nc: has no variable 'sla' \(--var\); its variables: truth, obs"):
        mapping.read_netcdf(path, var="sla", obs_var="obs")
    with pytest.raises(ValueError, match=r"no such file"):
        mapping.read_netcdf(tmp_path / "absent.nc", var="truth", obs_var="obs")
    (tmp_path / "junk.nc").write_bytes(b"not netcdf")
    with pytest.raises(ValueError, match=r"junk.nc: not a netCDF file \(--data\)"):
        mapping.read_netcdf(tmp_path / "junk.nc", var="truth", obs_var="obs")
    swapped = xr.Dataset({"truth": (("lat", "time", "lon"), period.truth.transpose(1, 0, 2)),
                          "obs": (dims, period.obs)},
                         coords={"time": period.dates, "lat": period.lat, "lon": period.lon})
    swapped.to_netcdf(tmp_path / "swapped.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match=r"'truth' \(--var\) has dimensions \('lat', 'time', 'lon'\), expected"):
        mapping.read_netcdf(tmp_path / "swapped.nc", var="truth", obs_var="obs")
    irregular = xr.Dataset({"truth": (dims, period.truth), "obs": (dims, period.obs)},
                           coords={"time": period.dates, "lat": period.lat ** 1.01, "lon": period.lon})
    irregular.to_netcdf(tmp_path / "irregular.nc", engine="h5netcdf")
    with pytest.raises(ValueError, match=r"'lat' is not a regular monotonic axis"):
        mapping.read_netcdf(tmp_path / "irregular.nc", var="truth", obs_var="obs")
