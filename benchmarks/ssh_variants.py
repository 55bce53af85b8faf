r"""``python -m benchmarks.ssh_variants --variant NAME``: the SSH job's training variants the ablation measured and
the product does not carry (README, "Mapping sea-surface height", issue 36).

The torch driver (``python -m vardax_torch train --system ssh``, every flag after the variant's
own passed to it) with its training step replaced through the public `vardax_torch.make_train_step`:

* ``k-curriculum``: the solver's K follows ``--ks`` (default 2 5 10) in equal parts of ``--steps``,
  the last K mapping the held-out period (as the first 4DVarNet papers grew the number of
  gradient iterations between epochs). Fresh runs only: the part is counted from this process's
  first step.
* ``gradient-loss``: the loss of 4dvarnet-starter's training, its reconstruction and gradient
  terms: :math:`L = \mathrm{MSE}(x, t) + w\,(\mathrm{MSE}(\partial_x x, \partial_x t)
  + \mathrm{MSE}(\partial_y x, \partial_y t))`, forward differences on the grid, :math:`w` =
  ``--gradient-weight`` (default 10: the two terms about equal on the default targets, whose
  variance is 12.6 times their differences').

Both measured on the defaults, seed 0 (README's ablation): neither became a default.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

import torch

import vardax_torch as vd
from pipekit_cycle.experiment import main as driver
from pipekit_cycle.experiment.ssh import SSH

VARIANTS = ("k-curriculum", "gradient-loss")


def forward_difference(field: torch.Tensor, axis: int) -> torch.Tensor:
    """``field[i + 1] - field[i]`` along ``axis``."""
    return field.narrow(axis, 1, field.shape[axis] - 1) - field.narrow(axis, 0, field.shape[axis] - 1)


def gradient_loss(weight: float) -> Callable[[Any, Any], torch.Tensor]:
    """The reconstruction loss plus ``weight`` times the squared error of the state's differences."""

    def loss_fn(model: Any, batch: Any) -> torch.Tensor:
        state, target = model(batch), batch.target
        differences = sum(vd.reconstruction_loss(forward_difference(state, axis), forward_difference(target, axis))
                          for axis in (-1, -2))
        return vd.reconstruction_loss(state, target) + weight * differences

    return loss_fn


def k_curriculum(ks: Sequence[int], steps: int) -> Callable[..., Any]:
    """`vardax_torch.train_step` with the model's K set, before each step, to the part's."""
    taken = [0]

    def train_step(model: Any, batch: Any, optimizer: torch.optim.Optimizer, opt_state: Any) -> Any:
        k = ks[min(len(ks) - 1, taken[0] * len(ks) // steps)]
        if model.config.n_solver_steps != k:
            print(f"step {taken[0]}: K = {k}", file=sys.stderr, flush=True)
            model.config = model.config.replace(n_solver_steps=k)
        taken[0] += 1
        return vd.train_step(model, batch, optimizer, opt_state)

    return train_step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssh_variants", description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 5, 10], help="k-curriculum: K in each part")
    parser.add_argument("--gradient-weight", type=float, default=10.0, help="gradient-loss: w")
    parser.add_argument("--steps", type=int, default=SSH.defaults["steps"], help="train's --steps")
    args, train = parser.parse_known_args(argv)
    if args.variant == "k-curriculum" and "--resume" in train:
        parser.error("--variant k-curriculum runs fresh only (its parts are counted from this process's first "
                     "step): drop --resume, or --overwrite to start again")
    backend = types.ModuleType(vd.__name__)  # the backend the driver sees: vardax_torch, one step replaced
    backend.__dict__.update(vars(vd))
    if args.variant == "k-curriculum":
        backend.train_step = k_curriculum(args.ks, args.steps)
    else:
        backend.train_step = vd.make_train_step(gradient_loss(args.gradient_weight), name="gradient_loss_step")
    return driver(backend, ["train", "--system", "ssh", "--steps", str(args.steps), *train])


if __name__ == "__main__":
    sys.exit(main())
