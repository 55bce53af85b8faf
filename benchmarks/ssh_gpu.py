"""``python -m benchmarks.ssh_gpu``: the SSH job at a larger configuration, on a GPU (issue 36, point 4).

4dvarnet-starter's sizes (its ``config/xp/base.yaml``) on the driver's OSSE: a box of
``--grid`` x ``--grid`` points (240, its patch; the simulation keeps its spacing of 10/128 degree,
so the box is 18.75 degrees wide) mapped as one patch, 15-day windows, K = 10 solver steps, a
ConvLSTM of width 48 and a prior of width 32, a peak rate of 1e-3, and 300 training days (its
NATL60 year trains on 218) (`STARTER_SIZES`); the rest are the SSH job's defaults (this
project's modulator, a cosine rate, 2000 steps, seed 0, 60 held-out days). The data are made on
the host's CPU at every call: the OI of the 360 days costs about 1.4 s a day on one core at
240 x 240 (measured on the 2-core AMD EPYC), the simulation once (cached). Each backend
trains in a child process::

    python -m benchmarks.ssh_gpu --out runs/ssh-gpu                 # both backends, on cuda / gpu
    python -m benchmarks.ssh_gpu --out runs/ssh-gpu -- --steps 4000 # anything after -- goes to train

A run directory that already holds a checkpoint is continued (``--resume``), so a call cut off by
a time limit loses at most one checkpoint interval: call it again. The simulation is cached (set
``PIPEKIT_CACHE`` to a directory that survives between calls). Each backend's row, with the card
named, goes to stdout as the README's table row and to ``<out>/summary.json``.

``--smoke`` runs the same code path on a 32 x 32 box for 4 steps on the CPU (what the tests run).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

GRID = 240
# 4dvarnet-starter's sizes (config/xp/base.yaml): its K, its modulator's and prior's widths, its peak rate; about
# its training period (218 days of NATL60's year).
STARTER_SIZES = ["--solver-steps", "10", "--hidden-dim", "48", "--prior-hidden-dim", "32", "--lr", "1e-3",
                 "--train-days", "300"]
# The platform name each backend's --device takes for a GPU.
GPU_DEVICE = {"vardax_torch": "cuda", "vardax_jax": "gpu"}
SMOKE = ["--steps", "4", "--checkpoint-every", "2", "--batch-size", "2", "--solver-steps", "2", "--hidden-dim", "3",
         "--prior-hidden-dim", "3", "--window-length", "4", "--train-days", "8", "--test-days", "8", "--no-figures"]
SMOKE_GRID = 32


def card(backend: str, device: str) -> str:
    """The accelerator's name as its framework reports it (the CPU's where the run used the CPU)."""
    if device == "cpu":
        return f"CPU ({platform.processor() or platform.machine()})"
    if backend == "vardax_torch":
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    import jax

    return jax.devices(device)[0].device_kind


def train_argv(run: Path, grid: int, device: str, extra: list[str]) -> list[str]:
    """The ``train`` command line of one backend's run (``--resume`` when it holds a checkpoint)."""
    argv = ["train", "--system", "ssh", "--grid", str(grid), "--patch-size", str(grid), "--device", device,
            "--out", str(run), "--no-progress", *extra]
    if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
        argv.append("--resume")
    return argv


def train(backend: str, run: Path, grid: int, device: str, extra: list[str]) -> tuple[int, float]:
    """Trains (or continues) one backend's run in a child process: its exit status and wall time
    in seconds (a usage error is the child's one line on stderr)."""
    command = [sys.executable, "-m", backend, *train_argv(run, grid, device, extra)]
    print("$", " ".join(command), file=sys.stderr, flush=True)
    started = time.perf_counter()
    status = subprocess.run(command, stdout=subprocess.DEVNULL).returncode
    return status, time.perf_counter() - started


def row(summary: dict) -> str:
    """``summary`` as a row of the README's table."""
    learned, oi = summary["learned"], summary["oi"]
    return (f"| {summary['backend']}, {summary['card']} | {summary['grid']} x {summary['grid']} | {summary['steps']} | "
            f"{learned['mu']:.4f} | {learned['lambda_x_deg']:.3f} | {oi['mu']:.4f} | {oi['lambda_x_deg']:.3f} | "
            f"{learned['mu'] - oi['mu']:+.4f}, {learned['lambda_x_deg'] / oi['lambda_x_deg']:.3f} x | "
            f"{summary['train_minutes']:.1f} |")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssh_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ssh-gpu"), help="one run directory per backend below it")
    parser.add_argument("--backends", nargs="+", default=list(GPU_DEVICE), choices=list(GPU_DEVICE))
    parser.add_argument("--grid", type=int, default=GRID, help="the box, grid x grid points (the patch is the box)")
    parser.add_argument("--smoke", action="store_true", help="a 32 x 32 box, 4 steps, on the CPU")
    args = parser.parse_args(own)
    grid = SMOKE_GRID if args.smoke else args.grid
    extra = [*SMOKE, *extra] if args.smoke else [*STARTER_SIZES, *extra]
    summaries = []
    for backend in args.backends:
        device = "cpu" if args.smoke else GPU_DEVICE[backend]
        run = args.out / backend
        status, seconds = train(backend, run, grid, device, extra)
        if status:
            print(f"python -m benchmarks.ssh_gpu: {backend} train stopped with exit status {status}", file=sys.stderr)
            return status
        metrics = json.loads((run / "metrics.json").read_text())
        summaries.append({
            "backend": backend, "card": card(backend, device), "grid": grid, "steps": metrics["steps"],
            "learned": metrics["scores"]["learned"], "oi": metrics["scores"]["oi"],
            "train_minutes": metrics["learning_curve"][-1]["train_seconds"] / 60, "call_seconds": seconds,
            "versions": {name: importlib.metadata.version(name) for name in ("jax", "torch", "pipekit-cycle")
                         if _installed(name)},
            "arguments": extra,
        })
        print(row(summaries[-1]), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=1))
    return 0


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
