"""``benchmarks/ssh_variants.py``, the SSH training variants the ablation measured (issue 36): the
gradient loss against its formula in numpy, and the K curriculum's parts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pipekit_cycle as pk
import vardax_torch as vd
from benchmarks import ssh_variants
from pipekit_cycle.experiment import latest_checkpoint

TINY = ["--steps", "6", "--checkpoint-every", "3", "--batch-size", "2", "--solver-steps", "2", "--hidden-dim", "3",
        "--prior-hidden-dim", "3", "--window-length", "4", "--patch-size", "16", "--train-days", "8",
        "--test-days", "8", "--grid", "32", "--no-progress", "--no-figures"]


def test_the_gradient_loss_is_the_reconstruction_plus_the_weighted_differences():
    rng = np.random.default_rng(0)
    cfg = pk.FourDVarNetConfig(state_shape=(8, 12), n_time=3, hidden_dim=3, prior_hidden_dim=3, n_solver_steps=2)
    model = vd.build_model(cfg, seed=0, dtype=torch.float64)
    obs, target = rng.normal(size=(2, 3, 8, 12)), rng.normal(size=(2, 3, 8, 12))
    batch = vd.make_batch(obs, target=target, dtype=torch.float64)
    state = model(batch).detach().numpy()
    expected = np.mean((state - target) ** 2) + 0.5 * sum(
        np.mean((np.diff(state, axis=axis) - np.diff(target, axis=axis)) ** 2) for axis in (-1, -2))
    assert float(ssh_variants.gradient_loss(0.5)(model, batch).detach()) == pytest.approx(expected, rel=1e-12)


def test_the_gradient_loss_is_what_the_driver_trains(tmp_path, cli):
    def losses(run):
        return json.loads((latest_checkpoint(run) / "state.json").read_text())["losses"]

    assert cli(["train", "--system", "ssh", *TINY, "--out", str(tmp_path / "plain")])[0] == 0
    for weight in ("0", "10"):
        argv = ["--variant", "gradient-loss", "--gradient-weight", weight, *TINY, "--out", str(tmp_path / weight)]
        assert ssh_variants.main(argv) == 0
    assert losses(tmp_path / "0") == losses(tmp_path / "plain")  # w = 0: the driver's own step, bit for bit
    assert losses(tmp_path / "10")[0] > losses(tmp_path / "plain")[0]  # the same first batch, plus the gradient term


def test_the_k_curriculum_trains_each_part_at_its_k_and_maps_at_the_last(tmp_path, capfd):
    assert ssh_variants.main(["--variant", "k-curriculum", "--ks", "2", "3", *TINY, "--out", str(tmp_path)]) == 0
    err = capfd.readouterr().err
    assert "step 3: K = 3" in err and "K = 2" not in err  # the run starts at --solver-steps 2
    _, config = pk.load_params(latest_checkpoint(tmp_path) / "checkpoint.safetensors")
    assert config.n_solver_steps == 3
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["backend"] == "vardax_torch" and [p["step"] for p in metrics["learning_curve"]] == [0, 3, 6]


def test_a_curriculum_is_not_resumed(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        ssh_variants.main(["--variant", "k-curriculum", *TINY, "--out", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "runs fresh only" in err and not (tmp_path / "checkpoints").exists()
