"""Data parallelism through XLA: a batch split over 4 (forced host) devices trains like one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Run in a child: the device count is fixed when JAX starts, and this process has one CPU device.
CHILD = r"""
import json
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import pipekit_cycle as pk
import vardax_jax as vj

config = pk.FourDVarNetConfig(state_shape=(6, 6), n_time=3, n_solver_steps=3, hidden_dim=3, prior_hidden_dim=3)
rng = np.random.default_rng(0)
truth = rng.normal(size=(8, 3, 6, 6))
obs = np.where(rng.random(truth.shape) < 0.4, truth, np.nan)


def three_adam_steps(sharding):
    model = vj.build_model(config, seed=0, dtype="float64")
    optimizer, state = vj.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
    batch = vj.make_batch(obs, target=truth, dtype="float64", sharding=sharding)
    losses = []
    for _ in range(3):
        model, state, loss = vj.train_step(model, batch, optimizer, state)
        losses.append(float(loss))
    return model, batch, losses


one_model, one_batch, one_losses = three_adam_steps(None)
sharding = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), PartitionSpec("batch"))
model, batch, losses = three_adam_steps(sharding)
one, four = vj.export_params(one_model), vj.export_params(model)
replicated = all(array.sharding.is_fully_replicated and len(array.sharding.device_set) == 4
                 for array in jax.tree.leaves(model) if isinstance(array, jax.Array))
output, evaluation = model(batch), vj.eval_step(model, batch)
try:
    vj.make_batch(obs[:6], sharding=sharding)
    refused = ""
except ValueError as error:
    refused = str(error)
print(json.dumps({
    "devices": len(jax.devices()),
    "params": max(float(np.abs(one[k] - four[k]).max() / np.abs(one[k]).max()) for k in one),
    "losses": max(abs(a - b) / abs(a) for a, b in zip(one_losses, losses)),
    "batch_shard_shape": list(batch.input.sharding.shard_shape(batch.input.shape)),
    "output_shard_shape": list(output.sharding.shard_shape(output.shape)),
    "model_replicated": replicated,
    "eval": abs(float(evaluation) - float(vj.eval_step(one_model, one_batch))),
    "refused": refused,
}))
"""


def test_four_device_step_equals_one_device_step():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["devices"] == 4
    assert measured["params"] < 1e-12 and measured["losses"] < 1e-12
    assert measured["batch_shard_shape"] == [2, 3, 6, 6]  # 8 windows, 2 per device
    assert measured["output_shard_shape"] == [2, 3, 6, 6]  # the call keeps the batch split
    assert measured["model_replicated"]
    assert measured["eval"] < 1e-12
    assert measured["refused"].startswith("batch size 6 is not divisible by the 4 devices")

