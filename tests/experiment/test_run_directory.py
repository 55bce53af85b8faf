"""The run directory: no accidental overwrite, two checkpoints and the fallback, resume rules,
file modes."""

import json
import os
import shutil

import numpy as np
import pytest

from pipekit_cycle import load_backend, load_params
from pipekit_cycle.experiment import (
    CheckpointError,
    CheckpointFallbackWarning,
    ExperimentConfig,
    RunDirectoryError,
    latest_checkpoint,
    list_checkpoints,
    run_experiment,
)


@pytest.fixture(scope="module")
def torch_backend():
    return load_backend("vardax_torch")


def _run(backend, tiny, out, **kwargs):
    options = {"progress": False, "figures": False}
    fields = ExperimentConfig(**tiny).to_dict()
    changes = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
    return run_experiment(backend, ExperimentConfig(**{**tiny, **changes}), out, **options, **kwargs)


def _snapshot(out):
    return {path.relative_to(out): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


def test_a_run_is_not_overwritten_without_a_flag(tmp_path, cli, tiny_flags):
    out = tmp_path / "run"
    assert cli(["train", *tiny_flags(), "--out", str(out), "--no-progress", "--no-figures"])[0] == 0
    before = _snapshot(out)
    status, err = cli(["train", *tiny_flags(seed=3), "--out", str(out), "--no-progress", "--no-figures"])
    assert status == 2 and err.count("\n") == 1
    assert f"--out: {out} already holds a run (its last checkpoint is at step 4)" in err
    assert "--resume" in err and "--overwrite" in err
    assert _snapshot(out) == before


def test_overwrite_starts_again_and_removes_the_old_run(tmp_path, torch_backend, tiny):
    out = tmp_path / "run"
    _run(torch_backend, tiny, out, steps=6)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        _run(torch_backend, tiny, out, steps=2)
    metrics = _run(torch_backend, tiny, out, steps=2, seed=1, overwrite=True)
    assert [step for step, _ in list_checkpoints(out)] == [2]  # step 4 and 6 of the old run are gone
    assert metrics["steps"] == 2 and json.loads((out / "metrics.json").read_text())["steps"] == 2
    state = json.loads((latest_checkpoint(out) / "state.json").read_text())
    assert state["experiment"]["seed"] == 1
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are removed


def test_resume_names_the_fields_that_differ(tmp_path, torch_backend, tiny):
    _run(torch_backend, tiny, tmp_path, steps=2)
    with pytest.raises(RunDirectoryError) as caught:
        _run(torch_backend, tiny, tmp_path, lr=0.01, hidden_dim=8, steps=6, checkpoint_every=3, resume=True)
    assert str(caught.value).startswith(
        "--resume: this run was made with lr=0.003, hidden_dim=3; you asked lr=0.01, hidden_dim=8 "
    )


def test_resume_with_another_backend_is_refused(tmp_path, tiny):
    _run(load_backend("vardax_torch"), tiny, tmp_path, steps=2)
    state_file = latest_checkpoint(tmp_path) / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "backend": "vardax_jax"}))
    with pytest.raises(RunDirectoryError, match="made with backend=vardax_jax; you asked backend=vardax_torch"):
        _run(load_backend("vardax_torch"), tiny, tmp_path, resume=True)


def test_resume_without_a_run_is_refused(tmp_path, torch_backend, tiny):
    with pytest.raises(RunDirectoryError, match="holds no checkpoint to resume; leave out --resume"):
        _run(torch_backend, tiny, tmp_path / "run", resume=True)
    assert not (tmp_path / "run").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "state.json").write_text("{}")  # the one-checkpoint layout of version 0.1
    with pytest.raises(RunDirectoryError, match="already holds a run"):
        _run(torch_backend, tiny, tmp_path / "old")
    with pytest.raises(RunDirectoryError, match=r"earlier version, which cannot be resumed\); pass --overwrite"):
        _run(torch_backend, tiny, tmp_path / "old", resume=True)
    _run(torch_backend, tiny, tmp_path / "old", overwrite=True)
    assert not (tmp_path / "old" / "state.json").exists()


def test_metrics_record_the_steps_trained(tmp_path, torch_backend, tiny):
    _run(torch_backend, tiny, tmp_path)
    before = _snapshot(tmp_path)
    # fewer steps than the run has: refused (a model cannot be untrained), nothing written
    with pytest.raises(RunDirectoryError, match="--steps: this run is already at step 4"):
        _run(torch_backend, tiny, tmp_path, steps=2, resume=True)
    assert _snapshot(tmp_path) == before
    # as many: evaluated again, no step trained
    metrics = _run(torch_backend, tiny, tmp_path, resume=True)
    assert metrics["steps"] == 4 and json.loads((tmp_path / "metrics.json").read_text())["steps"] == 4
    # more: trained up to the new total
    metrics = _run(torch_backend, tiny, tmp_path, steps=6, resume=True)
    assert metrics["steps"] == 6 and [step for step, _ in list_checkpoints(tmp_path)] == [4, 6]


def _damage_model(directory):
    (directory / "checkpoint.safetensors").write_bytes(b"not a safetensors file at all")


def _truncate_optimizer(directory):
    path = directory / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:100])


def _damage_state(directory):
    (directory / "state.json").write_text('{"step": 4, ')


def _remove_optimizer(directory):
    (directory / "optimizer.safetensors").unlink()


def _foreign_sampler(directory):
    path = directory / "state.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "sampler": {"bit_generator": "MT19937"}}))


@pytest.mark.parametrize(
    ("damage", "file", "problem"),
    [
        (_damage_model, "checkpoint.safetensors", "not a readable safetensors file"),
        (_truncate_optimizer, "optimizer.safetensors", "not a readable safetensors file"),
        (_damage_state, "state.json", "not valid JSON"),
        (_remove_optimizer, "optimizer.safetensors", "missing"),
        (_foreign_sampler, "state.json", "unusable sampler state"),
    ],
)
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, torch_backend, tiny, damage, file, problem):
    straight = tmp_path / "straight"
    _run(torch_backend, tiny, straight)
    damaged = tmp_path / "damaged"
    shutil.copytree(straight, damaged)
    latest = latest_checkpoint(damaged)
    damage(latest)
    with pytest.warns(CheckpointFallbackWarning, match="resuming from the previous checkpoint") as caught:
        metrics = _run(torch_backend, tiny, damaged, resume=True)
    [warning] = caught.list
    assert str(warning.message).startswith(f"{latest / file}: {problem}")
    # re-trained from step 2 to step 4, bit for bit as the run that was never damaged
    a, _ = load_params(latest_checkpoint(straight) / "checkpoint.safetensors")
    b, _ = load_params(latest_checkpoint(damaged) / "checkpoint.safetensors")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert metrics["steps"] == 4
    assert [step for step, _ in list_checkpoints(damaged)] == [2, 4]
    assert (damaged / "checkpoints" / "damaged-step-000004").is_dir()  # set aside, for a look


def test_no_readable_checkpoint_names_every_damaged_file(tmp_path, torch_backend, tiny):
    _run(torch_backend, tiny, tmp_path)
    first, second = (directory for _, directory in list_checkpoints(tmp_path))
    _damage_model(first)
    _damage_state(second)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        _run(torch_backend, tiny, tmp_path, resume=True)
    message = str(caught.value)
    assert f"{second / 'state.json'}: not valid JSON" in message
    assert f"{first / 'checkpoint.safetensors'}: not a readable safetensors file" in message
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_files_get_the_mode_of_the_umask(tmp_path, torch_backend, tiny, umask, file_mode, dir_mode):
    out = tmp_path / "run"
    old = os.umask(umask)
    try:
        run_experiment(torch_backend, ExperimentConfig(**tiny), out, progress=False)
    finally:
        os.umask(old)
    files = [path for path in out.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"checkpoint.safetensors", "optimizer.safetensors", "state.json",
                                             "metrics.json", "loss.png"}
    assert {path.relative_to(out): oct(path.stat().st_mode & 0o777) for path in files} == {
        path.relative_to(out): oct(file_mode) for path in files
    }
    dirs = [out, *(path for path in out.rglob("*") if path.is_dir())]
    assert {oct(path.stat().st_mode & 0o777) for path in dirs} == {oct(dir_mode)}
