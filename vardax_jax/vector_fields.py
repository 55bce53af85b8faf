r"""ODE vector fields of the dynamics layer: :math:`f_\theta` in :math:`\dot x = f_\theta(x)`.

Each field is an ``equinox.Module`` mapping states ``(..., N)`` to tendencies ``(..., N)``; its
parameters (named by ``parameter_names``, `pipekit_cycle.dynamics.FIELD_PARAMETERS`) are array
fields, so `vardax_jax.dynamics.DiffraxForwardModel` differentiates them like any other leaf.
Re-exported by `vardax_jax.dynamics` and at the package top level.

Examples
--------
```python
import jax.numpy as jnp
import vardax_jax as vd

field = vd.Lorenz96(state_dim=8)
assert field(jnp.zeros((2, 8))).shape == (2, 8)
```
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike

from pipekit_cycle import dynamics as shared
from pipekit_cycle.dynamics import FIELD_PARAMETERS
from pipekit_cycle.problems import L63_BETA, L63_RHO, L63_SIGMA, L96_FORCING

__all__ = ["LinearField", "Lorenz63", "Lorenz96", "field_parameters"]


def _default_float() -> DTypeLike:
    # The framework's own precision switch decides, as for the rest of the backend.
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


class Lorenz63(eqx.Module):
    r"""Lorenz-63: :math:`\dot x = \sigma (y - x),\ \dot y = x (\rho - z) - y,\ \dot z = x y - \beta z`.

    ``sigma``, ``rho``, ``beta`` are array fields (0-d), so gradients w.r.t. them are taken like
    any other parameter. ``__call__(state)`` maps ``(..., 3)`` to tendencies ``(..., 3)``.

    Examples
    --------
    ```python
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    import vardax_jax as vd

    field = vd.Lorenz63()  # sigma=10, rho=28, beta=8/3
    x = jnp.array([1.0, 1.0, 1.0])
    assert np.allclose(field(x), [0.0, 26.0, 1.0 - 8.0 / 3.0])
    grads = eqx.filter_grad(lambda f: f(x).sum())(field)  # the parameters are differentiable leaves
    assert float(grads.rho) == 1.0  # d/d rho of x (rho - z) is x = 1
    ```
    """

    sigma: Array
    rho: Array
    beta: Array
    state_dim: ClassVar[int] = 3
    parameter_names: ClassVar[tuple[str, ...]] = FIELD_PARAMETERS["lorenz63"]

    def __init__(
        self, sigma: ArrayLike = L63_SIGMA, rho: ArrayLike = L63_RHO, beta: ArrayLike = L63_BETA, *,
        dtype: DTypeLike | None = None,
    ) -> None:
        dtype = _default_float() if dtype is None else dtype
        self.sigma = jnp.asarray(sigma, dtype)
        self.rho = jnp.asarray(rho, dtype)
        self.beta = jnp.asarray(beta, dtype)

    def __call__(self, state: Array) -> Array:
        x, y, z = state[..., 0], state[..., 1], state[..., 2]
        return jnp.stack([self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z], axis=-1)


class Lorenz96(eqx.Module):
    r"""Lorenz-96: :math:`\dot x_i = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F`, periodic in ``i``.

    ``forcing`` (:math:`F`) is a 0-d array field; ``state_dim`` (``N >= 4``) is static.

    Examples
    --------
    ```python
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    import vardax_jax as vd

    field = vd.Lorenz96(state_dim=8, forcing=8.0)
    assert np.allclose(field(jnp.full(8, 8.0)), 0.0)  # x_i = F for every i is a fixed point
    assert field(jnp.ones((3, 8))).shape == (3, 8)  # any leading axes
    ```
    """

    forcing: Array
    state_dim: int = eqx.field(static=True)
    parameter_names: ClassVar[tuple[str, ...]] = FIELD_PARAMETERS["lorenz96"]

    def __init__(
        self, state_dim: int = shared.L96_STATE_DIM, forcing: ArrayLike = L96_FORCING, *, dtype: DTypeLike | None = None
    ) -> None:
        self.state_dim = shared.check_l96_state_dim(state_dim)
        dtype = _default_float() if dtype is None else dtype
        self.forcing = jnp.asarray(forcing, dtype)

    def __call__(self, state: Array) -> Array:
        ahead = jnp.roll(state, -1, axis=-1)  # x_{i+1}
        behind2 = jnp.roll(state, 2, axis=-1)  # x_{i-2}
        behind = jnp.roll(state, 1, axis=-1)  # x_{i-1}
        return (ahead - behind2) * behind - state + self.forcing


class LinearField(eqx.Module):
    r"""The linear ODE :math:`\dot x = A x` (``matrix`` :math:`A`, ``(N, N)``).

    Its rollout is linear in the initial state, which makes 4D-Var a quadratic problem with a
    closed-form solution (the linear-Gaussian check).

    Examples
    --------
    ```python
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    import vardax_jax as vd

    field = vd.LinearField(np.array([[0.0, 1.0], [-1.0, 0.0]]))  # a rotation
    assert field.state_dim == 2
    assert np.allclose(field(jnp.array([1.0, 0.0])), [0.0, -1.0])  # A x
    ```
    """

    matrix: Array
    parameter_names: ClassVar[tuple[str, ...]] = FIELD_PARAMETERS["linear"]

    def __init__(self, matrix: ArrayLike, *, dtype: DTypeLike | None = None) -> None:
        shared.check_square_matrix(matrix)
        self.matrix = jnp.asarray(matrix, _default_float() if dtype is None else dtype)

    @property
    def state_dim(self) -> int:
        return self.matrix.shape[0]

    def __call__(self, state: Array) -> Array:
        return state @ self.matrix.T


VectorField = Lorenz63 | Lorenz96 | LinearField


def field_parameters(field: eqx.Module) -> dict[str, np.ndarray]:
    """The vector field's parameters by name (``field.parameter_names``), as numpy arrays."""
    return {name: np.asarray(getattr(field, name)) for name in field.parameter_names}
