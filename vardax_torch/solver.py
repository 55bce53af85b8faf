"""The 4DVarNet inner solve, its variational cost, and one solver loop per adjoint.

Maths (DESIGN 3.1 and docs/backend-contract.md)::

    U(x)   = obs_weight * sum(m (x - y)^2) + prior_weight * sum((x - phi(x))^2)     per sample (B,)
    x_0    = m * y ;  carry_0 = zeros
    K times:  g = dU/dx (x_k);  u, carry = grad_mod(g, x_k, carry);  x_{k+1} = x_k - alpha * u

The loops work on an explicit parameter mapping ``{schema name: tensor}`` and explicit carries,
never on module state, so a recomputed step is bit-identical to the original.

* ``RecursiveCheckpointAdjoint``: the K steps are cut into segments (`_Segment`, a custom
  ``autograd.Function``); each segment's forward runs without a graph and stores only its input
  ``(x, hidden, cell)``; its backward recomputes the segment with a graph and back-propagates.
  The last segment runs live (it would be recomputed first thing in the backward).
  ``checkpoints=None`` recurses: a segment longer than ``leaf_steps`` (4) is recomputed as
  ``round(sqrt(n))`` checkpointed sub-segments, so the live graph never exceeds 4 steps.
  A custom Function rather than ``torch.utils.checkpoint``: the non-reentrant checkpoint around
  steps that call ``autograd.grad(create_graph=True)`` was measured to grow memory, and the
  reentrant one does not support ``torch.autograd.grad``. When the backward itself is
  differentiated (``create_graph=True``, e.g. `assert_adjoint_calibrated`'s double VJP) the
  segment is recomputed with the original parameters, so the result is exact and linear in
  the incoming cotangents (what a double-VJP JVP needs).
* ``KStepAdjoint(k)``: ``K - k`` warm-up steps with detached parameters and batch under
  ``no_grad`` (the inner ``dU/dx`` on a detached leaf), then ``k`` live steps.
* ``ImplicitAdjoint``: the fixed point ``x* = T(x*) = m*y + (1-m)*phi(x*)`` (`_FixedPoint`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from pipekit_cycle.errors import ConvergenceWarning

from .adjoints import ImplicitAdjoint, KStepAdjoint, RecursiveCheckpointAdjoint, to_native_adjoint
from .grad_mod import grad_mod_apply
from .priors import prior_apply

if TYPE_CHECKING:
    from .model import FourDVarNet

__all__ = [
    "dense_solve",
    "fixedpoint_unrolled",
    "gmres",
    "neumann",
    "solve_4dvarnet",
    "solve_4dvarnet_1d_fixedpoint",
    "solve_4dvarnet_2d_fixedpoint",
    "solve_4dvarnet_checkpointed",
    "solve_4dvarnet_kstep",
    "solve_4dvarnet_unrolled",
    "variational_cost",
]

Params = Mapping[str, Tensor]


@dataclasses.dataclass(frozen=True)
class Statics:
    """The non-trainable numbers of a solve."""

    alpha: float
    obs_weight: float
    prior_weight: float
    padding: str


def _sum_per_sample(z: Tensor) -> Tensor:
    return z.flatten(1).sum(dim=1)


def cost(params: Params, st: Statics, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
    """Pure variational cost ``U(x)`` per sample, shape ``(B,)``."""
    residual = x - prior_apply(params, x, st.padding, prefix="prior.")
    return st.obs_weight * _sum_per_sample(m * (x - y) ** 2) + st.prior_weight * _sum_per_sample(residual**2)


def variational_cost(model: FourDVarNet, x: Tensor, batch: Any) -> Tensor:
    """``U(x)`` per sample (shape ``(B,)``) for the model's prior and weights and the batch's
    observations: ``obs_weight * sum(m (x - y)^2) + prior_weight * sum((x - phi(x))^2)``."""
    model.check_batch(batch)
    return cost(dict(model.named_parameters()), model.statics, x, batch.input, batch.mask)


# ----------------------------------------------------------------------------- solver steps


def step_live(params: Params, st: Statics, x: Tensor, h: Tensor, c: Tensor, y: Tensor, m: Tensor):
    """One solver step recorded for backprop (``dU/dx`` with ``create_graph=True``)."""
    # dU/dx needs x in a graph; a state that carries no gradient gets a fresh leaf (nothing
    # upstream of it could receive a gradient anyway).
    xg = x if x.requires_grad else x.detach().requires_grad_()
    (g,) = torch.autograd.grad(cost(params, st, xg, y, m).sum(), xg, create_graph=True)
    u, h, c = grad_mod_apply(params, g, x, h, c, st.padding, prefix="grad_mod.")
    return x - st.alpha * u, h, c


def step_frozen(params: Params, st: Statics, x: Tensor, h: Tensor, c: Tensor, y: Tensor, m: Tensor):
    """The same step with nothing recorded: parameters and batch detached, ``dU/dx`` taken on
    a detached leaf (only the prior's graph w.r.t. that leaf lives, briefly), the ConvLSTM
    under ``no_grad``. Bit-identical values to `step_live`."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(cost(params, st, xg, y, m).sum(), xg)
    with torch.no_grad():
        u, h, c = grad_mod_apply(params, g, xg.detach(), h, c, st.padding, prefix="grad_mod.")
        return xg.detach() - st.alpha * u, h, c


def run_steps(params: Params, st: Statics, x, h, c, y, m, n: int, *, live: bool):
    """``n`` solver steps from ``(x, h, c)``; ``live=False`` detaches parameters and batch."""
    if not live:
        params = {name: p.detach() for name, p in params.items()}
        x, h, c, y, m = (t.detach() for t in (x, h, c, y, m))
    step = step_live if live else step_frozen
    for _ in range(n):
        x, h, c = step(params, st, x, h, c, y, m)
    return x, h, c


class _Segment(torch.autograd.Function):
    """``n`` solver steps whose forward keeps no graph; the backward recomputes them."""

    @staticmethod
    def forward(ctx, n: int, st: Statics, names: Sequence[str], leaf: int | None, x, h, c, y, m, *plist):  # type: ignore[override]
        ctx.n, ctx.st, ctx.names, ctx.leaf = n, st, tuple(names), leaf
        ctx.save_for_backward(x, h, c, y, m, *plist)
        return run_steps(dict(zip(names, plist, strict=True)), st, x, h, c, y, m, n, live=False)

    @staticmethod
    def backward(ctx, gx, gh, gc):  # type: ignore[override]
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[4:]
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            # The state inputs are detached leaves, so autograd.grad gives partial derivatives
            # (an upstream path from x back to the parameters through earlier segments is the
            # engine's job, not this node's). When the backward itself is differentiated
            # (create_graph: a double-VJP Jacobian-vector product), the parameters stay the
            # original tensors: the result is exact and linear in the incoming cotangents;
            # second-order terms through the boundary states are not propagated.
            inputs = [
                t if create_graph and i >= 5 else t.detach().requires_grad_(need)
                for i, (t, need) in enumerate(zip(saved, needs, strict=True))
            ]
            x, h, c, y, m, *plist = inputs
            params = dict(zip(ctx.names, plist, strict=True))
            if ctx.leaf is not None and ctx.n > ctx.leaf:  # recursive: checkpoint inside the segment too
                outputs = run_checkpointed(params, ctx.st, x, h, c, y, m, ctx.n, None, ctx.leaf)
            else:
                outputs = run_steps(params, ctx.st, x, h, c, y, m, ctx.n, live=True)
            wrt = [t for t, need in zip(inputs, needs, strict=True) if need]
            grads = iter(torch.autograd.grad(outputs, wrt, (gx, gh, gc), allow_unused=True,
                                             create_graph=create_graph)) if wrt else iter(())
        return (None, None, None, None, *(next(grads) if need else None for need in needs))


def _segment_sizes(n_steps: int, n_segments: int) -> list[int]:
    base, extra = divmod(n_steps, n_segments)
    return [base + (1 if i < extra else 0) for i in range(n_segments)]


def run_checkpointed(
    params: Params, st: Statics, x, h, c, y, m, n: int, n_segments: int | None, leaf: int | None,
):
    """``n`` steps as ``n_segments`` segments of near-equal length (``None``: ``round(sqrt(n))``),
    the longest last. Every segment but the last is a `_Segment` (graph-free forward, recomputed
    in the backward); the last runs live, since its graph would be rebuilt at once anyway.
    With ``leaf`` set, ``n <= leaf`` steps run live, and a longer last segment is split the
    same way (recursively), so no live graph exceeds ``leaf`` steps."""
    if leaf is not None and n <= leaf:
        return run_steps(params, st, x, h, c, y, m, n, live=True)
    n_segments = max(1, round(math.sqrt(n))) if n_segments is None else max(1, min(n_segments, n))
    *stored, last = _segment_sizes(n, n_segments)[::-1]
    names = list(params)
    for size in stored:
        x, h, c = _Segment.apply(size, st, names, leaf, x, h, c, y, m, *params.values())
    if leaf is not None and last > leaf:
        return run_checkpointed(params, st, x, h, c, y, m, last, None, leaf)
    return run_steps(params, st, x, h, c, y, m, last, live=True)


def _initial(model: FourDVarNet, batch: Any):
    y, m = batch.input, batch.mask
    x0 = m * y
    h0, c0 = model.grad_mod.init_carry(x0)
    return x0, h0, c0, y, m


def solve_4dvarnet_unrolled(model: FourDVarNet, batch: Any) -> Tensor:
    """The K solver steps with plain backprop through all of them (the exact reference)."""
    model.check_batch(batch)
    x, h, c, y, m = _initial(model, batch)
    params = dict(model.named_parameters())
    live = torch.is_grad_enabled()
    return run_steps(params, model.statics, x, h, c, y, m, model.n_solver_steps, live=live)[0]


def solve_4dvarnet(model: FourDVarNet, batch: Any, adjoint: Any = None) -> Tensor:
    """The inner solve of ``model`` on ``batch``, differentiated as ``adjoint`` (spec or native;
    ``None``: the model's ``solver_adjoint``) says. Under ``torch.no_grad()`` every adjoint runs
    the graph-free loop (the fixed-point solve for ``ImplicitAdjoint``)."""
    adjoint = to_native_adjoint(model.solver_adjoint if adjoint is None else adjoint)
    if isinstance(adjoint, ImplicitAdjoint):
        return _fixedpoint(model, batch, adjoint)
    model.check_batch(batch)
    x, h, c, y, m = _initial(model, batch)
    params = dict(model.named_parameters())
    st, n_steps = model.statics, model.n_solver_steps
    if not torch.is_grad_enabled():
        return run_steps(params, st, x, h, c, y, m, n_steps, live=False)[0]
    if isinstance(adjoint, KStepAdjoint):
        live_steps = min(adjoint.k, n_steps)
        x, h, c = run_steps(params, st, x, h, c, y, m, n_steps - live_steps, live=False)
        return run_steps(params, st, x, h, c, y, m, live_steps, live=True)[0]
    if isinstance(adjoint, RecursiveCheckpointAdjoint):
        leaf = RecursiveCheckpointAdjoint.leaf_steps if adjoint.checkpoints is None else None
        return run_checkpointed(params, st, x, h, c, y, m, n_steps, adjoint.n_segments(n_steps), leaf)[0]
    raise TypeError(f"no inner-solve loop for the adjoint {adjoint!r}")


def solve_4dvarnet_checkpointed(model: FourDVarNet, batch: Any, checkpoints: int | None = None) -> Tensor:
    """``K`` steps recomputed from stored boundary states: exact gradient, memory sublinear in
    ``K`` (``checkpoints``: see `RecursiveCheckpointAdjoint`)."""
    return solve_4dvarnet(model, batch, RecursiveCheckpointAdjoint(checkpoints))


def solve_4dvarnet_kstep(model: FourDVarNet, batch: Any, k: int) -> Tensor:
    """``max(K - k, 0)`` graph-free warm-up steps (state AND carry cut), then ``min(k, K)`` live
    steps."""
    return solve_4dvarnet(model, batch, KStepAdjoint(k))


# ----------------------------------------------------------------------------- fixed point


def fixedpoint_map(params: Params, padding: str, x: Tensor, y: Tensor, m: Tensor) -> Tensor:
    """``T(x) = m * y + (1 - m) * phi(x)``."""
    return m * y + (1 - m) * prior_apply(params, x, padding, prefix="prior.")


def _prior_params(model: FourDVarNet) -> dict[str, Tensor]:
    return {name: p for name, p in model.named_parameters() if name.startswith("prior.")}


def _iterate(params: Params, padding: str, y: Tensor, m: Tensor, adjoint: ImplicitAdjoint) -> Tensor:
    """``x <- T(x)`` from ``m * y`` until ``max|dx| / (atol + rtol |x_new|) < 1`` (optimistix
    ``FixedPointIteration``'s test); returns the last iterate; warns if ``max_steps`` is hit."""
    x = m * y
    residual = float("inf")
    for _ in range(adjoint.steps):
        x_new = fixedpoint_map(params, padding, x, y, m)
        diff = (x_new - x).abs()
        x = x_new
        if bool(((diff / (adjoint.atol + adjoint.rtol * x_new.abs())) < 1).all()):
            return x
        residual = float(diff.max())
    warnings.warn(
        ConvergenceWarning(
            f"fixed-point iteration did not converge in {adjoint.steps} steps: residual "
            f"max|x_(n+1) - x_n| = {residual:.3e} (rtol={adjoint.rtol}, atol={adjoint.atol})"
        ),
        stacklevel=4,
    )
    return x


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


def _adjoint_solve(vjp: Callable[[Tensor], Tensor], g: Tensor, adjoint: ImplicitAdjoint) -> Tensor:
    """Solve ``(I - J^T) lambda = g`` with the adjoint's linear solver (``g`` any shape)."""
    shape = g.shape

    def flat_vjp(v: Tensor) -> Tensor:
        return vjp(v.reshape(shape)).reshape(-1)

    def matvec(v: Tensor) -> Tensor:
        return v - flat_vjp(v)

    b = g.reshape(-1)
    name, tol = adjoint.linear_solver_name, {"rtol": adjoint.rtol, "atol": adjoint.atol}
    if name == "dense":
        return dense_solve(matvec, b).reshape(shape)
    if name == "neumann":
        lam, residual, used = neumann(flat_vjp, b, max_steps=adjoint.steps, **tol)
        converged = used < adjoint.steps or bool(
            (flat_vjp(lam) + b - lam).abs().max() <= adjoint.atol + adjoint.rtol * lam.abs().max()
        )
    else:
        lam, residual, used = gmres(matvec, b, max_steps=adjoint.steps, **tol)
        converged = residual <= adjoint.atol + adjoint.rtol * float(b.norm())
    if not converged:
        warnings.warn(
            ConvergenceWarning(
                f"implicit adjoint: the {name} solve of (I - dT/dx)^T lambda = g did not converge in "
                f"{used} steps: residual {residual:.3e} (rtol={adjoint.rtol}, atol={adjoint.atol})"
            ),
            stacklevel=2,
        )
    return lam.reshape(shape)


class _FixedPoint(torch.autograd.Function):
    """Forward: the fixed-point iteration, no graph. Backward: the implicit function theorem."""

    @staticmethod
    def forward(ctx, adjoint: ImplicitAdjoint, padding: str, names: Sequence[str], y, m, *plist):  # type: ignore[override]
        params = dict(zip(names, plist, strict=True))
        x = _iterate(params, padding, y, m, adjoint)
        ctx.adjoint, ctx.padding, ctx.names = adjoint, padding, tuple(names)
        ctx.save_for_backward(x, y, m, *plist)
        return x

    @staticmethod
    @once_differentiable
    def backward(ctx, gx):  # type: ignore[override]
        x_star, *rest = ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        with torch.enable_grad():
            xs = x_star.detach().requires_grad_()
            inputs = [t.detach().requires_grad_(need) for t, need in zip(rest, needs, strict=True)]
            y, m, *plist = inputs
            tx = fixedpoint_map(dict(zip(ctx.names, plist, strict=True)), ctx.padding, xs, y, m)

            def vjp(v: Tensor) -> Tensor:  # J^T v with J = dT/dx at x*
                return torch.autograd.grad(tx, xs, v, retain_graph=True)[0]

            lam = _adjoint_solve(vjp, gx, ctx.adjoint)
            wrt = [t for t, need in zip(inputs, needs, strict=True) if need]
            grads = iter(torch.autograd.grad(tx, wrt, lam, allow_unused=True)) if wrt else iter(())
        return (None, None, None, *(next(grads) if need else None for need in needs))


def _fixedpoint(model: FourDVarNet, batch: Any, adjoint: ImplicitAdjoint) -> Tensor:
    model.check_batch(batch)
    params = _prior_params(model)
    return _FixedPoint.apply(adjoint, model.statics.padding, list(params), batch.input, batch.mask,
                             *params.values())


def _implicit_for(model: FourDVarNet, adjoint: Any) -> ImplicitAdjoint:
    adjoint = to_native_adjoint(model.solver_adjoint if adjoint is None else adjoint)
    return adjoint if isinstance(adjoint, ImplicitAdjoint) else ImplicitAdjoint()


def solve_4dvarnet_1d_fixedpoint(model: FourDVarNet, batch: Any, adjoint: Any = None) -> Tensor:
    """Fixed point ``x* = m * y + (1 - m) * phi(x*)`` of a 1D model, differentiated implicitly
    (``adjoint``: an `ImplicitAdjoint` spec/native; ``None``: the model's if implicit, else the
    default ``ImplicitAdjoint()``)."""
    if model.ndim != 1:
        raise ValueError(f"solve_4dvarnet_1d_fixedpoint needs a 1D model, got a {model.ndim}D one")
    return _fixedpoint(model, batch, _implicit_for(model, adjoint))


def solve_4dvarnet_2d_fixedpoint(model: FourDVarNet, batch: Any, adjoint: Any = None) -> Tensor:
    """Fixed point ``x* = m * y + (1 - m) * phi(x*)`` of a 2D model (see the 1D twin)."""
    if model.ndim != 2:
        raise ValueError(f"solve_4dvarnet_2d_fixedpoint needs a 2D model, got a {model.ndim}D one")
    return _fixedpoint(model, batch, _implicit_for(model, adjoint))


def fixedpoint_unrolled(model: FourDVarNet, batch: Any, n_iterations: int) -> Tensor:
    """``n_iterations`` of ``x <- T(x)`` from ``m * y`` with plain backprop (Implicit's reference)."""
    model.check_batch(batch)
    params = _prior_params(model)
    y, m = batch.input, batch.mask
    x = m * y
    for _ in range(n_iterations):
        x = fixedpoint_map(params, model.statics.padding, x, y, m)
    return x
