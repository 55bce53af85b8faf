"""Convolutions with periodic or zero padding, and the ConvLSTM gradient modulator.

Shapes: a 1D state is ``(B, T, N)``, a 2D state ``(B, T, H, W)``; time ``T`` is the channel
axis of every convolution (docs/backend-contract.md). The modulator is

.. math::

    z = [g, x, h],\\quad (i, f, \\tilde g, o) = \\mathrm{split}(W_{gates} \\star z),\\quad
    c' = \\sigma(f) c + \\sigma(i) \\tanh(\\tilde g),\\quad h' = \\sigma(o) \\tanh(c'),\\quad
    u = W_{out} \\star h'.

Examples
--------
```python
import jax.numpy as jnp
import jax.random as jr
import vardax_jax as vd

grad_mod = vd.grad_mod.ConvLSTMGradMod1D(5, hidden_dim=4, key=jr.PRNGKey(0))
carry = grad_mod.init_carry(jnp.zeros((2, 5, 16)))  # (B, T, N) -> zeros (B, hidden_dim, N)
assert tuple(carry.hidden.shape) == (2, 4, 16)
```
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from pipekit_cycle.validation import check_batch_grid, float_dtype_name

from .resample import average_pool, upsample_bilinear

__all__ = [
    "AbstractConvLSTMGradMod",
    "Conv",
    "ConvLSTMGradMod1D",
    "ConvLSTMGradMod2D",
    "LSTMState1D",
    "LSTMState2D",
    "NormalizedConvLSTMGradMod1D",
    "NormalizedConvLSTMGradMod2D",
    "NormalizedLSTMState",
    "default_dtype",
]

Padding = Literal["zeros", "circular"]
_CHANNELS_LAST = {1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC")}


def default_dtype(dtype: DTypeLike | None = None) -> jnp.dtype:
    """``dtype`` as a numpy dtype (`pipekit_cycle.validation.float_dtype_name`'s rule); ``None``
    follows ``jax_enable_x64`` (float64 on, float32 off).

    An explicit 64-bit dtype with ``jax_enable_x64`` off raises ``TypeError``: JAX would
    silently make float32 arrays, and a later dtype mismatch would be harder to trace.
    """
    x64 = jax.dtypes.canonicalize_dtype(jnp.float64) == jnp.float64
    resolved = jnp.dtype(float_dtype_name(dtype, "float64" if x64 else "float32"))
    if jax.dtypes.canonicalize_dtype(resolved) != resolved:
        raise TypeError(
            f"dtype {resolved} needs jax_enable_x64 (jax.config.update('jax_enable_x64', True)); it is off"
        )
    return resolved


def _correlate_xla(x: Float[Array, "batch cin *space"], weight: Float[Array, "out cin *kernel"]):
    ndim = weight.ndim - 2
    out = jax.lax.conv_general_dilated(
        jnp.moveaxis(x, 1, -1),
        jnp.transpose(weight, (*range(2, ndim + 2), 1, 0)),
        window_strides=(1,) * ndim,
        padding="VALID",
        dimension_numbers=_CHANNELS_LAST[ndim],
    )
    return jnp.moveaxis(out, -1, 1)


def _correlate_im2col(x: Float[Array, "batch cin *space"], weight: Float[Array, "out cin *kernel"]):
    kernel = weight.shape[2:]
    out_space = [n - k + 1 for n, k in zip(x.shape[2:], kernel, strict=True)]
    channels_last = jnp.moveaxis(x, 1, -1)
    windows = [
        channels_last[(slice(None), *(slice(t, t + n) for t, n in zip(tap, out_space, strict=True)))]
        for tap in itertools.product(*(range(k) for k in kernel))
    ]
    patches = jnp.concatenate(windows, axis=-1)  # (B, *S_out, taps * C_in), tap-major
    matrix = jnp.swapaxes(weight.reshape(*weight.shape[:2], -1), 1, 2).reshape(weight.shape[0], -1)
    return jnp.moveaxis(patches @ matrix.T, -1, 1)


def correlate_valid(
    x: Float[Array, "batch cin *space"], weight: Float[Array, "out cin *kernel"]
) -> Float[Array, "batch out *space_out"]:
    """VALID cross-correlation ``out[b, o, s] = sum_{i, t} w[o, i, t] x[b, i, s + t]``.

    On CPU it is lowered as im2col: the kernel's shifted windows side by side, one matrix
    product. XLA:CPU keeps the layout of arrays carried by a while loop (every solver loop
    here), and its convolutions in such a loop body, above all the weight-gradient ones that
    reverse mode makes, fall off the fast path: the benchmark's checkpointed training step
    (64 x 64, K = 8) took 142 s with ``lax.conv`` and 5.9 s this way, every derivative order
    being matrix products again.
    Elsewhere (GPU, TPU) it is ``lax.conv_general_dilated`` in channels-last layout.
    """
    if jax.default_backend() == "cpu":
        return _correlate_im2col(x, weight)
    return _correlate_xla(x, weight)


class Conv(eqx.Module):
    """Batched "same"-size cross-correlation ``(B, C_in, *S) -> (B, C_out, *S)``, stride 1.

    ``weight`` is ``(C_out, C_in, *kernel)``, ``bias`` ``(C_out,)``; ``padding="circular"``
    wraps every spatial axis (periodic domain), ``"zeros"`` pads zeros. Initialised like
    torch's ``nn.Conv*d``: uniform in ``+-1/sqrt(fan_in)``.
    """

    weight: Float[Array, "out in *kernel"]
    bias: Float[Array, " out"]
    padding: Padding = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ndim: int,
        padding: Padding = "zeros",
        *,
        key: PRNGKeyArray,
        dtype: DTypeLike | None = None,
    ):
        dtype = default_dtype(dtype)
        wkey, bkey = jr.split(key)
        bound = 1.0 / math.sqrt(in_channels * kernel_size**ndim)
        shape = (out_channels, in_channels, *(kernel_size,) * ndim)
        self.weight = jr.uniform(wkey, shape, dtype, -bound, bound)
        self.bias = jr.uniform(bkey, (out_channels,), dtype, -bound, bound)
        self.padding = padding

    def __call__(self, x: Float[Array, "batch in *space"]) -> Float[Array, "batch out *space"]:
        ndim = self.weight.ndim - 2
        pads = [(k // 2, k // 2) for k in self.weight.shape[2:]]
        x = jnp.pad(x, [(0, 0), (0, 0), *pads], mode="wrap" if self.padding == "circular" else "constant")
        out = correlate_valid(x, self.weight)
        return out + self.bias.reshape((1, -1) + (1,) * ndim)


def _check_grid(grad_mod: eqx.Module, shape: tuple[int, ...], downsample: int) -> None:
    """The shared grid rule for a modulator's input: any grid its convolutions (on the pooled
    grid) allow, the time axis its output channels."""
    conv_out = grad_mod.conv_out.weight  # type: ignore[attr-defined]
    check_batch_grid(shape, None, None, ndim=conv_out.ndim - 2, n_time=conv_out.shape[0],
                     kernel_size=conv_out.shape[-1], downsample=(downsample,), name="the modulator's input grad")


class LSTMState1D(eqx.Module):
    """ConvLSTM carry for a 1D state: ``hidden`` and ``cell``, each ``(B, hidden_dim, N)``.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import vardax_jax as vd

    carry = vd.LSTMState1D(hidden=jnp.zeros((2, 4, 16)), cell=jnp.zeros((2, 4, 16)))  # hidden_dim=4
    grad_mod = vd.ConvLSTMGradMod1D(5, hidden_dim=4, key=jr.PRNGKey(0))
    x = jnp.zeros((2, 5, 16))
    update, carry = grad_mod(jnp.ones_like(x), x, carry)
    assert isinstance(carry, vd.LSTMState1D) and bool((carry.cell != 0).any())  # the cell took the gradient in
    ```
    """

    hidden: Float[Array, "batch hidden n"]
    cell: Float[Array, "batch hidden n"]


class LSTMState2D(eqx.Module):
    """ConvLSTM carry for a 2D state: ``hidden`` and ``cell``, each ``(B, hidden_dim, H, W)``.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import vardax_jax as vd

    carry = vd.LSTMState2D(hidden=jnp.zeros((2, 4, 8, 8)), cell=jnp.zeros((2, 4, 8, 8)))  # hidden_dim=4
    grad_mod = vd.ConvLSTMGradMod2D(5, hidden_dim=4, key=jr.PRNGKey(0))
    x = jnp.zeros((2, 5, 8, 8))
    update, carry = grad_mod(jnp.ones_like(x), x, carry)
    assert isinstance(carry, vd.LSTMState2D) and bool((carry.cell != 0).any())  # the cell took the gradient in
    ```
    """

    hidden: Float[Array, "batch hidden h w"]
    cell: Float[Array, "batch hidden h w"]


class AbstractConvLSTMGradMod(eqx.Module):
    """ConvLSTM gradient modulator (``pipekit_cycle.GradModulator``); see the module docstring.

    Stateless: the carry is threaded explicitly, so a recomputed step (checkpointing) gives the
    same result.
    """

    gates: Conv
    conv_out: Conv
    hidden_dim: int = eqx.field(static=True)

    ndim: ClassVar[int]
    state_cls: ClassVar[type]

    def __init__(
        self,
        n_time: int,
        hidden_dim: int = 16,
        kernel_size: int = 3,
        padding: Padding = "zeros",
        *,
        key: PRNGKeyArray,
        dtype: DTypeLike | None = None,
    ):
        gkey, okey = jr.split(key)
        in_channels = 2 * n_time + hidden_dim  # concat(grad, state, hidden)
        self.gates = Conv(in_channels, 4 * hidden_dim, kernel_size, self.ndim, padding, key=gkey, dtype=dtype)
        self.conv_out = Conv(hidden_dim, n_time, kernel_size, self.ndim, padding, key=okey, dtype=dtype)
        self.hidden_dim = hidden_dim

    def init_carry(self, state: Float[Array, "batch time *space"]):
        """Zeros ``(B, hidden_dim, *S)`` for hidden and cell."""
        zeros = jnp.zeros((state.shape[0], self.hidden_dim, *state.shape[2:]), state.dtype)
        return self.state_cls(zeros, zeros)

    def __call__(self, grad: Float[Array, "batch time *space"], state: Float[Array, "batch time *space"], carry):
        if grad.shape != state.shape:
            raise ValueError(f"grad and state must have the same shape, got {grad.shape} and {state.shape}")
        _check_grid(self, grad.shape, 1)
        expected = (state.shape[0], self.hidden_dim, *state.shape[2:])
        if carry.hidden.shape != expected or carry.cell.shape != expected:
            raise ValueError(f"carry must hold hidden and cell of shape {expected}, got {carry.hidden.shape}")
        z = jnp.concatenate([grad, state, carry.hidden], axis=1)
        i, f, g, o = jnp.split(self.gates(z), 4, axis=1)
        cell = jax.nn.sigmoid(f) * carry.cell + jax.nn.sigmoid(i) * jnp.tanh(g)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
        return self.conv_out(hidden), self.state_cls(hidden, cell)


class ConvLSTMGradMod1D(AbstractConvLSTMGradMod):
    """ConvLSTM modulator for 1D states ``(B, T, N)``; carry `LSTMState1D`.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import vardax_jax as vd

    grad_mod = vd.ConvLSTMGradMod1D(5, hidden_dim=4, key=jr.PRNGKey(0))  # n_time=5
    x = jnp.zeros((2, 5, 16))  # the state
    carry = grad_mod.init_carry(x)  # zeros (B, hidden_dim, *S)
    assert isinstance(carry, vd.LSTMState1D) and tuple(carry.hidden.shape) == (2, 4, 16)
    update, carry = grad_mod(jnp.ones_like(x), x, carry)  # the step u from the gradient and the state
    assert tuple(update.shape) == (2, 5, 16) and tuple(carry.cell.shape) == (2, 4, 16)
    ```
    """

    ndim: ClassVar[int] = 1
    state_cls: ClassVar[type] = LSTMState1D


class ConvLSTMGradMod2D(AbstractConvLSTMGradMod):
    """ConvLSTM modulator for 2D states ``(B, T, H, W)``; carry `LSTMState2D`.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import jax.random as jr
    import vardax_jax as vd

    grad_mod = vd.ConvLSTMGradMod2D(5, hidden_dim=4, key=jr.PRNGKey(0))  # n_time=5
    x = jnp.zeros((2, 5, 8, 8))  # the state
    carry = grad_mod.init_carry(x)  # zeros (B, hidden_dim, *S)
    assert isinstance(carry, vd.LSTMState2D) and tuple(carry.hidden.shape) == (2, 4, 8, 8)
    update, carry = grad_mod(jnp.ones_like(x), x, carry)  # the step u from the gradient and the state
    assert tuple(update.shape) == (2, 5, 8, 8) and tuple(carry.cell.shape) == (2, 4, 8, 8)
    ```
    """

    ndim: ClassVar[int] = 2
    state_cls: ClassVar[type] = LSTMState2D


class NormalizedLSTMState(eqx.Module):
    """Carry of the normalised ConvLSTM: ``hidden``, ``cell`` ``(B, hidden_dim, *S / d)`` and
    ``norm``, the RMS of the solve's first gradient (0 until the first step measured it)."""

    hidden: Float[Array, "batch hidden *coarse"]
    cell: Float[Array, "batch hidden *coarse"]
    norm: Float[Array, ""]


class AbstractNormalizedConvLSTMGradMod(eqx.Module):
    r"""ocean4dvarnet's ConvLSTM modulator (``pipekit_cycle.GradModulator``; DESIGN 7):

    .. math::

        r = \sqrt{\mathrm{mean}(g_0^2)}\ \text{(first step, whole batch)},\quad
        z = [\mathrm{pool}_d(g / r),\ h],\quad
        (i, f, o, \tilde c) = \mathrm{split}(W_{gates} \star z),

        c' = \sigma(f) c + \sigma(i) \tanh(\tilde c),\quad h' = \sigma(o) \tanh(c'),\quad
        u = \mathrm{up}_d(W_{out} \star h').

    The state is not an input (``x`` is accepted for the protocol and unused); the gates are
    ordered ``(i, f, o, c)``, as ocean4dvarnet orders them. ``r`` travels in the carry, so
    the module holds no state and a recomputed step is the original. The RMS is over the
    whole batch: a sample's update depends on its batch-mates. Dropout is not applied here.
    """

    gates: Conv
    conv_out: Conv
    hidden_dim: int = eqx.field(static=True)
    downsample: int = eqx.field(static=True)

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
    ):
        gkey, okey = jr.split(key)
        self.gates = Conv(n_time + hidden_dim, 4 * hidden_dim, kernel_size, self.ndim, padding, key=gkey, dtype=dtype)
        self.conv_out = Conv(hidden_dim, n_time, kernel_size, self.ndim, padding, key=okey, dtype=dtype)
        self.hidden_dim, self.downsample = hidden_dim, int(downsample)

    def init_carry(self, state: Float[Array, "batch time *space"]) -> NormalizedLSTMState:
        """Zeros ``(B, hidden_dim, *S / d)`` for hidden and cell; ``norm`` 0 (not measured yet)."""
        coarse = tuple(n // self.downsample for n in state.shape[2:])
        zeros = jnp.zeros((state.shape[0], self.hidden_dim, *coarse), state.dtype)
        return NormalizedLSTMState(zeros, zeros, jnp.zeros((), state.dtype))

    def __call__(self, grad: Float[Array, "batch time *space"], state: Float[Array, "batch time *space"],
                 carry: NormalizedLSTMState):
        del state
        _check_grid(self, grad.shape, self.downsample)
        norm = jnp.where(carry.norm > 0, carry.norm, jnp.sqrt(jnp.mean(grad**2)))
        z = jnp.concatenate([average_pool(grad / norm, self.downsample), carry.hidden], axis=1)
        i, f, o, c = jnp.split(self.gates(z), 4, axis=1)
        cell = jax.nn.sigmoid(f) * carry.cell + jax.nn.sigmoid(i) * jnp.tanh(c)
        hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
        update = upsample_bilinear(self.conv_out(hidden), self.downsample)
        return update, NormalizedLSTMState(hidden, cell, norm)


class NormalizedConvLSTMGradMod1D(AbstractNormalizedConvLSTMGradMod):
    """The normalised ConvLSTM modulator on 1D states ``(B, T, N)`` (no down-sampling)."""

    ndim: ClassVar[int] = 1


class NormalizedConvLSTMGradMod2D(AbstractNormalizedConvLSTMGradMod):
    """The normalised ConvLSTM modulator on 2D states ``(B, T, H, W)``."""

    ndim: ClassVar[int] = 2
