"""Where a run lives: the device, the devices a batch is split across, this process's share.

Each backend's ``placement(device=None, devices=None)`` maps the driver's ``--device`` and
``--devices`` onto its own engine and returns a `Placement`; the experiment driver
(`pipekit_cycle.experiment`) then needs no framework:

* JAX (one controller, XLA's collectives): one process; every training batch is placed split
  along its batch axis over ``devices`` devices (``make_batch(..., sharding=)``), the model is
  replicated by jit; evaluation batches are replicated.
* torch (``torch.distributed``, one process per device, started by ``torchrun``): each rank
  builds the same model on its own device, takes its slice of every training batch, and
  `train_step` averages gradients over the ranks; rank 0 alone writes files.

In both, the step of ``batch_size`` windows over ``n`` devices is the step of the whole batch
(to rounding), so ``--devices`` does not change what a run computes, only where.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from .validation import check_batch_divisible

__all__ = ["Placement", "check_devices"]

T = TypeVar("T")


def check_devices(devices: object) -> int:
    """``devices`` (``None``: 1) as an int, or ``ValueError`` unless it is an int >= 1."""
    if devices is None:
        return 1
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"--devices must be an int >= 1, got {devices!r}")
    return devices


def _nothing() -> None:
    return None


@dataclasses.dataclass(frozen=True)
class Placement:
    """A run's placement, as a backend's ``placement(...)`` returns it.

    ``model_kwargs`` go to ``build_model``; ``batch_kwargs`` to ``make_batch`` for the
    evaluation batches, ``train_batch_kwargs`` for the training batches; this process is
    ``rank`` of ``n_ranks`` and holds the ``rank``-th of ``n_ranks`` equal slices of every
    training batch (`shard`); ``n_devices`` devices share each training batch in all;
    ``barrier`` waits for every rank, ``close`` ends what ``placement`` started (a process
    group). ``description`` names it for logs and ``metrics.json``.
    """

    description: str
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    batch_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    train_batch_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    n_devices: int = 1
    rank: int = 0
    n_ranks: int = 1
    barrier: Callable[[], None] = _nothing
    close: Callable[[], None] = _nothing

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (rank 0 only: one copy of each)."""
        return self.rank == 0

    def check_batch_size(self, batch_size: int) -> None:
        """``ValueError`` unless ``batch_size`` windows split evenly over the devices."""
        check_batch_divisible(batch_size, self.n_devices)

    def shard(self, windows: Sequence[T]) -> Sequence[T]:
        """This rank's equal, contiguous slice of a training batch's ``windows`` (all of them
        with one rank)."""
        size = len(windows) // self.n_ranks
        return windows[self.rank * size : (self.rank + 1) * size]
