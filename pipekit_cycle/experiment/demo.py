"""``python -m pipekit_cycle.experiment.demo``: the same Lorenz-96 experiment on every installed backend,
with the same seed, and the held-out metrics side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..backends import available_backends, load_backend
from .config import ExperimentConfig
from .loop import run_experiment

ROWS = (
    ("rmse_learned", "learned 4DVarNet solver"),
    ("rmse_interpolation", "linear interpolation of the observations"),
    ("rmse_fourdvar", "classical strong-constraint 4D-Var"),
    ("obs_noise_std", "observation noise (std)"),
    ("final_train_loss", "final training loss (standardised)"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipekit_cycle.experiment.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default=",".join(available_backends()))
    args = parser.parse_args(argv)
    names = [name for name in args.backends.split(",") if name]
    if not names:
        print("no backend installed: pip install 'pipekit-cycle[all]'", file=sys.stderr)
        return 1
    config = ExperimentConfig(system="l96", steps=args.steps, seed=args.seed, train_windows=512, test_windows=64)
    metrics = {}
    for name in names:
        print(f"== training on Lorenz-96 with {name} ({config.steps} steps, adjoint {config.adjoint}) ==")
        metrics[name] = run_experiment(load_backend(name), config, Path(args.out) / name, overwrite=True)
    width = max(len(label) for _, label in ROWS)
    print()
    print("held-out RMSE".ljust(width) + "".join(f"  {name:>14}" for name in names))
    for key, label in ROWS:
        cells = "".join(
            f"  {metrics[n][key]:>14.4f}" if metrics[n][key] is not None else f"  {'-':>14}" for n in names
        )
        print(label.ljust(width) + cells)
    learned_wins = all(m["rmse_learned"] < m["rmse_interpolation"] for m in metrics.values())
    print(f"\nlearned solver beats interpolation on every backend: {'yes' if learned_wins else 'NO'}")
    print(f"figures and checkpoints: {args.out}/<backend>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
