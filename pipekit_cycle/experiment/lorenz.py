"""The Lorenz systems as driver tasks (``--system l63``, ``--system l96``).

Windows of a simulated Lorenz-63 or Lorenz-96 trajectory (`pipekit_cycle.lorenz63`,
`pipekit_cycle.lorenz96`) from the experiment's seed, the state standardised per component
with the training truth's statistics before it reaches the model. Scored by the held-out RMSE
(physical units) of the learned solver, of linear interpolation in time and of classical
strong-constraint 4D-Var where the backend has the dynamics layer; figures:
``reconstruction.png``, ``loss.png`` and (Lorenz-96) ``hovmoeller.png``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import FourDVarNetConfig
from ..placement import Placement
from ..problems import Problem, lorenz63, lorenz96
from ..ssh.baselines import linear_interpolation_time
from ..ssh.mapping import Standardiser
from ..ssh.metrics import rmse
from .errors import ConfigError, FiguresSkippedWarning
from .task import Setting, progress_bar

if TYPE_CHECKING:
    from ..adjoints import AdjointSpec
    from .config import ExperimentConfig

__all__ = ["LORENZ63", "LORENZ96", "QUASI_STATIC_STAGE", "LorenzTask", "fourdvar_stages"]

QUASI_STATIC_STAGE = 50
FIGURE_FILES = ("reconstruction.png", "loss.png", "hovmoeller.png")

# `train --help` appends each system's default (`LorenzTask.defaults`), so a text states none.
SETTINGS = (
    Setting("train_windows", int, "training windows"),
    Setting("test_windows", int, "held-out windows"),
    Setting("fourdvar_windows", int, "classical 4D-Var runs on up to this many held-out windows (0: none)"),
)


@dataclasses.dataclass(frozen=True)
class LorenzTask:
    """A Lorenz system as a `pipekit_cycle.experiment.Task`: its name, its simulator, its model's
    state shape and padding, and the defaults under which a first run with no flags ends with
    the learned solver below linear interpolation (README, "Results").

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import ExperimentConfig
    from pipekit_cycle.experiment.lorenz import LORENZ96

    config = ExperimentConfig(system="l96", train_windows=4, test_windows=2, batch_size=2)
    data = LORENZ96.prepare(config, progress=False)
    obs, truth = data.training_samples([0, 3])
    assert obs.shape == truth.shape == (2, 10, 40) and data.n_samples == 4
    ```
    """

    name: str
    description: str
    simulate: Any  # (n_windows, window_length, seed=...) -> Problem
    state_dim: int
    padding: str
    defaults: Mapping[str, Any]
    settings: tuple[Setting, ...] = SETTINGS
    outputs: tuple[str, ...] = FIGURE_FILES

    def resolve(self, config: ExperimentConfig) -> dict[str, Any]:
        resolved = {}
        for setting in self.settings:
            value = getattr(config, setting.name)
            resolved[setting.name] = self.defaults[setting.name] if value is None else value
        for field in ("train_windows", "test_windows"):
            _positive_int(field, resolved[field], 1)
        _positive_int("fourdvar_windows", resolved["fourdvar_windows"], 0)
        if config.batch_size > resolved["train_windows"]:
            raise ConfigError("batch_size", f"must be at most the number of training windows "
                              f"({resolved['train_windows']}), got {config.batch_size}")
        return resolved

    def model_config(self, config: ExperimentConfig, adjoint: AdjointSpec) -> FourDVarNetConfig:
        return FourDVarNetConfig(
            state_shape=(self.state_dim,), n_time=config.window_length, hidden_dim=config.hidden_dim,
            prior_hidden_dim=config.prior_hidden_dim, n_solver_steps=config.solver_steps, padding=self.padding,
            solver_adjoint=adjoint,
        )

    def problem(self, config: ExperimentConfig) -> tuple[Problem, Problem]:
        """Training and held-out windows, simulated from ``config.seed``."""
        total = config.train_windows + config.test_windows
        return self.simulate(total, config.window_length, seed=config.seed).split(config.train_windows)

    def prepare(self, config: ExperimentConfig, *, progress: bool) -> LorenzData:
        return LorenzData(config, *self.problem(config))


def _positive_int(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")


# Lorenz-96 needs many windows (64 overfit: held-out RMSE 1.53 vs interpolation's 1.28 after 300
# steps); Lorenz-63 needs 4000 steps (after 2000 it is at interpolation's level).
LORENZ96 = LorenzTask(
    name="l96", description="Lorenz-96, 40 variables, periodic", simulate=lorenz96, state_dim=40,
    padding="circular",
    defaults={"steps": 600, "batch_size": 8, "solver_steps": 5, "hidden_dim": 16, "prior_hidden_dim": 16,
              "window_length": 10, "train_windows": 512, "test_windows": 16, "fourdvar_windows": 4,
              "checkpoint_every": 50},
)
LORENZ63 = LorenzTask(
    name="l63", description="Lorenz-63, 3 variables (Fablet et al. 2021's 200-step windows)", simulate=lorenz63,
    state_dim=3, padding="zeros",
    defaults={"steps": 4000, "batch_size": 16, "solver_steps": 8, "hidden_dim": 32, "prior_hidden_dim": 32,
              "window_length": 200, "train_windows": 1024, "test_windows": 64, "fourdvar_windows": 8,
              "checkpoint_every": 50},
)


def interpolate(obs: np.ndarray) -> np.ndarray:
    """Windows ``(W, T, N)`` filled by linear interpolation in time, 0 where a series is never seen."""
    return linear_interpolation_time(obs, axis=1, fill_value=0.0)


def fourdvar_stages(length: int) -> list[int]:
    """The window lengths of the quasi-static 4D-Var: 50, 100, ..., ``length``."""
    return sorted({*range(min(QUASI_STATIC_STAGE, length), length, QUASI_STATIC_STAGE), length})


def _has_fourdvar(backend: ModuleType, windows: int) -> bool:
    return windows >= 1 and all(hasattr(backend, name) for name in ("strong_4dvar_numpy", "rollout_numpy"))


def _fourdvar(backend: ModuleType, problem: Problem, windows: int, bar: Any) -> np.ndarray | None:
    """Classical strong-constraint 4D-Var trajectories ``(windows, T, N)`` of the first held-out
    windows, where the backend has the dynamics layer. Background: the linearly interpolated
    observations at the first time, with the observation noise variance as its (diagonal)
    covariance; the analysis is rolled out through the window.

    Long chaotic windows give the strong-constraint cost many local minima (a 200-step
    Lorenz-63 window landed 14 units away from the truth), so the window is grown
    quasi-statically (Pires, Vautard & Talagrand 1996): 50 steps, then 100, ..., each stage's
    background being the previous stage's analysis.
    """
    if not _has_fourdvar(backend, windows):
        return None
    obs = problem.obs[:windows]
    variance = problem.obs_noise_std**2
    analysis = interpolate(obs)[:, 0]
    for stage in fourdvar_stages(obs.shape[1]):
        analysis = backend.strong_4dvar_numpy(
            problem.system, analysis, obs[:, :stage], problem.dt,
            background_cov=np.full(analysis.shape[-1], variance), obs_var=variance, parameters=problem.parameters,
        )
        bar.update(1)
    trajectory = backend.rollout_numpy(
        problem.system, analysis, obs.shape[1] - 1, problem.dt, parameters=problem.parameters
    )
    bar.update(1)
    return np.asarray(trajectory)


def _predict(
    backend: ModuleType, model: Any, obs: np.ndarray, batch_size: int, bar: Any, placement: Placement
) -> np.ndarray:
    outputs = []
    for start in range(0, obs.shape[0], batch_size):
        batch = backend.make_batch(obs[start : start + batch_size], **placement.batch_kwargs)
        outputs.append(np.asarray(backend.to_numpy(model(batch))))
        bar.update(1)
    return np.concatenate(outputs)


class LorenzData:
    """Windows of a Lorenz run (`pipekit_cycle.experiment.TaskData`), standardised per component."""

    def __init__(self, config: ExperimentConfig, train: Problem, test: Problem) -> None:
        self.config, self.train, self.test = config, train, test
        self.scale = Standardiser.fit(train.truth, axis=(0, 1))
        self.train_obs, self.train_truth = self.scale.forward(train.obs), self.scale.forward(train.truth)
        self.held_out = (self.scale.forward(test.obs), self.scale.forward(test.truth))
        self.n_samples = config.train_windows
        self._drawn: dict[str, Any] = {}

    def training_samples(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.train_obs[chosen], self.train_truth[chosen]

    def checkpoint_scores(self, backend: ModuleType, model: Any, placement: Placement) -> dict[str, float | None]:
        """None beyond the held-out loss, which is this task's learning curve (``loss.png``)."""
        return {}

    def evaluate(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> dict[str, Any]:
        config, test = self.config, self.test
        # "up to": a default of 4 must not make --test-windows 2 an error
        fourdvar_windows = min(config.fourdvar_windows, config.test_windows)
        fourdvar_windows = fourdvar_windows if _has_fourdvar(backend, fourdvar_windows) else 0
        fourdvar_units = len(fourdvar_stages(config.window_length)) + 1 if fourdvar_windows else 0
        batches = len(range(0, test.obs.shape[0], config.batch_size))
        with progress_bar(batches + fourdvar_units, 0, progress, "evaluate") as bar:
            estimate = self.scale.inverse(_predict(backend, model, self.held_out[0], config.batch_size, bar,
                                                   placement))
            fourdvar = _fourdvar(backend, test, fourdvar_windows, bar)
        interpolation = interpolate(test.obs)
        self._drawn = {
            "truth": test.truth,
            "obs": test.obs,
            "learned": estimate,
            "interpolation": interpolation,
            "fourdvar": fourdvar,
            "interpolation_loss": float(np.mean((self.scale.forward(interpolation) - self.held_out[1]) ** 2)),
        }
        return {
            "rmse_learned": rmse(estimate, test.truth),
            "rmse_interpolation": rmse(interpolation, test.truth),
            "rmse_fourdvar": rmse(fourdvar, test.truth[:fourdvar_windows]) if fourdvar is not None else None,
            "fourdvar_windows": fourdvar_windows,
            "obs_noise_std": test.obs_noise_std,
        }

    def write_outputs(
        self, out: Path, metrics: dict[str, Any], figures: bool, losses: list[float], held_out: list[list[float]]
    ) -> dict[str, Any]:
        if not figures:
            return {"figures": []}
        return {"figures": self._draw(out, metrics, {**self._drawn, "losses": losses, "held_out": held_out})}

    def _draw(self, out: Path, metrics: dict[str, Any], data: dict[str, Any]) -> list[str]:
        from .figures import MATPLOTLIB_HINT, RunSummary, build_figures, save_figures

        summary = RunSummary(
            backend=metrics["backend"], system=metrics["system"], adjoint=metrics["adjoint"], steps=metrics["steps"],
            rmse_learned=metrics["rmse_learned"], rmse_interpolation=metrics["rmse_interpolation"],
            rmse_fourdvar=metrics["rmse_fourdvar"], fourdvar_windows=metrics["fourdvar_windows"],
            test_windows=data["truth"].shape[0],
        )
        try:
            figures = build_figures(summary, **data)
        except ImportError as error:
            warnings.warn(f"figures skipped ({error}); to get them: {MATPLOTLIB_HINT}", FiguresSkippedWarning,
                          stacklevel=4)
            return []
        return save_figures(out, figures)
