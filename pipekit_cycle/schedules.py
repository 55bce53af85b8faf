r"""Learning-rate schedules both backends follow: optimizer step :math:`k` (from 0) moves the
parameters with the rate :math:`\mathrm{lr}\cdot s(k)`, ``lr`` being `OptimizerConfig.lr`.

The factor :math:`s(k)` is written once here, on any numpy-like array module (``xp``: numpy,
or ``jax.numpy`` for a step count traced inside a jitted update). The JAX backend hands
:math:`\mathrm{lr}\cdot s` to optax as its learning-rate schedule (the count lives in the optax
state); the torch backend sets each parameter group's rate before ``optimizer.step()`` from a
count it keeps in the group (so the count is in the optimizer's ``state_dict`` and in its
checkpoints).

`WarmupCosineSchedule` is optax's ``warmup_cosine_decay_schedule`` as a fraction of the peak
rate (tested against it): a linear warm-up over ``warmup_steps`` from ``init_fraction``, then
half a cosine down to ``end_fraction`` at step ``decay_steps`` (warm-up included), flat after.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .validation import check_field_int

__all__ = [
    "SCHEDULES",
    "WARMUP_FRACTION",
    "AbstractSchedule",
    "ConstantSchedule",
    "WarmupCosineSchedule",
    "parse_schedule",
    "schedule_from_dict",
]


class AbstractSchedule(abc.ABC):
    """The factor :math:`s(k)` of the learning rate at optimizer step ``k`` (module docstring)."""

    kind: ClassVar[str]
    # Whether s(k) = 1 at every k: the optimizer then needs no position (a plain rate, no step count).
    is_constant: ClassVar[bool] = False

    @abc.abstractmethod
    def factor(self, step: int | npt.ArrayLike, xp: ModuleType = np) -> float | npt.ArrayLike:
        """:math:`s(k)` at ``step`` (an int or an integer array of ``xp``), in ``xp``'s arithmetic."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}  # type: ignore[call-overload]


@dataclasses.dataclass(frozen=True)
class ConstantSchedule(AbstractSchedule):
    """:math:`s(k) = 1`: the rate ``lr`` at every step."""

    kind: ClassVar[str] = "constant"
    is_constant: ClassVar[bool] = True

    def factor(self, step: int | npt.ArrayLike, xp: ModuleType = np) -> float | npt.ArrayLike:
        del step, xp
        return 1.0


@dataclasses.dataclass(frozen=True)
class WarmupCosineSchedule(AbstractSchedule):
    r"""A linear warm-up, then a cosine decay (optax's ``warmup_cosine_decay_schedule``):

    .. math::
        s(k) = \begin{cases}
        s_0 + (1 - s_0)\, k / W & k < W, \\
        s_\infty + (1 - s_\infty)\, \tfrac12 \big(1 + \cos(\pi\, \min(k - W, D - W) / (D - W))\big) & k \ge W,
        \end{cases}

    with :math:`W` = ``warmup_steps``, :math:`D` = ``decay_steps`` (the warm-up included, so
    :math:`D > W`), :math:`s_0` = ``init_fraction`` and :math:`s_\infty` = ``end_fraction``.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk

    schedule = pk.WarmupCosineSchedule(warmup_steps=10, decay_steps=110)
    assert schedule.factor(0) == 0.0 and schedule.factor(5) == 0.5 and schedule.factor(10) == 1.0
    assert np.isclose(schedule.factor(60), 0.5) and schedule.factor(110) == schedule.factor(500) == 0.0
    opt = pk.OptimizerConfig(name="adam", lr=3e-3, schedule=schedule)
    assert pk.OptimizerConfig.from_json(opt.to_json()) == opt
    ```
    """

    kind: ClassVar[str] = "warmup_cosine"
    warmup_steps: int
    decay_steps: int
    init_fraction: float = 0.0
    end_fraction: float = 0.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        warmup = self.warmup_steps
        if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 0:
            raise ValueError(f"{owner}.warmup_steps must be an int >= 0, got {warmup!r}")
        check_field_int(owner, "decay_steps", self.decay_steps)
        if self.decay_steps <= self.warmup_steps:
            raise ValueError(f"{owner}.decay_steps ({self.decay_steps}) counts the warm-up: it must be more than "
                             f"warmup_steps ({self.warmup_steps})")
        for name in ("init_fraction", "end_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"{owner}.{name} must be a fraction of the peak rate in [0, 1], got {value!r}")

    def factor(self, step: int | npt.ArrayLike, xp: ModuleType = np) -> float | npt.ArrayLike:
        warmup, cosine = self.warmup_steps, self.decay_steps - self.warmup_steps
        rising = self.init_fraction + (1.0 - self.init_fraction) * step / max(warmup, 1)
        progress = xp.minimum(xp.maximum(step - warmup, 0), cosine) / cosine
        falling = self.end_fraction + (1.0 - self.end_fraction) * 0.5 * (1.0 + xp.cos(math.pi * progress))
        value = xp.where(step < warmup, rising, falling)
        return float(value) if xp is np and np.ndim(value) == 0 else value


SCHEDULES: dict[str, type[AbstractSchedule]] = {
    schedule.kind: schedule for schedule in (ConstantSchedule, WarmupCosineSchedule)}
"""The schedules by their ``kind``, as `schedule_from_dict` reads them."""


def schedule_from_dict(data: dict[str, Any]) -> AbstractSchedule:
    """The schedule ``to_dict`` wrote (``{"kind": ..., fields}``); ``ValueError`` naming the kinds."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind not in SCHEDULES:
        raise ValueError(f"a learning-rate schedule's kind must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    known = {field.name for field in dataclasses.fields(SCHEDULES[kind])}
    if set(fields) - known:
        raise ValueError(f"{SCHEDULES[kind].__name__}: unknown fields {sorted(set(fields) - known)}; known: "
                         f"{sorted(known)}")
    return SCHEDULES[kind](**fields)


WARMUP_FRACTION = 0.05
"""The warm-up of the bare ``cosine`` form of `parse_schedule`, as a fraction of the run's steps."""


def parse_schedule(text: str, steps: int) -> AbstractSchedule:
    """The command line's form: ``constant``; ``cosine:W`` (a linear warm-up of ``W`` steps from
    0, then a cosine to 0 at step ``steps``, the run's last); or ``cosine``, the same with a
    warm-up of `WARMUP_FRACTION` of the steps (100 of 2000). ``ValueError`` naming the forms.

    Examples
    --------
    ```python
    from pipekit_cycle.schedules import ConstantSchedule, WarmupCosineSchedule, parse_schedule

    assert parse_schedule("cosine:100", steps=2000) == WarmupCosineSchedule(warmup_steps=100, decay_steps=2000)
    assert parse_schedule("cosine", steps=2000) == parse_schedule("cosine:100", steps=2000)
    assert parse_schedule("constant", steps=2000) == ConstantSchedule()
    ```
    """
    forms = ("constant, cosine:W (a warm-up of W steps, then a cosine decay to 0 at the last step), or cosine (a "
             f"warm-up of {WARMUP_FRACTION:.0%} of the steps)")
    name, colon, argument = str(text).partition(":")
    if name == "constant" and not colon:
        return ConstantSchedule()
    if name == "cosine" and not colon:
        return WarmupCosineSchedule(warmup_steps=int(WARMUP_FRACTION * steps), decay_steps=steps)
    if name == "cosine" and argument.isdigit():
        if int(argument) >= steps:
            raise ValueError(f"cosine:{argument}: the warm-up must be shorter than the run ({steps} steps)")
        return WarmupCosineSchedule(warmup_steps=int(argument), decay_steps=steps)
    raise ValueError(f"a learning-rate schedule is {forms}; got {text!r}")
