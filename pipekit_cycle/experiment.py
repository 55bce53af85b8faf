"""A backend-neutral experiment: train a 4DVarNet on a Lorenz system or on SSH maps, checkpoint,
evaluate.

Written only against the `pipekit_cycle.Backend` protocol (plus the optional
``export_optimizer_state`` / ``import_optimizer_state`` for bit-exact resume), so
``python -m vardax_jax train ...`` and ``python -m vardax_torch train ...`` run the same code
with the same flags. Data are simulated from the seed; the state is standardised with the
training truth's mean and standard deviation (per component) before it reaches the model,
and every reported RMSE is in the physical units.

Run directory (``--out``)::

    checkpoints/step-000050/           one checkpoint per directory, the last two kept
        checkpoint.safetensors         model parameters + the FourDVarNetConfig as metadata
        optimizer.safetensors          optimizer state
        state.json                     step, sampler state, training losses, held-out losses,
                                       experiment config, backend
    checkpoints/step-000100/           the latest
    checkpoints/damaged-step-...       a checkpoint that could not be read, set aside on resume
    metrics.json                       held-out RMSE: learned solver, interpolation, 4D-Var
    reconstruction.png, loss.png, hovmoeller.png (Lorenz-96)   when matplotlib is installed

The SSH job (``system="ssh"``, `pipekit_cycle.mapping_experiment`) trains on space-time patches
of gridded maps and writes ``metrics.json`` with the data challenge's scores of the learned map,
OI and interpolation, ``reconstruction.nc`` and ``maps.png``, ``psd_score.png``, ``loss.png``;
everything else (checkpoints, resume, errors) is the same.

Checkpoints: one every ``checkpoint_every`` steps and one at the last step. Each is written
whole into a temporary directory and renamed into place, so a checkpoint directory is either
complete or absent; then all but the two newest are removed. A held-out loss (the training
loss on the held-out windows) is recorded at step 0 and at every checkpoint. Files are
written atomically with the mode the umask gives (`pipekit_cycle.params.atomic_write`).

Runs are never overwritten by accident: a directory that holds a run is refused unless
``resume`` (continue from the newest readable checkpoint) or ``overwrite`` (remove the run's
files, then start again; other files in the directory are left alone). On resume:

* the settings must be those of the run, except ``steps``, ``checkpoint_every`` and
  ``fourdvar_windows``, which change nothing about the training trajectory; the error names
  each field that differs;
* ``steps`` is the target total: training continues from the checkpoint's step up to
  ``steps``, exactly as if it had not stopped (same batches, same optimizer state). Asking
  fewer steps than the run has already been trained for is refused (a model cannot be
  untrained, and writing the smaller number into metrics.json would be false); asking the
  same number evaluates the run again. ``metrics.json``'s ``steps`` is always the number of
  steps the evaluated model was trained for;
* a damaged checkpoint (unreadable safetensors or JSON, a missing file, contents that do not
  fit) is reported with a warning naming the file and what is wrong, set aside as
  ``damaged-step-...``, and the previous checkpoint is used; with none readable,
  `CheckpointError` names every damaged file.

Command-line errors: an invalid flag value (checked in full before anything is written) and a
refused run directory are usage errors (one line, exit status 2); an unreadable run is exit
status 1; Ctrl-C prints where the last checkpoint is and the command that resumes it (exit
status 130).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shlex
import shutil
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, NoReturn, Protocol, TextIO

import numpy as np

from .adjoints import INNER_SOLVE, SPEC_TYPES, AdjointSpec, parse_adjoint
from .config import FourDVarNetConfig, OptimizerConfig
from .mapping_experiment import DEFAULT_FILE_NOISE_STD, MAP_FILES, NetcdfSkippedWarning
from .metrics import rmse
from .params import CONFIG_METADATA_KEY, atomic_write, save_params, validate_params
from .placement import Placement
from .problems import Problem, lorenz63, lorenz96

__all__ = [
    "SSH_FIELDS",
    "SSH_SIMULATION",
    "SYSTEM_DEFAULTS",
    "CheckpointError",
    "CheckpointFallbackWarning",
    "ConfigError",
    "ExperimentConfig",
    "FiguresSkippedWarning",
    "NetcdfSkippedWarning",
    "RunDirectoryError",
    "build_parser",
    "latest_checkpoint",
    "linear_interpolation",
    "list_checkpoints",
    "main",
    "rmse",
    "run_experiment",
]

SYSTEMS = ("l63", "l96", "ssh")
QUASI_STATIC_STAGE = 50
CHECKPOINTS = "checkpoints"
MODEL_FILE = "checkpoint.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
KEEP_CHECKPOINTS = 2
# Settings a resume may change: none of them alters the batches or the updates.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "fourdvar_windows")
FIGURE_FILES = ("reconstruction.png", "loss.png", "hovmoeller.png")
# The single top-level checkpoint of earlier versions: still recognised as a run, so it is
# never silently overwritten, and removed by --overwrite.
LEGACY_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130

_STEP_DIR = re.compile(r"step-(\d+)")
_STATE_KEYS = ("step", "sampler", "losses", "held_out", "experiment", "backend")
_POSITIVE_INTS = ("steps", "batch_size", "solver_steps", "train_windows", "test_windows", "hidden_dim",
                  "prior_hidden_dim", "checkpoint_every")


class ConfigError(ValueError):
    """An invalid `ExperimentConfig` value: ``field`` names it, ``problem`` says what is allowed.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import ConfigError, ExperimentConfig

    try:
        ExperimentConfig(system="l96", steps=0)
    except ConfigError as error:
        assert (error.field, error.flag) == ("steps", "--steps") and ">= 1" in error.problem
    else:
        raise AssertionError("steps=0 was accepted")
    ```
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


class RunDirectoryError(ValueError):
    """The run directory does not allow what was asked (it holds a run and neither resume nor
    overwrite was asked, or a resume asks other settings); the message names the flag.

    Examples
    --------
    ```python
    import tempfile
    import types

    from pipekit_cycle.experiment import ExperimentConfig, RunDirectoryError, run_experiment

    try:  # refused before the backend is used or anything is written
        run_experiment(types.ModuleType("any_backend"), ExperimentConfig(), tempfile.mkdtemp(), resume=True,
                       overwrite=True)
    except RunDirectoryError as error:
        assert "--resume and --overwrite exclude each other" in str(error)
    else:
        raise AssertionError("resume and overwrite were both accepted")
    ```
    """


class CheckpointError(ValueError):
    """No readable checkpoint; the message names each damaged file and what is wrong with it.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import CheckpointError

    assert issubclass(CheckpointError, ValueError)  # the command line reports it in one line, exit status 1
    ```
    """


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was damaged; the run resumed from an earlier one.

    Examples
    --------
    ```python
    import warnings

    from pipekit_cycle.experiment import CheckpointFallbackWarning

    warnings.simplefilter("error", CheckpointFallbackWarning)  # a resume that falls back then stops instead
    assert issubclass(CheckpointFallbackWarning, UserWarning)
    ```
    """


class FiguresSkippedWarning(UserWarning):
    """matplotlib is not installed: the run's figures were not drawn.

    Examples
    --------
    ```python
    import warnings

    from pipekit_cycle.experiment import FiguresSkippedWarning

    warnings.simplefilter("ignore", FiguresSkippedWarning)  # a run without matplotlib, quietly
    assert issubclass(FiguresSkippedWarning, UserWarning)
    ```
    """


def _check_int(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")


def _check_positive_number(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(field, f"must be a finite number > 0, got {value!r}")


# What a field left at None becomes, per system: settings under which a first run with no flags
# ends with the learned solver below linear interpolation (README, "Results"). Lorenz-96 needs
# many windows (64 overfit: held-out RMSE 1.53 vs interpolation's 1.28 after 300 steps);
# Lorenz-63 needs 4000 steps (after 2000 it is at interpolation's level). The SSH job's are
# those of its quality run (README, "Mapping sea-surface height").
SYSTEM_DEFAULTS: dict[str, dict[str, Any]] = {
    "l96": {"steps": 600, "batch_size": 8, "solver_steps": 5, "train_windows": 512, "test_windows": 16,
            "hidden_dim": 16, "prior_hidden_dim": 16, "fourdvar_windows": 4},
    "l63": {"steps": 4000, "batch_size": 16, "solver_steps": 8, "train_windows": 1024, "test_windows": 64,
            "hidden_dim": 32, "prior_hidden_dim": 32, "fourdvar_windows": 8},
    "ssh": {"steps": 2000, "batch_size": 8, "solver_steps": 5, "hidden_dim": 16, "prior_hidden_dim": 16,
            "patch_size": 32, "patch_stride": 16, "prior_downsample": 2, "test_days": 60, "oi_space_km": 70.0,
            "oi_time_days": 7.0, "background": "oi"},
}
# Fields that only mean something for some systems: setting one for another system is refused
# rather than ignored.
LORENZ_FIELDS = ("train_windows", "test_windows", "fourdvar_windows")
SSH_FIELDS = ("patch_size", "patch_stride", "prior_downsample", "train_days", "test_days", "grid", "data", "var",
              "obs_var", "obs_noise_std", "oi_space_km", "oi_time_days", "background")
BACKGROUNDS = ("oi", "none")
# Without --data, the SSH job simulates this many days of training and this grid.
SSH_SIMULATION = {"train_days": 960, "grid": 64}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """What to train and how. A size left at ``None`` takes its system's value in
    `SYSTEM_DEFAULTS` (resolved at construction, so a config always holds numbers);
    ``window_length`` ``None``: 200 for l63 (Fablet et al. 2021), 10 for l96, 15 days for ssh.
    Every field is checked at construction (`ConfigError`, a ``ValueError``); the adjoint is
    stored in its canonical text form (``str(parse_adjoint(adjoint))``).

    ``train_windows``, ``test_windows`` and ``fourdvar_windows`` belong to the Lorenz systems;
    the `SSH_FIELDS` to ``system="ssh"`` (`pipekit_cycle.mapping_experiment`): the patches
    (``patch_size``, ``patch_stride``), the prior's ``prior_downsample``, the periods
    (``train_days``, ``test_days``), the simulated box (``grid``, default `SSH_SIMULATION`) or
    a user's netCDF file (``data``, ``var``, ``obs_var``, ``obs_noise_std``), the OI's scales
    (``oi_space_km``, ``oi_time_days``) and ``background`` (``"oi"``: the solver maps the
    departure from OI).
    A field set for a system it does not belong to is refused, not ignored. With ``data``,
    ``train_days`` ``None`` means every day before the held-out ones.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import SYSTEM_DEFAULTS, ConfigError, ExperimentConfig

    l96 = ExperimentConfig(system="l96")  # sizes left unset take the system's defaults
    assert l96.steps == SYSTEM_DEFAULTS["l96"]["steps"] and l96.length == 10
    ssh = ExperimentConfig(system="ssh", grid=32, patch_size=16, adjoint="truncated:2")
    assert ssh.model_config().state_shape == (16, 16) and ssh.adjoint == "truncated:2"
    try:
        ExperimentConfig(system="l96", patch_size=16)
    except ConfigError as error:
        assert error.flag == "--patch-size"  # an ssh setting is refused for l96, not ignored
    else:
        raise AssertionError("patch_size was accepted for l96")
    ```
    """

    system: Literal["l63", "l96", "ssh"] = "l96"
    adjoint: str = "checkpoint"
    steps: int | None = None
    batch_size: int | None = None
    solver_steps: int | None = None
    seed: int = 0
    lr: float = 3e-3
    train_windows: int | None = None
    test_windows: int | None = None
    window_length: int | None = None
    hidden_dim: int | None = None
    prior_hidden_dim: int | None = None
    checkpoint_every: int = 50
    fourdvar_windows: int | None = None
    patch_size: int | None = None
    patch_stride: int | None = None
    prior_downsample: int | None = None
    train_days: int | None = None
    test_days: int | None = None
    grid: int | None = None
    data: str | None = None
    var: str | None = None
    obs_var: str | None = None
    obs_noise_std: float | None = None
    oi_space_km: float | None = None
    oi_time_days: float | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ConfigError("system", f"must be one of {', '.join(SYSTEMS)}, got {self.system!r}")
        foreign = SSH_FIELDS if self.system != "ssh" else LORENZ_FIELDS
        for field in foreign:
            if getattr(self, field) is not None:
                owner = "the ssh system" if field in SSH_FIELDS else "the Lorenz systems (l63, l96)"
                raise ConfigError(field, f"is a setting of {owner}, not of --system {self.system}")
        for field, value in SYSTEM_DEFAULTS[self.system].items():
            if getattr(self, field) is None:
                object.__setattr__(self, field, value)
        for field in _POSITIVE_INTS:
            if field not in foreign:
                _check_int(field, getattr(self, field), 1)
        _check_int("seed", self.seed, 0)  # numpy generators refuse negative seeds
        if self.window_length is not None:
            _check_int("window_length", self.window_length, 2)
        _check_positive_number("lr", self.lr)
        if self.system == "ssh":
            self._check_ssh()
        else:
            _check_int("fourdvar_windows", self.fourdvar_windows, 0)
            if self.batch_size > self.train_windows:
                raise ConfigError(
                    "batch_size", f"must be at most the number of training windows ({self.train_windows}), "
                    f"got {self.batch_size}"
                )
        object.__setattr__(self, "adjoint", str(self._check_adjoint()))

    def _check_ssh(self) -> None:
        if self.data is None:
            for field in ("var", "obs_var", "obs_noise_std"):
                if getattr(self, field) is not None:
                    raise ConfigError(field, "is a setting of a --data file; the simulation has its own")
            for field, value in SSH_SIMULATION.items():
                if getattr(self, field) is None:
                    object.__setattr__(self, field, value)
            _check_int("grid", self.grid, 8)
        else:
            if not isinstance(self.data, str) or not self.data:
                raise ConfigError("data", f"must be the path of a netCDF file, got {self.data!r}")
            if self.grid is not None:
                raise ConfigError("grid", "sets the simulation's size; a --data file has its own grid")
            for field in ("var", "obs_var"):
                if not isinstance(getattr(self, field), str) or not getattr(self, field):
                    raise ConfigError(field, "must name the file's variable (--data needs --var and --obs-var)")
            if self.obs_noise_std is not None:
                _check_positive_number("obs_noise_std", self.obs_noise_std)
        for field in ("patch_size", "patch_stride", "prior_downsample", "test_days"):
            _check_int(field, getattr(self, field), 1)
        if self.patch_size % self.prior_downsample:
            raise ConfigError("prior_downsample", f"must divide --patch-size ({self.patch_size}), got "
                              f"{self.prior_downsample}")
        if self.train_days is not None:
            _check_int("train_days", self.train_days, 1)
        for field in ("oi_space_km", "oi_time_days"):
            _check_positive_number(field, getattr(self, field))
        if self.background not in BACKGROUNDS:
            raise ConfigError("background", f"must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}")
        if self.patch_stride > self.patch_size:
            raise ConfigError("patch_stride", f"must be at most --patch-size ({self.patch_size}) so that the "
                              f"patches cover the domain, got {self.patch_stride}")
        for field in ("test_days", "train_days"):
            days = getattr(self, field)
            if days is not None and days < self.length:
                raise ConfigError(field, f"must hold at least one window of {self.length} days, got {days}")
        if self.grid is not None and self.patch_size > self.grid:
            raise ConfigError("patch_size", f"must be at most --grid ({self.grid}), got {self.patch_size}")

    def _check_adjoint(self) -> AdjointSpec:
        text = self.adjoint
        if not isinstance(text, str):
            raise ConfigError("adjoint", f"must be a text such as 'truncated:2', got {text!r}")
        allowed = self._allowed_adjoints()
        tag = text.split(":", 1)[0].strip().lower()
        known = {cls.tag: cls for cls in SPEC_TYPES}
        if tag not in known:
            raise ConfigError("adjoint", f"unknown adjoint {text!r}; allowed here: {allowed}")
        if INNER_SOLVE not in known[tag].layers:
            layers = "/".join(sorted(known[tag].layers))
            raise ConfigError(
                "adjoint",
                f"{text!r} is a {layers}-layer adjoint (for an ODE forward model), not one for the learned "
                f"inner solve; allowed here: {allowed}",
            )
        try:
            spec = parse_adjoint(text)
        except (ValueError, TypeError) as error:
            raise ConfigError("adjoint", f"{error}") from None
        try:
            self._model_config(spec)
        except (ValueError, TypeError) as error:
            raise ConfigError("adjoint", f"{text!r} cannot differentiate this solver: {error}") from None
        return spec

    def _allowed_adjoints(self) -> str:
        tags = []
        for cls in SPEC_TYPES:
            if INNER_SOLVE not in cls.layers:
                continue
            try:
                self._model_config(cls())
            except (ValueError, TypeError):
                continue  # e.g. one that needs another solver than this driver's
            tags.append(cls.tag)
        example = " (options as in truncated:2)" if "truncated" in tags else ""
        return ", ".join(tags) + example

    @property
    def length(self) -> int:
        """The window length T (time steps; days for ssh)."""
        if self.window_length is not None:
            return self.window_length
        return {"l63": 200, "l96": 10, "ssh": 15}[self.system]

    def problem(self) -> tuple[Problem, Problem]:
        """Train and held-out windows of a Lorenz system, simulated from ``seed`` (the ssh
        system's data are `pipekit_cycle.mapping_experiment.MappingTask`'s)."""
        if self.system == "ssh":
            raise ValueError("problem() simulates the Lorenz systems; the ssh system's data are MappingTask's")
        total = self.train_windows + self.test_windows
        if self.system == "l63":
            problem = lorenz63(total, self.length, seed=self.seed)
        else:
            problem = lorenz96(total, self.length, seed=self.seed)
        return problem.split(self.train_windows)

    def _model_config(self, spec: AdjointSpec) -> FourDVarNetConfig:
        state_shape = {"l63": (3,), "l96": (40,), "ssh": (self.patch_size, self.patch_size)}[self.system]
        return FourDVarNetConfig(
            state_shape=state_shape,
            n_time=self.length,
            hidden_dim=self.hidden_dim,
            prior_hidden_dim=self.prior_hidden_dim,
            n_solver_steps=self.solver_steps,
            padding="circular" if self.system == "l96" else "zeros",  # Lorenz-96 is periodic
            prior_downsample=self.prior_downsample if self.prior_downsample is not None else 1,
            solver_adjoint=spec,
        )

    def model_config(self) -> FourDVarNetConfig:
        return self._model_config(parse_adjoint(self.adjoint))

    def optimizer_config(self) -> OptimizerConfig:
        return OptimizerConfig(name="adam", lr=self.lr)


def linear_interpolation(obs: np.ndarray) -> np.ndarray:
    """Fill NaNs of ``obs`` (``(W, T, N)``) along time by linear interpolation per window and
    component, holding the first/last observation constant beyond the ends (0 if a series has
    no observation).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.experiment import linear_interpolation

    obs = np.array([[[np.nan], [1.0], [np.nan], [3.0], [np.nan]]])  # (W, T, N) = (1, 5, 1)
    assert linear_interpolation(obs)[0, :, 0].tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]
    ```
    """
    filled = np.zeros_like(obs)
    times = np.arange(obs.shape[1])
    for w in range(obs.shape[0]):
        for n in range(obs.shape[2]):
            series = obs[w, :, n]
            seen = np.isfinite(series)
            if seen.any():
                filled[w, :, n] = np.interp(times, times[seen], series[seen])
    return filled


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


# --- the run directory -------------------------------------------------------------------------


def list_checkpoints(out: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every checkpoint in the run directory ``out``, oldest first.

    Examples
    --------
    ```python
    import tempfile
    from pathlib import Path

    from pipekit_cycle.experiment import list_checkpoints

    out = Path(tempfile.mkdtemp())
    for step in (100, 50):
        (out / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
    assert [step for step, _ in list_checkpoints(out)] == [50, 100]
    ```
    """
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _STEP_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint directory of the run in ``out`` (``None`` if it has none); load its
    model with ``pipekit_cycle.load_params(path / "checkpoint.safetensors")``.

    Examples
    --------
    ```python
    import tempfile

    from pipekit_cycle.experiment import latest_checkpoint

    assert latest_checkpoint(tempfile.mkdtemp()) is None  # no run there yet
    ```
    """
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def _describe_run(out: Path) -> str | None:
    """What run ``out`` holds, in words, or ``None`` if it holds none."""
    found = list_checkpoints(out)
    if found:
        return f"its last checkpoint is at step {found[-1][0]}"
    if (out / CHECKPOINTS).is_dir() and any((out / CHECKPOINTS).glob("damaged-step-*")):
        return "only damaged checkpoints"
    if any((out / name).exists() for name in LEGACY_FILES):
        return "the single checkpoint of an earlier version"
    if (out / METRICS_FILE).exists():
        return "the results of a run"
    return None


def _remove_run(out: Path) -> None:
    """Remove the files a run writes (only those: ``--out`` may hold other files)."""
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    for name in (METRICS_FILE, *FIGURE_FILES, *MAP_FILES, *LEGACY_FILES):
        (out / name).unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    # Makes a rename durable; not every platform or file system can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tidy_checkpoints(out: Path, damaged: Sequence[Path]) -> None:
    """Remove temporary directories an interrupted write left behind, and set ``damaged``
    checkpoints aside so they never count among the two kept."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return
    for entry in root.glob(".tmp-*"):
        shutil.rmtree(entry, ignore_errors=True)
    for path in damaged:
        target = root / f"damaged-{path.name}"
        suffix = 1
        while target.exists():
            suffix += 1
            target = root / f"damaged-{path.name}-{suffix}"
        os.replace(path, target)


def _write_checkpoint(
    out: Path, step: int, backend: ModuleType, model: Any, opt_state: Any, state: dict[str, Any]
) -> Path:
    root = out / CHECKPOINTS
    root.mkdir(exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()  # plain mkdir, not mkdtemp: the directory gets the umask's mode, not 0700
    save_params(tmp / MODEL_FILE, backend.export_params(model), model.config)
    _save_arrays(tmp / OPTIMIZER_FILE, backend.export_optimizer_state(opt_state))
    atomic_write(tmp / STATE_FILE, json.dumps(state, indent=1).encode())
    _fsync_directory(tmp)
    if final.exists():  # only after a fallback re-trains over a step; keep it until replaced
        stale = root / f".tmp-stale-{final.name}-{os.getpid()}"
        os.replace(final, stale)
        os.replace(tmp, final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_directory(root)
    for _, old in list_checkpoints(out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    atomic_write(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def _read_safetensors(file: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import safe_open

    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        with safe_open(str(file), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            arrays = {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own types (SafetensorError) besides OSError
        raise CheckpointError(f"{file}: not a readable safetensors file ({error})") from None
    return arrays, metadata


def _read_state(directory: Path, step: int) -> dict[str, Any]:
    file = directory / STATE_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{file}: not valid JSON ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{file}: unreadable ({error})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: holds a JSON {type(state).__name__}, not an object")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{file}: lacks {', '.join(missing)}")
    if state["step"] != step:
        raise CheckpointError(f"{file}: records step {state['step']!r} but lies in {directory.name}")
    if not isinstance(state["losses"], list) or len(state["losses"]) != step:
        raise CheckpointError(f"{file}: does not hold one training loss per step ({step})")
    if not isinstance(state["experiment"], dict):
        raise CheckpointError(f"{file}: 'experiment' is not an object")
    return state


def _canonical_adjoint(text: object) -> object:
    try:
        return str(parse_adjoint(text))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return text


def _check_same_experiment(state: dict[str, Any], config: ExperimentConfig, backend: str) -> None:
    made = {**state["experiment"], "backend": state["backend"]}
    made["adjoint"] = _canonical_adjoint(made.get("adjoint"))
    asked = {**dataclasses.asdict(config), "backend": backend}
    for key in SSH_FIELDS:  # runs made before the ssh system had none of its fields
        made.setdefault(key, None)
    differ = [key for key in asked if key not in RESUMABLE_CHANGES and made.get(key, "<unset>") != asked[key]]
    if differ:
        then = ", ".join(f"{key}={made.get(key, '<unset>')}" for key in differ)
        now = ", ".join(f"{key}={asked[key]}" for key in differ)
        raise RunDirectoryError(
            f"--resume: this run was made with {then}; you asked {now} "
            f"(ask the same to continue it, or --overwrite to start again)"
        )


@dataclasses.dataclass
class _Training:
    """Everything that evolves during training."""

    model: Any
    optimizer: Any
    opt_state: Any
    sampler: np.random.Generator
    losses: list[float]
    held_out: list[list[float]]
    step: int


def _fresh(backend: ModuleType, config: ExperimentConfig, placement: Placement) -> _Training:
    model = backend.build_model(config.model_config(), seed=config.seed, **placement.model_kwargs)
    optimizer, opt_state = backend.make_optimizer(config.optimizer_config(), model)
    return _Training(model, optimizer, opt_state, np.random.default_rng(config.seed + 1), [], [], 0)


def _load(
    backend: ModuleType, config: ExperimentConfig, directory: Path, state: dict[str, Any], placement: Placement
) -> _Training:
    """A fresh model and optimizer (an import that fails half-way leaves nothing behind for the
    fallback), loaded from ``directory``; `CheckpointError` naming the file otherwise."""
    training = _fresh(backend, config, placement)
    file = directory / MODEL_FILE
    arrays, metadata = _read_safetensors(file)
    try:
        saved = FourDVarNetConfig.from_json(metadata[CONFIG_METADATA_KEY])
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{file}: no readable model config in its metadata ({error!r})") from None
    if saved != training.model.config:
        raise CheckpointError(f"{file}: holds a model of another configuration ({saved})")
    try:
        training.model = backend.import_params(training.model, validate_params(arrays, saved))
    except Exception as error:  # any failure means these parameters cannot be used
        raise CheckpointError(f"{file}: {error}") from None
    file = directory / OPTIMIZER_FILE
    arrays, _ = _read_safetensors(file)
    try:
        training.opt_state = backend.import_optimizer_state(training.optimizer, training.opt_state, arrays)
    except Exception as error:  # backends raise ValueError, KeyError, RuntimeError... for a foreign state
        raise CheckpointError(f"{file}: does not fit this optimizer ({error})") from None
    try:
        training.sampler.bit_generator.state = state["sampler"]
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{directory / STATE_FILE}: unusable sampler state ({error!r})") from None
    training.losses = [float(loss) for loss in state["losses"]]
    training.held_out = [[int(step), float(loss)] for step, loss in state["held_out"]]
    training.step = int(state["step"])
    return training


def _restore(
    backend: ModuleType, config: ExperimentConfig, out: Path, placement: Placement
) -> tuple[_Training, list[Path]]:
    """The newest readable checkpoint of ``out`` and the damaged newer ones; writes nothing."""
    found = list_checkpoints(out)
    if not found:
        held = _describe_run(out)
        why = f" (it holds {held}, which cannot be resumed)" if held else ""
        remedy = "pass --overwrite to start it again" if held else "leave out --resume to start a run"
        raise RunDirectoryError(f"--resume: {out} holds no checkpoint to resume{why}; {remedy}")
    damaged: list[tuple[Path, CheckpointError]] = []
    for step, directory in reversed(found):
        try:
            state = _read_state(directory, step)
            _check_same_experiment(state, config, backend.__name__)
            if step > config.steps:
                raise RunDirectoryError(
                    f"--steps: this run is already at step {step}, and --steps is the total to reach; "
                    f"ask --steps {step} or more to continue it (--steps {step} evaluates it again)"
                )
            training = _load(backend, config, directory, state, placement)
        except CheckpointError as error:
            damaged.append((directory, error))
            continue
        for _, error in damaged:
            warnings.warn(
                f"{error}; resuming from the previous checkpoint, {directory} (step {step}); the damaged one "
                f"is set aside as damaged-step-...",
                CheckpointFallbackWarning,
                stacklevel=3,
            )
        return training, [path for path, _ in damaged]
    raise CheckpointError(
        "no readable checkpoint: " + "; ".join(str(error) for _, error in damaged)
        + " (--overwrite starts the run again)"
    )


# --- training and evaluation -------------------------------------------------------------------


@contextlib.contextmanager
def _progress(total: int, initial: int, enabled: bool, desc: str) -> Iterator[Any]:
    from tqdm import tqdm

    # A context manager so that Ctrl-C closes the bar and the message starts on its own line.
    with tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", dynamic_ncols=True) as bar:
        yield bar


def _batches(count: int, size: int) -> range:
    return range(0, count, size)


def _predict(
    backend: ModuleType, model: Any, obs: np.ndarray, batch_size: int, bar: Any, placement: Placement
) -> np.ndarray:
    outputs = []
    for start in _batches(obs.shape[0], batch_size):
        batch = backend.make_batch(obs[start : start + batch_size], **placement.batch_kwargs)
        outputs.append(np.asarray(backend.to_numpy(model(batch))))
        bar.update(1)
    return np.concatenate(outputs)


def _held_out_loss(
    backend: ModuleType, model: Any, obs: np.ndarray, truth: np.ndarray, batch_size: int, placement: Placement
) -> float:
    """The training loss on the held-out windows (a batch mean, so weighted by batch size)."""
    total = 0.0
    for start in _batches(obs.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        batch = backend.make_batch(obs[chunk], target=truth[chunk], **placement.batch_kwargs)
        total += float(backend.eval_step(model, batch)) * obs[chunk].shape[0]
    return total / obs.shape[0]


def _fourdvar_stages(length: int) -> list[int]:
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
    analysis = linear_interpolation(obs)[:, 0]
    for stage in _fourdvar_stages(obs.shape[1]):
        analysis = backend.strong_4dvar_numpy(
            problem.system,
            analysis,
            obs[:, :stage],
            problem.dt,
            background_cov=np.full(analysis.shape[-1], variance),
            obs_var=variance,
            parameters=problem.parameters,
        )
        bar.update(1)
    trajectory = backend.rollout_numpy(
        problem.system, analysis, obs.shape[1] - 1, problem.dt, parameters=problem.parameters
    )
    bar.update(1)
    return np.asarray(trajectory)


def _draw_figures(out: Path, metrics: dict[str, Any], data: dict[str, Any]) -> list[str]:
    from .figures import MATPLOTLIB_HINT, RunSummary, build_figures, save_figures

    summary = RunSummary(
        backend=metrics["backend"],
        system=metrics["system"],
        adjoint=metrics["adjoint"],
        steps=metrics["steps"],
        rmse_learned=metrics["rmse_learned"],
        rmse_interpolation=metrics["rmse_interpolation"],
        rmse_fourdvar=metrics["rmse_fourdvar"],
        fourdvar_windows=metrics["fourdvar_windows"],
        test_windows=data["truth"].shape[0],
    )
    try:
        figures = build_figures(summary, **data)
    except ImportError as error:
        warnings.warn(
            f"figures skipped ({error}); to get them: {MATPLOTLIB_HINT}", FiguresSkippedWarning, stacklevel=3
        )
        return []
    return save_figures(out, figures)


def run_experiment(
    backend: ModuleType,
    config: ExperimentConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    figures: bool = True,
    placement: Placement | None = None,
) -> dict[str, Any]:
    """Train, checkpoint every ``checkpoint_every`` steps, evaluate; returns the metrics (also
    written to ``out/metrics.json``).

    ``resume``: continue the run in ``out`` from its newest readable checkpoint up to
    ``config.steps`` exactly as if it had not stopped (same batches, same optimizer state).
    ``overwrite``: remove the run in ``out`` and start again. Without either, a directory that
    holds a run is refused. Everything is checked before anything is written: a refusal
    (`RunDirectoryError`, `CheckpointError`) leaves the disk as it was. See the module
    docstring for the directory layout and the resume rules. ``figures=False`` draws none
    (``metrics["figures"]`` is then empty).

    ``placement`` (``backend.placement(device, devices)``; ``None``: the backend's defaults,
    one device) says where the model and batches live and how each training batch is split
    (`pipekit_cycle.placement`). With several ranks (torchrun), every rank runs this
    function on the same arguments: each reads the run directory, trains on its slice of
    every batch and evaluates; rank 0 alone writes, the others wait for it at each
    checkpoint, and all return the same metrics.

    Examples
    --------
    ```python
    import tempfile
    import types
    from pathlib import Path

    from pipekit_cycle.experiment import ExperimentConfig, RunDirectoryError, run_experiment

    # With a backend: run_experiment(pk.load_backend("vardax_torch"), ExperimentConfig(system="l96"), "runs/l96").
    out = Path(tempfile.mkdtemp())
    (out / "metrics.json").write_text("{}")  # the directory holds a run's results
    try:
        run_experiment(types.ModuleType("any_backend"), ExperimentConfig(), out)
    except RunDirectoryError as error:
        assert "already holds a run" in str(error) and "--resume" in str(error)
    else:
        raise AssertionError("a run directory was overwritten without --overwrite")
    assert (out / "metrics.json").read_text() == "{}"  # left as it was
    ```
    """
    placement = Placement("the backend's default device") if placement is None else placement
    placement.check_batch_size(config.batch_size)
    out_dir = Path(out)
    if resume and overwrite:
        raise RunDirectoryError("--resume and --overwrite exclude each other: continue the run, or start it again")
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirectoryError(f"--out: {out_dir} is a file, not a directory")
    held = _describe_run(out_dir) if out_dir.is_dir() else None
    if held and not (resume or overwrite):
        raise RunDirectoryError(
            f"--out: {out_dir} already holds a run ({held}); pass --resume to continue it or --overwrite to "
            f"start again"
        )
    if resume:
        training, damaged = _restore(backend, config, out_dir, placement)
    else:
        training, damaged = _fresh(backend, config, placement), []
    progress = progress and placement.writes
    task = _task(config, progress)  # may refuse the data (ConfigError), so before any write
    # Everything above only read (on every rank); from here on the run directory changes.
    placement.barrier()
    if placement.writes:
        if overwrite:
            _remove_run(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _tidy_checkpoints(out_dir, damaged)

    def held_out_loss() -> float:
        return _held_out_loss(backend, training.model, *task.held_out, config.batch_size, placement)

    if not training.held_out:
        training.held_out.append([0, held_out_loss()])
    with _progress(config.steps, training.step, progress, "train") as bar:
        while training.step < config.steps:
            # Every rank draws the same windows (the same sampler) and keeps its own slice of them.
            chosen = placement.shard(training.sampler.choice(task.n_samples, size=config.batch_size, replace=False))
            obs, truth = task.training_samples(np.asarray(chosen))
            batch = backend.make_batch(obs, target=truth, **placement.train_batch_kwargs)
            training.model, training.opt_state, loss = backend.train_step(
                training.model, batch, training.optimizer, training.opt_state
            )
            training.losses.append(float(loss))
            training.step += 1
            bar.update(1)
            if training.step % config.checkpoint_every == 0 or training.step == config.steps:
                training.held_out.append([training.step, held_out_loss()])
                state = {
                    "step": training.step,
                    "sampler": training.sampler.bit_generator.state,
                    "losses": training.losses,
                    "held_out": training.held_out,
                    "experiment": dataclasses.asdict(config),
                    "backend": backend.__name__,
                }
                if placement.writes:
                    _write_checkpoint(out_dir, training.step, backend, training.model, training.opt_state, state)
                placement.barrier()
            bar.set_postfix(loss=f"{training.losses[-1]:.4f}", held_out=f"{training.held_out[-1][1]:.4f}")

    metrics: dict[str, Any] = {
        "backend": backend.__name__,
        "system": config.system,
        "adjoint": config.adjoint,
        "steps": training.step,  # trained for, not asked (the same, since fewer is refused)
        **task.evaluate(backend, training.model, placement, progress),
        "final_train_loss": training.losses[-1] if training.losses else None,
        "final_held_out_loss": training.held_out[-1][1],
    }
    metrics["figures"] = []
    if placement.writes:
        metrics.update(task.write_outputs(out_dir, metrics, figures, training.losses, training.held_out))
        atomic_write(out_dir / METRICS_FILE, json.dumps(metrics, indent=1).encode())
    return metrics


class _Task(Protocol):
    """What differs between the systems: the samples, their evaluation and the files written.

    ``held_out`` and `training_samples` are standardised ``(obs, truth)`` arrays of samples
    ``(n, T, *state_shape)``; `evaluate` returns the entries of ``metrics.json`` that score the
    model; `write_outputs` (rank 0 only) writes figures and fields and returns the entries
    naming them (``figures``: the figure files, empty when ``figures`` is false)."""

    n_samples: int
    held_out: tuple[np.ndarray, np.ndarray]

    def training_samples(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def evaluate(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> dict[str, Any]: ...

    def write_outputs(
        self, out: Path, metrics: dict[str, Any], figures: bool, losses: list[float], held_out: list[list[float]]
    ) -> dict[str, Any]: ...


def _task(config: ExperimentConfig, progress: bool) -> _Task:
    if config.system == "ssh":
        from .mapping_experiment import MappingTask

        return MappingTask(config, progress=progress)
    return _LorenzTask(config)


class _LorenzTask:
    """Windows of a simulated Lorenz system; scored by RMSE against linear interpolation and
    classical 4D-Var."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.train, self.test = config.problem()
        self.scale = _Standardiser(self.train.truth)
        self.train_obs, self.train_truth = self.scale.forward(self.train.obs), self.scale.forward(self.train.truth)
        self.held_out = (self.scale.forward(self.test.obs), self.scale.forward(self.test.truth))
        self.n_samples = config.train_windows
        self._drawn: dict[str, Any] = {}

    def training_samples(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.train_obs[chosen], self.train_truth[chosen]

    def evaluate(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> dict[str, Any]:
        config, test = self.config, self.test
        # "up to": a default of 4 must not make --test-windows 2 an error
        fourdvar_windows = min(config.fourdvar_windows, config.test_windows)
        fourdvar_windows = fourdvar_windows if _has_fourdvar(backend, fourdvar_windows) else 0
        fourdvar_units = len(_fourdvar_stages(config.length)) + 1 if fourdvar_windows else 0
        with _progress(len(_batches(test.obs.shape[0], config.batch_size)) + fourdvar_units, 0, progress,
                       "evaluate") as bar:
            estimate = self.scale.inverse(
                _predict(backend, model, self.held_out[0], config.batch_size, bar, placement)
            )
            fourdvar = _fourdvar(backend, test, fourdvar_windows, bar)
        interpolation = linear_interpolation(test.obs)
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
        return {"figures": _draw_figures(out, metrics, {**self._drawn, "losses": losses, "held_out": held_out})}


# --- the command line --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block of ~20 flags would bury the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    # Our messages say what is allowed already; argparse's own get the --help hint.
    parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")


def _build_parsers(prog: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    # allow_abbrev=False: the resume command printed on Ctrl-C edits the flags as typed, which
    # needs every flag spelled out.
    parser = _Parser(prog=prog, description="Train a 4DVarNet on a Lorenz system or on SSH maps.", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train, checkpoint and evaluate", allow_abbrev=False,
        description="Train a 4DVarNet on a Lorenz system or on sea-surface-height maps (--system ssh), "
                    "checkpoint, evaluate on held-out data.",
    )
    defaults = ExperimentConfig()
    l96, l63, ssh = SYSTEM_DEFAULTS["l96"], SYSTEM_DEFAULTS["l63"], SYSTEM_DEFAULTS["ssh"]

    def per_system(field: str) -> str:
        text = f"default: {l96[field]} for l96, {l63[field]} for l63"
        return text + (f", {ssh[field]} for ssh" if field in ssh else "")

    def lorenz(field: str) -> str:
        return f"Lorenz systems only; {per_system(field)}"

    def ssh_only(text: str) -> str:
        return f"ssh only: {text}"

    train.add_argument("--system", choices=SYSTEMS, default=defaults.system)
    train.add_argument("--adjoint", default=defaults.adjoint,
                       help=f"the learned solver's adjoint: {defaults._allowed_adjoints()}")
    train.add_argument("--steps", type=int, default=None,
                       help=f"training steps in total (with --resume: the total to reach); {per_system('steps')}")
    train.add_argument("--batch-size", type=int, default=None, help=per_system("batch_size"))
    train.add_argument("--solver-steps", type=int, default=None, help=per_system("solver_steps"))
    train.add_argument("--seed", type=int, default=defaults.seed)
    train.add_argument("--lr", type=float, default=defaults.lr)
    train.add_argument("--train-windows", type=int, default=None, help=lorenz("train_windows"))
    train.add_argument("--test-windows", type=int, default=None, help=lorenz("test_windows"))
    train.add_argument("--window-length", type=int, default=None,
                       help="time steps per window (days for ssh); default: 10 for l96, 200 for l63, 15 for ssh")
    train.add_argument("--hidden-dim", type=int, default=None, help=per_system("hidden_dim"))
    train.add_argument("--prior-hidden-dim", type=int, default=None, help=per_system("prior_hidden_dim"))
    train.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    train.add_argument("--fourdvar-windows", type=int, default=None,
                       help=f"classical 4D-Var runs on up to this many held-out windows (0: none); "
                            f"{lorenz('fourdvar_windows')}")
    sim = SSH_SIMULATION
    train.add_argument("--patch-size", type=int, default=None,
                       help=ssh_only(f"the square patch the solver maps, in grid points (default {ssh['patch_size']})"))
    train.add_argument("--patch-stride", type=int, default=None,
                       help=ssh_only(f"spacing of the patches (default {ssh['patch_stride']})"))
    train.add_argument("--prior-downsample", type=int, default=None,
                       help=ssh_only(f"the prior works on the patch average-pooled by this factor "
                                     f"(default {ssh['prior_downsample']})"))
    train.add_argument("--train-days", type=int, default=None,
                       help=ssh_only(f"training days before the held-out ones (default {sim['train_days']}; "
                                     f"with --data: all of them)"))
    train.add_argument("--test-days", type=int, default=None,
                       help=ssh_only(f"the last days, held out and mapped whole (default {ssh['test_days']})"))
    train.add_argument("--grid", type=int, default=None,
                       help=ssh_only(f"the simulated box, grid x grid points 10/128 deg apart (default {sim['grid']})"))
    train.add_argument("--data", default=None,
                       help=ssh_only("a netCDF file with (time, lat, lon) maps, mapped instead of the simulation"))
    train.add_argument("--var", default=None, help=ssh_only("the --data file's reference (truth) variable"))
    train.add_argument("--obs-var", default=None,
                       help=ssh_only("the --data file's observation variable (NaN where unobserved)"))
    train.add_argument("--obs-noise-std", type=float, default=None,
                       help=ssh_only(f"the --data observations' noise (m), for OI (default {DEFAULT_FILE_NOISE_STD})"))
    train.add_argument("--oi-space-km", type=float, default=None,
                       help=ssh_only(f"OI's Gaussian length scale (default {ssh['oi_space_km']})"))
    train.add_argument("--oi-time-days", type=float, default=None,
                       help=ssh_only(f"OI's Gaussian time scale (default {ssh['oi_time_days']})"))
    train.add_argument("--background", choices=BACKGROUNDS, default=None,
                       help=ssh_only(f"oi: the solver maps the departure from OI; none: the observations alone "
                                     f"(default {ssh['background']})"))
    train.add_argument("--out", required=True, help="run directory")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    again.add_argument("--overwrite", action="store_true", help="remove the run in --out and start again")
    train.add_argument("--device", default=None,
                       help="where to train: a torch device (cpu, cuda, cuda:1) or a JAX platform (cpu, gpu); "
                            "default: the backend's default")
    train.add_argument("--devices", type=int, default=None,
                       help="split every batch over this many devices (JAX: one process; torch: the process count "
                            "torchrun started)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.add_argument("--no-figures", action="store_true", help="draw no figures")
    return parser, train


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The ``train`` command line, identical for every backend.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import build_parser

    args = build_parser("python -m my_backend").parse_args(["train", "--system", "ssh", "--out", "runs/ssh"])
    assert (args.system, args.out, args.steps) == ("ssh", "runs/ssh", None)  # None: the system's default
    ```
    """
    return _build_parsers(prog)[0]


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig(
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
        **{field: getattr(args, field) for field in SSH_FIELDS},
    )


def _interrupted_message(prog: str, argv: Sequence[str], config: ExperimentConfig, out: str) -> str:
    words = [word for word in argv if word not in ("--resume", "--overwrite")]
    found = list_checkpoints(out)
    if not found:
        again = shlex.join([*shlex.split(prog), *words])
        return (
            f"interrupted before the first checkpoint (one every {config.checkpoint_every} steps), so there is "
            f"nothing to resume; start again with: {again}"
        )
    step, directory = found[-1]
    command = shlex.join([*shlex.split(prog), *words, "--resume"])
    return f"interrupted; the last checkpoint is {directory} (step {step} of {config.steps}); resume with: {command}"


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    file: TextIO | None = None, line: str | None = None,
) -> None:
    # The default format adds the file, line and source of the warning: noise for a CLI user.
    print(f"warning: {message}", file=file if file is not None else sys.stderr)


def main(backend: ModuleType, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m <backend> train ...``; returns the exit status.

    Examples
    --------
    ```python
    import types

    from pipekit_cycle.experiment import EXIT_USAGE, main

    try:  # an invalid flag value: one line on stderr, exit status 2, nothing written
        main(types.ModuleType("my_backend"), ["train", "--steps", "0", "--out", "runs/never"])
    except SystemExit as exit_:
        assert exit_.code == EXIT_USAGE
    else:
        raise AssertionError("--steps 0 was accepted")
    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"python -m {backend.__name__}"
    parser, train = _build_parsers(prog)
    args = parser.parse_args(argv)
    try:
        config = _config_from_args(args)
    except ConfigError as error:
        _usage_error(train, f"argument {error.flag}: {error.problem}")
    placement = _placement(backend, train, args.device, args.devices, config.batch_size)
    try:
        return _train(backend, train, prog, argv, args, config, placement)
    finally:
        placement.close()


def _placement(
    backend: ModuleType, train: argparse.ArgumentParser, device: str | None, devices: int | None, batch_size: int
) -> Placement:
    # Asked even without flags: under torchrun the ranks come from the environment.
    if not hasattr(backend, "placement"):
        if device is None and devices is None:
            return Placement("the backend's default device")
        _usage_error(train, f"--device/--devices: the backend {backend.__name__} has no placement()")
    try:
        placement = backend.placement(device, devices)
    except ValueError as error:
        _usage_error(train, str(error))
    try:
        placement.check_batch_size(batch_size)
    except ValueError as error:
        placement.close()
        _usage_error(train, f"argument --batch-size: {error}")
    return placement


def _train(
    backend: ModuleType, train: argparse.ArgumentParser, prog: str, argv: list[str], args: argparse.Namespace,
    config: ExperimentConfig, placement: Placement,
) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            metrics = run_experiment(
                backend, config, args.out, resume=args.resume, overwrite=args.overwrite,
                progress=not args.no_progress, figures=not args.no_figures, placement=placement,
            )
        except RunDirectoryError as error:
            _usage_error(train, str(error))
        except ConfigError as error:  # what only the data can tell (--data's contents, sizes that do not fit)
            _usage_error(train, f"argument {error.flag}: {error.problem}")
        except CheckpointError as error:
            print(f"{train.prog}: error: {error}", file=sys.stderr)
            return EXIT_FAILURE
        except FloatingPointError as error:
            print(f"{train.prog}: error: training diverged ({error}); try a smaller --lr", file=sys.stderr)
            return EXIT_FAILURE
        except OSError as error:
            print(f"{train.prog}: error: {error}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            print(_interrupted_message(prog, argv, config, args.out), file=sys.stderr)
            return EXIT_INTERRUPTED
    if placement.writes:
        print(json.dumps(metrics, indent=1))
    return 0
