"""``python -m benchmarks.scaling``: the data-parallel training step on 1, 2, 4... devices.

Each row runs in its own process(es): ``vardax_jax`` as one process over ``n`` devices (the
batch sharded along its batch axis, `vardax_jax.make_batch`'s ``sharding=``; on the CPU the
devices are forced host devices, ``XLA_FLAGS=--xla_force_host_platform_device_count=n``) and
``vardax_torch`` as ``n`` processes under ``torchrun`` (gloo on the CPU, nccl with
``--device cuda``; `vardax_torch.train_step` all-reduces the gradients). Weak scaling: 4 windows
per device (the global batch is ``4 n``), this project's default architecture (samples
independent; ocean4dvarnet's couples the windows of a batch) with the benchmark's 48/32
channels and T = 15 on a ``--size`` square state, the checkpointed adjoint, float32.

Reported per row: the median step time over ``--repeats`` steps after a warm-up, windows per
second, and the check that makes the row mean anything: the parameters after one data-parallel
Adam step against one process on one device taking the same global batch (max relative
difference; in float32, Adam's first step ``g / |g|`` turns the rounding of tiny gradient
entries into differences up to about 1e-4).
On the CPU the forced devices share the same cores, so the time column there is not a speed:
only the agreement is reported as a result. With ``--device cuda`` on a machine with several
GPUs the times are the scaling table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._measure import time_steps

BATCH_PER_DEVICE = 4


def _data(n_windows: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from benchmarks.worker import N_TIME

    rng = np.random.default_rng(0)
    truth = rng.standard_normal((n_windows, N_TIME, size, size)).astype(np.float32)
    obs = np.where(rng.random(truth.shape) < 0.3, truth, np.nan).astype(np.float32)
    return obs, truth


def _config(k: int, size: int) -> Any:
    # Our own architecture, not ocean4dvarnet's: its batch-wide RMS and mean costs couple the
    # windows of a batch, so a rank's slice would solve another problem than the whole batch.
    from benchmarks.worker import HIDDEN, N_TIME, PRIOR_HIDDEN
    from pipekit_cycle import FourDVarNetConfig, RecursiveCheckpointAdjoint

    return FourDVarNetConfig(state_shape=(size, size), n_time=N_TIME, n_solver_steps=k, hidden_dim=HIDDEN,
                             prior_hidden_dim=PRIOR_HIDDEN, solver_adjoint=RecursiveCheckpointAdjoint())


def _relative(after: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(after[k] - expected[k]).max() / max(np.abs(expected[k]).max(), 1e-30)) for k in expected)


def jax_row(n: int, k: int, size: int, repeats: int) -> dict[str, Any]:
    """One process, ``n`` devices (run with the device count already forced on the CPU)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import vardax_jax as vd
    from pipekit_cycle import OptimizerConfig

    devices = jax.devices()[:n]
    if len(devices) < n:
        raise RuntimeError(f"{n} devices asked, JAX sees {len(jax.devices())}")
    obs, truth = _data(BATCH_PER_DEVICE * n, size)
    optimizer_config = OptimizerConfig(name="adam", lr=1e-3)

    def first_step(sharding: Any) -> tuple[Any, Any, Any, Any]:
        model = vd.build_model(_config(k, size), seed=0, dtype="float32")
        optimizer, opt_state = vd.make_optimizer(optimizer_config, model)
        batch = vd.make_batch(obs, target=truth, dtype="float32", sharding=sharding)
        model, opt_state, _ = vd.train_step(model, batch, optimizer, opt_state)
        return model, opt_state, optimizer, batch

    single = NamedSharding(Mesh(np.array(devices[:1]), ("batch",)), PartitionSpec("batch"))
    expected = vd.export_params(first_step(single)[0])
    sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))
    model, opt_state, optimizer, batch = first_step(sharding)
    agreement = _relative(vd.export_params(model), expected)
    state = {"model": model, "opt": opt_state}

    def step() -> None:
        state["model"], state["opt"], loss = vd.train_step(state["model"], batch, optimizer, state["opt"])
        float(loss)

    step()
    times = time_steps(step, repeats)
    return {"times_s": times, "agreement": agreement, "platform": devices[0].platform}


def torch_row(k: int, size: int, repeats: int, device: str, out: str) -> None:
    """One rank of ``torchrun --nproc-per-node n``; rank 0 writes the row to ``out``."""
    import torch
    import torch.distributed as dist

    import vardax_torch as vd
    from pipekit_cycle import OptimizerConfig

    placement = vd.placement(device)
    rank, n = placement.rank, placement.n_ranks
    obs, truth = _data(BATCH_PER_DEVICE * n, size)
    mine = slice(rank * BATCH_PER_DEVICE, (rank + 1) * BATCH_PER_DEVICE)
    dev = placement.model_kwargs["device"]
    model = vd.build_model(_config(k, size), seed=0, dtype="float32", device=dev)
    optimizer, opt_state = vd.make_optimizer(OptimizerConfig(name="adam", lr=1e-3), model)
    batch = vd.make_batch(obs[mine], target=truth[mine], dtype="float32", device=dev)
    model, opt_state, _ = vd.train_step(model, batch, optimizer, opt_state)
    after_one = vd.export_params(model)
    state = {"opt": opt_state}

    def step() -> None:
        _, state["opt"], loss = vd.train_step(model, batch, optimizer, state["opt"])
        float(loss)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    step()
    times = time_steps(step, repeats)
    if n > 1:
        dist.barrier()
        placement.close()
    if rank == 0:  # the same global batch in this one process, outside the process group
        alone = vd.build_model(_config(k, size), seed=0, dtype="float32", device=dev)
        alone_optimizer, alone_state = vd.make_optimizer(OptimizerConfig(name="adam", lr=1e-3), alone)
        whole = vd.make_batch(obs, target=truth, dtype="float32", device=dev)
        alone, _, _ = vd.train_step(alone, whole, alone_optimizer, alone_state)
        row = {"times_s": times, "agreement": _relative(after_one, vd.export_params(alone)), "platform": dev.type,
               "threads": torch.get_num_threads()}
        Path(out).write_text(json.dumps(row))


def _run_row(backend: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with tempfile.TemporaryDirectory() as scratch:
        out = str(Path(scratch) / "row.json")
        common = ["--k", str(args.k), "--size", str(args.size), "--repeats", str(args.repeats), "--out", out]
        if backend == "vardax_jax":
            if args.device == "cpu":
                env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
                env["JAX_PLATFORMS"] = "cpu"
            command = [sys.executable, "-m", "benchmarks.scaling", "--jax-row", str(n), *common]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                       "-m", "benchmarks.scaling", "--torch-rank", "--device", args.device, *common]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout)
        if done.returncode:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
        return json.loads(Path(out).read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["vardax_jax", "vardax_torch"])
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--k", type=int, default=8, help="solver steps")
    parser.add_argument("--size", type=int, default=64, help="the state is size x size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", help="(internal) where a row process writes its row")
    parser.add_argument("--jax-row", type=int, help="(internal) run one JAX row on this many devices")
    parser.add_argument("--torch-rank", action="store_true", help="(internal) run as one torchrun rank")
    args = parser.parse_args(argv)
    if args.jax_row:
        Path(args.out).write_text(json.dumps(jax_row(args.jax_row, args.k, args.size, args.repeats)))
        return 0
    if args.torch_rank:
        torch_row(args.k, args.size, args.repeats, args.device, args.out)
        return 0
    print(f"data-parallel step, {BATCH_PER_DEVICE} windows per device, K={args.k}, {args.size}x{args.size}, "
          f"device {args.device}, {args.threads} thread(s) per process")
    print("| backend | devices | global batch | step (s) | windows/s | max rel diff vs 1 device, same batch |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends:
        for n in args.devices:
            row = _run_row(backend, n, args)
            if "error" in row:
                print(f"| {backend} | {n} | {BATCH_PER_DEVICE * n} | error: {row['error']} | | |", flush=True)
                continue
            median = statistics.median(row["times_s"])
            speed = "(shared cores)" if args.device == "cpu" else f"{BATCH_PER_DEVICE * n / median:.2f}"
            print(f"| {backend} | {n} | {BATCH_PER_DEVICE * n} | {median:.3f} | {speed} | {row['agreement']:.1e} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
