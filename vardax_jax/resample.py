r"""Average pooling and bilinear up-sampling of ``(B, C, H, W)`` arrays by an integer factor
``d`` (the down/up-sampling of ocean4dvarnet's prior and modulator, DESIGN 7).

``average_pool``: non-overlapping ``d x d`` means, ``(H, W) -> (H / d, W / d)`` (torch's
``AvgPool2d(d)``). ``upsample_bilinear``: ``(h, w) -> (d h, d w)`` with corner-aligned
coordinates (torch's ``UpsamplingBilinear2d``, ``align_corners=True``): output row ``i`` reads
input row ``s = i (h - 1) / (d h - 1)`` as ``(1 - t) x_{floor s} + t x_{floor s + 1}``,
``t = s - floor s``. Both are linear maps written as matrix products, so every derivative is
a matrix product too. ``d = 1`` is the identity.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from pipekit_cycle.validation import check_poolable

__all__ = ["average_pool", "upsample_bilinear"]


def average_pool(x: Float[Array, "batch c h w"], factor: int) -> Float[Array, "batch c h/d w/d"]:
    """Means over non-overlapping ``factor x factor`` blocks (``H, W`` divisible by it)."""
    if factor == 1:
        return x
    check_poolable(x.shape, factor)
    b, c, h, w = x.shape
    return x.reshape(b, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


def _interpolation_matrix(n_in: int, factor: int) -> np.ndarray:
    """``(factor n_in, n_in)``: the corner-aligned linear interpolation weights (float64)."""
    n_out = factor * n_in
    matrix = np.zeros((n_out, n_in))
    if n_in == 1:
        matrix[:, 0] = 1.0
        return matrix
    scale = (n_in - 1) / (n_out - 1)
    for i in range(n_out):
        source = i * scale
        low = min(int(np.floor(source)), n_in - 1)
        high = min(low + 1, n_in - 1)
        t = source - low
        matrix[i, low] += 1.0 - t
        matrix[i, high] += t
    return matrix


def upsample_bilinear(x: Float[Array, "batch c h w"], factor: int) -> Float[Array, "batch c dh dw"]:
    """Corner-aligned bilinear up-sampling by ``factor`` (see the module docstring)."""
    if factor == 1:
        return x
    rows = jnp.asarray(_interpolation_matrix(x.shape[2], factor), x.dtype)
    cols = jnp.asarray(_interpolation_matrix(x.shape[3], factor), x.dtype)
    return jnp.einsum("ih,bchw,jw->bcij", rows, x, cols)
