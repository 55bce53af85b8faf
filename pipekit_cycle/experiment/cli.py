"""The command line every backend shares: ``python -m <backend> train ...``.

Its flags are the shared `ExperimentConfig` fields and every registered task's settings
(`pipekit_cycle.experiment.Task`); each flag's help gives its default, per system where the
system chooses it. A backend adds commands of its own as `Command` s: ``--help`` lists them
next to ``train``. Errors: an invalid flag value (checked in full before anything is written)
and a refused run directory are usage errors (one line, exit status 2, naming the flag; a flag
that was not given but whose default caused the error is named as such); an unreadable run is
exit status 1; Ctrl-C prints where the last checkpoint is and the command that resumes it (exit
status 130).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NoReturn, TextIO

from ..placement import Placement
from .config import DEFAULT_LR_SCHEDULE, SHARED_FIELDS, ExperimentConfig
from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CheckpointError, ConfigError, RunDirectoryError
from .loop import run_experiment
from .run_directory import list_checkpoints
from .task import Setting, Task, available_tasks, load_task

__all__ = ["Command", "build_parser", "main"]


@dataclasses.dataclass(frozen=True)
class Command:
    """A backend's own subcommand of ``python -m <backend>``, listed by ``--help`` next to ``train``.

    ``run`` takes the words after the command's name (it parses them, ``--help`` included) and
    returns the exit status.

    Examples
    --------
    ```python
    import contextlib
    import io
    import types

    from pipekit_cycle.experiment.cli import Command, main

    hello = Command("hello", "say hello", lambda argv: print("hello", *argv) or 0)
    backend = types.ModuleType("my_backend")
    assert main(backend, ["hello", "world"], commands=[hello]) == 0
    listing = io.StringIO()
    with contextlib.redirect_stdout(listing), contextlib.suppress(SystemExit):
        main(backend, ["--help"], commands=[hello])
    assert "train" in listing.getvalue() and "say hello" in listing.getvalue()
    ```
    """

    name: str
    help: str
    run: Callable[[Sequence[str]], int]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block of ~20 flags would bury the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    # Our messages say what is allowed already; argparse's own get the --help hint.
    parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")


def _per_system(field: str, tasks: list[Task]) -> str:
    values = {task.name: task.defaults[field] for task in tasks}
    if len(values) == 1:
        return f"default: {next(iter(values.values()))}"
    return "default: " + ", ".join(f"{value} for {name}" for name, value in values.items())


def _add_settings(train: argparse.ArgumentParser, tasks: list[Task]) -> None:
    """Every task's settings as flags, once each, saying which systems they belong to and, where
    the systems' ``defaults`` hold it, each one's default (so a help text cannot drift from them)."""
    owners: dict[str, list[Task]] = {}
    first: dict[str, Setting] = {}
    for task in tasks:
        for setting in task.settings:
            owners.setdefault(setting.name, []).append(task)
            first.setdefault(setting.name, setting)
    for name, setting in first.items():
        kwargs: dict[str, Any] = {"type": setting.type} if setting.choices is None else {"choices": setting.choices}
        kwargs.update({key: value for key, value in (("nargs", setting.nargs), ("metavar", setting.metavar))
                       if value is not None})
        text = f"{', '.join(task.name for task in owners[name])} only: {setting.help}"
        if all(name in task.defaults for task in owners[name]):
            text += f"; {_per_system(name, owners[name])}"
        train.add_argument(setting.flag, default=None, help=text, **kwargs)


def _build_parsers(
    prog: str, extra: Sequence[Command] = ()
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    # allow_abbrev=False: the resume command printed on Ctrl-C edits the flags as typed, which
    # needs every flag spelled out.
    tasks = [load_task(name) for name in available_tasks()]
    systems = "; ".join(f"{task.name}: {task.description}" for task in tasks)
    own = ", or run one of this backend's own commands" if extra else ""
    parser = _Parser(prog=prog, allow_abbrev=False,
                     description=f"Train a 4DVarNet on a registered system{own}; `{prog} COMMAND --help` describes "
                                 f"each command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train", help="train, checkpoint and evaluate", allow_abbrev=False,
        description=f"Train a 4DVarNet on a system ({systems}), checkpoint, evaluate on held-out data.",
    )
    # Listed only: main hands their words to their own parser before this one sees them.
    for command in extra:
        commands.add_parser(command.name, help=command.help, add_help=False)
    defaults = ExperimentConfig.shared_defaults
    train.add_argument("--system", choices=[task.name for task in tasks], default="l96", help="default: l96")
    train.add_argument("--adjoint", default=defaults["adjoint"],
                       help=f"the learned solver's adjoint: {ExperimentConfig().allowed_adjoints()}; "
                            f"default: {defaults['adjoint']}")
    train.add_argument("--steps", type=int, default=None,
                       help="training steps in total (with --resume: the total to reach); "
                            + _per_system("steps", tasks))
    train.add_argument("--batch-size", type=int, default=None, help=_per_system("batch_size", tasks))
    train.add_argument("--solver-steps", type=int, default=None, help=_per_system("solver_steps", tasks))
    train.add_argument("--seed", type=int, default=defaults["seed"],
                       help=f"seeds the simulated data, the initial parameters and the batches; "
                            f"default: {defaults['seed']}")
    train.add_argument("--lr", type=float, default=defaults["lr"],
                       help=f"Adam's learning rate (the peak rate under a schedule); default: {defaults['lr']}")
    schedules = {task.name: task.defaults.get("lr_schedule", DEFAULT_LR_SCHEDULE) for task in tasks}
    train.add_argument("--lr-schedule", default=None,
                       help="constant; cosine:W (a linear warm-up over W steps, then a cosine decay to 0 at the "
                            "last step, --steps; resuming to more steps stretches the decay to the new last step); or "
                            "cosine (a warm-up over 5%% of the steps); "
                            "default: " + ", ".join(f"{value} for {name}" for name, value in schedules.items()))
    train.add_argument("--window-length", type=int, default=None,
                       help=f"time steps per window (days for ssh); {_per_system('window_length', tasks)}")
    train.add_argument("--hidden-dim", type=int, default=None, help=_per_system("hidden_dim", tasks))
    train.add_argument("--prior-hidden-dim", type=int, default=None, help=_per_system("prior_hidden_dim", tasks))
    train.add_argument("--checkpoint-every", type=int, default=None,
                       help="steps between checkpoints and points of the learning curve (one is also written at "
                            "the last step); " + _per_system("checkpoint_every", tasks))
    _add_settings(train, tasks)
    train.add_argument("--out", required=True, help="run directory (required)")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    again.add_argument("--overwrite", action="store_true", help="remove the run in --out and start again")
    train.add_argument("--device", default=None,
                       help="where to train: a torch device (cpu, cuda, cuda:1) or a JAX platform (cpu, gpu); "
                            "default: the backend's (torch: cpu; JAX: its default platform)")
    train.add_argument("--devices", type=int, default=None,
                       help="split every batch over this many devices (JAX: one process; torch: the process count "
                            "torchrun started); default: 1, or under torchrun its process count")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    train.add_argument("--no-figures", action="store_true", help="draw no figures")
    return parser, train


def build_parser(prog: str, commands: Sequence[Command] = ()) -> argparse.ArgumentParser:
    """The ``train`` command line, identical for every backend (``commands``: a backend's own,
    listed by ``--help``; see `main`).

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import build_parser

    args = build_parser("python -m my_backend").parse_args(["train", "--system", "ssh", "--out", "runs/ssh"])
    assert (args.system, args.out, args.steps) == ("ssh", "runs/ssh", None)  # None: the system's default
    ```
    """
    return _build_parsers(prog, commands)[0]


def _config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    # Only the settings given: the config refuses another system's, naming the flag.
    names = {setting.name for task in map(load_task, available_tasks()) for setting in task.settings}
    given = {name: getattr(args, name) for name in sorted(names) if getattr(args, name) is not None}
    return ExperimentConfig(**{field: getattr(args, field) for field in SHARED_FIELDS}, **given)


def _given(flag: str, argv: Sequence[str]) -> bool:
    # Flags are spelled out (allow_abbrev=False), as "--flag value" or "--flag=value".
    return any(word == flag or word.startswith(flag + "=") for word in argv)


def _config_message(error: ConfigError, argv: Sequence[str], system: str) -> str:
    """The usage error's text: the flag, and when the user did not give it, that its default was
    at fault, so the message never seems to blame a flag that was not typed."""
    message = f"argument {error.flag}: {error.problem}"
    if _given(error.flag, argv) or error.field == "system":
        return message
    try:
        default = load_task(system).defaults.get(error.field, ExperimentConfig.shared_defaults.get(error.field))
    except ConfigError:  # an unregistered --system is reported by its own error
        default = None
    value = f"its default for --system {system}, {default}," if default is not None else "its default"
    return f"{message} ({error.flag} was not given: {value} applies; pass {error.flag} to change it)"


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


def main(backend: ModuleType, argv: Sequence[str] | None = None, *, commands: Sequence[Command] = ()) -> int:
    """Entry point of ``python -m <backend> train ...``; returns the exit status.

    ``commands`` are the backend's own (`Command`): ``--help`` lists them after ``train``, and
    ``python -m <backend> NAME ...`` runs ``NAME``'s ``run`` on the words after it.

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
    for command in commands:
        if argv[:1] == [command.name]:
            return command.run(argv[1:])
    prog = f"python -m {backend.__name__}"
    parser, train = _build_parsers(prog, commands)
    args = parser.parse_args(argv)
    try:
        config = _config_from_args(args)
    except ConfigError as error:
        _usage_error(train, _config_message(error, argv, args.system))
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
            _usage_error(train, _config_message(error, argv, config.system))
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
