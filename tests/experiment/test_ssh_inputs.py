"""The SSH job on a user's altimetry: along-track files binned on a grid box or on a gridded
reference, a satellite withheld and scored against, land, CF output, and the usage errors
(`pipekit_cycle.experiment.ssh_inputs`). Each run's numbers are recomputed from the public
pieces (reader, binning, OI, scores), not read back from the driver."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from pipekit_cycle.experiment import ExperimentConfig, SparseObservationsWarning
from pipekit_cycle.experiment.ssh import SSHData
from pipekit_cycle.experiment.ssh_inputs import load_inputs
from pipekit_cycle.ssh import simulate
from pipekit_cycle.ssh.alongtrack import bin_along_track, read_along_track
from pipekit_cycle.ssh.track_metrics import track_scores

xr = pytest.importorskip("xarray")

DAYS, TEST_DAYS, GRID = 20, 8, 32
SATELLITES = ("jason-like", "envisat-like", "gfo-like", "topex-interleaved-like")
TINY = {"steps": 2, "checkpoint_every": 2, "batch_size": 2, "solver_steps": 2, "hidden_dim": 3, "prior_hidden_dim": 3,
        "window_length": 4, "patch_size": 16, "patch_stride": 8, "test_days": TEST_DAYS}


@pytest.fixture(scope="module")
def altimetry(tmp_path_factory):
    """A simulated ocean seen by four nadirs, written as a user has it: one along-track file
    per satellite (1-D time at the instant of each point, latitude, longitude in 0..360,
    ``sla_unfiltered`` in cm) and the gridded reference (time, latitude, longitude)."""
    run = simulate(DAYS, shape=(GRID, GRID), seed=5, instruments=SATELLITES)
    folder = tmp_path_factory.mktemp("altimetry")
    files = {}
    for name, track in run.tracks.items():
        # The instant of each point: its day plus seconds in the order of the pass.
        seconds = np.arange(len(track)) % 86_000
        time = track.time.astype("datetime64[ns]") + seconds.astype("timedelta64[s]")
        files[name] = folder / f"{name}.nc"
        xr.Dataset(
            {"sla_unfiltered": ("time", 100.0 * track.value, {"units": "cm"}),
             "latitude": ("time", track.lat), "longitude": ("time", np.mod(track.lon, 360.0))},
            coords={"time": time},
        ).to_netcdf(files[name], engine="h5netcdf")
    reference = folder / "reference.nc"
    xr.Dataset({"ssh": (("time", "latitude", "longitude"), run.truth, {"units": "m"})},
               coords={"time": run.time.astype("datetime64[ns]"), "latitude": run.lat, "longitude": run.lon},
               ).to_netcdf(reference, engine="h5netcdf")
    return run, files, reference


def _box(run) -> list[str]:
    half = (run.lat[1] - run.lat[0]) / 2
    return ["--grid-box", *(str(v) for v in (run.lat[0] - half, run.lat[-1] + half, run.lon[0] - half,
                                              run.lon[-1] + half)),
            "--resolution", str(run.lat[1] - run.lat[0]), "--period", str(run.time[0]), str(run.time[-1])]


def _flags(**settings) -> list[str]:
    words = ["train", "--system", "ssh", "--no-progress"]
    for field, value in {**TINY, **settings}.items():
        words += ["--" + field.replace("_", "-"), str(value)]
    return words


def test_along_track_files_on_a_grid_box_train_without_a_reference_and_score_the_withheld_satellite(
        tmp_path, cli, altimetry):
    run, files, _ = altimetry
    out = tmp_path / "run"
    status, err = cli([*_flags(), "--obs", *map(str, files.values()), "--obs-var", "sla_unfiltered", *_box(run),
                       "--withhold", str(files["gfo-like"]), "--out", str(out)])
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "scores" not in metrics and metrics["withheld"] == str(files["gfo-like"])
    assert metrics["held_out_period"] == [str(run.time[DAYS - TEST_DAYS]), str(run.time[-1])]
    assert metrics["units"]["rmse"] == "m" and metrics["units"]["lambda_x_km"] == "km"
    with xr.open_dataset(out / "reconstruction.nc") as written:
        assert written.attrs["Conventions"] == "CF-1.8" and written.attrs["backend"] == "vardax_torch"
        assert written.attrs["training_steps"] == 2 and written.attrs["seed"] == 0
        assert "truth" not in written and written["oi"].dtype == np.float32 and written["oi"].attrs["units"] == "m"
        assert written["time"].values.astype("datetime64[D]").tolist() == run.time[DAYS - TEST_DAYS:].tolist()
        assert written["latitude"].attrs["standard_name"] == "latitude"
        oi = written["oi"].values.astype(np.float64)
    # The held-out OI scored against the withheld satellite, recomputed from the public pieces.
    (withheld,) = read_along_track([files["gfo-like"]], "sla_unfiltered")
    expected = track_scores(oi, dates=run.time[DAYS - TEST_DAYS:], lat=run.lat, lon=run.lon, track=withheld)
    assert metrics["along_track_scores"]["oi"]["mu"] == pytest.approx(expected["mu"], abs=1e-6)  # float32 map
    assert metrics["along_track_scores"]["oi"]["n_points"] == expected["n_points"] > 0
    assert set(metrics["along_track_scores"]) == {"learned", "oi", "interpolation"}


def test_without_a_reference_each_satellite_is_a_target_the_others_do_not_see(altimetry):
    run, files, _ = altimetry
    lat0, lat1, lon0, lon1 = (float(v) for v in _box(run)[1:5])
    config = ExperimentConfig(system="ssh", **TINY, obs=[str(f) for f in files.values()], obs_var="sla_unfiltered",
                              grid_box=[lat0, lat1, lon0, lon1], resolution=float(run.lat[1] - run.lat[0]),
                              period=[str(run.time[0]), str(run.time[-1])], background="none")
    data = SSHData(config)
    tracks = read_along_track(list(files.values()), "sla_unfiltered")
    binned = [bin_along_track([t], lat=run.lat, lon=run.lon, dates=run.time)[0][: DAYS - TEST_DAYS] for t in tracks]
    obs, target = data.training_samples(np.arange(data.n_samples))
    assert data.n_samples == len(data._variant) and set(np.unique(data._variant)) == {0, 1, 2, 3}
    for sample in (0, data.n_samples // 2, data.n_samples - 1):
        s, start, (row, col) = data._variant[sample], data._starts[sample], data._origins[sample]
        window = (slice(start, start + 4), slice(row, row + 16), slice(col, col + 16))
        expected = data.scale.forward(binned[s][window])
        np.testing.assert_allclose(target[sample], expected, rtol=1e-12, equal_nan=True)
        # The input holds the other satellites only: never a cell seen by the target alone.
        alone = np.isfinite(binned[s][window]) & ~np.any([np.isfinite(b[window]) for b in np.delete(binned, s, 0)], 0)
        assert not np.isfinite(obs[sample][alone]).any() and np.isfinite(target[sample]).any()


def test_tracks_binned_on_the_reference_grid_give_the_osse_scores(tmp_path, cli, altimetry):
    run, files, reference = altimetry
    out = tmp_path / "run"
    status, err = cli([*_flags(), "--data", str(reference), "--var", "ssh", "--obs", *map(str, files.values()),
                       "--obs-var", "sla_unfiltered", "--out", str(out), "--no-figures"])
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    with xr.open_dataset(out / "reconstruction.nc") as written:
        truth, obs = written["truth"].values, written["obs"].values
    held_out = run.truth[DAYS - TEST_DAYS:]
    np.testing.assert_allclose(truth, held_out, rtol=1e-6)  # float32 in the file
    tracks = read_along_track(list(files.values()), "sla_unfiltered")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean([bin_along_track([t], lat=run.lat, lon=run.lon, dates=run.time)[0] for t in tracks], 0)
    np.testing.assert_allclose(obs, expected[DAYS - TEST_DAYS:], rtol=1e-6, equal_nan=True)
    assert set(metrics["scores"]) == {"learned", "oi", "interpolation"} and "along_track_scores" not in metrics


def _land_file(tmp_path, run, land):
    path = tmp_path / "land.nc"
    xr.Dataset({"mask": (("lat", "lon"), land.astype(np.int8))}, coords={"lat": run.lat, "lon": run.lon}).to_netcdf(
        path, engine="h5netcdf")
    return path


def test_land_is_out_of_the_batches_the_maps_and_the_scores(tmp_path, cli, altimetry):
    run, files, reference = altimetry
    land = np.zeros((GRID, GRID), bool)
    land[:, 20:] = True  # the east is land
    mask = _land_file(tmp_path, run, land)
    common = dict(TINY, data=str(reference), var="ssh", obs=[str(f) for f in files.values()],
                  obs_var="sla_unfiltered")
    data = SSHData(ExperimentConfig(system="ssh", **common, land_mask=str(mask), land_var="mask"))
    obs, target = data.training_samples(np.arange(data.n_samples))
    on_land = np.zeros(obs.shape, bool)
    for sample, (row, col) in enumerate(data._origins):
        on_land[sample] = land[row : row + 16, col : col + 16]
    assert on_land.any() and not np.isfinite(obs[on_land]).any() and not np.isfinite(target[on_land]).any()
    assert np.isfinite(target[~on_land]).all()  # the ocean keeps every target point
    out = tmp_path / "run"
    status, err = cli([*_flags(), "--data", str(reference), "--var", "ssh", "--obs", *map(str, files.values()),
                       "--obs-var", "sla_unfiltered", "--land-mask", str(mask), "--land-var", "mask",
                       "--out", str(out)])
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    with xr.open_dataset(out / "reconstruction.nc") as written:
        maps = {name: written[name].values for name in ("learned", "oi", "interpolation")}
    for field in maps.values():
        assert np.isnan(field[:, land]).all() and np.isfinite(field[:, ~land]).all()
    held_out = run.truth[DAYS - TEST_DAYS:]
    ocean_truth = np.where(land, np.nan, held_out)
    mu = 1 - np.sqrt(np.nanmean((maps["oi"] - ocean_truth) ** 2) / np.nanmean(ocean_truth**2))
    assert metrics["scores"]["oi"]["mu"] == pytest.approx(mu, abs=1e-5)  # float32 map in the file
    assert metrics["land_fraction"] == pytest.approx(12 / 32)


def test_sparse_observations_warn_with_the_fraction_and_none_is_a_usage_error(tmp_path, cli, altimetry):
    run, files, _ = altimetry
    # A period five times as long as the files', ending with them: under a fifth of its days observed.
    start = str(run.time[0] - np.timedelta64(4 * DAYS, "D"))
    sparse = ExperimentConfig(system="ssh", **TINY, obs=[str(f) for f in files.values()], obs_var="sla_unfiltered",
                              grid_box=[float(v) for v in _box(run)[1:5]], resolution=float(run.lat[1] - run.lat[0]),
                              period=[start, str(run.time[-1])], background="none")
    with pytest.warns(SparseObservationsWarning, match=r"sparse observations: \d+% of the days and") as caught:
        SSHData(sparse)
    observed = np.isfinite(load_inputs(sparse.replace(period=[str(run.time[0]), str(run.time[-1])])).data.obs)
    days = round(100 * observed.any(axis=(1, 2)).sum() / (5 * DAYS))  # the observed days, over five times as many
    assert f" {days}% of the days" in str(caught[0].message)
    out = tmp_path / "run"
    status, err = cli([*_flags(), "--obs", str(files["jason-like"]), str(files["gfo-like"]), "--obs-var",
                       "sla_unfiltered", "--grid-box", "-10", "-5", "10", "15", "--resolution", "0.25", "--period",
                       "2012-10-01", "2012-10-20", "--out", str(out)])
    assert status == 2 and err.count("\n") == 1 and "--obs" in err and "falls in the map" in err, err
    assert not out.exists()
    status, err = cli([*_flags(), "--obs", str(files["jason-like"]), "--obs-var", "sla_unfiltered", *_box(run),
                       "--out", str(out)])
    assert status == 2 and err.count("\n") == 1 and "at least two --obs files" in err, err
    assert not out.exists()


def test_gridded_observations_all_nan_are_a_usage_error_naming_the_variable(tmp_path, cli, altimetry):
    run, _, _ = altimetry
    path = tmp_path / "maps.nc"
    xr.Dataset({"ssh": (("time", "lat", "lon"), run.truth), "sla": (("time", "lat", "lon"), np.full_like(run.truth,
                                                                                                        np.nan))},
               coords={"time": run.time.astype("datetime64[ns]"), "lat": run.lat, "lon": run.lon}).to_netcdf(
        path, engine="h5netcdf")
    out = tmp_path / "run"
    status, err = cli([*_flags(), "--data", str(path), "--var", "ssh", "--obs-var", "sla", "--out", str(out)])
    assert status == 2 and err.count("\n") == 1 and "--obs-var" in err and "no observation" in err, err
    assert not out.exists()


def test_the_python_route_checks_the_grid_box_and_takes_one_obs_path():
    from pipekit_cycle.experiment import ConfigError

    box = {"obs_var": "sla", "resolution": 0.25, "period": ["2012-10-01", "2012-10-20"]}
    with pytest.raises(ConfigError, match=r"grid_box: must be 4 values, LAT0 LAT1 LON0 LON1 \(degrees\)"):
        ExperimentConfig(system="ssh", obs=["a.nc", "b.nc"], grid_box=[30.0, 35.0, -60.0], **box)
    with pytest.raises(ConfigError, match="grid_box: must be 4 numbers"):
        ExperimentConfig(system="ssh", obs=["a.nc", "b.nc"], grid_box=[30.0, 35.0, -60.0, "x"], **box)
    with pytest.raises(ConfigError, match=r"period: must be 2 values, START END"):
        ExperimentConfig(system="ssh", obs=["a.nc", "b.nc"], grid_box=[30, 35, -60, -55],
                         **{**box, "period": "2012-10-01"})
    # One path as a string is one file (not its characters): the two-satellite rule names it.
    with pytest.raises(ConfigError, match="at least two --obs files .* got 1"):
        ExperimentConfig(system="ssh", obs="a.nc", grid_box=[30, 35, -60, -55], **box)
    config = ExperimentConfig(system="ssh", obs=["a.nc", "b.nc"], grid_box=[30, 35, -60, -55], **box)
    assert config.grid_box == [30.0, 35.0, -60.0, -55.0] and ExperimentConfig.from_dict(config.to_dict()) == config
