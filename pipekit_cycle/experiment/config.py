"""`ExperimentConfig`: what the driver trains and how, for any registered system."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..adjoints import INNER_SOLVE, SPEC_TYPES, AdjointSpec, parse_adjoint
from ..config import FourDVarNetConfig, OptimizerConfig
from ..schedules import parse_schedule
from ..validation import check_int, check_positive
from .errors import ConfigError
from .task import Task, available_tasks, load_task

__all__ = ["SHARED_FIELDS", "ExperimentConfig"]

# The fields every system has; a system's own fields are its task's settings.
SHARED_FIELDS = ("system", "adjoint", "steps", "batch_size", "solver_steps", "seed", "lr", "lr_schedule",
                 "window_length", "hidden_dim", "prior_hidden_dim", "checkpoint_every")
# The learning-rate schedule of a task whose ``defaults`` name none, and of runs saved before
# schedules existed.
DEFAULT_LR_SCHEDULE = "constant"
# Shared fields a task must give a default for (left at None, the task's value is taken).
_TASK_DEFAULTED = ("steps", "batch_size", "solver_steps", "hidden_dim", "prior_hidden_dim", "window_length",
                   "checkpoint_every")
_POSITIVE_INTS = ("steps", "batch_size", "solver_steps", "hidden_dim", "prior_hidden_dim", "checkpoint_every")


def config_int(field: str, value: object, minimum: int) -> int:
    """``value`` if it is an integer >= ``minimum``, else `ConfigError` naming ``field``."""
    try:
        return check_int(field, value, minimum)
    except ValueError:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}") from None


def config_positive(field: str, value: object) -> float:
    """``value`` as a float if it is a finite number > 0, else `ConfigError` naming ``field``."""
    try:
        return check_positive(field, value)
    except ValueError:
        raise ConfigError(field, f"must be a finite number > 0, got {value!r}") from None


class ExperimentConfig:
    """What to train and how: the shared fields (`SHARED_FIELDS`) and the settings of the
    system's task (`pipekit_cycle.experiment.Task`), given as keywords.

    A shared size left at ``None`` takes the task's value (``load_task(system).defaults``), and
    each setting left at ``None`` is resolved by the task, at construction: a config always
    holds numbers. Every field is checked then (`ConfigError`, a ``ValueError``, naming the
    flag); a setting of another system is refused, not ignored. The adjoint is stored in its
    canonical text form (``str(parse_adjoint(adjoint))``). Immutable and equal by value; read
    any field as an attribute (``config.steps``, ``config.patch_size``).

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import ConfigError, ExperimentConfig, load_task

    l96 = ExperimentConfig(system="l96")  # sizes left unset take the system's defaults
    assert l96.steps == load_task("l96").defaults["steps"] and l96.window_length == 10
    ssh = ExperimentConfig(system="ssh", grid=32, patch_size=16, adjoint="truncated:2")
    assert ssh.model_config().state_shape == (16, 16) and ssh.adjoint == "truncated:2"
    assert ExperimentConfig.from_dict(ssh.to_dict()) == ssh  # what a checkpoint stores
    try:
        ExperimentConfig(system="l96", patch_size=16)
    except ConfigError as error:
        assert error.flag == "--patch-size"  # an ssh setting is refused for l96, not ignored
    else:
        raise AssertionError("patch_size was accepted for l96")
    ```
    """

    __slots__ = ("_fields",)
    _fields: dict[str, Any]
    shared_defaults: ClassVar[Mapping[str, Any]] = {"adjoint": "checkpoint", "seed": 0, "lr": 3e-3}

    def __init__(
        self,
        system: str = "l96",
        *,
        adjoint: str = "checkpoint",
        steps: int | None = None,
        batch_size: int | None = None,
        solver_steps: int | None = None,
        seed: int = 0,
        lr: float = 3e-3,
        lr_schedule: str | None = None,
        window_length: int | None = None,
        hidden_dim: int | None = None,
        prior_hidden_dim: int | None = None,
        checkpoint_every: int | None = None,
        **settings: Any,
    ) -> None:
        task = load_task(system)
        own = {setting.name for setting in task.settings}
        for field in settings:
            if field not in own:
                raise ConfigError(field, _foreign(field, system))
        if lr_schedule is None:
            lr_schedule = task.defaults.get("lr_schedule", DEFAULT_LR_SCHEDULE)
        fields = {
            "system": system, "adjoint": adjoint, "steps": steps, "batch_size": batch_size,
            "solver_steps": solver_steps, "seed": seed, "lr": lr, "lr_schedule": lr_schedule,
            "window_length": window_length,
            "hidden_dim": hidden_dim, "prior_hidden_dim": prior_hidden_dim, "checkpoint_every": checkpoint_every,
        }
        for field in _TASK_DEFAULTED:
            if fields[field] is None:
                fields[field] = task.defaults[field]
        for field in _POSITIVE_INTS:
            config_int(field, fields[field], 1)
        config_int("seed", seed, 0)  # numpy generators refuse negative seeds
        config_int("window_length", fields["window_length"], 2)
        config_positive("lr", lr)
        try:  # checked here, stored as the text; the schedule object is built where the optimizer is
            parse_schedule(fields["lr_schedule"], fields["steps"])
        except ValueError as error:
            raise ConfigError("lr_schedule", str(error)) from None
        fields.update({setting.name: settings.get(setting.name, setting.default) for setting in task.settings})
        object.__setattr__(self, "_fields", fields)
        fields.update(task.resolve(self))
        fields["adjoint"] = str(self._check_adjoint(task))

    # --- immutable, by value -------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_fields")[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} of --system {self.system} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; use replace({name}=...)")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExperimentConfig) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(tuple(sorted((key, repr(value)) for key, value in self._fields.items())))

    def __repr__(self) -> str:
        return f"ExperimentConfig({', '.join(f'{key}={value!r}' for key, value in self._fields.items())})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self).from_dict, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """Every field by name (shared, then the task's), JSON-serialisable."""
        return dict(self._fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """The config `to_dict` gave (checked again)."""
        return cls(**dict(data))

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A new config with ``changes``, checked again."""
        return type(self).from_dict({**self._fields, **changes})

    @property
    def task(self) -> Task:
        """The system's task (`load_task(system)`)."""
        return load_task(self.system)

    @property
    def length(self) -> int:
        """The window length T (time steps; days for ssh)."""
        return self.window_length

    # --- what it builds ------------------------------------------------------------------------

    def model_config(self) -> FourDVarNetConfig:
        """The `FourDVarNetConfig` of the model this experiment trains."""
        return self.task.model_config(self, parse_adjoint(self.adjoint))

    def optimizer_config(self) -> OptimizerConfig:
        """Adam at ``lr``, scaled by ``lr_schedule`` (`pipekit_cycle.schedules.parse_schedule`:
        a cosine decays to 0 at step ``steps``)."""
        return OptimizerConfig(name="adam", lr=self.lr, schedule=parse_schedule(self.lr_schedule, self.steps))

    def allowed_adjoints(self, task: Task | None = None) -> str:
        """The inner-solve adjoints that can differentiate this experiment's solver, in words."""
        task = self.task if task is None else task
        tags = []
        for cls in SPEC_TYPES:
            if INNER_SOLVE not in cls.layers:
                continue
            try:
                task.model_config(self, cls())
            except (ValueError, TypeError):
                continue  # e.g. one that needs another solver than this driver's
            tags.append(cls.tag)
        example = " (options as in truncated:2)" if "truncated" in tags else ""
        return ", ".join(tags) + example

    def _check_adjoint(self, task: Task) -> AdjointSpec:
        text = self.adjoint
        if not isinstance(text, str):
            raise ConfigError("adjoint", f"must be a text such as 'truncated:2', got {text!r}")
        tag = text.split(":", 1)[0].strip().lower()
        known = {cls.tag: cls for cls in SPEC_TYPES}
        if tag not in known:
            raise ConfigError("adjoint", f"unknown adjoint {text!r}; allowed here: {self.allowed_adjoints(task)}")
        if INNER_SOLVE not in known[tag].layers:
            layers = "/".join(sorted(known[tag].layers))
            raise ConfigError(
                "adjoint",
                f"{text!r} is a {layers}-layer adjoint (for an ODE forward model), not one for the learned "
                f"inner solve; allowed here: {self.allowed_adjoints(task)}",
            )
        try:
            spec = parse_adjoint(text)
        except (ValueError, TypeError) as error:
            raise ConfigError("adjoint", f"{error}") from None
        try:
            task.model_config(self, spec)
        except (ValueError, TypeError) as error:
            raise ConfigError("adjoint", f"{text!r} cannot differentiate this solver: {error}") from None
        return spec


def _foreign(field: str, system: str) -> str:
    owners = [name for name in available_tasks()
              if any(setting.name == field for setting in load_task(name).settings)]
    if not owners:
        return f"is not a setting of any system (--system {system} has its own; see --help)"
    return f"is a setting of --system {', '.join(owners)}, not of --system {system}"
