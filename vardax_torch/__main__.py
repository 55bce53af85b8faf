"""``python -m vardax_torch train ...``: the backend-neutral experiment driver on this backend;
``python -m vardax_torch import-ocean4dvarnet CKPT --out FILE.safetensors ...``: an
ocean4dvarnet checkpoint as canonical parameters (`vardax_torch.from_ocean4dvarnet`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import vardax_torch
from pipekit_cycle import save_params
from pipekit_cycle.experiment import main
from pipekit_cycle.experiment.cli import Command
from pipekit_cycle.validation import grid_rule

IMPORT_COMMAND = "import-ocean4dvarnet"
EXIT_USAGE = 2


def import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m vardax_torch {IMPORT_COMMAND}", allow_abbrev=False,
        description="Write an ocean4dvarnet (Lightning) checkpoint's GradSolver as canonical parameters and "
                    "config (safetensors), loadable by vardax_jax and vardax_torch. What a checkpoint does not "
                    "record is given by flags; the defaults are ocean4dvarnet's.",
    )
    parser.add_argument("checkpoint", help="a Lightning checkpoint (.ckpt) or a torch-saved state_dict")
    parser.add_argument("--out", required=True, help="the .safetensors file to write (required)")
    parser.add_argument("--state-shape", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="the training patch, recorded in the config; the model maps any grid the rule allows "
                             "whatever it is (default: the checkpoint's rec_weight patch, else the smallest legal "
                             "grid)")
    parser.add_argument("--n-step", type=int, required=True, help="GradSolver's n_step (required)")
    parser.add_argument("--lr-grad", type=float, default=0.2, help="GradSolver's lr_grad; default: %(default)s")
    parser.add_argument("--lbd", type=float, default=1.0, help="GradSolver's lbd; default: %(default)s")
    parser.add_argument("--obs-weight", type=float, default=1.0, help="BaseObsCost's w; default: %(default)s")
    parser.add_argument("--prior-downsample", type=int, default=None,
                        help="BilinAEPriorCost's down-sampling factor; default: none (ocean4dvarnet's)")
    parser.add_argument("--grad-mod-downsample", type=int, default=None,
                        help="ConvLstmGradModel's down-sampling factor; default: none (ocean4dvarnet's)")
    parser.add_argument("--no-bilin-quad", dest="bilin_quad", action="store_false",
                        help="the prior's quadratic term is bilin_21 * bilin_22 (default: bilin_21 squared)")
    parser.add_argument("--dropout", type=float, default=0.1,
                        help="ConvLstmGradModel's dropout rate; default: %(default)s")
    return parser


def import_ocean4dvarnet(argv: Sequence[str]) -> int:
    parser = import_parser()
    args = parser.parse_args(argv)
    try:
        params, config = vardax_torch.from_ocean4dvarnet(
            args.checkpoint, state_shape=None if args.state_shape is None else tuple(args.state_shape),
            n_step=args.n_step, lr_grad=args.lr_grad,
            lbd=args.lbd, obs_weight=args.obs_weight, prior_downsample=args.prior_downsample,
            grad_mod_downsample=args.grad_mod_downsample, bilin_quad=args.bilin_quad, dropout=args.dropout,
        )
    except (OSError, ValueError, TypeError) as error:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {error}\n")
    try:
        save_params(args.out, params, config)
    except OSError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    print(f"wrote {args.out}: {len(params)} parameters, {config.n_solver_steps} solver steps, "
          f"n_time {config.n_time}, training patch (state_shape) {config.state_shape}; maps any grid with "
          f"{grid_rule(config.ndim, config.kernel_size, (config.prior_downsample, config.grad_mod_downsample))}")
    return 0


COMMANDS = (
    Command(IMPORT_COMMAND, "write an ocean4dvarnet checkpoint as parameters both backends load", import_ocean4dvarnet),
)

if __name__ == "__main__":
    sys.exit(main(vardax_torch, commands=COMMANDS))
