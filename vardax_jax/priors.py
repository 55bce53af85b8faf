"""The bilinear convolutional auto-encoder prior ``phi`` (``pipekit_cycle.Prior``).

.. math::

    h = W_{hidden} \\star \\mathrm{relu}(W_{in} \\star x),\\qquad
    \\phi(x) = W_{out} \\star [\\,W_1 \\star h,\\ (W_{21} \\star h) \\odot (W_{22} \\star h)\\,]

with time ``T`` as the channel axis; the prior cost of a state is ``sum((x - phi(x))**2)``.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .grad_mod import Conv, Padding

__all__ = ["AbstractBilinAEPrior", "BilinAEPrior1D", "BilinAEPrior2D"]


class AbstractBilinAEPrior(eqx.Module):
    """Bilinear auto-encoder prior; see the module docstring. ``x`` is ``(B, T, *S)``."""

    conv_in: Conv
    conv_hidden: Conv
    bilin_1: Conv
    bilin_21: Conv
    bilin_22: Conv
    conv_out: Conv

    ndim: ClassVar[int]

    def __init__(
        self,
        n_time: int,
        hidden_dim: int = 16,
        kernel_size: int = 3,
        padding: Padding = "zeros",
        *,
        key: PRNGKeyArray,
        dtype=None,
    ):
        keys = jr.split(key, 6)
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
        h = self.conv_hidden(jax.nn.relu(self.conv_in(x)))
        features = jnp.concatenate([self.bilin_1(h), self.bilin_21(h) * self.bilin_22(h)], axis=1)
        return self.conv_out(features)


class BilinAEPrior1D(AbstractBilinAEPrior):
    """Bilinear AE prior on 1D states ``(B, T, N)``."""

    ndim: ClassVar[int] = 1


class BilinAEPrior2D(AbstractBilinAEPrior):
    """Bilinear AE prior on 2D states ``(B, T, H, W)``."""

    ndim: ClassVar[int] = 2
