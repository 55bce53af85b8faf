"""Torch-native adjoints: each one owns the loop it differentiates (DESIGN 3.2).

| spec (pipekit_cycle)           | native (this module)           | how `loop` differentiates                       |
|--------------------------------|--------------------------------|-------------------------------------------------|
| ``RecursiveCheckpointAdjoint`` | ``RecursiveCheckpointAdjoint`` | offline binomial checkpointing (revolve)        |
| ``TruncatedAdjoint(k)``        | ``KStepAdjoint(k)``            | steps before the last ``k`` run without a graph |
| ``ImplicitAdjoint``            | ``ImplicitAdjoint``            | implicit function theorem at the output         |
| ``Direct``/``Backsolve``       | ValueError at ``inner_solve``  | dynamics layer (`vardax_torch.dynamics`)        |

A solver hands `AbstractAdjoint.loop` its step, its initial carry, the tensors the step
depends on and a step count; it never looks at the adjoint's type, so a subclass of
`AbstractAdjoint` written outside the package plugs in. Native adjoints are frozen
dataclasses (hashable, equal by value); they share their class names with the specs, so
`to_native_adjoint` checks ``isinstance(obj, AbstractAdjoint)`` before the duck-typed mapping.

The step convention: ``step(args, carry) -> carry`` is pure in ``args`` (a mapping of
tensors: parameters and data) and ``carry`` (a tuple of tensors), and records a graph only
when grad mode is on, so the same function serves the graph-free and the live passes
(the values are identical: autograd never changes what is computed).

Examples
--------
```python
import pipekit_cycle as pk
import vardax_torch as vd

native = vd.adjoints.to_native_adjoint(pk.TruncatedAdjoint(k=2))  # a spec -> this backend's own adjoint
assert isinstance(native, vd.adjoints.KStepAdjoint)
```
"""

from __future__ import annotations

import abc
import dataclasses
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

import pipekit_cycle
from pipekit_cycle import adjoints as specs
from pipekit_cycle.adjoints import binomial_split, checkpoint_schedule
from pipekit_cycle.errors import ConvergenceWarning

if TYPE_CHECKING:
    from .dynamics import AbstractOdeintAdjoint

__all__ = [
    "AbstractAdjoint",
    "Carry",
    "ImplicitAdjoint",
    "KStepAdjoint",
    "OneStepAdjoint",
    "RecursiveCheckpointAdjoint",
    "dense_solve",
    "gmres",
    "iterate",
    "neumann",
    "to_native_adjoint",
    "to_torch_adjoint",
]

Carry = tuple[Tensor, ...]
Args = Mapping[str, Tensor]
Step = Callable[[Args, Carry], Carry]
Converged = Callable[[Carry, Carry], bool]
DEFAULT_MAX_STEPS = 1000


def iterate(
    step: Step, carry: Carry, args: Args, max_steps: int, converged: Converged | None = None, *,
    graph: bool, history: deque | None = None,
) -> tuple[Carry, int, bool]:
    """``carry <- step(args, carry)`` at most ``max_steps`` times, stopping after a step for
    which ``converged(old, new)`` holds. ``graph=False`` runs detached under ``no_grad``.
    ``history`` (a bounded deque) receives each carry before its step. Returns
    ``(carry, steps taken, converged)``."""
    if not graph:
        args = {name: t.detach() for name, t in args.items()}
        carry = tuple(t.detach() for t in carry)
    with torch.enable_grad() if graph else torch.no_grad():
        for n in range(max_steps):
            if history is not None:
                history.append(carry)
            new = tuple(step(args, carry))
            if converged is not None and bool(converged(carry, new)):
                return new, n + 1, True
            carry = new
    return carry, max_steps, False


class AbstractAdjoint(abc.ABC):
    """How a loop ``carry <- step(args, carry)`` is differentiated; the adjoint runs it.

    Subclasses implement `loop`. Its forward value must be the loop's own: ``max_steps``
    steps, or fewer when ``converged(old, new)`` holds after a step (the solver's stopping
    rule, the same under every adjoint). Under ``torch.no_grad()`` every built-in adjoint
    runs the loop once without a graph.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)


    class Unrolled(vd.AbstractAdjoint):  # plain backprop through every step
        def loop(self, step, carry, args, max_steps, *, converged=None):
            for _ in range(max_steps):
                new = step(args, carry)
                if converged is not None and converged(carry, new):
                    return new
                carry = new
            return carry


    _, mine = vd.loss_and_grads(model.with_adjoint(Unrolled()), batch)
    _, exact = vd.loss_and_grads(model, batch)  # under the default RecursiveCheckpointAdjoint: exact
    assert all(np.allclose(mine[name], exact[name], rtol=1e-4, atol=1e-6) for name in mine)
    ```
    """

    layer: ClassVar[str] = specs.INNER_SOLVE

    @abc.abstractmethod
    def loop(self, step: Step, carry: Carry, args: Args, max_steps: int, *,
             converged: Converged | None = None) -> Carry:
        """The loop's final carry, carrying gradients to ``args`` and ``carry`` as this adjoint says."""

    def to_spec(self) -> specs.AdjointSpec:
        """The backend-neutral `pipekit_cycle` spec this native adjoint implements."""
        raise ValueError(f"no pipekit_cycle spec describes the adjoint {self!r}")


# ----------------------------------------------------------------------------- checkpointing


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a recomputed segment needs besides tensors."""

    step: Step
    names: tuple[str, ...]
    n_carry: int
    n_steps: int
    snapshots: int

    def split(self, tensors: Sequence[Tensor]) -> tuple[Carry, dict[str, Tensor]]:
        carry = tuple(tensors[: self.n_carry])
        return carry, dict(zip(self.names, tensors[self.n_carry:], strict=True))


class _Segment(torch.autograd.Function):
    """``n_steps`` steps whose forward keeps no graph and stores only its input carry; the
    backward reverses them by `_revolve` with the same snapshot budget."""

    @staticmethod
    def forward(ctx, plan: _Plan, *tensors: Tensor):  # type: ignore[override]
        ctx.plan = plan
        ctx.save_for_backward(*tensors)
        carry, args = plan.split(tensors)
        return iterate(plan.step, carry, args, plan.n_steps, graph=False)[0]

    @staticmethod
    def backward(ctx, *cotangents: Tensor):  # type: ignore[override]
        plan: _Plan = ctx.plan
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # The carry comes in as detached leaves, so autograd.grad gives this node's
            # partial derivatives (earlier segments are the engine's job). When the backward is
            # itself differentiated (a double-VJP JVP), the args stay the original tensors, so
            # the result is exact and linear in the cotangents.
            inputs = [
                t if create_graph and i >= plan.n_carry else t.detach().requires_grad_(need)
                for i, (t, need) in enumerate(zip(saved, needs, strict=True))
            ]
            carry, args = plan.split(inputs)
            outputs = _revolve(plan.step, carry, args, plan.n_steps, plan.snapshots)
            pairs = [(o, g) for o, g in zip(outputs, cotangents, strict=True) if o.requires_grad]
            wrt = [t for t, need in zip(inputs, needs, strict=True) if need]
            grads = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True,
                                             create_graph=create_graph)) if wrt and pairs else iter(())
        return (None, *(next(grads, None) if need else None for need in needs))


def _revolve(step: Step, carry: Carry, args: Args, n_steps: int, snapshots: int) -> Carry:
    """``n_steps`` steps reversed with ``snapshots`` stored carries (Griewank & Walther's
    binomial schedule): advance ``m = binomial_split(n, s)`` steps graph-free from a stored
    carry, reverse the rest with ``s - 1`` snapshots, then those ``m`` with ``s``. Only one
    step's graph is live at a time."""
    if n_steps <= 1 or snapshots == 0:
        return iterate(step, carry, args, n_steps, graph=True)[0]
    advance = binomial_split(n_steps, snapshots)
    plan = _Plan(step, tuple(args), len(carry), advance, snapshots)
    carry = _Segment.apply(plan, *carry, *args.values())
    return _revolve(step, carry, args, n_steps - advance, snapshots - 1)


@dataclasses.dataclass(frozen=True)
class RecursiveCheckpointAdjoint(AbstractAdjoint):
    """Exact gradient by offline binomial checkpointing ("revolve"): the backward recomputes
    steps from ``pipekit_cycle.checkpoint_schedule(n, checkpoints)`` stored carries
    (``None``: ``ceil(log2 n)``, the rule equinox's checkpointed loop uses in vardax_jax), with
    one step's graph live at a time; ``O(n log n)`` step evaluations. A loop with a stopping
    test first runs once without a graph to learn its step count ``n``.

    A custom ``autograd.Function`` per segment rather than ``torch.utils.checkpoint``: the
    non-reentrant checkpoint around steps that call ``autograd.grad(create_graph=True)`` was
    measured to grow memory, and the reentrant one does not support ``torch.autograd.grad``.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    assert vd.to_native_adjoint("checkpoint") == vd.RecursiveCheckpointAdjoint()  # the default
    assert pk.checkpoint_schedule(64, None) == 6  # states stored for K = 64 by checkpoints=None
    # Exact under any schedule; fewer stored states recompute more steps.
    loss, grads = vd.loss_and_grads(model, batch, adjoint=vd.RecursiveCheckpointAdjoint(checkpoints=1))
    ```
    """

    checkpoints: int | None = None

    def __post_init__(self) -> None:
        specs.RecursiveCheckpointAdjoint(self.checkpoints)  # same validation, same words

    def loop(self, step: Step, carry: Carry, args: Args, max_steps: int, *,
             converged: Converged | None = None) -> Carry:
        if not torch.is_grad_enabled():
            return iterate(step, carry, args, max_steps, converged, graph=False)[0]
        n_steps = max_steps if converged is None else iterate(step, carry, args, max_steps, converged, graph=False)[1]
        return _revolve(step, tuple(carry), args, n_steps, checkpoint_schedule(n_steps, self.checkpoints))

    def to_spec(self) -> specs.RecursiveCheckpointAdjoint:
        return specs.RecursiveCheckpointAdjoint(self.checkpoints)


# ----------------------------------------------------------------------------- truncation


@dataclasses.dataclass(frozen=True)
class KStepAdjoint(AbstractAdjoint):
    """Truncated backprop: the loop runs as it would, and only its last ``k`` steps carry the
    gradient. The steps before run detached under ``no_grad`` (state AND every other part of
    the carry cut, parameters detached); with a stopping test, a deque of the last ``k``
    detached carries tells where the last ``k`` steps start. ``k >= n`` is the exact gradient.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    assert vd.to_native_adjoint(pk.TruncatedAdjoint(k=2)) == vd.KStepAdjoint(k=2)
    # Biased and cheap: only the last of the K = 3 steps carries the gradient (k >= K: exact).
    loss, grads = vd.loss_and_grads(model, batch, adjoint=vd.KStepAdjoint(k=1))
    ```
    """

    k: int = 1

    def __post_init__(self) -> None:
        specs.TruncatedAdjoint(self.k)

    def loop(self, step: Step, carry: Carry, args: Args, max_steps: int, *,
             converged: Converged | None = None) -> Carry:
        carry = tuple(carry)
        if not torch.is_grad_enabled():
            return iterate(step, carry, args, max_steps, converged, graph=False)[0]
        live = min(self.k, max_steps)
        history = None if converged is None else deque(maxlen=self.k)
        warm, n_warm, stopped = iterate(step, carry, args, max_steps - live, converged, graph=False, history=history)
        if stopped:  # the loop ended during the warm-up: go back k steps
            warm = carry if n_warm <= self.k else history[0]  # type: ignore[index]
        elif n_warm == 0:
            warm = carry
        return iterate(step, warm, args, live, converged, graph=True)[0]

    def to_spec(self) -> specs.TruncatedAdjoint:
        return specs.TruncatedAdjoint(self.k)


@dataclasses.dataclass(frozen=True)
class OneStepAdjoint(KStepAdjoint):
    """`KStepAdjoint` with ``k = 1``: only the last step carries the gradient.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    adjoint = vd.OneStepAdjoint()
    assert isinstance(adjoint, vd.KStepAdjoint) and adjoint.k == 1
    assert vd.to_native_adjoint(pk.TruncatedAdjoint(k=1)) == adjoint
    ```
    """

    k: int = dataclasses.field(default=1, init=False)


# ----------------------------------------------------------------------------- implicit


def gmres(
    matvec: Callable[[Tensor], Tensor], b: Tensor, *, rtol: float, atol: float, max_steps: int, restart: int = 20,
) -> tuple[Tensor, float, int]:
    """Restarted GMRES(``restart``) for ``A x = b`` on flat vectors; stops when
    ``||b - A x|| <= atol + rtol ||b||`` or after ``max_steps`` products. Returns
    ``(x, residual norm, products used)``. The Krylov basis, ``restart + 1`` vectors, is
    allocated once up front (as lineax does), so memory does not depend on ``max_steps``."""
    tol = atol + rtol * float(b.norm())
    restart = max(1, min(restart, b.numel()))
    x = torch.zeros_like(b)
    r, used = b.clone(), 0
    beta = float(r.norm())
    basis = b.new_zeros(restart + 1, b.numel())
    while beta > tol and used < max_steps:
        basis[0] = r / beta
        hess = b.new_zeros(restart + 1, restart)
        for j in range(restart):
            w = matvec(basis[j])
            used += 1
            for i in range(j + 1):  # modified Gram-Schmidt
                hess[i, j] = torch.dot(w, basis[i])
                w = w - hess[i, j] * basis[i]
            hess[j + 1, j] = w.norm()
            rhs = b.new_zeros(j + 2)
            rhs[0] = beta
            coeffs = torch.linalg.lstsq(hess[: j + 2, : j + 1], rhs.unsqueeze(1)).solution.squeeze(1)
            estimate = float((hess[: j + 2, : j + 1] @ coeffs - rhs).norm())
            if estimate <= tol or used >= max_steps or float(hess[j + 1, j]) <= 1e-14 * beta:
                break
            basis[j + 1] = w / hess[j + 1, j]
        x = x + basis[: coeffs.numel()].T @ coeffs
        r = b - matvec(x)
        beta = float(r.norm())
    return x, beta, used


def neumann(
    vjp: Callable[[Tensor], Tensor], b: Tensor, *, rtol: float, atol: float, max_steps: int,
) -> tuple[Tensor, float, int]:
    """``lambda = sum_j (J^T)^j b`` for ``(I - J^T) lambda = b``; stops when
    ``max|term| / (atol + rtol |lambda|) < 1``. Returns ``(lambda, max|last term|, terms)``."""
    term, lam = b, b.clone()
    for used in range(1, max_steps + 1):
        term = vjp(term)
        lam = lam + term
        if bool((term.abs() / (atol + rtol * lam.abs()) < 1).all()):
            return lam, float(term.abs().max()), used
    return lam, float(term.abs().max()), max_steps


def dense_solve(matvec: Callable[[Tensor], Tensor], b: Tensor) -> Tensor:
    """Materialise ``A`` column by column (``A e_i``) and LU-solve ``A x = b``."""
    eye = torch.eye(b.numel(), dtype=b.dtype, device=b.device)
    matrix = torch.stack([matvec(eye[i]) for i in range(b.numel())], dim=1)
    return torch.linalg.solve(matrix, b)


@dataclasses.dataclass(frozen=True)
class ImplicitAdjoint(AbstractAdjoint):
    r"""Implicit function theorem at the loop's output ``x* = T(x*)``, which must be a fixed
    point of the step (the 4DVarNet ``solver="fixed_point"``).

    Forward: the loop itself, without a graph. Backward: solve
    ``(I - \partial T/\partial x)^T \lambda = \partial L/\partial x^*`` matrix-free with
    ``linear_solver`` (``"gmres"``: restarted GMRES, ``"auto"`` too; ``"neumann"``:
    ``\lambda = \sum_j (J^T)^j g``; ``"dense"``: materialise ``J`` and LU-solve) to ``rtol``,
    ``atol``, ``max_steps`` (``None``: 1000), the backward solve's only tolerances; then return
    ``\lambda^T \partial T/\partial args``. A solve that stops short warns
    `ConvergenceWarning` and uses its last iterate. Memory is independent of the iteration count.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=30,
                               solver="fixed_point", solver_adjoint=pk.ImplicitAdjoint("neumann"))
    model = vd.build_model(cfg, seed=0)
    assert model.solver_adjoint == vd.ImplicitAdjoint("neumann")
    loss, grads = vd.loss_and_grads(model, vd.make_batch(problem.obs, target=problem.truth))
    try:  # the learned solver's output is not a fixed point
        pk.FourDVarNetConfig(state_shape=(16,), n_time=5, solver_adjoint=pk.ImplicitAdjoint())
    except ValueError as error:
        print(error)
    ```
    """

    linear_solver: str = "auto"
    rtol: float = 1e-6
    atol: float = 1e-6
    max_steps: int | None = None

    def __post_init__(self) -> None:
        specs.ImplicitAdjoint(self.linear_solver, self.rtol, self.atol, self.max_steps)  # type: ignore[arg-type]

    @property
    def steps(self) -> int:
        """``max_steps`` with the default filled in."""
        return DEFAULT_MAX_STEPS if self.max_steps is None else self.max_steps

    def loop(self, step: Step, carry: Carry, args: Args, max_steps: int, *,
             converged: Converged | None = None) -> Carry:
        fixed_point = iterate(step, tuple(carry), args, max_steps, converged, graph=False)[0]
        if not torch.is_grad_enabled():
            return fixed_point
        plan = _Plan(step, tuple(args), len(fixed_point), 1, 0)
        return _Implicit.apply(self, plan, *fixed_point, *args.values())

    def solve_adjoint(self, vjp: Callable[[Tensor], Tensor], g: Tensor) -> Tensor:
        """``lambda`` with ``(I - J^T) lambda = g`` (``g`` flat), ``vjp(v) = J^T v``."""
        tol = {"rtol": self.rtol, "atol": self.atol}
        name = "gmres" if self.linear_solver == "auto" else self.linear_solver
        if name == "dense":
            return dense_solve(lambda v: v - vjp(v), g)
        if name == "neumann":
            lam, residual, used = neumann(vjp, g, max_steps=self.steps, **tol)
            converged = used < self.steps or bool(
                (vjp(lam) + g - lam).abs().max() <= self.atol + self.rtol * lam.abs().max()
            )
        else:
            lam, residual, used = gmres(lambda v: v - vjp(v), g, max_steps=self.steps, **tol)
            converged = residual <= self.atol + self.rtol * float(g.norm())
        if not converged:
            warnings.warn(
                ConvergenceWarning(
                    f"implicit adjoint: the {name} solve of (I - dT/dx)^T lambda = g did not converge in "
                    f"{used} steps: residual {residual:.3e} (rtol={self.rtol}, atol={self.atol})"
                ),
                stacklevel=2,
            )
        return lam

    def to_spec(self) -> specs.ImplicitAdjoint:
        return specs.ImplicitAdjoint(self.linear_solver, self.rtol, self.atol, self.max_steps)  # type: ignore[arg-type]


class _Implicit(torch.autograd.Function):
    """Identity on the fixed point in the forward; the implicit function theorem backward."""

    @staticmethod
    def forward(ctx, adjoint: ImplicitAdjoint, plan: _Plan, *tensors: Tensor):  # type: ignore[override]
        ctx.adjoint, ctx.plan = adjoint, plan
        ctx.save_for_backward(*tensors)
        return tuple(t.clone() for t in tensors[: plan.n_carry])

    @staticmethod
    @once_differentiable
    def backward(ctx, *cotangents: Tensor):  # type: ignore[override]
        plan: _Plan = ctx.plan
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[2 + plan.n_carry:]
        with torch.enable_grad():
            fixed = [t.detach().requires_grad_() for t in saved[: plan.n_carry]]
            args = [t.detach().requires_grad_(need) for t, need in zip(saved[plan.n_carry:], needs, strict=True)]
            image = plan.step(dict(zip(plan.names, args, strict=True)), tuple(fixed))
            shapes = [t.shape for t in fixed]
            sizes = [t.numel() for t in fixed]

            def unflat(v: Tensor) -> list[Tensor]:
                return [part.reshape(shape) for part, shape in zip(v.split(sizes), shapes, strict=True)]

            def vjp(v: Tensor) -> Tensor:  # J^T v with J = dT/dx at x*
                parts = torch.autograd.grad(image, fixed, unflat(v), retain_graph=True, allow_unused=True)
                return torch.cat([(torch.zeros_like(f) if p is None else p).reshape(-1)
                                  for p, f in zip(parts, fixed, strict=True)])

            g = torch.cat([c.reshape(-1) for c in cotangents])
            lam = unflat(ctx.adjoint.solve_adjoint(vjp, g))
            wrt = [t for t, need in zip(args, needs, strict=True) if need]
            grads = iter(torch.autograd.grad(image, wrt, lam, allow_unused=True)) if wrt else iter(())
        # x* does not depend on the initial carry.
        return (None, None, *(None for _ in range(plan.n_carry)), *(next(grads) if need else None for need in needs))


def to_native_adjoint(
    spec: specs.AdjointSpec | str | AbstractAdjoint | AbstractOdeintAdjoint | None, layer: str = specs.INNER_SOLVE
) -> AbstractAdjoint | AbstractOdeintAdjoint:
    """Map an adjoint spec (a `pipekit_cycle` spec, an identically shaped object, or its text
    form) onto the torch-native adjoint of ``layer``; a native adjoint passes through.

    ``layer="dynamics"`` delegates to `vardax_torch.dynamics.to_dynamics_adjoint`.
    Raises ``ValueError`` (words from `pipekit_cycle.check_layer`) for a spec of another layer,
    e.g. ``DirectAdjoint``/``BacksolveAdjoint`` at the inner solve.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    assert vd.to_native_adjoint(pk.TruncatedAdjoint(k=2)) == vd.KStepAdjoint(k=2)
    assert vd.to_native_adjoint("checkpoint:4") == vd.RecursiveCheckpointAdjoint(checkpoints=4)
    native = vd.KStepAdjoint(k=3)
    assert vd.to_native_adjoint(native) is native  # a native adjoint passes through
    try:
        vd.to_native_adjoint("backsolve")  # a spec of the dynamics layer
    except ValueError as error:
        print(error)
    ```
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
"""`to_native_adjoint` under the backend's own name (the same function; vardax_jax's is
``to_optimistix_adjoint``).

Examples
--------
```python
import pipekit_cycle as pk
import vardax_torch as vd

assert vd.to_torch_adjoint is vd.to_native_adjoint
assert vd.to_torch_adjoint(pk.TruncatedAdjoint(k=2)) == vd.KStepAdjoint(k=2)
```
"""
