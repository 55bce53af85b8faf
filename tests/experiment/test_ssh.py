"""The SSH mapping job in the driver (``train --system ssh``): what it writes, checked against
recomputations from the public pieces (simulation, OI, interpolation, scores), a user's file,
resume, and the usage errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipekit_cycle import ssh as mapping
from pipekit_cycle.experiment.ssh import SSHTask
from pipekit_cycle.ssh.baselines import linear_interpolation_time, optimal_interpolation

SSH = {
    "system": "ssh", "steps": 4, "checkpoint_every": 2, "batch_size": 2, "solver_steps": 2, "hidden_dim": 3,
    "prior_hidden_dim": 3, "window_length": 4, "patch_size": 16, "patch_stride": 8, "train_days": 8,
    "test_days": 8, "grid": 32,
}
# The OI the driver runs by default (its scales swept on training days: README).
OI_SCALES = {"space_scale": SSHTask().defaults["oi_space_km"], "time_scale": SSHTask().defaults["oi_time_days"]}


def ssh_flags(**changes: object) -> list[str]:
    words = []
    for field, value in {**SSH, **changes}.items():
        if value is not None:
            words += ["--" + field.replace("_", "-"), str(value)]
    return ["train", *words, "--no-progress"]


def _scores_of(field: np.ndarray, truth: np.ndarray, dx_deg: float) -> dict[str, float | None]:
    return mapping.score(field, truth, dx_deg=dx_deg)


def test_ssh_run_writes_the_scores_of_its_maps(tmp_path, cli):
    status, err = cli([*ssh_flags(), "--out", str(tmp_path)])
    assert status == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["system"] == "ssh" and metrics["steps"] == 4
    assert set(metrics["scores"]) == {"learned", "oi", "interpolation"}
    assert metrics["figures"] == ["maps.png", "psd_score.png", "loss.png", "learning_curve.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in metrics["figures"])
    # The learning curve: step 0 and each checkpoint (every 2 steps), its last point the final map's scores.
    curve = metrics["learning_curve"]
    assert [point["step"] for point in curve] == [0, 2, 4]
    assert curve[0]["train_seconds"] == 0 < curve[1]["train_seconds"] < curve[2]["train_seconds"]
    assert {key: curve[-1][key] for key in ("mu", "lambda_x_deg", "lambda_t_days", "rmse")} == {
        key: metrics["scores"]["learned"][key] for key in ("mu", "lambda_x_deg", "lambda_t_days", "rmse")}
    assert curve[0]["mu"] != curve[-1]["mu"]  # each point maps with the model of its step
    # The held-out period is the simulation's last 8 of 16 days; the file holds it and the maps.
    data = mapping.simulated(n_days=16, grid=32, seed=0)
    test = data.period(8, 16)
    import xarray as xr

    with xr.open_dataset(tmp_path / metrics["reconstruction"], engine="h5netcdf") as written:
        # CF-1.8 float32 (DESIGN 8): the float64 fields rounded once.
        np.testing.assert_array_equal(written["truth"].values, test.truth.astype(np.float32))
        np.testing.assert_array_equal(np.isnan(written["obs"].values), np.isnan(test.obs))
        maps = {name: written[name].values for name in ("learned", "oi", "interpolation")}
    # OI and interpolation recomputed from the public baselines, on the held-out days alone.
    oi = optimal_interpolation(test.obs, **OI_SCALES, noise_var=0.03**2, lat=test.lat,
                               lon=test.lon, time=test.time)
    np.testing.assert_array_equal(maps["oi"], oi.astype(np.float32))
    np.testing.assert_array_equal(maps["interpolation"], linear_interpolation_time(test.obs).astype(np.float32))
    assert np.abs(maps["learned"] - maps["oi"]).max() > 0  # the solver changed OI's map
    for name, field in maps.items():  # the scores of the float64 maps; the file's float32 ones to 1e-5
        expected = _scores_of(field.astype(np.float64), test.truth, test.dx_deg)
        for key, value in expected.items():
            assert metrics["scores"][name][key] == (None if value is None else pytest.approx(value, rel=1e-5, abs=0))
    assert metrics["rmse_oi"] == metrics["scores"]["oi"]["rmse"]
    assert metrics["training_samples"] == 5 * 9  # windows of 4 in 8 days, 3 x 3 patches of 16 at 8


def test_learned_map_is_the_oi_plus_the_solvers_stitched_departure(tmp_path, cli):
    # The documented background: learned = OI + std * reconstruct((obs - OI - mean) / std) + mean.
    import torch

    import vardax_torch as vt
    from pipekit_cycle import load_params
    from pipekit_cycle.experiment import ExperimentConfig, latest_checkpoint

    status, err = cli([*ssh_flags(steps=2), "--out", str(tmp_path), "--no-figures"])
    assert status == 0, err
    config = ExperimentConfig(**{**SSH, "steps": 2})
    model = vt.build_model(config.model_config(), seed=0)
    vt.import_params(model, load_params(latest_checkpoint(tmp_path) / "checkpoint.safetensors")[0])
    data = mapping.simulated(n_days=16, grid=32, seed=0)
    train, test = data.period(0, 8), data.period(8, 16)

    def oi_of(period: mapping.GriddedData) -> np.ndarray:
        return optimal_interpolation(period.obs, **OI_SCALES, noise_var=0.03**2,
                                     lat=period.lat, lon=period.lon, time=period.time)

    departure = train.truth - oi_of(train)
    mean, std = departure.mean(), departure.std()
    oi = oi_of(test)

    def predict(inputs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(vt.make_batch((inputs - mean) / std))
        return out.numpy().astype(np.float64) * std + mean

    expected = oi + mapping.reconstruct(predict, test.obs - oi, length=4, size=16, stride=8, batch_size=2)
    import xarray as xr

    with xr.open_dataset(tmp_path / "reconstruction.nc", engine="h5netcdf") as written:
        np.testing.assert_allclose(written["learned"].values, expected, rtol=0, atol=1e-6)


def test_ssh_run_on_a_users_netcdf_file(tmp_path, cli):
    import xarray as xr

    data = mapping.simulated(n_days=20, grid=32, seed=3)
    file = tmp_path / "mine.nc"
    xr.Dataset(
        {"ssh_ref": (("time", "lat", "lon"), data.truth), "ssh_obs": (("time", "lat", "lon"), data.obs)},
        coords={"time": np.datetime64("2020-01-01") + np.arange(20).astype("timedelta64[D]"), "lat": data.lat,
                "lon": data.lon},
    ).to_netcdf(file, engine="h5netcdf")
    out = tmp_path / "run"
    argv = ssh_flags(grid=None, train_days=None, test_days=6, steps=2)
    status, err = cli([*argv, "--data", str(file), "--var", "ssh_ref", "--obs-var", "ssh_obs", "--out", str(out)])
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == str(file)
    assert (metrics["train_days"], metrics["held_out_days"], metrics["grid"]) == (14, 6, [32, 32])
    test = data.period(14, 20)
    oi = optimal_interpolation(test.obs, **OI_SCALES, noise_var=0.03**2, lat=test.lat,
                               lon=test.lon, time=np.arange(6.0))
    assert metrics["scores"]["oi"]["mu"] == pytest.approx(_scores_of(oi, test.truth, test.dx_deg)["mu"], rel=1e-9)


def test_the_simulation_seen_by_the_swath_too(tmp_path, cli):
    status, err = cli([*ssh_flags(), "--instruments", *mapping.DEFAULT_INSTRUMENTS, "swot-like", "--out", str(tmp_path),
                       "--no-figures"])
    assert status == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    instruments = (*mapping.DEFAULT_INSTRUMENTS, "swot-like")
    run = mapping.simulate(16, shape=(32, 32), seed=0, instruments=instruments)
    assert metrics["data"] == f"simulate(16, shape=(32, 32), seed=0, instruments={instruments})"
    assert metrics["observed_fraction"] == pytest.approx(run.mask[8:].mean(), rel=1e-12)
    assert metrics["observed_fraction"] > 3 * mapping.simulate(16, shape=(32, 32), seed=0).mask[8:].mean()


def test_ssh_resume_continues_exactly(tmp_path, cli):
    # At a constant rate a 2-step run continued to 4 is the 4-step run (a cosine would decay over
    # each run's own steps; its resume is tests/experiment/test_experiment.py's).
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert cli([*ssh_flags(lr_schedule="constant"), "--out", str(straight), "--no-figures"])[0] == 0
    assert cli([*ssh_flags(steps=2, lr_schedule="constant"), "--out", str(stopped), "--no-figures"])[0] == 0
    assert cli([*ssh_flags(lr_schedule="constant"), "--out", str(stopped), "--resume", "--no-figures"])[0] == 0
    a = json.loads((straight / "metrics.json").read_text())
    b = json.loads((stopped / "metrics.json").read_text())
    assert a["final_train_loss"] == b["final_train_loss"] and a["scores"] == b["scores"]
    # The learning curve goes on across the stop: the same scores at the same steps, the time summed.
    without_time = [[{k: v for k, v in point.items() if k != "train_seconds"} for point in run["learning_curve"]]
                    for run in (a, b)]
    assert without_time[0] == without_time[1] and [p["step"] for p in b["learning_curve"]] == [0, 2, 4]
    seconds = [point["train_seconds"] for point in b["learning_curve"]]
    assert seconds == sorted(seconds) and seconds[0] == 0 < seconds[1]
    status, err = cli([*ssh_flags(patch_stride=16, lr_schedule="constant"), "--out", str(stopped), "--resume"])
    assert status == 2 and "patch_stride=8" in err and err.count("\n") == 1


def test_a_run_saved_before_a_setting_existed_resumes_with_it_unset(tmp_path, cli):
    from pipekit_cycle.experiment import latest_checkpoint

    assert cli([*ssh_flags(steps=2), "--out", str(tmp_path), "--no-figures"])[0] == 0
    file = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(file.read_text())
    assert state["experiment"].pop("instruments") is None  # as a run saved before --instruments existed
    file.write_text(json.dumps(state))
    status, err = cli([*ssh_flags(), "--instruments", "jason-like", "--out", str(tmp_path), "--resume"])
    assert status == 2 and "instruments=<unset>" in err and "instruments=['jason-like']" in err, err
    assert cli([*ssh_flags(), "--out", str(tmp_path), "--resume", "--no-figures"])[0] == 0


def test_the_modulator_is_chosen_by_a_flag_and_a_resume_must_ask_for_the_same(tmp_path, cli):
    from pipekit_cycle import load_params
    from pipekit_cycle.experiment import ExperimentConfig, latest_checkpoint

    sizes = {key: value for key, value in SSH.items() if key != "system"}
    # The default modulator is stored as unset, as runs saved before the flag hold it.
    assert ExperimentConfig(system="ssh", **sizes, grad_mod="convlstm").grad_mod is None
    assert ExperimentConfig(system="ssh", **sizes).model_config().grad_mod == "convlstm"
    assert cli([*ssh_flags(steps=2, grad_mod="convlstm_normalized"), "--out", str(tmp_path), "--no-figures"])[0] == 0
    params, config = load_params(latest_checkpoint(tmp_path) / "checkpoint.safetensors")
    assert config.grad_mod == "convlstm_normalized"
    # Its gates read [g / r, h], not [g, x, h]: window_length + hidden channels in, 4 x hidden out.
    assert params["grad_mod.gates.weight"].shape == (4 * 3, 4 + 3, 3, 3)
    status, err = cli([*ssh_flags(), "--out", str(tmp_path), "--resume"])
    assert status == 2 and "grad_mod=convlstm_normalized" in err and "grad_mod=None" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "flag", "words"),
    [
        (["train", "--system", "l96", "--patch-size", "8"], "--patch-size",
         "a setting of --system ssh, not of --system l96"),
        (ssh_flags(train_windows=8), "--train-windows", "a setting of --system l63, l96, not of --system ssh"),
        (ssh_flags(patch_stride=20), "--patch-stride", "at most --patch-size"),
        (ssh_flags(prior_downsample=3), "--prior-downsample", "must divide --patch-size (16)"),
        (ssh_flags(patch_size=40), "--patch-size", "at most --grid"),
        (ssh_flags(test_days=3), "--test-days", "one window of 4 days"),
        (ssh_flags(background="mean"), "--background", "invalid choice"),
        (ssh_flags(grad_mod="lstm"), "--grad-mod", "invalid choice: 'lstm'"),
        (ssh_flags(batch_size=46), "--batch-size", "45: 5 windows x 9 patches"),
        (ssh_flags(var="x"), "--var", "a setting of the user's files (--data or --obs)"),
        ([*ssh_flags(grid=None), "--data", "nothing.nc", "--var", "a", "--obs-var", "b"], "--data", "no such file"),
        ([*ssh_flags(), "--data", "nothing.nc", "--var", "a", "--obs-var", "b"], "--grid", "the files set the grid"),
        ([*ssh_flags(grid=None), "--data", "nothing.nc"], "--var", "--data needs it"),
        ([*ssh_flags(grid=None), "--data", "nothing.nc", "--var", "a"], "--obs-var", "--data without --obs needs it"),
        ([*ssh_flags(grid=None), "--obs", "a.nc", "--obs-var", "sla"], "--grid-box", "--resolution DEG --period"),
        ([*ssh_flags(), "--withhold", "a.nc"], "--withhold", "the simulation has its own"),
        ([*ssh_flags(), "--instruments", "jason"], "--instruments", "invalid choice: 'jason'"),
        ([*ssh_flags(), "--instruments", "jason-like", "jason-like"], "--instruments", "must be distinct names"),
        ([*ssh_flags(grid=None), "--data", "x.nc", "--var", "a", "--obs-var", "b", "--instruments", "swot-like"],
         "--instruments", "the files are the observations"),
        ([*ssh_flags(grid=None), "--data", "x.nc", "--var", "a", "--obs-var", "b", "--withhold", "a.nc"], "--withhold",
         "give --obs with it"),
        ([*ssh_flags(grid=None), "--data", "x.nc", "--var", "a", "--obs-var", "b", "--land-mask", "m.nc"],
         "--land-var", "give both"),
        ([*ssh_flags(grid=None), "--data", "x.nc", "--var", "a", "--obs-var", "b", "--grid-box", "0", "1", "2", "3"],
         "--grid-box", "--data has its own grid"),
    ],
)
def test_ssh_usage_errors_are_one_line_and_write_nothing(tmp_path, cli, argv, flag, words):
    out = tmp_path / "run"
    status, err = cli([*argv, "--out", str(out)])
    assert status == 2, err
    assert err.count("\n") == 1 and flag in err and words in err, err
    assert not out.exists()


def test_a_file_without_the_variable_is_a_usage_error(tmp_path, cli):
    data = mapping.simulated(n_days=10, grid=32, seed=0)
    file = tmp_path / "mine.nc"
    mapping.write_netcdf(file, data, {})
    status, err = cli([*ssh_flags(grid=None), "--data", str(file), "--var", "truth", "--obs-var", "sla",
                       "--out", str(tmp_path / "run")])
    assert status == 2 and err.count("\n") == 1
    assert "--data" in err and "'sla'" in err and "its variables: truth, obs" in err


def test_data_without_xarray_is_a_usage_error_naming_the_extra(tmp_path, cli, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray now raises ImportError
    status, err = cli([*ssh_flags(grid=None), "--data", str(tmp_path / "x.nc"), "--var", "a", "--obs-var", "b",
                       "--out", str(tmp_path / "run")])
    assert status == 2 and err.count("\n") == 1
    assert "--data" in err and "pipekit-cycle[netcdf]" in err
    assert not (tmp_path / "run").exists()


def test_the_python_example_maps_what_the_cli_maps(tmp_path, monkeypatch):
    # README "Mapping SSH from Python": its block, run on a small float64 run of the driver, gives
    # the map the driver wrote, from the same parameters.
    import re
    from pathlib import Path

    import torch
    import xarray as xr

    from pipekit_cycle import load_backend
    from pipekit_cycle.experiment import ExperimentConfig, run_experiment

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Mapping SSH from Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    first, rest = code.split("\n", 1)
    assert first.startswith("RUN, STEP, DAYS, TEST_DAYS, GRID, LENGTH, PATCH, STRIDE = ")
    assert len(code.strip().splitlines()) <= 20
    small = 'RUN, STEP, DAYS, TEST_DAYS, GRID, LENGTH, PATCH, STRIDE = "run", 2, 16, 8, 32, 4, 16, 8\n'
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        config = ExperimentConfig(**{**SSH, "steps": 2, "checkpoint_every": 2})
        run_experiment(load_backend("vardax_torch"), config, tmp_path / "run", progress=False, figures=False)
        monkeypatch.chdir(tmp_path)
        namespace: dict = {}
        exec(small + rest.replace("print(", "scores = ("), namespace)
    finally:
        torch.set_default_dtype(previous)
    with xr.open_dataset(tmp_path / "run" / "reconstruction.nc", engine="h5netcdf") as written:
        cli_map = written["learned"].values
    assert namespace["learned"].dtype == np.float64 and cli_map.dtype == np.float32  # the file: CF float32
    np.testing.assert_allclose(namespace["learned"], cli_map, rtol=2.0**-24, atol=0)  # to float32's rounding
    assert namespace["scores"]["mu"] == pytest.approx(
        json.loads((tmp_path / "run" / "metrics.json").read_text())["scores"]["learned"]["mu"], rel=1e-10)
