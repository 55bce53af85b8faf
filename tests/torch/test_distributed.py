"""Data parallelism through torch.distributed: 2 ranks under torchrun (gloo, CPU) take the
whole-batch step."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

import pipekit_cycle as pk
import vardax_torch as vt

CONFIG = pk.FourDVarNetConfig(state_shape=(6, 6), n_time=3, n_solver_steps=3, hidden_dim=3, prior_hidden_dim=3)

RANK = r"""
import sys
import numpy as np
import torch.distributed as dist
import pipekit_cycle as pk
import vardax_torch as vt

dist.init_process_group("gloo")
rank, n_ranks = dist.get_rank(), dist.get_world_size()
data = np.load(sys.argv[1])
shard = slice(rank * len(data["obs"]) // n_ranks, (rank + 1) * len(data["obs"]) // n_ranks)
config = pk.FourDVarNetConfig(state_shape=(6, 6), n_time=3, n_solver_steps=3, hidden_dim=3, prior_hidden_dim=3)
model = vt.build_model(config, seed=0, dtype="float64")
optimizer, state = vt.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
batch = vt.make_batch(data["obs"][shard], target=data["truth"][shard], dtype="float64")
losses = []
for _ in range(3):
    model, state, loss = vt.train_step(model, batch, optimizer, state)
    losses.append(float(loss))
np.savez(sys.argv[2] + f".rank{rank}.npz", losses=np.array(losses), **vt.export_params(model))
dist.barrier()  # both ranks leave together: gloo aborts a rank torn down while the other still talks
dist.destroy_process_group()
"""


def _three_adam_steps(obs: np.ndarray, truth: np.ndarray) -> tuple[list[float], dict[str, np.ndarray]]:
    model = vt.build_model(CONFIG, seed=0, dtype="float64")
    optimizer, state = vt.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
    batch = vt.make_batch(obs, target=truth, dtype="float64")
    losses = []
    for _ in range(3):
        model, state, loss = vt.train_step(model, batch, optimizer, state)
        losses.append(float(loss))
    return losses, vt.export_params(model)


def test_two_ranks_equal_one_process_on_the_whole_batch(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(4, 3, 6, 6))
    obs = np.where(rng.random(truth.shape) < 0.4, truth, np.nan)
    np.savez(tmp_path / "data.npz", obs=obs, truth=truth)
    (tmp_path / "rank.py").write_text(RANK)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(tmp_path / "rank.py"), str(tmp_path / "data.npz"), str(tmp_path / "out")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses, whole = _three_adam_steps(obs, truth)
    half = _three_adam_steps(obs[:2], truth[:2])[1]
    for rank in (0, 1):
        ranked = np.load(tmp_path / f"out.rank{rank}.npz")
        assert np.abs(ranked["losses"] - losses).max() <= 1e-12 * max(losses)
        for name, value in whole.items():
            assert np.abs(ranked[name] - value).max() <= 1e-12 * np.abs(value).max(), (rank, name)
    # The check can fail: one rank's own half-batch step is another step.
    assert max(np.abs(half[name] - whole[name]).max() / np.abs(whole[name]).max() for name in whole) > 1e-6

