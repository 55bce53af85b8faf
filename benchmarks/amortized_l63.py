"""Amortized posteriors on Lorenz-63: regression (diagonal Gaussian) vs flow head.

Data: ``pipekit_cycle.problems.lorenz63`` windows of ``--window`` steps (dt 0.01), the full
state observed every ``--obs-every`` steps with noise variance 2, separate train and held-out
windows (different seeds). The state is standardized per component by the TRAINING truth's
mean and standard deviation (applied to truth and observations alike; the noise scales with
it), so both heads see O(1) numbers; NLLs below are in standardized units (nats per window;
add ``sum(log std) * T`` to get nats in the original units -- the same shift for both heads).

Training: full-batch Adam (``optax.adam`` / ``torch.optim.Adam``, same lr) on
``amortized_nll_loss_fn`` for ``--steps`` steps via ``amortized_train_step``. Reported per
head and backend: held-out NLL before and after, and the held-out coverage of the central 90%
posterior interval (``coverage(model, batch, 0.9, ...)``; calibrated means ~0.90).

    .venv/bin/python benchmarks/amortized_l63.py [--backend jax|torch|both] [--steps 400]
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import numpy as np

from pipekit_cycle.problems import lorenz63


class Arrays(NamedTuple):
    obs: np.ndarray
    mask: np.ndarray
    truth: np.ndarray


def data(n_train: int, n_test: int, window: int, obs_every: int) -> tuple[Arrays, Arrays]:
    train = lorenz63(n_train, window, obs_every=obs_every, spinup_steps=500, seed=0)
    test = lorenz63(n_test, window, obs_every=obs_every, spinup_steps=500, seed=1)
    mean, std = train.truth.mean((0, 1)), train.truth.std((0, 1))

    def standardize(problem) -> Arrays:
        obs = np.where(problem.mask > 0, (np.nan_to_num(problem.obs) - mean) / std, 0.0)
        return Arrays(obs, problem.mask, (problem.truth - mean) / std)

    return standardize(train), standardize(test)


def run_jax(train: Arrays, test: Arrays, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_x64", True)
    from vardax_jax.amortized import amortized_nll_loss_fn, amortized_train_step, build_amortized, coverage

    class Batch(NamedTuple):
        input: jax.Array
        mask: jax.Array
        target: jax.Array

    tr = Batch(*(jnp.asarray(a) for a in train))
    te = Batch(*(jnp.asarray(a) for a in test))
    nll = eqx.filter_jit(amortized_nll_loss_fn)
    results = {}
    for kind in ("regression", "flow"):
        model = build_amortized(kind, (3,), train.obs.shape[1], hidden=args.hidden, n_layers=2, n_coupling=4, seed=0)
        optimizer = optax.adam(args.lr)
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        before = float(nll(model, te))
        start = time.perf_counter()
        for _ in range(args.steps):
            model, opt_state, _ = amortized_train_step(model, tr, optimizer, opt_state)
        seconds = time.perf_counter() - start
        results[kind] = {
            "train_nll": float(nll(model, tr)),
            "heldout_nll_before": before,
            "heldout_nll_after": float(nll(model, te)),
            "coverage90": coverage(model, te, 0.9, 500, key=jax.random.key(0, impl="rbg")),
            "seconds": seconds,
        }
    return results


def run_torch(train: Arrays, test: Arrays, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    import torch

    from vardax_torch.amortized import amortized_nll_loss_fn, amortized_train_step, build_amortized, coverage

    class Batch(NamedTuple):
        input: torch.Tensor
        mask: torch.Tensor
        target: torch.Tensor

    tr = Batch(*(torch.from_numpy(a) for a in train))
    te = Batch(*(torch.from_numpy(a) for a in test))
    results = {}
    for kind in ("regression", "flow"):
        model = build_amortized(
            kind, (3,), train.obs.shape[1], hidden=args.hidden, n_layers=2, n_coupling=4, seed=0, dtype=torch.float64
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        opt_state = optimizer.state_dict()
        with torch.no_grad():
            before = float(amortized_nll_loss_fn(model, te))
        start = time.perf_counter()
        for _ in range(args.steps):
            model, opt_state, _ = amortized_train_step(model, tr, optimizer, opt_state)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            results[kind] = {
                "train_nll": float(amortized_nll_loss_fn(model, tr)),
                "heldout_nll_before": before,
                "heldout_nll_after": float(amortized_nll_loss_fn(model, te)),
                "coverage90": coverage(model, te, 0.9, 500, seed=0),
                "seconds": seconds,
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("jax", "torch", "both"), default="both")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--obs-every", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=256)
    args = parser.parse_args()
    train, test = data(args.n_train, args.n_test, args.window, args.obs_every)
    print(
        f"Lorenz-63: {args.n_train} train / {args.n_test} held-out windows of {args.window} steps, "
        f"obs every {args.obs_every} (noise var 2), standardized; {args.steps} full-batch Adam steps, "
        f"lr {args.lr}, hidden {args.hidden}, float64"
    )
    backends = ("jax", "torch") if args.backend == "both" else (args.backend,)
    print(f"{'backend':8} {'head':11} {'NLL before':>11} {'train NLL':>10} {'held-out NLL':>13} {'cov90':>6} {'s':>6}")
    for backend in backends:
        results = (run_jax if backend == "jax" else run_torch)(train, test, args)
        for kind, r in results.items():
            print(
                f"{backend:8} {kind:11} {r['heldout_nll_before']:11.2f} {r['train_nll']:10.2f} "
                f"{r['heldout_nll_after']:13.2f} {r['coverage90']:6.3f} {r['seconds']:6.1f}"
            )


if __name__ == "__main__":
    main()
