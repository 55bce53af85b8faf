"""Torch-native adjoints of the learned inner solve, and the mapping from `pipekit_cycle` specs.

| spec (pipekit_cycle)           | native (this module)           | mechanism in `vardax_torch.solver`         |
|--------------------------------|--------------------------------|--------------------------------------------|
| ``RecursiveCheckpointAdjoint`` | ``RecursiveCheckpointAdjoint`` | segments recomputed from boundary states   |
| ``TruncatedAdjoint(k)``        | ``KStepAdjoint(k)``            | ``K - k`` warm-up steps under ``no_grad``  |
| ``ImplicitAdjoint``            | ``ImplicitAdjoint``            | fixed point + custom ``autograd.Function`` |
| ``Direct``/``Backsolve``       | ValueError at ``inner_solve``  | dynamics layer (`vardax_torch.dynamics`)   |

Native adjoints are frozen dataclasses (hashable, equal by value) deriving from
`AbstractAdjoint`. They share their class names with the specs, so `to_native_adjoint` checks
``isinstance(obj, AbstractAdjoint)`` before the duck-typed name mapping.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import pipekit_cycle
from pipekit_cycle import adjoints as specs

__all__ = [
    "AbstractAdjoint",
    "ImplicitAdjoint",
    "KStepAdjoint",
    "OneStepAdjoint",
    "RecursiveCheckpointAdjoint",
    "to_native_adjoint",
    "to_torch_adjoint",
]


class AbstractAdjoint:
    """Base of the torch-native adjoints of the inner solve (a marker with a spec round trip)."""

    layer: ClassVar[str] = specs.INNER_SOLVE

    def to_spec(self) -> specs.AdjointSpec:
        """The backend-neutral `pipekit_cycle` spec this native adjoint implements."""
        raise TypeError(f"{type(self).__name__} has no pipekit_cycle spec")  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Exact gradient; the K solver steps are cut into segments, only the segment boundary
    states ``(x, LSTM hidden, LSTM cell)`` are stored, and the backward recomputes one segment
    at a time (a custom ``torch.autograd.Function`` per segment).

    ``checkpoints=n``: exactly ``min(n, K)`` segments of near-equal length (= stored boundary
    states), each recomputed whole in the backward: the live graph holds ``ceil(K / n)`` steps.
    The last segment keeps its graph from the forward instead (no use recomputing it).

    ``checkpoints=None`` (the default) is recursive: ``s = max(1, round(sqrt(K)))`` segments;
    in the backward a segment longer than ``leaf_steps = 4`` steps is itself recomputed as
    ``round(sqrt(n))`` checkpointed sub-segments, and so on. Stored: ``O(sqrt(K))`` small
    boundary states ``(x, hidden, cell)`` plus a few per level; live graph: at most 4 steps;
    cost: at most one extra graph-free forward pass per level (2 levels up to K = 20, 3 up to
    K = 90...), less the steps of the last segment of each level, which run live at once.
    A single level with sqrt(K) segments was measured to grow the peak memory 2.8x from K = 8
    to K = 64 (the live graph of one segment grows as sqrt(K)); the recursion keeps it flat.
    """

    checkpoints: int | None = None

    leaf_steps: ClassVar[int] = 4

    def __post_init__(self) -> None:
        specs.RecursiveCheckpointAdjoint(self.checkpoints)  # same validation, same words

    def n_segments(self, n_steps: int) -> int:
        """Number of segments used for a solve of ``n_steps`` steps."""
        if self.checkpoints is None:
            return max(1, round(math.sqrt(n_steps)))
        return max(1, min(self.checkpoints, n_steps))

    def to_spec(self) -> specs.RecursiveCheckpointAdjoint:
        return specs.RecursiveCheckpointAdjoint(self.checkpoints)


@dataclasses.dataclass(frozen=True)
class KStepAdjoint(AbstractAdjoint):
    """Truncated backprop: ``max(K - k, 0)`` warm-up steps run under ``torch.no_grad()`` (state
    AND LSTM carry cut from the graph; parameters detached; the inner ``dU/dx`` is taken on a
    detached leaf), then ``min(k, K)`` live steps carry the gradient. The forward value equals
    the unrolled solve; ``k >= K`` is the exact gradient."""

    k: int = 1

    def __post_init__(self) -> None:
        specs.TruncatedAdjoint(self.k)

    def to_spec(self) -> specs.TruncatedAdjoint:
        return specs.TruncatedAdjoint(self.k)


@dataclasses.dataclass(frozen=True)
class OneStepAdjoint(KStepAdjoint):
    """`KStepAdjoint` with ``k = 1``: only the last solver step carries the gradient."""

    k: int = dataclasses.field(default=1, init=False)


@dataclasses.dataclass(frozen=True)
class ImplicitAdjoint(AbstractAdjoint):
    r"""Implicit function theorem at the fixed point ``x* = T(x*) = m*y + (1-m)*phi(x*)``.

    Forward: iterate ``x <- T(x)`` under ``no_grad`` until
    ``max |x_{n+1} - x_n| / (atol + rtol |x_{n+1}|) < 1`` or ``max_steps`` (None: 1000).
    Backward: solve ``(I - \partial T/\partial x)^T \lambda = \partial L/\partial x^*``
    matrix-free with ``linear_solver`` (``gmres``: restarted GMRES; ``neumann``:
    ``\lambda = \sum_j (J^T)^j g``; ``dense``: materialise ``J`` and LU-solve; ``auto`` = gmres),
    then return ``\lambda^T \partial T/\partial(\theta, y, m)``. Memory is independent of the
    iteration count.
    """

    linear_solver: str = "auto"
    rtol: float = 1e-6
    atol: float = 1e-6
    max_steps: int | None = None

    default_max_steps: ClassVar[int] = 1000

    def __post_init__(self) -> None:
        specs.ImplicitAdjoint(self.linear_solver, self.rtol, self.atol, self.max_steps)  # type: ignore[arg-type]

    @property
    def linear_solver_name(self) -> str:
        """The linear solver actually used (``auto`` resolves to ``gmres``)."""
        return "gmres" if self.linear_solver == "auto" else self.linear_solver

    @property
    def steps(self) -> int:
        """``max_steps`` with the default filled in."""
        return self.default_max_steps if self.max_steps is None else self.max_steps

    def to_spec(self) -> specs.ImplicitAdjoint:
        return specs.ImplicitAdjoint(self.linear_solver, self.rtol, self.atol, self.max_steps)  # type: ignore[arg-type]


def to_native_adjoint(spec: Any, layer: str = specs.INNER_SOLVE) -> Any:
    """Map an adjoint spec (a `pipekit_cycle` spec, an identically shaped object, or its text
    form) onto the torch-native adjoint of ``layer``; a native adjoint passes through.

    ``layer="dynamics"`` delegates to `vardax_torch.dynamics.to_dynamics_adjoint`.
    Raises ``ValueError`` (words from `pipekit_cycle.check_layer`) for a spec of another layer,
    e.g. ``DirectAdjoint``/``BacksolveAdjoint`` at the inner solve.
    """
    if layer == specs.DYNAMICS:
        from .dynamics import to_dynamics_adjoint

        return to_dynamics_adjoint(spec)
    # Native classes share the spec names, so this check must come before the duck typing.
    if isinstance(spec, AbstractAdjoint):
        return spec
    coerced = pipekit_cycle.check_layer(spec, layer)
    if isinstance(coerced, specs.RecursiveCheckpointAdjoint):
        return RecursiveCheckpointAdjoint(coerced.checkpoints)
    if isinstance(coerced, specs.TruncatedAdjoint):
        return OneStepAdjoint() if coerced.k == 1 else KStepAdjoint(coerced.k)
    if isinstance(coerced, specs.ImplicitAdjoint):
        return ImplicitAdjoint(coerced.linear_solver, coerced.rtol, coerced.atol, coerced.max_steps)
    # check_layer admits only the three specs above at the inner-solve layer.
    raise ValueError(f"no torch-native adjoint for {coerced!r} at the {layer!r} layer")  # pragma: no cover


to_torch_adjoint = to_native_adjoint
