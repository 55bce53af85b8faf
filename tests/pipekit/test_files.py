"""Gridded netCDF in and out (pipekit_cycle.ssh.files): the layouts of real files (netCDF-3 and
-4, descending latitudes, longitudes across 0° or 180°, land), one-line errors naming the file
and the flag, and a CF-1.8 writer whose files read back to the same maps and dates."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest

from pipekit_cycle.ssh.files import read_netcdf, write_netcdf
from pipekit_cycle.ssh.gridded import GriddedData

xr = pytest.importorskip("xarray")  # the netcdf extra, which make setup installs

ENGINES = ("h5netcdf", "scipy")  # netCDF-4, netCDF-3
DAYS = "days since 2012-10-01"
# North to south, 0.5 degrees; 0..360 across Greenwich, 0.25 degrees.
LAT = np.array([1.25, 0.75, 0.25, -0.25])
LON = np.array([359.375, 359.625, 359.875, 0.125, 0.375])


def maps(n_days: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference (land at the file's first row, first column) and observations, float32-exact."""
    rng = np.random.default_rng(seed)
    sla = rng.integers(-64, 64, (n_days, LAT.size, LON.size)) / 128.0
    sla[:, 0, 0] = np.nan
    obs = np.where(rng.random(sla.shape) < 0.3, sla + 1.0 / 64.0, np.nan)
    obs[:, 0, 0] = 0.5  # an observation on land: dropped
    return sla, obs


def dataset(sla, obs, *, time=None, names=("latitude", "longitude"), lat=LAT, lon=LON):
    dims = ("time", *names)
    time = ("time", np.arange(sla.shape[0], dtype=float), {"units": DAYS}) if time is None else time
    return xr.Dataset({"sla": (dims, sla, {"units": "m"}), "sla_obs": (dims, obs)},
                      coords={"time": time, names[0]: lat, names[1]: lon})


def one_line_error(path, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        read_netcdf(path, *args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


@pytest.mark.parametrize("engine", ENGINES)
def test_reads_descending_latitudes_longitudes_across_greenwich_and_land(tmp_path, engine):
    sla, obs = maps()
    path = tmp_path / "maps.nc"
    dataset(sla, obs).to_netcdf(path, engine=engine)
    data = read_netcdf(path, "sla", "sla_obs")
    np.testing.assert_array_equal(data.lat, LAT[::-1])
    assert data.lat_descending and data.dy_deg == 0.5 and data.dx_deg == 0.25
    np.testing.assert_array_equal(data.lon, [359.375, 359.625, 359.875, 360.125, 360.375])
    assert data.lon_convention == "0..360"
    np.testing.assert_array_equal(data.truth, sla[:, ::-1])  # NaN on land, in the same places
    expected_obs = obs[:, ::-1].copy()
    expected_obs[:, -1, 0] = np.nan  # the observation on land is dropped
    np.testing.assert_array_equal(data.obs, expected_obs)
    assert data.land.tolist() == [[False] * 5] * 3 + [[True] + [False] * 4]
    assert data.dates.dtype == np.dtype("datetime64[D]") and str(data.dates[0]) == "2012-10-01"
    assert data.time.tolist() == [0.0, 1.0, 2.0, 3.0] and data.standard_name == "sea_surface_height_above_sea_level"
    assert data.dx_km == pytest.approx(0.25 * 111.19, rel=1e-3) and data.source == str(path)


@pytest.mark.parametrize("engine", ENGINES)
def test_reads_lat_lon_names_an_ascending_box_across_180_and_centimetres(tmp_path, engine):
    sla, obs = maps()
    lon = np.array([179.25, 179.75, -179.75, -179.25, -178.75])  # -180..180 across the date line
    ds = dataset(sla * 100.0, obs, names=("lat", "lon"), lat=LAT[::-1], lon=lon)
    ds["sla"].attrs.update(units="cm", standard_name="sea_surface_height_above_geoid")
    ds.to_netcdf(tmp_path / "maps.nc", engine=engine)
    data = read_netcdf(tmp_path / "maps.nc", "sla", None)  # the reference alone
    np.testing.assert_array_equal(data.lon, [179.25, 179.75, 180.25, 180.75, 181.25])
    assert data.lon_convention == "-180..180" and not data.lat_descending
    np.testing.assert_allclose(data.truth, sla, rtol=1e-15)  # cm to m
    assert np.isnan(data.obs).all() and data.obs.shape == sla.shape
    assert data.standard_name == "sea_surface_height_above_geoid"


def test_reads_coordinates_held_as_plain_variables(tmp_path):
    sla, obs = maps()
    west = np.where(LON > 180.0, LON - 360.0, LON)  # -180..180: no seam to cross
    ds = xr.Dataset({"sla": (("time", "y", "x"), sla), "sla_obs": (("time", "y", "x"), obs),
                     "lat": ("y", LAT), "lon": ("x", west)},
                    coords={"time": ("time", np.arange(4.0), {"units": DAYS})})
    ds.to_netcdf(tmp_path / "plain.nc", engine="h5netcdf")
    data = read_netcdf(tmp_path / "plain.nc", "sla", "sla_obs")
    np.testing.assert_array_equal(data.lon, west)
    assert data.lon_convention == "-180..180" and data.land.sum() == 1


@pytest.mark.parametrize(
    ("time", "words"),
    [
        (("time", 2.0 * np.arange(4), {"units": DAYS}), "the time axis has time steps of 2 days (--data); the job maps "
         'daily fields: resample to daily first, e.g. ds.resample(time="1D").mean()'),
        (("time", 0.25 * np.arange(4), {"units": DAYS}), "time steps of 6 hours"),
        (("time", [0.0, 1.0, 3.0, 4.0], {"units": DAYS}), "irregular time steps (from 1 day to 2 days)"),
        (("time", np.arange(4.0)), "'time' has no units, not a CF time (--data); add units like 'days since "
         "2012-10-01'"),
        (("time", np.arange(4.0), {"units": "days"}), "'time' has units 'days', not a CF time"),
        (("time", np.arange(4.0), {"units": DAYS, "calendar": "noleap"}), "cannot decode 'time' (units 'days since "
         "2012-10-01', calendar 'noleap')"),
    ],
)
def test_a_time_axis_that_is_not_cf_and_daily_is_a_one_line_error(tmp_path, time, words):
    path = tmp_path / "maps.nc"
    dataset(*maps(), time=time).to_netcdf(path, engine="scipy")
    assert words in one_line_error(path, "sla", "sla_obs")


def test_errors_name_the_file_the_flag_and_the_fix(tmp_path):
    sla, obs = maps()
    path = tmp_path / "maps.nc"
    dataset(sla, obs).to_netcdf(path, engine="h5netcdf")
    assert "has no variable 'ssh' (--var); its variables: sla, sla_obs; pass one of them" in one_line_error(path, "ssh")
    assert "has no variable 'obs' (--obs-var)" in one_line_error(path, "sla", "obs")
    assert "no such file (--data)" in one_line_error(tmp_path / "absent.nc", "sla")
    (tmp_path / "junk.nc").write_bytes(b"not netcdf")
    assert "not a netCDF file (--data): it starts with b'not '" in one_line_error(tmp_path / "junk.nc", "sla")
    (tmp_path / "cut.nc").write_bytes(path.read_bytes()[:600])
    assert "not a readable netCDF-4 file (--data;" in one_line_error(tmp_path / "cut.nc", "sla")

    gaps = sla.copy()
    gaps[1, 2, 3] = gaps[2, 1, 1] = gaps[3, 1, 1] = np.nan  # two ocean cells NaN on some days
    dataset(gaps, obs).to_netcdf(tmp_path / "gaps.nc", engine="scipy")
    assert "'sla' (--var) is NaN at 2 cells on some days only; land must be NaN on every day" in one_line_error(
        tmp_path / "gaps.nc", "sla")

    kelvin = dataset(sla, obs)
    kelvin["sla_obs"].attrs["units"] = "K"
    kelvin.to_netcdf(tmp_path / "kelvin.nc", engine="scipy")
    assert "'sla_obs' (--obs-var) has units 'K'; expected a sea surface height in m" in one_line_error(
        tmp_path / "kelvin.nc", "sla", "sla_obs")

    swapped = dataset(sla, obs).transpose("latitude", "time", "longitude")
    swapped.to_netcdf(tmp_path / "swapped.nc", engine="h5netcdf")
    assert "'sla' (--var) has dimensions ('latitude', 'time', 'longitude'), expected (time, lat, lon)" in (
        one_line_error(tmp_path / "swapped.nc", "sla"))

    irregular = LAT.copy()
    irregular[-1] = -0.5
    dataset(sla, obs, lat=irregular).to_netcdf(tmp_path / "irregular.nc", engine="scipy")
    assert "'latitude' is not a regular monotonic axis (steps from -0.75 to -0.5 degrees) (--data); regrid" in (
        one_line_error(tmp_path / "irregular.nc", "sla"))

    mixed = np.array([-1.0, 90.0, 181.0, 272.0, 363.0])
    dataset(sla, obs, lon=mixed).to_netcdf(tmp_path / "mixed.nc", engine="scipy")
    assert "'longitude' spans -1 to 363 (--data); longitudes must be in -180..180 or in 0..360" in one_line_error(
        tmp_path / "mixed.nc", "sla")


def test_without_xarray_reading_and_writing_name_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "xarray", None)
    with pytest.raises(ImportError, match=r"pipekit-cycle\[netcdf\]"):
        read_netcdf(tmp_path / "x.nc", "sla")
    data = GriddedData(truth=None, obs=np.zeros((1, 2, 2)), lat=np.zeros(2), lon=np.zeros(2), time=np.zeros(1),
                       dates=np.array(["2012-10-01"], dtype="datetime64[D]"), land=np.zeros((2, 2), bool),
                       dx_deg=1.0, dy_deg=1.0, noise_std=None, source="here")
    with pytest.raises(ImportError, match=r"pipekit-cycle\[netcdf\]"):
        write_netcdf(tmp_path / "x.nc", data, {})


@pytest.mark.parametrize("engine", ENGINES)
def test_write_then_read_gives_the_same_maps_dates_and_grid_as_the_file(tmp_path, engine):
    sla, obs = maps(n_days=6)
    source = tmp_path / "in.nc"
    dataset(sla, obs).to_netcdf(source, engine=engine)
    data = read_netcdf(source, "sla", "sla_obs")
    held_out = data.period(2, 6)
    estimate = np.where(data.land, 7.0, held_out.truth + 1.0 / 32.0)  # land values are not written
    out = tmp_path / "out.nc"
    write_netcdf(out, held_out, {"learned": estimate})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nc", "out.nc"]  # no temporary file left
    back = read_netcdf(out, "truth", "obs")
    np.testing.assert_array_equal(back.truth, held_out.truth)
    np.testing.assert_array_equal(back.obs, held_out.obs)
    np.testing.assert_array_equal(back.lat, data.lat)
    np.testing.assert_array_equal(back.lon, data.lon)
    np.testing.assert_array_equal(back.land, data.land)
    assert back.dates.tolist() == held_out.dates.tolist() and str(back.dates[0]) == "2012-10-03"
    assert back.time.tolist() == [0.0, 1.0, 2.0, 3.0]  # days since the file's first date
    assert (back.lat_descending, back.lon_convention, back.dy_deg, back.dx_deg) == (True, "0..360", 0.5, 0.25)
    learned = read_netcdf(out, "learned")
    np.testing.assert_array_equal(learned.truth, np.where(data.land, np.nan, estimate))
    with xr.open_dataset(out, engine="h5netcdf") as written:  # the grid as the input file has it
        np.testing.assert_array_equal(written["latitude"].values, LAT)
        np.testing.assert_array_equal(written["longitude"].values, LON)
        assert written["time"].values.astype("datetime64[D]").tolist() == held_out.dates.tolist()


def test_the_file_is_cf_with_float32_compressed_maps_and_the_callers_attributes(tmp_path):
    sla, obs = maps()
    dataset(sla, obs).to_netcdf(tmp_path / "in.nc", engine="scipy")
    data = read_netcdf(tmp_path / "in.nc", "sla", "sla_obs")
    path = tmp_path / "out.nc"
    attrs = {"backend": "vardax_jax", "adjoint": "kstep", "steps": 200, "seed": 3, "version": "0.1.0", "x": True}
    write_netcdf(path, data.period(1, 4), {"learned": data.truth[1:4], "oi": data.truth[1:4]}, attrs=attrs)
    with xr.open_dataset(path) as written:  # the default engine
        assert list(written.data_vars) == ["truth", "obs", "learned", "oi"]
        assert written.attrs["Conventions"] == "CF-1.8" and written.attrs["source"] == str(tmp_path / "in.nc")
        assert "written by pipekit_cycle" in written.attrs["history"] and written.attrs["title"]
        assert "institution" not in written.attrs
        assert {key: written.attrs[key] for key in attrs} == {**attrs, "x": "true"}
        time = written["time"]
        assert time.encoding["units"] == "days since 2012-10-02" and time.encoding["calendar"] == "standard"
        assert time.attrs["axis"] == "T" and str(time.values[0])[:10] == "2012-10-02"
        for name, units, axis in (("latitude", "degrees_north", "Y"), ("longitude", "degrees_east", "X")):
            assert written[name].attrs == {"units": units, "standard_name": name, "long_name": name, "axis": axis}
            assert written[name].dtype == np.float64 and "_FillValue" not in written[name].encoding
        for name in written.data_vars:
            variable = written[name]
            assert variable.dims == ("time", "latitude", "longitude") and variable.dtype == np.float32
            assert variable.attrs["units"] == "m" and variable.attrs["long_name"]
            assert variable.attrs["standard_name"] == "sea_surface_height_above_sea_level"
            assert variable.encoding["zlib"] and variable.encoding["complevel"] == 4
            assert np.isnan(variable.encoding["_FillValue"]) and np.isnan(variable.values[:, 0, 0]).all()  # land


def test_observations_only_periods_and_field_checks(tmp_path):
    dates = np.datetime64("2012-10-01") + np.arange(3)
    obs = np.full((3, 2, 3), np.nan)
    obs[1, 0, 2] = 0.25
    data = GriddedData(truth=None, obs=obs, lat=np.array([10.0, 11.0]), lon=np.array([-1.0, 0.0, 1.0]),
                       time=np.arange(3.0), dates=dates, land=np.zeros((2, 3), bool), dx_deg=1.0, dy_deg=1.0,
                       noise_std=None, source="binned tracks")
    assert data.dx_km == pytest.approx(111.195 * math.cos(math.radians(10.5)), rel=1e-5)  # derived: 1 deg at 10.5 N
    tail = data.period(1, 3)
    assert tail.truth is None and tail.obs.shape == (2, 2, 3) and tail.dates[0] == dates[1]
    path = tmp_path / "obs.nc"
    write_netcdf(path, tail, {"learned": np.zeros((2, 2, 3))})
    back = read_netcdf(path, "learned", "obs")
    np.testing.assert_array_equal(back.obs, tail.obs)
    assert back.lon_convention == "-180..180" and back.lon.tolist() == [-1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match=r"'learned' has shape \(3, 2, 3\), expected \(time, lat, lon\) \(2, 2, 3\)"):
        write_netcdf(path, tail, {"learned": np.zeros((3, 2, 3))})
    with pytest.raises(ValueError, match=r"fields may not be named 'obs'"):
        write_netcdf(path, tail, {"obs": tail.obs})
    with pytest.raises(ValueError, match=r"attrs\['seed'\] is a NoneType"):
        write_netcdf(path, tail, {}, attrs={"seed": None})
    with pytest.raises(ValueError, match=r"dates must be 2 datetime64 values"):
        dataclasses.replace(tail, dates=dates)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    data = GriddedData(truth=np.zeros((1, 2, 2)), obs=np.zeros((1, 2, 2)), lat=np.array([0.0, 1.0]),
                       lon=np.array([0.0, 1.0]), time=np.zeros(1), dates=np.array(["2012-10-01"], "datetime64[D]"),
                       land=np.zeros((2, 2), bool), dx_deg=1.0, dy_deg=1.0, noise_std=None, source="s")
    path = tmp_path / "out.nc"
    path.write_bytes(b"the old file")

    def broken(self, target, **kwargs):
        open(target, "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        write_netcdf(path, data, {})
    assert path.read_bytes() == b"the old file" and os.listdir(tmp_path) == ["out.nc"]


def test_float32_coordinates_of_a_twelfth_degree_grid_are_regular(tmp_path):
    # As CMEMS stores them: float32 centres of a 1/12-degree grid, 0..360 far from 0.
    lat = (40.0 - np.arange(24) / 12.0).astype(np.float32)
    lon = (300.0 + np.arange(36) / 12.0).astype(np.float32)
    sla = np.zeros((2, 24, 36), np.float32)
    dataset(sla, sla, lat=lat, lon=lon).to_netcdf(tmp_path / "f32.nc", engine="h5netcdf")
    data = read_netcdf(tmp_path / "f32.nc", "sla", "sla_obs")
    assert data.dy_deg == pytest.approx(1 / 12, rel=1e-5) and data.dx_deg == pytest.approx(1 / 12, rel=1e-5)
    assert data.lon_convention == "0..360" and data.lat_descending
    np.testing.assert_array_equal(data.lon, lon.astype(np.float64))
    np.testing.assert_array_equal(data.lat, lat[::-1].astype(np.float64))
