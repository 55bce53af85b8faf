import json
import shutil

import numpy as np
import pytest

import pipekit_cycle as pk
from pipekit_cycle import load_backend, load_params
from pipekit_cycle.experiment import (
    CheckpointFallbackWarning,
    ConfigError,
    ExperimentConfig,
    RunDirectoryError,
    build_parser,
    latest_checkpoint,
    list_checkpoints,
    load_task,
    run_experiment,
)
from pipekit_cycle.experiment.lorenz import interpolate


def test_linear_interpolation_closed_form():
    obs = np.full((1, 6, 2), np.nan)
    obs[0, 1, 0], obs[0, 4, 0] = 1.0, 4.0
    obs[0, 2, 1] = -2.0
    filled = interpolate(obs)
    np.testing.assert_allclose(filled[0, :, 0], [1.0, 1.0, 2.0, 3.0, 4.0, 4.0])
    np.testing.assert_allclose(filled[0, :, 1], -2.0)


@pytest.mark.parametrize(
    ("changes", "field", "word"),
    [
        ({"system": "l99"}, "system", "l63, l96"),
        ({"adjoint": "bogus"}, "adjoint", "unknown adjoint"),
        ({"adjoint": "backsolve"}, "adjoint", "dynamics-layer"),
        ({"adjoint": "direct"}, "adjoint", "dynamics-layer"),
        ({"adjoint": "truncated:0"}, "adjoint", ">= 1"),
        ({"steps": 0}, "steps", ">= 1"),
        ({"steps": 2.5}, "steps", "integer"),
        ({"batch_size": 1000}, "batch_size", r"training windows \(512\)"),
        ({"lr": float("nan")}, "lr", "finite"),
        ({"lr": 0.0}, "lr", "> 0"),
        ({"seed": -1}, "seed", ">= 0"),
        ({"window_length": 1}, "window_length", ">= 2"),
        ({"hidden_dim": 0}, "hidden_dim", ">= 1"),
        ({"fourdvar_windows": -1}, "fourdvar_windows", ">= 0"),
    ],
)
def test_experiment_config_validation(changes, field, word):
    with pytest.raises(ConfigError, match=word) as caught:
        ExperimentConfig(**changes)
    assert caught.value.field == field and isinstance(caught.value, ValueError)


def test_sizes_left_unset_take_their_systems_defaults():
    for system in ("l63", "l96", "ssh"):
        defaults = load_task(system).defaults
        config = ExperimentConfig(system=system)
        assert {field: getattr(config, field) for field in defaults} == defaults
    l63 = ExperimentConfig(system="l63", steps=7, batch_size=2)
    assert (l63.steps, l63.batch_size, l63.train_windows) == (7, 2, load_task("l63").defaults["train_windows"])
    args = build_parser("x").parse_args(["train", "--system", "l63", "--out", "o"])
    assert args.steps is None and args.train_windows is None  # resolved by the config, per system


def test_adjoint_is_stored_in_canonical_form():
    assert ExperimentConfig(adjoint="truncated:k=2").adjoint == "truncated:2"
    assert ExperimentConfig(adjoint=" Checkpoint ").adjoint == "checkpoint"


def test_both_backends_share_the_command_line():
    args = build_parser("x").parse_args(["train", "--system", "l63", "--adjoint", "truncated:2", "--out", "o"])
    assert args.system == "l63" and args.adjoint == "truncated:2" and not args.resume and not args.overwrite


@pytest.mark.parametrize("backend_name", ["vardax_jax", "vardax_torch"])
def test_resume_is_bit_exact(tmp_path, backend_name, tiny):
    backend = load_backend(backend_name)
    straight = run_experiment(backend, ExperimentConfig(**tiny), tmp_path / "straight", progress=False,
                              figures=False)
    run_experiment(backend, ExperimentConfig(**{**tiny, "steps": 2}), tmp_path / "resumed", progress=False,
                   figures=False)
    resumed = run_experiment(backend, ExperimentConfig(**tiny), tmp_path / "resumed", resume=True, progress=False,
                             figures=False)
    a, config_a = load_params(latest_checkpoint(tmp_path / "straight") / "checkpoint.safetensors")
    b, _ = load_params(latest_checkpoint(tmp_path / "resumed") / "checkpoint.safetensors")
    assert config_a == ExperimentConfig(**tiny).model_config()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert straight["rmse_learned"] == resumed["rmse_learned"]
    state = json.loads((latest_checkpoint(tmp_path / "resumed") / "state.json").read_text())
    assert state["step"] == 4 and len(state["losses"]) == 4
    # a held-out loss at the start and at every checkpoint, the same whether resumed or not
    straight_state = json.loads((latest_checkpoint(tmp_path / "straight") / "state.json").read_text())
    assert [step for step, _ in state["held_out"]] == [0, 2, 4]
    assert state["held_out"] == straight_state["held_out"]
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["rmse_interpolation"] > 0 and np.isfinite(metrics["rmse_learned"])
    assert metrics["steps"] == 4 and metrics["final_held_out_loss"] == state["held_out"][-1][1]


@pytest.mark.parametrize("backend_name", ["vardax_jax", "vardax_torch"])
def test_a_scheduled_run_stopped_halfway_resumes_bit_exactly(tmp_path, backend_name, tiny):
    """A warm-up and cosine decay over the run's 4 steps, stopped after its checkpoint at step 2
    (as by Ctrl-C) and resumed: the optimizer state carries the schedule's position."""
    backend = load_backend(backend_name)
    config = ExperimentConfig(**tiny, lr_schedule="cosine:1")
    assert config.optimizer_config().schedule == pk.WarmupCosineSchedule(warmup_steps=1, decay_steps=4)
    run_experiment(backend, config, tmp_path / "straight", progress=False, figures=False)
    shutil.copytree(tmp_path / "straight", tmp_path / "stopped")
    shutil.rmtree(tmp_path / "stopped" / "checkpoints" / "step-000004")
    (tmp_path / "stopped" / "metrics.json").unlink()
    run_experiment(backend, config, tmp_path / "stopped", resume=True, progress=False, figures=False)
    a, _ = load_params(latest_checkpoint(tmp_path / "straight") / "checkpoint.safetensors")
    b, _ = load_params(latest_checkpoint(tmp_path / "stopped") / "checkpoint.safetensors")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    # The constant rate's run differs: the schedule took part.
    constant = run_experiment(backend, ExperimentConfig(**tiny), tmp_path / "constant", progress=False, figures=False)
    c, _ = load_params(latest_checkpoint(tmp_path / "constant") / "checkpoint.safetensors")
    assert any(not np.array_equal(a[name], c[name]) for name in a) and constant["steps"] == 4


def test_a_run_saved_before_schedules_resumes_at_its_constant_rate(tmp_path, tiny):
    torch_backend = load_backend("vardax_torch")
    run_experiment(torch_backend, ExperimentConfig(**{**tiny, "steps": 2}), tmp_path, progress=False, figures=False)
    state_file = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    del state["experiment"]["lr_schedule"]  # as written before the setting existed
    state_file.write_text(json.dumps(state))
    metrics = run_experiment(torch_backend, ExperimentConfig(**tiny), tmp_path, resume=True, progress=False,
                             figures=False)
    assert metrics["steps"] == 4
    with pytest.raises(RunDirectoryError, match="lr_schedule=constant; you asked lr_schedule=cosine:1"):
        run_experiment(torch_backend, ExperimentConfig(**{**tiny, "steps": 6}, lr_schedule="cosine:1"), tmp_path,
                       resume=True, progress=False, figures=False)


def test_a_learning_rate_schedule_is_checked_naming_the_forms():
    with pytest.raises(ConfigError, match="constant, cosine:W"):
        ExperimentConfig(system="l96", lr_schedule="linear")
    with pytest.raises(ConfigError, match="shorter than the run"):
        ExperimentConfig(system="l96", steps=10, lr_schedule="cosine:10")
    assert ExperimentConfig(system="l96").lr_schedule == "constant"
    # The bare form warms up over 5 % of the run: a short run is never refused for it.
    assert ExperimentConfig(system="ssh", steps=4, lr_schedule="cosine").optimizer_config().schedule == \
        pk.WarmupCosineSchedule(warmup_steps=0, decay_steps=4)


def test_a_run_saved_before_the_learning_curve_resumes_and_starts_its_curve_there(tmp_path, tiny):
    backend = load_backend("vardax_torch")
    run_experiment(backend, ExperimentConfig(**{**tiny, "steps": 2}), tmp_path, progress=False, figures=False)
    file = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(file.read_text())
    assert [point["step"] for point in state["curve"]] == [0, 2] and state["train_seconds"] > 0
    file.write_text(json.dumps({key: value for key, value in state.items() if key not in ("curve", "train_seconds")}))
    metrics = run_experiment(backend, ExperimentConfig(**tiny), tmp_path, resume=True, progress=False, figures=False)
    assert [point["step"] for point in metrics["learning_curve"]] == [4]  # the Lorenz task adds no scores
    assert set(metrics["learning_curve"][0]) == {"step", "train_seconds"}
    file = latest_checkpoint(tmp_path) / "state.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "curve": [{"seconds": 1.0}]}))
    with pytest.warns(CheckpointFallbackWarning, match="step-000004/state.json: unusable learning curve"):
        run_experiment(backend, ExperimentConfig(**{**tiny, "steps": 6}), tmp_path, resume=True, progress=False,
                       figures=False)  # set aside; the run goes on from step 2


def test_keeps_the_last_two_checkpoints(tmp_path, tiny):
    run_experiment(load_backend("vardax_torch"), ExperimentConfig(**{**tiny, "steps": 7}), tmp_path,
                   progress=False, figures=False)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [6, 7]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_final_evaluation_shows_progress(tmp_path, tiny, capsys):
    run_experiment(load_backend("vardax_torch"), ExperimentConfig(**{**tiny, "fourdvar_windows": 1}), tmp_path,
                   figures=False)
    err = capsys.readouterr().err
    assert "train" in err and "evaluate" in err
    # one unit per prediction batch, per quasi-static 4D-Var stage and for the roll-out
    assert "3/3" in err
