"""Along-track altimetry (pipekit_cycle.ssh.alongtrack): the data challenges' and CMEMS L3 files
read into points, a map grid from a box, and the points binned into daily cell means."""

from __future__ import annotations

import numpy as np
import pytest

from pipekit_cycle.ssh.alongtrack import MapGrid, bin_along_track, grid_box, read_along_track
from pipekit_cycle.ssh.observations import AlongTrack, observe

T0 = np.datetime64("2012-10-01T00:00", "ns")


def at(*times: str) -> np.ndarray:
    return np.array(times, dtype="datetime64[ns]")


def track(time, lat, lon, value, name="t") -> AlongTrack:
    return AlongTrack(name, time=np.asarray(time), lat=np.asarray(lat, float), lon=np.asarray(lon, float),
                      value=np.asarray(value, float))


# --- reading --------------------------------------------------------------------------------------


def l3_file(path, engine, *, seconds, sla, lat, lon, names=("latitude", "longitude"), as_coords=True):
    """A file laid out as CMEMS L3 and the data challenges': points along ``time``."""
    xr = pytest.importorskip("xarray")
    time = ("time", np.asarray(seconds, float), {"units": "seconds since 1950-01-01 00:00:00", "calendar": "gregorian"})
    position = {names[0]: ("time", np.asarray(lat, float)), names[1]: ("time", np.asarray(lon, float))}
    variables = {"sla_unfiltered": ("time", np.asarray(sla, float), {"units": "m"}),
                 "sla_filtered": ("time", np.zeros(len(sla)), {"units": "m"})}
    if as_coords:
        ds = xr.Dataset(variables, coords={"time": time, **position})
    else:
        ds = xr.Dataset({**variables, **position}, coords={"time": time})
    ds.to_netcdf(path, engine=engine)
    return path


# 2012-10-01 is 22919 days after 1950-01-01.
SECONDS = 22919 * 86400.0 + np.array([60.0, 43200.5, 86399.0, 86400.0])


@pytest.mark.parametrize("engine", ["h5netcdf", "scipy"])
def test_reads_sub_daily_points_of_the_named_variable_dropping_nans(tmp_path, engine):
    path = l3_file(tmp_path / "dt_j3.nc", engine, seconds=SECONDS, sla=[0.1, np.nan, -0.2, 0.3],
                   lat=[33.0, 33.1, 33.2, 33.3], lon=[295.0, 295.1, 295.2, 295.3])
    (points,) = read_along_track(path, "sla_unfiltered")
    assert points.name == "dt_j3.nc" and len(points) == 3
    assert points.time.dtype == np.dtype("datetime64[ns]")
    assert points.time.tolist() == at("2012-10-01T00:01", "2012-10-01T23:59:59", "2012-10-02T00:00").tolist()
    assert points.value.tolist() == [0.1, -0.2, 0.3]
    assert points.lat.tolist() == [33.0, 33.2, 33.3] and points.lon.tolist() == [295.0, 295.2, 295.3]
    (filtered,) = read_along_track(path, "sla_filtered")
    assert filtered.value.tolist() == [0.0] * 4


def test_reads_several_files_with_lat_lon_variables(tmp_path):
    first = l3_file(tmp_path / "a.nc", "scipy", seconds=SECONDS[:2], sla=[1.0, 2.0], lat=[0.0, np.nan],
                    lon=[0.0, 1.0], names=("lat", "lon"), as_coords=False)
    second = l3_file(tmp_path / "b.nc", "h5netcdf", seconds=SECONDS[2:], sla=[3.0, 4.0], lat=[1.0, 2.0],
                     lon=[-1.0, -2.0])
    tracks = read_along_track([first, str(second)], "sla_unfiltered")
    assert [t.name for t in tracks] == ["a.nc", "b.nc"]
    assert tracks[0].value.tolist() == [1.0] and tracks[1].lon.tolist() == [-1.0, -2.0]  # a NaN position dropped


def test_reading_errors_are_one_line_naming_the_file(tmp_path):
    xr = pytest.importorskip("xarray")
    path = l3_file(tmp_path / "t.nc", "scipy", seconds=SECONDS, sla=np.zeros(4), lat=np.zeros(4), lon=np.zeros(4))
    failures = {
        "sla": "has no variable 'sla' (along-track file); its variables: sla_unfiltered, sla_filtered",
    }
    xr.Dataset({"sla": (("time", "x"), np.zeros((2, 3)))},
               coords={"time": ("time", [0.0, 1.0], {"units": "days since 2012-10-01"})}).to_netcdf(tmp_path / "g.nc")
    xr.Dataset({"sla": ("time", np.zeros(2)), "lat": ("time", np.zeros(2)), "lon": ("time", np.zeros(2))},
               coords={"time": ("time", [0.0, 1.0])}).to_netcdf(tmp_path / "u.nc")
    cases = [(path, "sla", failures["sla"]),
             (tmp_path / "g.nc", "sla", "'sla' (along-track file) has dimensions ('time', 'x'); expected one"),
             (tmp_path / "u.nc", "sla", "'time' has no units, not a CF time (along-track file); add units like"),
             (tmp_path / "none.nc", "sla", "no such file (along-track file)")]
    for file, var, words in cases:
        with pytest.raises(ValueError) as caught:
            read_along_track(file, var)
        message = str(caught.value)
        assert message.startswith(f"{file}: ") and "\n" not in message and words in message, message
    with pytest.raises(ValueError, match="no files given"):
        read_along_track([], "sla")


# --- the grid -------------------------------------------------------------------------------------


def test_grid_box_centres_cells_in_the_box_and_includes_both_dates():
    grid = grid_box(33.0, 35.0, -65.0, -64.0, (0.5, 0.25), "2012-10-01", np.datetime64("2012-10-04"))
    assert isinstance(grid, MapGrid) and grid.shape == (4, 4, 4)
    assert grid.lat.tolist() == [33.25, 33.75, 34.25, 34.75] and grid.lon.tolist() == [-64.875, -64.625, -64.375,
                                                                                         -64.125]
    assert (grid.dy_deg, grid.dx_deg) == (0.5, 0.25)
    assert grid.dates.dtype == np.dtype("datetime64[D]") and str(grid.dates[-1]) == "2012-10-04"
    across = grid_box(-1.0, 1.0, 179.0, 181.0, 0.5, "2012-10-01", "2012-10-01")
    assert across.lon.tolist() == [179.25, 179.75, 180.25, 180.75] and across.shape == (1, 4, 4)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((33.0, 34.0, -65.0, -64.1, 0.25, "2012-10-01", "2012-10-02"), "longitudes -65..-64.1 must be increasing and "
         "hold a whole number"),
        ((34.0, 33.0, -65.0, -64.0, 0.25, "2012-10-01", "2012-10-02"), "latitudes 34..33 must be increasing"),
        ((33.0, 34.0, -65.0, -64.0, 0.0, "2012-10-01", "2012-10-02"), "resolution must be > 0"),
        ((33.0, 34.0, -65.0, -64.0, 0.25, "2012-10-02", "2012-10-01"), "end 2012-10-01 is before start 2012-10-02"),
        ((80.0, 91.0, -65.0, -64.0, 0.25, "2012-10-01", "2012-10-02"), "latitudes must lie in -90..90"),
    ],
)
def test_grid_box_errors(args, words):
    with pytest.raises(ValueError) as caught:
        grid_box(*args)
    assert words in str(caught.value)


# --- binning --------------------------------------------------------------------------------------

GRID = grid_box(0.0, 2.0, -1.0, 2.0, 1.0, "2012-10-01", "2012-10-02")  # centres 0.5, 1.5 and -0.5, 0.5, 1.5


def binned(*tracks: AlongTrack, grid: MapGrid = GRID):
    return bin_along_track(list(tracks), lat=grid.lat, lon=grid.lon, dates=grid.dates)


def test_points_at_cell_centres_give_exactly_their_means():
    points = track(at("2012-10-01T00:00", "2012-10-01T12:00", "2012-10-01T23:59", "2012-10-02T06:00",
                      "2012-10-02T06:00"),
                   lat=[0.5, 0.5, 1.5, 1.5, 1.5], lon=[-0.5, -0.5, 1.5, 0.5, 0.5],
                   value=[0.125, 0.375, -2.0, 0.5, 1.5])
    obs, used, dropped = binned(points)
    expected = np.full((2, 2, 3), np.nan)
    expected[0, 0, 0] = 0.25  # (0.125 + 0.375) / 2
    expected[0, 1, 2] = -2.0  # 23:59 belongs to its own day
    expected[1, 1, 1] = 1.0
    np.testing.assert_array_equal(obs, expected)
    assert (used, dropped) == (5, 0)


def test_edges_outside_points_and_other_conventions():
    points = track(
        at("2012-10-01T00:00", "2012-10-01T00:00", "2012-10-01T00:00", "2012-10-01T00:00", "2012-10-02T23:59:59",
           "2012-10-03T00:00", "2012-09-30T23:59", "2012-10-01T00:00", "2012-10-01T00:00", "2012-10-01T00:00",
           "NaT"),
        lat=[1.0, 0.0, 2.0, 0.5, 0.5, 0.5, 0.5, -0.01, 0.5, 0.5, 0.5],
        lon=[0.0, -1.0, 0.5, 359.5, 1.9, 0.5, 0.5, 0.5, 2.0, 0.5, 0.5],
        value=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, np.nan, 10.0],
    )
    obs, used, dropped = binned(points)
    assert obs[0, 1, 1] == 1.0  # on the inner edges: the cell above, the cell east
    assert obs[0, 0, 0] == 3.0  # 2 (on the outer lower edges: inside) and 4 (at 359.5 E = -0.5 E)
    assert obs[1, 0, 2] == 5.0  # 23:59:59 on the last day
    assert np.isfinite(obs).sum() == 3 and used == 4
    # outside: lat 2.0 (the upper outer edge), the day after, the day before, lat below 0, lon 2.0 (east edge),
    # a NaN value, a NaT time
    assert dropped == 7


def test_binning_reproduces_the_simulated_observations():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((3, 8, 8))
    lat, lon = 33.0 + 0.5 * np.arange(8), -65.0 + 0.25 * np.arange(8)
    time = np.datetime64("2012-10-01") + np.arange(3)
    obs, mask, tracks = observe(truth, lat=lat, lon=lon, time=time, instruments=("jason-like", "swot-like"))
    again, used, dropped = bin_along_track(tracks, lat=lat, lon=lon, dates=time)  # by name, days as [D]
    np.testing.assert_array_equal(again, obs)
    assert used == sum(len(t) for t in tracks.values()) and dropped == 0 and used >= mask.sum()


def test_a_file_read_and_binned(tmp_path):
    path = l3_file(tmp_path / "t.nc", "scipy", seconds=SECONDS, sla=[0.25, 0.75, 1.0, 2.0],
                   lat=[0.5, 0.5, 0.5, 1.5], lon=[359.5, 359.5, 0.5, 1.5])
    obs, used, dropped = binned(*read_along_track(path, "sla_unfiltered"))
    assert obs[0, 0, 0] == 0.5 and obs[0, 0, 1] == 1.0 and obs[1, 1, 2] == 2.0 and (used, dropped) == (4, 0)


def test_binning_errors():
    with pytest.raises(ValueError, match="lat must be at least 2 increasing cell centres"):
        bin_along_track([], lat=np.array([1.0]), lon=GRID.lon, dates=GRID.dates)
    with pytest.raises(ValueError, match="dates must be increasing datetime64 days"):
        bin_along_track([], lat=GRID.lat, lon=GRID.lon, dates=GRID.dates[::-1])
    obs, used, dropped = bin_along_track([], lat=GRID.lat, lon=GRID.lon, dates=GRID.dates)
    assert np.isnan(obs).all() and obs.shape == GRID.shape and (used, dropped) == (0, 0)
