"""The training loop every system and every backend runs: `run_experiment`.

Written only against the `pipekit_cycle.Backend` protocol (plus the optional
``export_optimizer_state`` / ``import_optimizer_state`` for bit-exact resume), so
``python -m vardax_jax train ...`` and ``python -m vardax_torch train ...`` run the same code
with the same flags; what differs between systems is the task's
(`pipekit_cycle.experiment.Task`): its samples, its evaluation, its files.

Checkpoints (`pipekit_cycle.experiment.run_directory`): one every ``checkpoint_every`` steps and
one at the last step. A held-out loss (the training loss on the task's held-out samples) and a
point of the learning curve (the task's `pipekit_cycle.experiment.TaskData.checkpoint_scores`,
with the step and the seconds spent in training steps so far, evaluation and writing left out)
are recorded at step 0 and at every checkpoint; ``metrics.json`` holds the curve as
``learning_curve``.

Runs are never overwritten by accident: a directory that holds a run is refused unless
``resume`` (continue from the newest readable checkpoint) or ``overwrite`` (remove the run's
files, then start again; other files in the directory are left alone). On resume, ``steps`` is
the target total: training continues from the checkpoint's step up to ``steps``, exactly as if
it had not stopped (same batches, same optimizer state). Asking fewer steps than the run has
already been trained for is refused (a model cannot be untrained, and writing the smaller
number into metrics.json would be false); asking the same number evaluates the run again.
``metrics.json``'s ``steps`` is always the number of steps the evaluated model was trained for.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..params import atomic_write
from ..placement import Placement
from .config import ExperimentConfig
from .errors import RunDirectoryError
from .run_directory import (
    METRICS_FILE,
    describe_run,
    fresh_training,
    remove_run,
    restore_training,
    tidy_checkpoints,
    write_checkpoint,
)
from .task import progress_bar

__all__ = ["run_experiment"]


def _held_out_loss(
    backend: ModuleType, model: Any, obs: np.ndarray, truth: np.ndarray, batch_size: int, placement: Placement
) -> float:
    """The training loss on the held-out windows (a batch mean, so weighted by batch size)."""
    total = 0.0
    for start in range(0, obs.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        batch = backend.make_batch(obs[chunk], target=truth[chunk], **placement.batch_kwargs)
        total += float(backend.eval_step(model, batch)) * obs[chunk].shape[0]
    return total / obs.shape[0]



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
    ``config.steps`` exactly as if it had not stopped (same batches, same optimizer state), and
    say so in one line on stderr (``resuming OUT from step N; continuing to step M``).
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
    held = describe_run(out_dir) if out_dir.is_dir() else None
    if held and not (resume or overwrite):
        raise RunDirectoryError(
            f"--out: {out_dir} already holds a run ({held}); pass --resume to continue it or --overwrite to "
            f"start again"
        )
    if resume:
        training, damaged = restore_training(backend, config, out_dir, placement)
    else:
        training, damaged = fresh_training(backend, config, placement), []
    progress = progress and placement.writes
    data = config.task.prepare(config, progress=progress)  # may refuse the data (ConfigError): before any write
    if resume and placement.writes:
        # Said even under --no-progress: otherwise only the progress bar's start shows where the run goes on.
        again = "evaluating it again" if training.step == config.steps else f"continuing to step {config.steps}"
        print(f"resuming {out_dir} from step {training.step}; {again}", file=sys.stderr)
    # Everything above only read (on every rank); from here on the run directory changes.
    placement.barrier()
    if placement.writes:
        if overwrite:
            remove_run(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tidy_checkpoints(out_dir, damaged)

    def held_out_loss() -> float:
        return _held_out_loss(backend, training.model, *data.held_out, config.batch_size, placement)

    def record_checkpoint() -> None:
        training.held_out.append([training.step, held_out_loss()])
        training.curve.append({"step": training.step, "train_seconds": training.train_seconds,
                               **data.checkpoint_scores(backend, training.model, placement)})

    if not training.held_out:
        record_checkpoint()
    with progress_bar(config.steps, training.step, progress, "train") as bar:
        while training.step < config.steps:
            started = time.perf_counter()
            # Every rank draws the same windows (the same sampler) and keeps its own slice of them.
            chosen = placement.shard(training.sampler.choice(data.n_samples, size=config.batch_size, replace=False))
            obs, truth = data.training_samples(np.asarray(chosen))
            batch = backend.make_batch(obs, target=truth, **placement.train_batch_kwargs)
            training.model, training.opt_state, loss = backend.train_step(
                training.model, batch, training.optimizer, training.opt_state
            )
            training.losses.append(float(loss))  # float(): the step's work is done once it is read
            training.train_seconds += time.perf_counter() - started
            training.step += 1
            bar.update(1)
            if training.step % config.checkpoint_every == 0 or training.step == config.steps:
                record_checkpoint()
                state = {
                    "step": training.step,
                    "sampler": training.sampler.bit_generator.state,
                    "losses": training.losses,
                    "held_out": training.held_out,
                    "curve": training.curve,
                    "train_seconds": training.train_seconds,
                    "experiment": config.to_dict(),
                    "backend": backend.__name__,
                }
                if placement.writes:
                    write_checkpoint(out_dir, training.step, backend, training.model, training.opt_state, state)
                placement.barrier()
            bar.set_postfix(loss=f"{training.losses[-1]:.4f}", held_out=f"{training.held_out[-1][1]:.4f}")

    metrics: dict[str, Any] = {
        "backend": backend.__name__,
        "system": config.system,
        "adjoint": config.adjoint,
        "steps": training.step,  # trained for, not asked (the same, since fewer is refused)
        **data.evaluate(backend, training.model, placement, progress),
        "final_train_loss": training.losses[-1] if training.losses else None,
        "final_held_out_loss": training.held_out[-1][1],
        "learning_curve": training.curve,
    }
    metrics["figures"] = []
    if placement.writes:
        metrics.update(data.write_outputs(out_dir, metrics, figures, training.losses, training.held_out))
        atomic_write(out_dir / METRICS_FILE, json.dumps(metrics, indent=1).encode())
    return metrics
