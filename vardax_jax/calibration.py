"""Is a cheap adjoint close to the exact one? Random-probe derivative comparison.

Examples
--------
```python
import jax.numpy as jnp
import jax.random as jr
import vardax_jax as vd

x = jnp.arange(3.0)
error = vd.calibration.assert_adjoint_calibrated(jnp.sin, jnp.sin, x, key=jr.PRNGKey(0))
assert error == 0.0  # the same function: the same Jacobian
```
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

__all__ = ["assert_adjoint_calibrated"]


def _unit_probes(key, like: PyTree[Array], n_probes: int):
    flat, unravel = ravel_pytree(like)
    probes = jr.normal(key, (n_probes, flat.size), flat.dtype)
    probes = probes / jnp.linalg.norm(probes, axis=1, keepdims=True)
    return [unravel(p) for p in probes]


def _jvps(fn, inputs, probes):
    return [ravel_pytree(jax.jvp(fn, (inputs,), (v,))[1])[0] for v in probes]


def _vjps(fn, inputs, probes):
    _, vjp = jax.vjp(fn, inputs)
    return [ravel_pytree(vjp(v)[0])[0] for v in probes]


def assert_adjoint_calibrated(
    fast_fn: Callable[[PyTree[Array]], PyTree[Array]],
    exact_fn: Callable[[PyTree[Array]], PyTree[Array]],
    inputs: PyTree[Array],
    *,
    key: PRNGKeyArray,
    threshold: float = 0.05,
    n_probes: int = 10,
    mode: str = "auto",
) -> float:
    r"""Max over random unit probes ``v`` of ``||J_fast v - J_exact v|| / ||J_exact v||``.

    ``fast_fn`` and ``exact_fn`` map the pytree ``inputs`` to a pytree of arrays, differentiated
    by their own adjoints. ``mode="jvp"`` compares Jacobian-vector products (probes in input
    space); ``"vjp"`` compares vector-Jacobian products ``v^T J`` (probes in output space), which
    is what reverse-only adjoints (equinox's checkpointed while loop, ``KStepAdjoint`` inside
    optimistix) support; ``"auto"`` tries JVPs and falls back to VJPs when either function
    cannot be forward-differentiated. Raises ``AssertionError`` with the measured error if it is
    above ``threshold``; returns it otherwise.

    Examples
    --------
    ```python
    import jax
    import jax.random as jr
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=2, window_length=5, state_dim=8, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(8,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=2)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)


    @jax.jit  # one compiled solve instead of one dispatch per operation
    def fast(y):  # the solve as a function of the observations, gradient through the last k = K steps
        return vd.solve_4dvarnet_kstep(model, vd.Batch1D(input=y, mask=batch.mask), k=2)


    @jax.jit
    def exact(y):  # plain backprop through every step
        return vd.solve_4dvarnet_unrolled(model, vd.Batch1D(input=y, mask=batch.mask))


    error = vd.assert_adjoint_calibrated(fast, exact, batch.input, key=jr.PRNGKey(0), n_probes=3)
    assert error < 1e-4  # k = K truncates nothing: the two agree up to rounding
    ```
    """
    if mode not in ("auto", "jvp", "vjp"):
        raise ValueError(f"mode must be auto, jvp or vjp, got {mode!r}")
    used = mode
    errors = None
    if mode in ("auto", "jvp"):
        probes = _unit_probes(key, inputs, n_probes)
        try:
            fast, exact = _jvps(fast_fn, inputs, probes), _jvps(exact_fn, inputs, probes)
            errors = [jnp.linalg.norm(f - e) / jnp.linalg.norm(e) for f, e in zip(fast, exact, strict=True)]
            used = "jvp"
        except Exception:  # forward mode unsupported (e.g. a checkpointed while loop)
            if mode == "jvp":
                raise
    if errors is None:
        out = jtu.tree_map(jnp.asarray, exact_fn(inputs))
        probes = _unit_probes(key, out, n_probes)
        fast, exact = _vjps(fast_fn, inputs, probes), _vjps(exact_fn, inputs, probes)
        errors = [jnp.linalg.norm(f - e) / jnp.linalg.norm(e) for f, e in zip(fast, exact, strict=True)]
        used = "vjp"
    error = float(jnp.max(jnp.stack(errors)))
    if not error <= threshold:
        raise AssertionError(
            f"adjoint not calibrated: max relative {used} error {error:.3e} over {n_probes} probes "
            f"exceeds threshold {threshold}"
        )
    return error
