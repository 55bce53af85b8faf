"""`assert_adjoint_calibrated`: does a cheap adjoint's Jacobian agree with the exact one?

Examples
--------
```python
import torch
import vardax_torch as vd

x = torch.arange(3.0)
error = vd.calibration.assert_adjoint_calibrated(torch.sin, torch.sin, x, seed=0)
assert error == 0.0  # the same function: the same Jacobian
```
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

if TYPE_CHECKING:
    from jaxtyping import PyTree

__all__ = ["assert_adjoint_calibrated"]


def _jvps(
    fn: Callable[[PyTree[Tensor]], PyTree[Tensor]], inputs: PyTree[Tensor], probes: list[list[Tensor]]
) -> list[Tensor]:
    """``J v`` for every probe ``v`` by double VJP: with ``w(u) = J^T u`` (graph kept), ``J v``
    is the gradient of ``<w(u), v>`` w.r.t. ``u``. Reverse mode only, so custom
    ``autograd.Function``s (checkpointed segments) need no forward-mode rule."""
    leaves, spec = pytree.tree_flatten(inputs)
    leaves = [leaf.detach().requires_grad_() for leaf in leaves]
    outputs = pytree.tree_leaves(fn(pytree.tree_unflatten(leaves, spec)))
    dummies = [torch.zeros_like(out, requires_grad=True) for out in outputs]
    vjp = torch.autograd.grad(outputs, leaves, dummies, create_graph=True, allow_unused=True)
    pairs = [(w, i) for i, w in enumerate(vjp) if w is not None and w.requires_grad]
    results = []
    for probe in probes:
        if not pairs:  # the output does not depend on the inputs under this adjoint
            results.append(torch.cat([torch.zeros_like(out).reshape(-1) for out in outputs]))
            continue
        jv = torch.autograd.grad([w for w, _ in pairs], dummies, [probe[i] for _, i in pairs],
                                 retain_graph=True, allow_unused=True)
        results.append(torch.cat([(torch.zeros_like(d) if g is None else g).reshape(-1)
                                  for g, d in zip(jv, dummies, strict=True)]).detach())
    return results


def assert_adjoint_calibrated(
    fast_fn: Callable[[PyTree[Tensor]], PyTree[Tensor]], exact_fn: Callable[[PyTree[Tensor]], PyTree[Tensor]],
    inputs: PyTree[Tensor], *, seed: int = 0,
    generator: torch.Generator | None = None, threshold: float = 0.05, n_probes: int = 10,
) -> float:
    """Compare the Jacobians of ``fast_fn`` and ``exact_fn`` (each called as ``fn(inputs)``;
    ``inputs`` a tensor or a pytree of tensors, e.g. a parameter dict used with
    ``torch.func.functional_call``) on ``n_probes`` random unit probes ``v`` (Gaussian, drawn
    from ``generator`` or ``seed``, normalised over all leaves):
    ``err = max_v ||J_fast v - J_exact v|| / ||J_exact v||``. The Jacobian of ``fast_fn`` is the
    one its adjoint defines (its backward), obtained by double VJP.
    Raises ``AssertionError`` with the measured error if ``err > threshold``; returns ``err``.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=2, window_length=5, state_dim=8, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(8,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=2)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)


    def fast(y):  # the solve as a function of the observations, gradient through the last k = K steps
        return vd.solve_4dvarnet_kstep(model, vd.Batch1D(input=y, mask=batch.mask), k=2)


    def exact(y):  # plain backprop through every step
        return vd.solve_4dvarnet_unrolled(model, vd.Batch1D(input=y, mask=batch.mask))


    error = vd.assert_adjoint_calibrated(fast, exact, batch.input, seed=0, n_probes=3)
    assert error < 1e-4  # k = K truncates nothing: the two agree up to rounding
    ```
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    leaves = pytree.tree_leaves(inputs)
    probes = []
    for _ in range(n_probes):
        draws = [torch.randn(leaf.shape, generator=generator, dtype=torch.float64).to(leaf.dtype) for leaf in leaves]
        norm = torch.sqrt(sum((d.double() ** 2).sum() for d in draws))
        probes.append([d / norm.to(d.dtype) for d in draws])
    fast, exact = _jvps(fast_fn, inputs, probes), _jvps(exact_fn, inputs, probes)
    errors = [float((f - e).norm() / e.norm().clamp_min(torch.finfo(e.dtype).tiny)) for f, e in zip(fast, exact,
                                                                                                    strict=True)]
    error = max(errors)
    if not error <= threshold:
        raise AssertionError(
            f"adjoint not calibrated: max relative JVP error {error:.3e} over {n_probes} probes "
            f"exceeds threshold {threshold:g}"
        )
    return error
