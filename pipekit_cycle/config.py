"""Neutral, JSON-serialisable configurations of a 4DVarNet model and of its optimizer."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from .adjoints import (
    INNER_SOLVE,
    SOLVERS,
    AdjointSpec,
    RecursiveCheckpointAdjoint,
    adjoint_from_dict,
    as_adjoint_spec,
    check_layer,
    check_solver_adjoint,
)
from .schedules import AbstractSchedule, ConstantSchedule, schedule_from_dict
from .validation import check_field_float, check_field_int

__all__ = [
    "COMPONENT_FIELDS",
    "COSTS",
    "GRAD_MODS",
    "OPTIMIZERS",
    "OUTPUTS",
    "PADDINGS",
    "SOLVERS",
    "STEP_RULES",
    "FourDVarNetConfig",
    "OptimizerConfig",
]

PADDINGS = ("zeros", "circular")
GRAD_MODS = ("convlstm", "convlstm_normalized")
COSTS = ("sum", "mean")
STEP_RULES = ("alpha", "annealed")
OUTPUTS = ("state", "prior")
# The fields that choose the components (DESIGN 7), passed by name to the model classes.
COMPONENT_FIELDS = ("grad_mod", "grad_mod_dropout", "grad_mod_downsample", "prior_downsample", "bilin_quad", "cost",
                    "step_rule", "lr_grad", "output")
"""The `FourDVarNetConfig` fields that choose the model's components (DESIGN 7).

Examples
--------
```python
import pipekit_cycle as pk

cfg = pk.ocean4dvarnet_config((16, 16), 5, n_step=3, hidden_dim=4, prior_hidden_dim=4)
components = {field: getattr(cfg, field) for field in pk.COMPONENT_FIELDS}
assert components["grad_mod"] == "convlstm_normalized" and components["cost"] == "mean"
```
"""
OPTIMIZERS = ("adam", "sgd")


@dataclasses.dataclass(frozen=True)
class FourDVarNetConfig:
    """Everything that fixes a 4DVarNet model's architecture and its inner solve.

    ``state_shape`` is ``(N,)`` (1D state, batches ``(B, T, N)``) or ``(H, W)`` (2D, batches
    ``(B, T, H, W)``): the number of its entries says 1D or 2D, and its sizes are the TRAINING
    size, not a gate. The models are fully convolutional and map a batch of any grid
    `pipekit_cycle.validation.grid_rule` allows (every size at least ``kernel_size`` on the
    grid pooled by the largest down-sampling factor, and divisible by every factor); no
    parameter depends on the grid (`pipekit_cycle.schema`). The sizes are used where something
    needs them: the SSH driver's training patches, and the record of what a model was trained
    on (`vardax_torch.from_ocean4dvarnet` writes the checkpoint's training patch, or the smallest
    legal grid where none is known). Only the amortized posteriors (``build_amortized``, given
    their own ``state_shape``) are bound to one grid: their heads are MLPs over the flattened
    ``T * prod(state_shape)`` window. ``n_time`` is T, the channel axis of every convolution:
    the parameters depend on it, so it is a gate.
    ``hidden_dim`` is the ConvLSTM's channel count, ``prior_hidden_dim`` the prior's;
    ``kernel_size`` (odd) is shared by every convolution, padded to keep the size
    (``padding="zeros"`` or ``"circular"`` for periodic domains).

    ``solver`` says WHAT the inner solve computes (DESIGN 3.2):

    * ``"learned"`` (default): ``n_solver_steps`` steps ``x <- x - alpha * u`` of the ConvLSTM
      on the cost ``obs_weight * sum(m (x - y)^2) + prior_weight * sum((x - phi(x))^2)``;
    * ``"fixed_point"``: ``x <- m y + (1 - m) phi(x)`` from ``x_0 = m y``, at most
      ``n_solver_steps`` iterations, stopping once
      ``max |x_{n+1} - x_n| / (fixed_point_atol + fixed_point_rtol |x_{n+1}|) < 1``
      (optimistix's ``FixedPointIteration`` test; both tolerances 0: exactly
      ``n_solver_steps`` iterations). The modulator is unused.

    ``solver_adjoint`` says HOW it is differentiated, never what it computes; ``ImplicitAdjoint``
    needs ``solver="fixed_point"``.

    The components (DESIGN 7; the defaults are this project's architecture, the other values
    ocean4dvarnet's, see `ocean4dvarnet_config`). These strings are the JSON vocabulary only:
    each backend turns ``cost``, ``step_rule`` and ``output`` into small component objects
    once, when the model is built (``make_components``), and its solver calls those:

    * ``grad_mod``: ``"convlstm"`` reads ``[g, x, h]``; ``"convlstm_normalized"`` reads
      ``[dropout(g / r), h]`` with ``r = sqrt(mean(g_0^2))`` the RMS of the FIRST step's
      gradient over the whole batch (carried through the solve), its gates ordered
      ``(i, f, o, c)``, on a grid average-pooled by ``grad_mod_downsample`` and bilinearly
      up-sampled back (``align_corners=True``); ``grad_mod_dropout`` its dropout rate.
    * ``prior_downsample``: ``phi`` average-pools its input by this factor and up-samples
      its output back (1: neither); ``bilin_quad``: the prior's quadratic term is
      ``bilin_21(h)^2`` instead of ``bilin_21(h) * bilin_22(h)``.
    * ``cost``: ``"sum"`` is ``U`` as above, a sum per sample; ``"mean"`` is
      ``obs_weight * sum(m (x - y)^2) / sum(m) + prior_weight * mean((x - phi(x))^2)``
      with both means over the WHOLE batch, so a sample's solution depends on its batch-mates.
    * ``step_rule``: ``"alpha"`` is ``x <- x - alpha u``; ``"annealed"`` is
      ``x_{k+1} = x_k - (u / (k + 1) + lr_grad (k + 1) / K g)`` (``alpha`` unused).
    * ``output``: what ``predict`` returns: ``"state"`` ``x_K``, ``"prior"`` ``phi(x_K)``.
      ``model(batch)`` always returns ``x_K``.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4)
    assert cfg.ndim == 1 and cfg.replace(n_time=7).n_time == 7  # frozen: replace makes a new one
    assert pk.FourDVarNetConfig.from_json(cfg.to_json()) == cfg  # what save_params stores
    try:
        pk.FourDVarNetConfig(state_shape=(16,), n_time=0)
    except ValueError as error:  # every field is checked on construction
        assert "n_time" in str(error)
    else:
        raise AssertionError("n_time=0 must be refused")
    ```
    """

    state_shape: tuple[int, ...]
    n_time: int
    hidden_dim: int = 16
    prior_hidden_dim: int = 16
    kernel_size: int = 3
    n_solver_steps: int = 10
    alpha: float = 0.1
    obs_weight: float = 1.0
    prior_weight: float = 1.0
    padding: Literal["zeros", "circular"] = "zeros"
    solver: Literal["learned", "fixed_point"] = "learned"
    fixed_point_rtol: float = 1e-6
    fixed_point_atol: float = 1e-6
    solver_adjoint: AdjointSpec = dataclasses.field(default_factory=RecursiveCheckpointAdjoint)
    grad_mod: Literal["convlstm", "convlstm_normalized"] = "convlstm"
    grad_mod_dropout: float = 0.0
    grad_mod_downsample: int = 1
    prior_downsample: int = 1
    bilin_quad: bool = False
    cost: Literal["sum", "mean"] = "sum"
    step_rule: Literal["alpha", "annealed"] = "alpha"
    lr_grad: float = 0.2
    output: Literal["state", "prior"] = "state"

    def __post_init__(self) -> None:
        name = type(self).__name__
        shape = self.state_shape
        if isinstance(shape, list):
            shape = tuple(shape)
            object.__setattr__(self, "state_shape", shape)
        if not isinstance(shape, tuple) or len(shape) not in (1, 2):
            raise ValueError(f"{name}.state_shape must be (N,) or (H, W), got {shape!r}")
        for size in shape:
            check_field_int(name, "state_shape", size)
        for field in ("n_time", "hidden_dim", "prior_hidden_dim", "kernel_size", "n_solver_steps"):
            check_field_int(name, field, getattr(self, field))
        if self.kernel_size % 2 == 0:
            raise ValueError(f"{name}.kernel_size must be odd, got {self.kernel_size}")
        check_field_float(name, "alpha", self.alpha, positive=True)
        check_field_float(name, "obs_weight", self.obs_weight, positive=False)
        check_field_float(name, "prior_weight", self.prior_weight, positive=False)
        if self.padding not in PADDINGS:
            raise ValueError(f"{name}.padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"{name}.solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        check_field_float(name, "fixed_point_rtol", self.fixed_point_rtol, positive=False)
        check_field_float(name, "fixed_point_atol", self.fixed_point_atol, positive=False)
        for field, allowed in (("grad_mod", GRAD_MODS), ("cost", COSTS), ("step_rule", STEP_RULES),
                               ("output", OUTPUTS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{name}.{field} must be one of {', '.join(allowed)}, got {getattr(self, field)!r}")
        check_field_float(name, "grad_mod_dropout", self.grad_mod_dropout, positive=False)
        if not self.grad_mod_dropout < 1:
            raise ValueError(f"{name}.grad_mod_dropout must be in [0, 1), got {self.grad_mod_dropout!r}")
        for field in ("grad_mod_downsample", "prior_downsample"):
            factor = getattr(self, field)
            check_field_int(name, field, factor)
            if factor > 1 and any(size % factor for size in shape):
                raise ValueError(f"{name}.{field} must divide every state_shape size {shape}, got {factor}")
        if (self.grad_mod_downsample > 1 or self.prior_downsample > 1) and len(shape) != 2:
            raise ValueError(f"{name}: grad_mod_downsample and prior_downsample need a 2D state_shape (H, W)")
        if self.grad_mod_downsample > 1 and self.grad_mod != "convlstm_normalized":
            raise ValueError(f"{name}.grad_mod_downsample needs grad_mod='convlstm_normalized'")
        if self.grad_mod_dropout > 0 and self.grad_mod != "convlstm_normalized":
            raise ValueError(f"{name}.grad_mod_dropout needs grad_mod='convlstm_normalized'")
        if not isinstance(self.bilin_quad, bool):
            raise ValueError(f"{name}.bilin_quad must be a bool, got {self.bilin_quad!r}")
        check_field_float(name, "lr_grad", self.lr_grad, positive=False)
        spec = as_adjoint_spec(self.solver_adjoint)
        if spec is None:
            raise ValueError(f"{name}.solver_adjoint must be an adjoint spec, got {self.solver_adjoint!r}")
        spec = check_layer(spec, INNER_SOLVE)
        check_solver_adjoint(self.solver, spec)
        object.__setattr__(self, "solver_adjoint", spec)

    @property
    def ndim(self) -> int:
        """1 for a 1D state ``(N,)``, 2 for a 2D state ``(H, W)``."""
        return len(self.state_shape)

    def replace(self, **changes: Any) -> FourDVarNetConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["state_shape"] = list(self.state_shape)
        data["solver_adjoint"] = self.solver_adjoint.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FourDVarNetConfig:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}")
        if "state_shape" in data:
            data["state_shape"] = tuple(data["state_shape"])
        if isinstance(data.get("solver_adjoint"), dict):
            data["solver_adjoint"] = adjoint_from_dict(data["solver_adjoint"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FourDVarNetConfig:
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer both backends build identically (optax in JAX, ``torch.optim`` in torch).

    ``name``: ``adam`` or ``sgd`` (no momentum). ``weight_decay`` is coupled L2, added to
    the gradient before the update (``torch.optim``'s convention; ``optax.add_decayed_weights``
    placed before the update in JAX). ``clip_norm`` clips the global gradient norm first:
    ``g <- g * clip_norm / max(norm(g), clip_norm)`` (``optax.clip_by_global_norm``).
    ``schedule`` (`pipekit_cycle.schedules`) scales ``lr`` at each step: constant by default,
    or `WarmupCosineSchedule`.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    opt = pk.OptimizerConfig(name="adam", lr=1e-3, clip_norm=1.0)
    assert pk.OptimizerConfig.from_dict(opt.to_dict()) == opt
    assert pk.OptimizerConfig.from_json(opt.to_json()) == opt
    ```
    """

    name: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float | None = None
    schedule: AbstractSchedule = dataclasses.field(default_factory=ConstantSchedule)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if self.name not in OPTIMIZERS:
            raise ValueError(f"{owner}.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        check_field_float(owner, "lr", self.lr, positive=True)
        betas = tuple(self.betas) if isinstance(self.betas, list) else self.betas
        object.__setattr__(self, "betas", betas)
        if not (
            isinstance(betas, tuple)
            and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"{owner}.betas must be two floats in [0, 1), got {self.betas!r}")
        check_field_float(owner, "eps", self.eps, positive=True)
        check_field_float(owner, "weight_decay", self.weight_decay, positive=False)
        if self.clip_norm is not None:
            check_field_float(owner, "clip_norm", self.clip_norm, positive=True)
        if isinstance(self.schedule, dict):
            object.__setattr__(self, "schedule", schedule_from_dict(self.schedule))
        if not isinstance(self.schedule, AbstractSchedule):
            raise ValueError(f"{owner}.schedule must be a learning-rate schedule (pipekit_cycle.schedules), got "
                             f"{self.schedule!r}")

    def to_dict(self) -> dict[str, Any]:
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        data["betas"] = list(self.betas)
        data["schedule"] = self.schedule.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OptimizerConfig:
        return cls.from_dict(json.loads(text))

