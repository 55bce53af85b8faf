"""What a system brings to the driver: the `Task` protocol, and finding tasks by name.

The driver (`pipekit_cycle.experiment.run_experiment`, the command line) knows no system. A
system is a task: an object satisfying `Task`, registered in the entry-point group
``pipekit_cycle.tasks`` under the ``--system`` name it answers to. A task says

* what it adds to an `ExperimentConfig`: its `Setting` s (each a field and a command-line
  flag), the defaults of the shared fields (``defaults``: steps, batch size, window length...),
  and the checks of both (`Task.resolve`, raising `ConfigError` naming the flag);
* the model it trains (`Task.model_config`: the state shape, padding, prior);
* its data for one run (`Task.prepare` returns a `TaskData`: training samples, held-out
  samples, the evaluation written to ``metrics.json``, the files and figures it writes);
* the files it may leave in a run directory (``outputs``, removed by ``--overwrite``).

This package registers ``l63`` and ``l96`` (`pipekit_cycle.experiment.lorenz`) and ``ssh``
(`pipekit_cycle.experiment.ssh`). A new system is a new module and one entry point in its
distribution's ``pyproject.toml``::

    [project.entry-points."pipekit_cycle.tasks"]
    my_system = "my_package.my_module:MY_TASK"

and touches no module of the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from ..config import FourDVarNetConfig
from ..placement import Placement
from .errors import ConfigError

if TYPE_CHECKING:
    from ..adjoints import AdjointSpec
    from .config import ExperimentConfig

__all__ = ["ENTRY_POINT_GROUP", "Setting", "Task", "TaskData", "available_tasks", "load_task", "progress_bar"]

ENTRY_POINT_GROUP = "pipekit_cycle.tasks"


@dataclasses.dataclass(frozen=True)
class Setting:
    """A field a task adds to `ExperimentConfig`, and its flag ``--name-with-dashes``.

    ``default`` ``None`` means the task resolves it (`Task.resolve`), and ``help`` says how;
    ``type`` parses the flag's text (``int``, ``float``, ``str``); ``choices`` limits it;
    ``nargs`` (argparse's: a count or ``"+"``) makes it a list, with ``metavar`` naming the words.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import Setting

    setting = Setting("patch_size", int, "the square patch the solver maps, in grid points (default 32)")
    assert setting.flag == "--patch-size" and setting.default is None
    ```
    """

    name: str
    type: Callable[[str], Any]
    help: str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    nargs: int | str | None = None
    metavar: str | tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@runtime_checkable
class TaskData(Protocol):
    """A task's data for one run, made by `Task.prepare`.

    ``held_out`` and `training_samples` are ``(obs, truth)`` arrays of standardised samples
    ``(n, T, *state_shape)``, ``obs`` NaN where unobserved; ``n_samples`` counts the training
    samples `training_samples` draws from. `checkpoint_scores` scores the model at step 0 and at
    every checkpoint, the points of the learning curve (``metrics["learning_curve"]``, each with
    its ``step`` and ``train_seconds``; empty for a task whose held-out loss is its curve).
    `evaluate` returns the entries of ``metrics.json`` that score the model; `write_outputs`
    (rank 0 only) writes the task's files and figures and returns the entries naming them
    (``figures``: the figure files, empty when ``figures`` is false).
    """

    n_samples: int
    held_out: tuple[np.ndarray, np.ndarray]

    def training_samples(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def checkpoint_scores(
        self, backend: ModuleType, model: Any, placement: Placement
    ) -> dict[str, float | None]: ...

    def evaluate(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> dict[str, Any]: ...

    def write_outputs(
        self, out: Path, metrics: dict[str, Any], figures: bool, losses: list[float], held_out: list[list[float]]
    ) -> dict[str, Any]: ...


@runtime_checkable
class Task(Protocol):
    """A system the driver trains on (module docstring).

    ``name`` is its ``--system`` value, ``description`` one line for ``--help``; ``defaults``
    maps the shared `ExperimentConfig` fields it sets when they are left at ``None``
    (``steps``, ``batch_size``, ``solver_steps``, ``hidden_dim``, ``prior_hidden_dim``,
    ``window_length``, ``checkpoint_every``); ``settings`` are its own fields and flags; ``outputs`` the files it
    may write into a run directory.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import Task, available_tasks, load_task

    for name in available_tasks():  # l63, l96 and ssh, and any a user registered
        task = load_task(name)
        assert isinstance(task, Task) and task.name == name
    assert {setting.name for setting in load_task("ssh").settings} >= {"patch_size", "data"}
    ```
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    settings: tuple[Setting, ...]
    outputs: tuple[str, ...]

    def resolve(self, config: ExperimentConfig) -> dict[str, Any]:
        """Every setting of this task, the ``None`` ones filled in, checked against each other and
        the shared fields (`ConfigError` naming the field)."""
        ...

    def model_config(self, config: ExperimentConfig, adjoint: AdjointSpec) -> FourDVarNetConfig:
        """The model trained under ``config``, differentiated by ``adjoint``."""
        ...

    def prepare(self, config: ExperimentConfig, *, progress: bool) -> TaskData:
        """Load or simulate the data of a run; `ConfigError` for data that cannot serve it."""
        ...


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_tasks() -> list[str]:
    """The registered ``--system`` names, sorted.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import available_tasks

    assert {"l63", "l96", "ssh"} <= set(available_tasks())
    ```
    """
    return sorted(_entry_points())


def load_task(name: str) -> Task:
    """The task registered as ``name``; `ConfigError` (field ``system``) naming the registered ones.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import ConfigError, load_task

    assert load_task("l96").defaults["window_length"] == 10
    try:
        load_task("l42")
    except ConfigError as error:
        assert error.flag == "--system" and "l63, l96, ssh" in error.problem
    else:
        raise AssertionError("an unregistered system was found")
    ```
    """
    entries = _entry_points()
    if not isinstance(name, str) or name not in entries:
        raise ConfigError("system", f"must be one of {', '.join(sorted(entries))} (the entry-point group "
                          f"{ENTRY_POINT_GROUP!r}), got {name!r}")
    task = entries[name].load()
    if not isinstance(task, Task) or task.name != name:
        raise ConfigError("system", f"the entry point {entries[name].value!r} registered as {name!r} is not a "
                          f"Task named {name!r}")
    return task


@contextlib.contextmanager
def progress_bar(total: int, initial: int, enabled: bool, desc: str) -> Iterator[Any]:
    """A tqdm bar of ``total`` steps from ``initial`` (hidden unless ``enabled``): a context
    manager, so that Ctrl-C closes the bar and the message after it starts on its own line.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import progress_bar

    with progress_bar(3, 0, False, "map") as bar:
        bar.update(3)
    ```
    """
    from tqdm import tqdm

    with tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step", dynamic_ncols=True) as bar:
        yield bar
