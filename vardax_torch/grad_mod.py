"""The ConvLSTM gradient modulator (1D and 2D); its carry is an explicit `LSTMState` value.

``grad_mod(g, x, (hidden, cell))``::

    z       = concat([g, x, hidden], channel)          # 2T + H channels
    i,f,g,o = split(gates_conv(z), H, channel)          # in this order
    cell'   = sigmoid(f) * cell + sigmoid(i) * tanh(g)
    hidden' = sigmoid(o) * tanh(cell')
    update  = conv_out(hidden')

No state is stored on the module between calls, so a recomputed step (checkpointing)
reproduces the original exactly.

Examples
--------
```python
import torch
import vardax_torch as vd

grad_mod = vd.grad_mod.ConvLSTMGradMod1D(5, hidden_dim=4, seed=0)
carry = grad_mod.init_carry(torch.zeros((2, 5, 16)))  # (B, T, N) -> zeros (B, hidden_dim, N)
assert tuple(carry.hidden.shape) == (2, 4, 16)
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pipekit_cycle.validation import check_batch_grid

from .priors import Conv, conv
from .resample import average_pool, upsample_bilinear

__all__ = [
    "ConvLSTMGradMod1D",
    "ConvLSTMGradMod2D",
    "LSTMState1D",
    "LSTMState2D",
    "NormalizedConvLSTMGradMod1D",
    "NormalizedConvLSTMGradMod2D",
    "NormalizedLSTMState",
    "grad_mod_apply",
]


class LSTMState1D(NamedTuple):
    """ConvLSTM carry on 1D states: ``hidden``, ``cell`` each ``(B, hidden_dim, N)``.

    Examples
    --------
    ```python
    import torch
    import vardax_torch as vd

    carry = vd.LSTMState1D(hidden=torch.zeros((2, 4, 16)), cell=torch.zeros((2, 4, 16)))  # hidden_dim=4
    grad_mod = vd.ConvLSTMGradMod1D(5, hidden_dim=4, seed=0)
    x = torch.zeros((2, 5, 16))
    update, carry = grad_mod(torch.ones_like(x), x, carry)
    assert isinstance(carry, vd.LSTMState1D) and bool((carry.cell != 0).any())  # the cell took the gradient in
    ```
    """

    hidden: Tensor
    cell: Tensor


class LSTMState2D(NamedTuple):
    """ConvLSTM carry on 2D states: ``hidden``, ``cell`` each ``(B, hidden_dim, H, W)``.

    Examples
    --------
    ```python
    import torch
    import vardax_torch as vd

    carry = vd.LSTMState2D(hidden=torch.zeros((2, 4, 8, 8)), cell=torch.zeros((2, 4, 8, 8)))  # hidden_dim=4
    grad_mod = vd.ConvLSTMGradMod2D(5, hidden_dim=4, seed=0)
    x = torch.zeros((2, 5, 8, 8))
    update, carry = grad_mod(torch.ones_like(x), x, carry)
    assert isinstance(carry, vd.LSTMState2D) and bool((carry.cell != 0).any())  # the cell took the gradient in
    ```
    """

    hidden: Tensor
    cell: Tensor


def grad_mod_apply(
    params: Mapping[str, Tensor], grad: Tensor, state: Tensor, hidden: Tensor, cell: Tensor,
    padding: str, prefix: str = "",
) -> tuple[Tensor, Tensor, Tensor]:
    """Pure ConvLSTM step: returns ``(update, hidden', cell')`` (see module doc)."""
    z = torch.cat([grad, state, hidden], dim=1)
    gates = conv(z, params[f"{prefix}gates.weight"], params[f"{prefix}gates.bias"], padding)
    i, f, g, o = gates.chunk(4, dim=1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    hidden = torch.sigmoid(o) * torch.tanh(cell)
    update = conv(hidden, params[f"{prefix}conv_out.weight"], params[f"{prefix}conv_out.bias"], padding)
    return update, hidden, cell


def _check_grid(grad_mod: nn.Module, shape: tuple[int, ...], downsample: int) -> None:
    """The shared grid rule for a modulator's input: any grid its convolutions (on the pooled
    grid) allow, the time axis its output channels."""
    check_batch_grid(shape, None, None, ndim=grad_mod.ndim, n_time=grad_mod.n_time,  # type: ignore[arg-type]
                     kernel_size=grad_mod.kernel_size, downsample=(downsample,),  # type: ignore[arg-type]
                     name="the modulator's input grad")


class _ConvLSTMGradMod(nn.Module):
    ndim: int
    state_type: type

    def __init__(
        self, n_time: int, hidden_dim: int = 16, kernel_size: int = 3, padding: str = "zeros", *,
        seed: int = 0, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if padding not in ("zeros", "circular"):
            raise ValueError(f"padding must be one of zeros, circular, got {padding!r}")
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        dtype = dtype or torch.get_default_dtype()
        self.gates = Conv(2 * n_time + hidden_dim, 4 * hidden_dim, kernel_size, self.ndim,
                          generator=generator, dtype=dtype, padding=padding)
        self.conv_out = Conv(hidden_dim, n_time, kernel_size, self.ndim, generator=generator, dtype=dtype,
                             padding=padding)
        self.n_time, self.hidden_dim, self.kernel_size, self.padding = n_time, hidden_dim, kernel_size, padding

    def init_carry(self, state: Tensor):
        """Zeros ``(B, hidden_dim, *S)`` for hidden and cell, in the state's dtype."""
        shape = (state.shape[0], self.hidden_dim, *state.shape[2:])
        zeros = torch.zeros(shape, dtype=state.dtype, device=state.device)
        return self.state_type(zeros, zeros.clone())

    def forward(self, grad: Tensor, state: Tensor, carry):
        """``(update, carry')`` for ``grad`` and ``state`` of shape ``(B, T, *S)``."""
        if grad.shape != state.shape:
            raise ValueError(f"grad and state must have the same shape, got {tuple(grad.shape)} "
                             f"and {tuple(state.shape)}")
        _check_grid(self, tuple(grad.shape), 1)
        hidden, cell = carry
        expected = (state.shape[0], self.hidden_dim, *state.shape[2:])
        if tuple(hidden.shape) != expected or tuple(cell.shape) != expected:
            raise ValueError(f"carry must be two arrays of shape {expected}, got {tuple(hidden.shape)} "
                             f"and {tuple(cell.shape)}")
        update, hidden, cell = grad_mod_apply(dict(self.named_parameters()), grad, state, hidden, cell,
                                              self.padding)
        return update, self.state_type(hidden, cell)


class ConvLSTMGradMod1D(_ConvLSTMGradMod):
    """ConvLSTM gradient modulator on 1D states ``(B, T, N)`` (`pipekit_cycle.GradModulator`).

    Examples
    --------
    ```python
    import torch
    import vardax_torch as vd

    grad_mod = vd.ConvLSTMGradMod1D(5, hidden_dim=4, seed=0)  # n_time=5
    x = torch.zeros((2, 5, 16))  # the state
    carry = grad_mod.init_carry(x)  # zeros (B, hidden_dim, *S)
    assert isinstance(carry, vd.LSTMState1D) and tuple(carry.hidden.shape) == (2, 4, 16)
    update, carry = grad_mod(torch.ones_like(x), x, carry)  # the step u from the gradient and the state
    assert tuple(update.shape) == (2, 5, 16) and tuple(carry.cell.shape) == (2, 4, 16)
    ```
    """

    ndim = 1
    state_type = LSTMState1D


class ConvLSTMGradMod2D(_ConvLSTMGradMod):
    """ConvLSTM gradient modulator on 2D states ``(B, T, H, W)`` (`pipekit_cycle.GradModulator`).

    Examples
    --------
    ```python
    import torch
    import vardax_torch as vd

    grad_mod = vd.ConvLSTMGradMod2D(5, hidden_dim=4, seed=0)  # n_time=5
    x = torch.zeros((2, 5, 8, 8))  # the state
    carry = grad_mod.init_carry(x)  # zeros (B, hidden_dim, *S)
    assert isinstance(carry, vd.LSTMState2D) and tuple(carry.hidden.shape) == (2, 4, 8, 8)
    update, carry = grad_mod(torch.ones_like(x), x, carry)  # the step u from the gradient and the state
    assert tuple(update.shape) == (2, 5, 8, 8) and tuple(carry.cell.shape) == (2, 4, 8, 8)
    ```
    """

    ndim = 2
    state_type = LSTMState2D


class NormalizedLSTMState(NamedTuple):
    """Carry of the normalised ConvLSTM: ``hidden``, ``cell`` ``(B, hidden_dim, *S / d)`` and
    ``norm``, the RMS of the solve's first gradient (0 until the first step measured it)."""

    hidden: Tensor
    cell: Tensor
    norm: Tensor


class _NormalizedConvLSTMGradMod(nn.Module):
    r"""ocean4dvarnet's ConvLSTM modulator (`pipekit_cycle.GradModulator`; DESIGN 7)::

        r       = sqrt(mean(g_0^2))              first step, whole batch; carried
        z       = concat([pool_d(g / r), hidden], channel)
        i,f,o,c = split(gates_conv(z), H, channel)   # in this order, as ocean4dvarnet's
        cell'   = sigmoid(f) * cell + sigmoid(i) * tanh(c)
        hidden' = sigmoid(o) * tanh(cell')
        update  = up_d(conv_out(hidden'))

    The state is not an input (accepted for the protocol, unused). The RMS is over the whole
    batch: a sample's update depends on its batch-mates. Dropout is not applied here.
    """

    ndim: int

    def __init__(
        self, n_time: int, hidden_dim: int = 16, kernel_size: int = 3, padding: str = "zeros", *,
        seed: int = 0, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
        downsample: int = 1,
    ) -> None:
        super().__init__()
        if padding not in ("zeros", "circular"):
            raise ValueError(f"padding must be one of zeros, circular, got {padding!r}")
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        dtype = dtype or torch.get_default_dtype()
        self.gates = Conv(n_time + hidden_dim, 4 * hidden_dim, kernel_size, self.ndim, generator=generator,
                          dtype=dtype, padding=padding)
        self.conv_out = Conv(hidden_dim, n_time, kernel_size, self.ndim, generator=generator, dtype=dtype,
                             padding=padding)
        self.n_time, self.hidden_dim, self.kernel_size, self.padding = n_time, hidden_dim, kernel_size, padding
        self.downsample = int(downsample)

    def init_carry(self, state: Tensor) -> NormalizedLSTMState:
        """Zeros ``(B, hidden_dim, *S / d)`` for hidden and cell; ``norm`` 0 (not measured yet)."""
        shape = (state.shape[0], self.hidden_dim, *(n // self.downsample for n in state.shape[2:]))
        zeros = torch.zeros(shape, dtype=state.dtype, device=state.device)
        return NormalizedLSTMState(zeros, zeros.clone(), torch.zeros((), dtype=state.dtype, device=state.device))

    def forward(self, grad: Tensor, state: Tensor, carry) -> tuple[Tensor, NormalizedLSTMState]:
        """``(update, carry')`` for ``grad`` of shape ``(B, T, *S)``."""
        del state
        _check_grid(self, tuple(grad.shape), self.downsample)
        hidden, cell, norm = carry
        norm = torch.where(norm > 0, norm, (grad**2).mean().sqrt())
        z = torch.cat([average_pool(grad / norm, self.downsample), hidden], dim=1)
        gates = conv(z, self.gates.weight, self.gates.bias, self.padding)
        i, f, o, c = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(c)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        update = upsample_bilinear(conv(hidden, self.conv_out.weight, self.conv_out.bias, self.padding),
                                   self.downsample)
        return update, NormalizedLSTMState(hidden, cell, norm)


class NormalizedConvLSTMGradMod1D(_NormalizedConvLSTMGradMod):
    """The normalised ConvLSTM modulator on 1D states ``(B, T, N)`` (no down-sampling)."""

    ndim = 1


class NormalizedConvLSTMGradMod2D(_NormalizedConvLSTMGradMod):
    """The normalised ConvLSTM modulator on 2D states ``(B, T, H, W)``."""

    ndim = 2
