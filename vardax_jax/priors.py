"""The bilinear convolutional auto-encoder prior ``phi`` (``pipekit_cycle.Prior``).

.. math::

    h = W_{hidden} \\star \\mathrm{relu}(W_{in} \\star x),\\qquad
    \\phi(x) = W_{out} \\star [\\,W_1 \\star h,\\ (W_{21} \\star h) \\odot (W_{22} \\star h)\\,]

with time ``T`` as the channel axis; the prior cost of a state is ``sum((x - phi(x))**2)``.
``bilin_quad=True`` makes the quadratic term ``(W_{21} \\star h)^2`` (``W_{22}`` is kept, unused,
as ocean4dvarnet keeps it); ``downsample = d > 1`` average-pools ``x`` by ``d`` first and
up-samples ``phi`` back bilinearly (`vardax_jax.resample`, 2D only).

Examples
--------
```python
import jax.numpy as jnp
import jax.random as jr
import vardax_jax as vd

phi = vd.priors.BilinAEPrior1D(5, hidden_dim=4, key=jr.PRNGKey(0))
assert tuple(phi(jnp.ones((2, 5, 16))).shape) == (2, 5, 16)
```
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from pipekit_cycle.validation import check_batch_grid

from .grad_mod import Conv, Padding
from .resample import average_pool, upsample_bilinear

__all__ = ["AbstractBilinAEPrior", "BilinAEPrior1D", "BilinAEPrior2D"]


class AbstractBilinAEPrior(eqx.Module):
    """Bilinear auto-encoder prior; see the module docstring. ``x`` is ``(B, T, *S)``."""

    conv_in: Conv
    conv_hidden: Conv
    bilin_1: Conv
    bilin_21: Conv
    bilin_22: Conv
    conv_out: Conv
    downsample: int = eqx.field(static=True)
    bilin_quad: bool = eqx.field(static=True)

    ndim: ClassVar[int]

    def __init__(
        self,
        n_time: int,
        hidden_dim: int = 16,
        kernel_size: int = 3,
        padding: Padding = "zeros",
        *,
        key: PRNGKeyArray,
        dtype: DTypeLike | None = None,
        downsample: int = 1,
        bilin_quad: bool = False,
    ):
        keys = jr.split(key, 6)
        self.downsample, self.bilin_quad = int(downsample), bool(bilin_quad)
        p = hidden_dim

        def conv(i, c_in, c_out):
            return Conv(c_in, c_out, kernel_size, self.ndim, padding, key=keys[i], dtype=dtype)

        self.conv_in = conv(0, n_time, p)
        self.conv_hidden = conv(1, p, p)
        self.bilin_1 = conv(2, p, p)
        self.bilin_21 = conv(3, p, p)
        self.bilin_22 = conv(4, p, p)
        self.conv_out = conv(5, 2 * p, n_time)

    def __call__(self, x: Float[Array, "batch time *space"]) -> Float[Array, "batch time *space"]:
        # Any grid the convolutions and the pooling allow: the parameters do not fix it.
        n_time, kernel_size = self.conv_in.weight.shape[1], self.conv_in.weight.shape[-1]
        check_batch_grid(x.shape, None, None, ndim=self.ndim, n_time=n_time, kernel_size=kernel_size,
                         downsample=(self.downsample,), name="the prior's input x")
        x = average_pool(x, self.downsample)
        h = self.conv_hidden(jax.nn.relu(self.conv_in(x)))
        quadratic = self.bilin_21(h) ** 2 if self.bilin_quad else self.bilin_21(h) * self.bilin_22(h)
        features = jnp.concatenate([self.bilin_1(h), quadratic], axis=1)
        return upsample_bilinear(self.conv_out(features), self.downsample)


class BilinAEPrior1D(AbstractBilinAEPrior):
    """Bilinear AE prior on 1D states ``(B, T, N)``.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import vardax_jax as vd

    phi = vd.BilinAEPrior1D(5, hidden_dim=4, key=jr.PRNGKey(0))  # n_time=5: time is the channel axis
    x = jnp.ones((2, 5, 16))
    out = phi(x)
    assert tuple(out.shape) == (2, 5, 16)  # phi(x) has the state's shape
    prior_cost = float(((x - out) ** 2).sum())  # the prior term of the solve's cost
    assert prior_cost > 0
    ```
    """

    ndim: ClassVar[int] = 1


class BilinAEPrior2D(AbstractBilinAEPrior):
    """Bilinear AE prior on 2D states ``(B, T, H, W)``.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import vardax_jax as vd

    phi = vd.BilinAEPrior2D(5, hidden_dim=4, key=jr.PRNGKey(0))  # n_time=5: time is the channel axis
    x = jnp.ones((2, 5, 8, 8))
    out = phi(x)
    assert tuple(out.shape) == (2, 5, 8, 8)  # phi(x) has the state's shape
    prior_cost = float(((x - out) ** 2).sum())  # the prior term of the solve's cost
    assert prior_cost > 0
    assert tuple(phi(jnp.ones((1, 5, 24, 3))).shape) == (1, 5, 24, 3)  # any grid of at least the kernel
    ```
    """

    ndim: ClassVar[int] = 2
