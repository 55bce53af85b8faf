"""The run directory (``--out``): checkpoints written whole or not at all, and read back.

Layout::

    checkpoints/step-000050/           one checkpoint per directory, the last two kept
        checkpoint.safetensors         model parameters + the FourDVarNetConfig as metadata
        optimizer.safetensors          optimizer state
        state.json                     step, sampler state, training losses, held-out losses,
                                       learning curve, training seconds, experiment config, backend
    checkpoints/step-000100/           the latest
    checkpoints/damaged-step-...       a checkpoint that could not be read, set aside on resume
    metrics.json                       the task's scores (`pipekit_cycle.experiment.run_experiment`)
    ...                                the task's files and figures (its ``outputs``)

Each checkpoint is written whole into a temporary directory and renamed into place, so a
checkpoint directory is either complete or absent; then all but the two newest are removed.
Files are written atomically with the mode the umask gives (`pipekit_cycle.params.atomic_write`).

On resume the settings must be those of the run, except ``steps``, ``checkpoint_every``,
``fourdvar_windows`` and ``held_out_map`` (`RESUMABLE_CHANGES`), which change nothing about the
training trajectory; a damaged checkpoint (unreadable safetensors or JSON, a missing file, contents that
do not fit) is reported with a `CheckpointFallbackWarning` naming the file, set aside as
``damaged-step-...``, and the previous checkpoint is used; with none readable,
`CheckpointError` names every damaged file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..adjoints import parse_adjoint
from ..config import FourDVarNetConfig
from ..params import CONFIG_METADATA_KEY, atomic_write, save_params, validate_params
from ..placement import Placement
from .config import DEFAULT_LR_SCHEDULE
from .errors import CheckpointError, CheckpointFallbackWarning, RunDirectoryError
from .task import available_tasks, load_task

if TYPE_CHECKING:
    from .config import ExperimentConfig

__all__ = ["CHECKPOINTS", "METRICS_FILE", "RESUMABLE_CHANGES", "latest_checkpoint", "list_checkpoints"]

CHECKPOINTS = "checkpoints"
MODEL_FILE = "checkpoint.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
METRICS_FILE = "metrics.json"
KEEP_CHECKPOINTS = 2
# Settings a resume may change: none of them alters the batches or the updates.
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "fourdvar_windows", "held_out_map")
# The single top-level checkpoint of earlier versions: still recognised as a run, so it is
# never silently overwritten, and removed by --overwrite.
LEGACY_FILES = (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)

_STEP_DIR = re.compile(r"step-(\d+)")
_STATE_KEYS = ("step", "sampler", "losses", "held_out", "experiment", "backend")


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


def describe_run(out: Path) -> str | None:
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


def remove_run(out: Path) -> None:
    """Remove the files a run writes, those of every registered task (only those: ``--out`` may
    hold other files)."""
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    outputs = {name for system in available_tasks() for name in load_task(system).outputs}
    for name in (METRICS_FILE, *sorted(outputs), *LEGACY_FILES):
        (out / name).unlink(missing_ok=True)


def _fsync_directory(path: Path) -> None:
    # Makes a rename durable; not every platform or file system can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def tidy_checkpoints(out: Path, damaged: Sequence[Path]) -> None:
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


def write_checkpoint(
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
    if made.get("window_length") is None and made.get("system") in available_tasks():
        # Runs saved before the length was resolved at construction stored None for the default.
        made["window_length"] = load_task(made["system"]).defaults["window_length"]
    # Runs saved before learning-rate schedules existed trained at a constant rate.
    made.setdefault("lr_schedule", DEFAULT_LR_SCHEDULE)
    asked = {**config.to_dict(), "backend": backend}
    # A field the run was saved before reads as unset (None): the run matches a config that leaves it unset.
    differ = [key for key in asked if key not in RESUMABLE_CHANGES and made.get(key) != asked[key]]
    if differ:
        then = ", ".join(f"{key}={made.get(key, '<unset>')}" for key in differ)
        now = ", ".join(f"{key}={asked[key]}" for key in differ)
        raise RunDirectoryError(
            f"--resume: this run was made with {then}; you asked {now} "
            f"(ask the same to continue it, or --overwrite to start again)"
        )


@dataclasses.dataclass
class Training:
    """Everything that evolves during training, as a checkpoint holds it."""

    model: Any
    optimizer: Any
    opt_state: Any
    sampler: np.random.Generator
    losses: list[float]
    held_out: list[list[float]]
    step: int
    curve: list[dict[str, float | None]] = dataclasses.field(default_factory=list)  # None: not resolved
    train_seconds: float = 0.0  # wall time in training steps alone, over every session of the run


def fresh_training(backend: ModuleType, config: ExperimentConfig, placement: Placement) -> Training:
    model = backend.build_model(config.model_config(), seed=config.seed, **placement.model_kwargs)
    optimizer, opt_state = backend.make_optimizer(config.optimizer_config(), model)
    return Training(model, optimizer, opt_state, np.random.default_rng(config.seed + 1), [], [], 0)


def _load(
    backend: ModuleType, config: ExperimentConfig, directory: Path, state: dict[str, Any], placement: Placement
) -> Training:
    """A fresh model and optimizer (an import that fails half-way leaves nothing behind for the
    fallback), loaded from ``directory``; `CheckpointError` naming the file otherwise."""
    training = fresh_training(backend, config, placement)
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
    # Runs saved before the learning curve existed have none: it goes on from this checkpoint.
    try:
        training.curve = [
            {**{str(key): None if value is None else float(value) for key, value in point.items()},
             "step": int(point["step"])}
            for point in state.get("curve", [])
        ]
        training.train_seconds = float(state.get("train_seconds", 0.0))
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{directory / STATE_FILE}: unusable learning curve ({error!r})") from None
    training.step = int(state["step"])
    return training


def restore_training(
    backend: ModuleType, config: ExperimentConfig, out: Path, placement: Placement
) -> tuple[Training, list[Path]]:
    """The newest readable checkpoint of ``out`` and the damaged newer ones; writes nothing."""
    found = list_checkpoints(out)
    if not found:
        held = describe_run(out)
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


