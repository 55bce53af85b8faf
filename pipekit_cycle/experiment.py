"""A backend-neutral experiment: train a 4DVarNet on a Lorenz system, checkpoint, evaluate.

Written only against the `pipekit_cycle.Backend` protocol (plus the optional
``export_optimizer_state`` / ``import_optimizer_state`` for bit-exact resume), so
``python -m vardax_jax train ...`` and ``python -m vardax_torch train ...`` run the same code
with the same flags. Data are simulated from the seed; the state is standardised with the
training truth's mean and standard deviation (per component) before it reaches the model,
and every reported RMSE is in the physical units.

Output directory::

    checkpoint.safetensors   model parameters + the FourDVarNetConfig (atomic write)
    optimizer.safetensors    optimizer state (atomic write)
    state.json               step, sampler state, loss history, experiment config (atomic write)
    metrics.json             held-out RMSE: learned solver, linear interpolation, 4D-Var
    reconstruction.png, loss.png   (when matplotlib is installed)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np

from .adjoints import parse_adjoint
from .config import FourDVarNetConfig, OptimizerConfig
from .params import atomic_write, load_params, save_params
from .problems import Problem, lorenz63, lorenz96

__all__ = ["ExperimentConfig", "build_parser", "linear_interpolation", "main", "rmse", "run_experiment"]

SYSTEMS = ("l63", "l96")
QUASI_STATIC_STAGE = 50


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """What to train and how. ``window_length`` ``None``: 200 for l63 (Fablet et al. 2021),
    10 for l96."""

    system: Literal["l63", "l96"] = "l96"
    adjoint: str = "checkpoint"
    steps: int = 300
    batch_size: int = 8
    solver_steps: int = 5
    seed: int = 0
    lr: float = 3e-3
    train_windows: int = 64
    test_windows: int = 16
    window_length: int | None = None
    hidden_dim: int = 16
    prior_hidden_dim: int = 16
    checkpoint_every: int = 50
    fourdvar_windows: int = 4

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"system must be one of {', '.join(SYSTEMS)}, got {self.system!r}")
        parse_adjoint(self.adjoint)
        for field in ("steps", "batch_size", "solver_steps", "train_windows", "test_windows", "checkpoint_every"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an int >= 1, got {value!r}")
        if self.batch_size > self.train_windows:
            raise ValueError(f"batch_size ({self.batch_size}) must be <= train_windows ({self.train_windows})")

    @property
    def length(self) -> int:
        if self.window_length is not None:
            return self.window_length
        return 200 if self.system == "l63" else 10

    def problem(self) -> tuple[Problem, Problem]:
        """Train and held-out windows, simulated from ``seed``."""
        total = self.train_windows + self.test_windows
        if self.system == "l63":
            problem = lorenz63(total, self.length, seed=self.seed)
        else:
            problem = lorenz96(total, self.length, seed=self.seed)
        return problem.split(self.train_windows)

    def model_config(self) -> FourDVarNetConfig:
        state_shape = (3,) if self.system == "l63" else (40,)
        return FourDVarNetConfig(
            state_shape=state_shape,
            n_time=self.length,
            hidden_dim=self.hidden_dim,
            prior_hidden_dim=self.prior_hidden_dim,
            n_solver_steps=self.solver_steps,
            padding="zeros" if self.system == "l63" else "circular",  # Lorenz-96 is periodic
            solver_adjoint=parse_adjoint(self.adjoint),
        )

    def optimizer_config(self) -> OptimizerConfig:
        return OptimizerConfig(name="adam", lr=self.lr)


def rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(estimate) - np.asarray(truth)) ** 2)))


def linear_interpolation(obs: np.ndarray) -> np.ndarray:
    """Fill NaNs of ``obs`` (``(W, T, N)``) along time by linear interpolation per window and
    component, holding the first/last observation constant beyond the ends (0 if a series has
    no observation)."""
    filled = np.zeros_like(obs)
    times = np.arange(obs.shape[1])
    for w in range(obs.shape[0]):
        for n in range(obs.shape[2]):
            series = obs[w, :, n]
            seen = np.isfinite(series)
            if seen.any():
                filled[w, :, n] = np.interp(times, times[seen], series[seen])
    return filled


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    atomic_write(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


class _Standardiser:
    """``(x - mean) / std`` per component, with statistics of the training truth."""

    def __init__(self, truth: np.ndarray) -> None:
        axes = tuple(range(truth.ndim - 1))
        self.mean = truth.mean(axis=axes)
        self.std = truth.std(axis=axes)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return x * self.std + self.mean


def _predict(backend: ModuleType, model: Any, obs: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = []
    for start in range(0, obs.shape[0], batch_size):
        batch = backend.make_batch(obs[start : start + batch_size])
        outputs.append(np.asarray(backend.to_numpy(model(batch))))
    return np.concatenate(outputs)


def _fourdvar_rmse(backend: ModuleType, problem: Problem, windows: int) -> float | None:
    """Classical strong-constraint 4D-Var on the first held-out windows, where the backend has
    the dynamics layer. Background: the linearly interpolated observations at the first time,
    with the observation noise variance as its (diagonal) covariance; the analysis is rolled
    out through the window and compared with the truth.

    Long chaotic windows give the strong-constraint cost many local minima (a 200-step
    Lorenz-63 window landed 14 units away from the truth), so the window is grown
    quasi-statically (Pires, Vautard & Talagrand 1996): 50 steps, then 100, ..., each stage's
    background being the previous stage's analysis.
    """
    needed = ("strong_4dvar_numpy", "rollout_numpy")
    if windows < 1 or not all(hasattr(backend, name) for name in needed):
        return None
    obs, truth = problem.obs[:windows], problem.truth[:windows]
    variance = problem.obs_noise_std**2
    analysis = linear_interpolation(obs)[:, 0]
    length = obs.shape[1]
    for stage in sorted({*range(min(QUASI_STATIC_STAGE, length), length, QUASI_STATIC_STAGE), length}):
        analysis = backend.strong_4dvar_numpy(
            problem.system,
            analysis,
            obs[:, :stage],
            problem.dt,
            background_cov=np.full(analysis.shape[-1], variance),
            obs_var=variance,
            parameters=problem.parameters,
        )
    trajectory = backend.rollout_numpy(
        problem.system, analysis, obs.shape[1] - 1, problem.dt, parameters=problem.parameters
    )
    return rmse(trajectory, truth)


def _figures(out: Path, truth: np.ndarray, obs: np.ndarray, estimate: np.ndarray, losses: list[float]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    components = min(3, truth.shape[-1])
    figure, axes = plt.subplots(components, 1, figsize=(8, 2.2 * components), sharex=True, squeeze=False)
    for n in range(components):
        axis = axes[n, 0]
        axis.plot(truth[:, n], color="black", label="truth")
        axis.plot(estimate[:, n], color="tab:blue", label="reconstruction")
        axis.plot(obs[:, n], "o", color="tab:red", markersize=3, label="observations")
        axis.set_ylabel(f"x[{n}]")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time step")
    figure.tight_layout()
    figure.savefig(out / "reconstruction.png", dpi=100)
    plt.close(figure)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.semilogy(np.arange(1, len(losses) + 1), losses)
    axis.set_xlabel("training step")
    axis.set_ylabel("training loss (standardised MSE)")
    figure.tight_layout()
    figure.savefig(out / "loss.png", dpi=100)
    plt.close(figure)
    return ["reconstruction.png", "loss.png"]


def _checkpoint(out: Path, backend: ModuleType, model: Any, opt_state: Any, state: dict[str, Any]) -> None:
    save_params(out / "checkpoint.safetensors", backend.export_params(model), model.config)
    _save_arrays(out / "optimizer.safetensors", backend.export_optimizer_state(opt_state))
    atomic_write(out / "state.json", json.dumps(state, indent=1).encode())


def run_experiment(
    backend: ModuleType,
    config: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, checkpoint every ``checkpoint_every`` steps, evaluate; returns the metrics.

    With ``resume``, training restarts from ``out``'s last checkpoint and continues to
    ``config.steps`` exactly as if it had not stopped (same batches, same optimizer state).
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = config.problem()
    scale = _Standardiser(train.truth)
    train_obs, train_truth = scale.forward(train.obs), scale.forward(train.truth)
    model = backend.build_model(config.model_config(), seed=config.seed)
    optimizer, opt_state = backend.make_optimizer(config.optimizer_config(), model)
    sampler = np.random.default_rng(config.seed + 1)
    losses: list[float] = []
    start = 0
    state_path = out_dir / "state.json"
    if resume and state_path.exists():
        saved = json.loads(state_path.read_text())
        if saved["experiment"] != dataclasses.asdict(config) | {"steps": saved["experiment"]["steps"]}:
            raise ValueError(f"{out_dir} holds a run of another experiment: {saved['experiment']}")
        params, _ = load_params(out_dir / "checkpoint.safetensors")
        model = backend.import_params(model, params)
        opt_state = backend.import_optimizer_state(
            optimizer, opt_state, _load_arrays(out_dir / "optimizer.safetensors")
        )
        sampler.bit_generator.state = saved["sampler"]
        losses, start = list(saved["losses"]), int(saved["step"])
    bar = _progress(config.steps, start, progress)
    for step in range(start, config.steps):
        chosen = sampler.choice(config.train_windows, size=config.batch_size, replace=False)
        batch = backend.make_batch(train_obs[chosen], target=train_truth[chosen])
        model, opt_state, loss = backend.train_step(model, batch, optimizer, opt_state)
        losses.append(float(loss))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.update(1)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            state = {
                "step": step + 1,
                "sampler": sampler.bit_generator.state,
                "losses": losses,
                "experiment": dataclasses.asdict(config),
                "backend": backend.__name__,
            }
            _checkpoint(out_dir, backend, model, opt_state, state)
    bar.close()
    estimate = scale.inverse(_predict(backend, model, scale.forward(test.obs), config.batch_size))
    metrics = {
        "backend": backend.__name__,
        "system": config.system,
        "adjoint": config.adjoint,
        "steps": config.steps,
        "rmse_learned": rmse(estimate, test.truth),
        "rmse_interpolation": rmse(linear_interpolation(test.obs), test.truth),
        "rmse_fourdvar": _fourdvar_rmse(backend, test, config.fourdvar_windows),
        "obs_noise_std": test.obs_noise_std,
        "final_train_loss": losses[-1] if losses else None,
    }
    metrics["figures"] = _figures(out_dir, test.truth[0], test.obs[0], estimate[0], losses)
    atomic_write(out_dir / "metrics.json", json.dumps(metrics, indent=1).encode())
    return metrics


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step")


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The ``train`` command line, identical for every backend."""
    parser = argparse.ArgumentParser(prog=prog, description="Train a 4DVarNet on a Lorenz system.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train, checkpoint and evaluate")
    defaults = ExperimentConfig()
    train.add_argument("--system", choices=SYSTEMS, default=defaults.system)
    train.add_argument("--adjoint", default=defaults.adjoint, help="e.g. checkpoint, truncated:2, implicit")
    train.add_argument("--steps", type=int, default=defaults.steps)
    train.add_argument("--batch-size", type=int, default=defaults.batch_size)
    train.add_argument("--solver-steps", type=int, default=defaults.solver_steps)
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--train-windows", type=int, default=defaults.train_windows)
    train.add_argument("--test-windows", type=int, default=defaults.test_windows)
    train.add_argument("--window-length", type=int, default=None)
    train.add_argument("--hidden-dim", type=int, default=defaults.hidden_dim)
    train.add_argument("--prior-hidden-dim", type=int, default=defaults.prior_hidden_dim)
    train.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    train.add_argument("--fourdvar-windows", type=int, default=defaults.fourdvar_windows)
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(backend: ModuleType, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m <backend> train ...``."""
    args = build_parser(f"python -m {backend.__name__}").parse_args(argv)
    config = ExperimentConfig(
        system=args.system,
        adjoint=args.adjoint,
        steps=args.steps,
        batch_size=args.batch_size,
        solver_steps=args.solver_steps,
        seed=args.seed,
        lr=args.lr,
        train_windows=args.train_windows,
        test_windows=args.test_windows,
        window_length=args.window_length,
        hidden_dim=args.hidden_dim,
        prior_hidden_dim=args.prior_hidden_dim,
        checkpoint_every=args.checkpoint_every,
        fourdvar_windows=args.fourdvar_windows,
    )
    metrics = run_experiment(backend, config, args.out, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(metrics, indent=1))
    return 0
