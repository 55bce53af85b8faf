"""The driver on several devices: JAX's --devices (XLA sharding, one process) and torch under
torchrun (2 gloo ranks): the same run as on one device, checkpoints written once, resume alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from .conftest import flags

SHARED = ("rmse_learned", "final_train_loss", "final_held_out_loss")


def _child(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                          timeout=300)


def _metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _close(a: dict, b: dict, rtol: float) -> None:
    for key in SHARED:
        assert a[key] == pytest.approx(b[key], rel=rtol), key


def test_jax_devices_split_the_batch_and_change_nothing(tmp_path):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    run = [sys.executable, "-m", "vardax_jax", "train", *flags(), "--no-progress", "--no-figures"]
    one = _child([*run, "--out", str(tmp_path / "one")], env)
    two = _child([*run, "--out", str(tmp_path / "two"), "--devices", "2"], env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
    # float32 (the JAX default): the batch mean is summed in another order across devices.
    _close(_metrics(tmp_path / "one"), _metrics(tmp_path / "two"), 1e-5)
    odd = _child([*run[:-2], "--batch-size", "3", "--out", str(tmp_path / "odd"), "--devices", "2"], env)
    assert odd.returncode == 2 and not (tmp_path / "odd").exists()
    assert odd.stderr.strip().splitlines()[-1].endswith(
        "argument --batch-size: batch size 3 is not divisible by the 2 devices its batch axis is split across; "
        "use a batch size that is a multiple of 2")
    many = _child([*run, "--out", str(tmp_path / "many"), "--devices", "3"], env)
    assert many.returncode == 2 and "--devices 3: JAX sees 2 cpu device(s)" in many.stderr
    assert "Traceback" not in odd.stderr + many.stderr


def test_torchrun_ranks_train_one_run_written_once_and_resumed(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "vardax_torch", "train", "--no-progress", "--no-figures"]
    alone = [sys.executable, "-m", "vardax_torch", "train", "--no-progress", "--no-figures"]
    whole = _child([*alone, *flags(steps=6), "--out", str(tmp_path / "alone")], {})
    assert whole.returncode == 0, whole.stderr[-2000:]
    first = _child([*torchrun, *flags(), "--out", str(tmp_path / "ranks")], {})
    assert first.returncode == 0, first.stderr[-3000:]
    # One JSON report (rank 0's), one set of checkpoints.
    assert first.stdout.count('"rmse_learned"') == 1
    assert sorted(p.name for p in (tmp_path / "ranks" / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    again = _child([*torchrun, *flags(steps=6), "--out", str(tmp_path / "ranks"), "--resume"], {})
    assert again.returncode == 0, again.stderr[-3000:]
    # float32 (the torch default): the all_reduce sums the two halves' means in another order.
    _close(_metrics(tmp_path / "alone"), _metrics(tmp_path / "ranks"), 1e-5)
    losses = [json.loads((tmp_path / run / "checkpoints" / "step-000006" / "state.json").read_text())["losses"]
              for run in ("alone", "ranks")]
    assert np.allclose(losses[0], losses[1], rtol=1e-5, atol=0)


def test_torch_devices_without_torchrun_is_a_usage_error(tmp_path, cli):
    status, err = cli(["train", *flags(), "--out", str(tmp_path / "run"), "--devices", "2"])
    assert status == 2 and not (tmp_path / "run").exists()
    assert err.strip().splitlines()[-1].endswith(
        "--devices 2: torch runs one process per device; start the run with torchrun --nproc-per-node 2 -m "
        "vardax_torch train ...")
    status, err = cli(["train", *flags(), "--out", str(tmp_path / "run"), "--device", "cuda:7"])
    assert status == 2 and "--device cuda:7: torch sees no CUDA device here" in err
