"""The learned prior ``phi``: a bilinear convolutional autoencoder (1D and 2D), and the shared
convolution helpers of the backend.

Every module here is a thin ``nn.Module`` holding parameters; the maths lives in pure
functions of an explicit parameter mapping (``prior_apply``, ``conv``) so that solver code can
pass parameters explicitly (custom ``autograd.Function``s, detached warm-up copies).

Examples
--------
```python
import torch
import vardax_torch as vd

phi = vd.priors.BilinAEPrior1D(5, hidden_dim=4, seed=0)
assert tuple(phi(torch.ones((2, 5, 16))).shape) == (2, 5, 16)
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipekit_cycle.validation import check_batch_grid

from .resample import average_pool, upsample_bilinear

__all__ = ["PRIOR_CONVS", "BilinAEPrior1D", "BilinAEPrior2D", "Conv", "conv", "prior_apply"]

PRIOR_CONVS = ("conv_in", "conv_hidden", "bilin_1", "bilin_21", "bilin_22", "conv_out")


def conv(x: Tensor, weight: Tensor, bias: Tensor, padding: str) -> Tensor:
    """Stride-1 "same" cross-correlation; ``weight`` ``(out, in, *kernel)`` with odd kernel,
    ``k // 2`` padding on every side of every spatial axis (``zeros`` or ``circular``)."""
    nd = weight.ndim - 2
    pad = weight.shape[-1] // 2
    op = F.conv1d if nd == 1 else F.conv2d
    if padding == "circular" and pad > 0:
        return op(F.pad(x, (pad, pad) * nd, mode="circular"), weight, bias)
    return op(x, weight, bias, padding=pad)


class Conv(nn.Module):
    """Parameters of one convolution: ``weight (out, in, *kernel)``, ``bias (out,)``.

    Initialised like torch's ``nn.Conv*d`` (uniform in ``+-1/sqrt(fan_in)``), drawn in float64
    from ``generator`` and cast, so the same seed gives the same values in every dtype."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, ndim: int, *,
        generator: torch.Generator, dtype: torch.dtype, padding: str = "zeros",
    ) -> None:
        super().__init__()
        shape = (out_channels, in_channels, *(kernel_size,) * ndim)
        bound = 1.0 / math.sqrt(in_channels * kernel_size**ndim)

        def draw(*size: int) -> Tensor:
            u = torch.rand(size, generator=generator, dtype=torch.float64)
            return ((2.0 * u - 1.0) * bound).to(dtype)

        self.weight = nn.Parameter(draw(*shape))
        self.bias = nn.Parameter(draw(out_channels))
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return conv(x, self.weight, self.bias, self.padding)


def prior_apply(
    params: Mapping[str, Tensor], x: Tensor, padding: str, prefix: str = "", *, downsample: int = 1,
    bilin_quad: bool = False,
) -> Tensor:
    """``phi(x) = up(conv_out(concat([bilin_1(h), bilin_21(h) * bilin_22(h)])))`` with
    ``h = conv_hidden(relu(conv_in(pool(x))))``; ``params`` keyed ``{prefix}{conv}.{weight,bias}``.
    ``bilin_quad``: the quadratic term is ``bilin_21(h)^2``; ``downsample``: the pooling and
    up-sampling factor (`vardax_torch.resample`; 1: neither)."""

    def c(name: str, z: Tensor) -> Tensor:
        return conv(z, params[f"{prefix}{name}.weight"], params[f"{prefix}{name}.bias"], padding)

    h = c("conv_hidden", torch.relu(c("conv_in", average_pool(x, downsample))))
    quadratic = c("bilin_21", h) ** 2 if bilin_quad else c("bilin_21", h) * c("bilin_22", h)
    return upsample_bilinear(c("conv_out", torch.cat([c("bilin_1", h), quadratic], dim=1)), downsample)


class _BilinAEPrior(nn.Module):
    ndim: int

    def __init__(
        self, n_time: int, hidden_dim: int = 16, kernel_size: int = 3, padding: str = "zeros", *,
        seed: int = 0, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
        downsample: int = 1, bilin_quad: bool = False,
    ) -> None:
        super().__init__()
        if padding not in ("zeros", "circular"):
            raise ValueError(f"padding must be one of zeros, circular, got {padding!r}")
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        dtype = dtype or torch.get_default_dtype()
        t, p = n_time, hidden_dim
        channels = {"conv_in": (t, p), "conv_hidden": (p, p), "bilin_1": (p, p),
                    "bilin_21": (p, p), "bilin_22": (p, p), "conv_out": (2 * p, t)}
        for name in PRIOR_CONVS:
            c_in, c_out = channels[name]
            setattr(self, name, Conv(c_in, c_out, kernel_size, self.ndim, generator=generator,
                                     dtype=dtype, padding=padding))
        self.n_time, self.hidden_dim, self.kernel_size, self.padding = n_time, hidden_dim, kernel_size, padding
        self.downsample, self.bilin_quad = int(downsample), bool(bilin_quad)

    def forward(self, x: Tensor) -> Tensor:
        """``phi(x)``, the same shape as ``x`` ``(B, T, *S)``."""
        # Any grid the convolutions and the pooling allow: the parameters do not fix it.
        check_batch_grid(tuple(x.shape), None, None, ndim=self.ndim, n_time=self.n_time, kernel_size=self.kernel_size,
                         downsample=(self.downsample,), name="the prior's input x")
        return prior_apply(dict(self.named_parameters()), x, self.padding, downsample=self.downsample,
                           bilin_quad=self.bilin_quad)


class BilinAEPrior1D(_BilinAEPrior):
    """Bilinear convolutional autoencoder prior on 1D states ``(B, T, N)`` (`pipekit_cycle.Prior`).

    Examples
    --------
    ```python
    import torch
    import vardax_torch as vd

    phi = vd.BilinAEPrior1D(5, hidden_dim=4, seed=0)  # n_time=5: time is the channel axis
    x = torch.ones((2, 5, 16))
    with torch.no_grad():
        out = phi(x)
    assert tuple(out.shape) == (2, 5, 16)  # phi(x) has the state's shape
    prior_cost = float(((x - out) ** 2).sum())  # the prior term of the solve's cost
    assert prior_cost > 0
    ```
    """

    ndim = 1


class BilinAEPrior2D(_BilinAEPrior):
    """Bilinear convolutional autoencoder prior on 2D states ``(B, T, H, W)`` (`pipekit_cycle.Prior`).

    Examples
    --------
    ```python
    import torch
    import vardax_torch as vd

    phi = vd.BilinAEPrior2D(5, hidden_dim=4, seed=0)  # n_time=5: time is the channel axis
    x = torch.ones((2, 5, 8, 8))
    with torch.no_grad():
        out = phi(x)
        assert tuple(phi(torch.ones((1, 5, 24, 3))).shape) == (1, 5, 24, 3)  # any grid of at least the kernel
    assert tuple(out.shape) == (2, 5, 8, 8)  # phi(x) has the state's shape
    prior_cost = float(((x - out) ** 2).sum())  # the prior term of the solve's cost
    assert prior_cost > 0
    ```
    """

    ndim = 2
