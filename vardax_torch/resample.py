r"""Average pooling and bilinear up-sampling of ``(B, C, H, W)`` tensors by an integer factor
``d`` (the down/up-sampling of ocean4dvarnet's prior and modulator, DESIGN 7).

``average_pool``: non-overlapping ``d x d`` means (``AvgPool2d(d)``). ``upsample_bilinear``:
``(h, w) -> (d h, d w)`` with corner-aligned coordinates (``UpsamplingBilinear2d``,
``align_corners=True``): output row ``i`` reads input row ``s = i (h - 1) / (d h - 1)``.
``d = 1`` is the identity. The JAX twin writes the same maps as matrix products.
"""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from pipekit_cycle.validation import check_poolable

__all__ = ["average_pool", "upsample_bilinear"]


def average_pool(x: Float[Tensor, "batch c h w"], factor: int) -> Float[Tensor, "batch c h/d w/d"]:
    """Means over non-overlapping ``factor x factor`` blocks (``H, W`` divisible by it)."""
    if factor == 1:
        return x
    check_poolable(tuple(x.shape), factor)  # avg_pool2d would drop the remainder silently
    return F.avg_pool2d(x, factor)


def upsample_bilinear(x: Float[Tensor, "batch c h w"], factor: int) -> Float[Tensor, "batch c dh dw"]:
    """Corner-aligned bilinear up-sampling by ``factor`` (see the module docstring)."""
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)
