"""The experiment driver every backend runs: ``python -m <backend> train --system ...``.

One module per job:

* `pipekit_cycle.experiment.config`: `ExperimentConfig`, the shared fields and a task's settings;
* `pipekit_cycle.experiment.task`: the `Task` protocol a system brings, found by name
  (`load_task`, the entry-point group ``pipekit_cycle.tasks``);
* `pipekit_cycle.experiment.lorenz` and `pipekit_cycle.experiment.ssh`: the two systems of
  this package (``l63``, ``l96``; ``ssh``);
* `pipekit_cycle.experiment.loop`: `run_experiment`, the training loop;
* `pipekit_cycle.experiment.run_directory`: checkpoints written and read back;
* `pipekit_cycle.experiment.cli`: the command line (`main`, `build_parser`);
* `pipekit_cycle.experiment.errors`: what it refuses and warns about;
* `pipekit_cycle.experiment.figures` (matplotlib) and `pipekit_cycle.experiment.demo`.

The driver knows no system: it asks the config's task for its samples, evaluation and files.
"""

from .cli import build_parser, main
from .config import SHARED_FIELDS, ExperimentConfig
from .errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CheckpointError,
    CheckpointFallbackWarning,
    ConfigError,
    FiguresSkippedWarning,
    NetcdfSkippedWarning,
    RunDirectoryError,
    SparseObservationsWarning,
)
from .loop import run_experiment
from .run_directory import latest_checkpoint, list_checkpoints
from .task import ENTRY_POINT_GROUP, Setting, Task, TaskData, available_tasks, load_task, progress_bar

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "SHARED_FIELDS",
    "CheckpointError",
    "CheckpointFallbackWarning",
    "ConfigError",
    "ExperimentConfig",
    "FiguresSkippedWarning",
    "NetcdfSkippedWarning",
    "RunDirectoryError",
    "Setting",
    "SparseObservationsWarning",
    "Task",
    "TaskData",
    "available_tasks",
    "build_parser",
    "latest_checkpoint",
    "list_checkpoints",
    "load_task",
    "main",
    "progress_bar",
    "run_experiment",
]
