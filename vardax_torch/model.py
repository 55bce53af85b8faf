"""FourDVarNet models (``nn.Module``), batches, and conversions to and from numpy.

Examples
--------
```python
import numpy as np
import pipekit_cycle as pk
import vardax_torch as vd

cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.model.build_model(cfg, seed=0)
batch = vd.model.make_batch(np.zeros((2, 5, 16)))
assert tuple(model(batch).shape) == (2, 5, 16)
```
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from pipekit_cycle import AdjointSpec, FourDVarNetConfig
from pipekit_cycle.adjoints import RecursiveCheckpointAdjoint as _CheckpointSpec
from pipekit_cycle.adjoints import check_solver_adjoint
from pipekit_cycle.validation import (
    as_observations,
    check_batch_grid,
    check_same_device,
    check_same_dtype,
    float_dtype_name,
)

from .adjoints import AbstractAdjoint, to_native_adjoint
from .components import AbstractCost, AbstractOutput, AbstractStepRule, make_components
from .grad_mod import ConvLSTMGradMod1D, ConvLSTMGradMod2D, NormalizedConvLSTMGradMod1D, NormalizedConvLSTMGradMod2D
from .priors import BilinAEPrior1D, BilinAEPrior2D
from .solver import solve_4dvarnet

__all__ = ["Batch1D", "Batch2D", "FourDVarNet1D", "FourDVarNet2D", "build_model", "make_batch", "to_numpy"]


@dataclasses.dataclass(frozen=True)
class Batch1D:
    """A batch of 1D windows: ``input`` y (zeros where unobserved), ``mask`` m (1 observed,
    0 not), optional ``target``; each ``(B, T, N)``.

    Examples
    --------
    ```python
    import numpy as np
    import torch
    import vardax_torch as vd

    obs = np.full((2, 5, 16), np.nan)  # (B, T, N), NaN: not observed
    obs[:, :, ::4] = 1.0  # every 4th point observed
    batch = vd.make_batch(obs)
    assert isinstance(batch, vd.Batch1D) and batch.target is None
    assert tuple(batch.input.shape) == tuple(batch.mask.shape) == (2, 5, 16)
    assert float(batch.mask.sum()) == 2 * 5 * 4
    direct = vd.Batch1D(input=torch.zeros((2, 5, 16)), mask=torch.ones((2, 5, 16)))  # or built by hand
    assert direct.target is None
    ```
    """

    input: Tensor
    mask: Tensor
    target: Tensor | None = None


@dataclasses.dataclass(frozen=True)
class Batch2D:
    """A batch of 2D windows: ``input``, ``mask``, optional ``target``; each ``(B, T, H, W)``.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_torch as vd

    obs = np.ones((2, 3, 8, 8))  # (B, T, H, W)
    obs[:, :, ::2, :] = np.nan  # every other row unobserved
    batch = vd.make_batch(obs, target=np.zeros_like(obs))
    assert isinstance(batch, vd.Batch2D)
    assert tuple(batch.target.shape) == (2, 3, 8, 8) and float(batch.mask.mean()) == 0.5
    ```
    """

    input: Tensor
    mask: Tensor
    target: Tensor | None = None


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def as_torch_dtype(dtype: torch.dtype | npt.DTypeLike | None) -> torch.dtype:
    """`pipekit_cycle.validation.float_dtype_name`'s rule; ``None``: ``torch.get_default_dtype()``."""
    return _DTYPES[float_dtype_name(dtype, str(torch.get_default_dtype()))]


def make_batch(
    obs: npt.ArrayLike, target: npt.ArrayLike | None = None, dtype: torch.dtype | npt.DTypeLike | None = None,
    device: torch.device | str | None = None,
) -> Batch1D | Batch2D:
    """numpy observations (NaN where unobserved) -> `Batch1D` (3-D ``obs``) or `Batch2D` (4-D):
    ``mask = isfinite(obs)``, ``input = nan_to_num(obs)``. ``dtype`` ``None`` is
    ``torch.get_default_dtype()``; also ``"float32"``, ``"float64"``, numpy or torch dtypes.
    ``device`` (a ``torch.device`` or its name; ``None``: the CPU) is where the tensors live;
    it must be the model's (`FourDVarNet.check_batch` raises otherwise). The values are cast
    on the host, then moved: the same numbers on every device.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_torch as vd

    obs = np.array([[[0.5, np.nan, -1.0]]])  # (B, T, N) = (1, 1, 3); NaN: not observed
    batch = vd.make_batch(obs, target=np.zeros((1, 1, 3)))
    assert isinstance(batch, vd.Batch1D)  # a 4-D obs (B, T, H, W) makes a Batch2D
    assert vd.to_numpy(batch.mask).tolist() == [[[1.0, 0.0, 1.0]]]
    assert vd.to_numpy(batch.input).tolist() == [[[0.5, 0.0, -1.0]]]
    ```
    """
    obs_array, target_array = as_observations(obs, target)
    torch_dtype = as_torch_dtype(dtype)
    torch_device = torch.device("cpu") if device is None else torch.device(device)
    mask = np.isfinite(obs_array)
    values = np.where(mask, obs_array, 0.0)
    cls = Batch1D if obs_array.ndim == 3 else Batch2D
    return cls(
        input=torch.as_tensor(values).to(torch_dtype).to(torch_device),
        mask=torch.as_tensor(mask).to(torch_dtype).to(torch_device),
        target=None if target_array is None else torch.as_tensor(target_array).to(torch_dtype).to(torch_device),
    )


def to_numpy(array: Tensor | npt.ArrayLike) -> np.ndarray:
    """A tensor (or anything array-like) as a numpy array, detached and on the CPU.

    Examples
    --------
    ```python
    import numpy as np
    import torch
    import vardax_torch as vd

    array = vd.to_numpy(torch.arange(3.0, requires_grad=True) * 2)  # detached: no .detach() needed
    assert isinstance(array, np.ndarray) and array.tolist() == [0.0, 2.0, 4.0]
    ```
    """
    if isinstance(array, Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _share_parameters(module: nn.Module) -> Any:
    """A copy of ``module`` and its submodules whose parameter and buffer registries hold the
    same tensors, while every other piece of module state (hook dicts, ``training``) is its own."""
    clone = copy.copy(module)
    state = vars(clone)  # written directly: nn.Module.__setattr__ would re-register
    for name, value in vars(module).items():
        if isinstance(value, dict):  # _parameters, _buffers and every hook registry
            state[name] = copy.copy(value)
    state["_modules"] = {name: None if sub is None else _share_parameters(sub) for name, sub in module._modules.items()}
    return clone


def _spec_or_default(native: AbstractAdjoint) -> Any:
    # A user's own adjoint has no spec: validate the rest of the config with the default.
    try:
        return native.to_spec()
    except ValueError:
        return _CheckpointSpec()


class FourDVarNet(nn.Module):
    """Shared body of `FourDVarNet1D` / `FourDVarNet2D` (see those).

    ``config`` is the `pipekit_cycle.FourDVarNetConfig` the model was built from, the one place
    its settings live. ``cost``, ``step_rule`` and ``output`` are the components the config
    names (`make_components`, DESIGN 7), chosen once here. ``solver_adjoint`` is always the
    native adjoint; ``config.solver_adjoint`` is its spec (the default spec for an adjoint of
    the user's own, which no spec describes). ``forward`` checks the batch and the adjoint,
    then hands the solve to `vardax_torch.solver`.
    """

    ndim: int
    config: FourDVarNetConfig
    prior: nn.Module
    grad_mod: nn.Module
    cost: AbstractCost
    step_rule: AbstractStepRule
    output: AbstractOutput
    solver_adjoint: AbstractAdjoint

    def __init__(
        self, state_shape: tuple[int, ...], n_time: int, *, seed: int = 0, generator: torch.Generator | None = None,
        dtype: torch.dtype | npt.DTypeLike | None = None, device: torch.device | str | None = None,
        solver_adjoint: AdjointSpec | str | AbstractAdjoint | None = None, **fields: Any,
    ) -> None:
        super().__init__()
        native = to_native_adjoint(_CheckpointSpec() if solver_adjoint is None else solver_adjoint)
        # Validates every field with the shared words (ValueError on a bad value).
        config = FourDVarNetConfig(state_shape=tuple(state_shape), n_time=n_time,
                                   solver_adjoint=_spec_or_default(native), **fields)
        torch_dtype = as_torch_dtype(dtype)
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        prior_cls = BilinAEPrior1D if self.ndim == 1 else BilinAEPrior2D
        self.prior = prior_cls(config.n_time, config.prior_hidden_dim, config.kernel_size, config.padding,
                               generator=generator, dtype=torch_dtype, downsample=config.prior_downsample,
                               bilin_quad=config.bilin_quad)
        grad_mod_args = (config.n_time, config.hidden_dim, config.kernel_size, config.padding)
        if config.grad_mod == "convlstm":
            grad_mod_cls = ConvLSTMGradMod1D if self.ndim == 1 else ConvLSTMGradMod2D
            self.grad_mod = grad_mod_cls(*grad_mod_args, generator=generator, dtype=torch_dtype)
        else:
            normalized_cls = NormalizedConvLSTMGradMod1D if self.ndim == 1 else NormalizedConvLSTMGradMod2D
            self.grad_mod = normalized_cls(*grad_mod_args, generator=generator, dtype=torch_dtype,
                                           downsample=config.grad_mod_downsample)
        self.cost, self.step_rule, self.output = make_components(config)
        self.solver_adjoint = native
        self.config = config
        if device is not None:  # drawn on the host generator, then moved: the same values everywhere
            self.to(torch.device(device))

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype (float32 or float64)."""
        return self.prior.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        """The device the parameters live on (``build_model(..., device=)``, or ``.to``)."""
        return self.prior.conv_in.weight.device

    def check_batch(self, batch: Batch1D | Batch2D) -> None:
        """``ValueError`` for shapes other than ``(B, T, *S)`` with ``S`` a grid of
        `pipekit_cycle.validation.grid_rule` (any size the convolutions allow: ``config.state_shape``
        is the training size, not a gate; ``T`` is fixed, being the channels), ``TypeError`` for a
        dtype other than the model's, ``ValueError`` for a batch tensor on another device
        than the model's (words from `pipekit_cycle.validation`)."""
        config = self.config
        target = getattr(batch, "target", None)
        check_batch_grid(
            tuple(batch.input.shape), tuple(batch.mask.shape), None if target is None else tuple(target.shape),
            ndim=config.ndim, n_time=config.n_time, kernel_size=config.kernel_size,
            downsample=(config.prior_downsample, config.grad_mod_downsample),
        )
        check_same_dtype(str(batch.input.dtype), str(self.dtype))
        model_device = str(self.device)
        for name in ("input", "mask", "target"):
            tensor = getattr(batch, name, None)
            if tensor is not None:
                check_same_device(name, str(tensor.device), model_device)

    def checked_adjoint(self, adjoint: AdjointSpec | str | AbstractAdjoint) -> AbstractAdjoint:
        """``adjoint`` as a native adjoint, after the shared solver check (``ImplicitAdjoint``
        needs ``solver="fixed_point"``). An adjoint of the user's own, which no spec
        describes, is taken as it is."""
        native = to_native_adjoint(adjoint)
        check_solver_adjoint(self.config.solver, _spec_or_default(native))
        return native

    def with_adjoint(self, spec: AdjointSpec | str | AbstractAdjoint) -> FourDVarNet:
        """A model sharing every parameter (the same ``Parameter`` objects) but no module state
        (hooks, training mode, submodule registries), differentiated by ``spec`` (spec or
        native); the value it computes is unchanged."""
        native = self.checked_adjoint(spec)
        clone = _share_parameters(self)
        clone.solver_adjoint = native
        clone.config = self.config.replace(solver_adjoint=_spec_or_default(native))
        return clone

    def forward(
        self, batch: Batch1D | Batch2D, *, adjoint: AdjointSpec | str | AbstractAdjoint | None = None
    ) -> Tensor:
        """``x_K``, the output of the model's solver ``(B, T, *S)``; ``adjoint`` (spec or native)
        overrides ``solver_adjoint`` for this call. The batch and the adjoint are checked here,
        once; the solver gets them as they are."""
        self.check_batch(batch)
        native = self.solver_adjoint if adjoint is None else self.checked_adjoint(adjoint)
        return solve_4dvarnet(self, batch, native)


_GRID = ("state_shape", "n_time")


def _fields(config: FourDVarNetConfig) -> dict[str, Any]:
    """Every field of ``config`` but the grid (``state_shape``, ``n_time``, the model classes'
    positional arguments): their keywords."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _GRID}


class FourDVarNet1D(FourDVarNet):
    """4DVarNet on 1D states ``(B, T, N)``: a bilinear-AE prior ``phi``, a ConvLSTM gradient
    modulator and ``n_solver_steps`` steps ``x <- x - alpha * grad_mod(dU/dx, x)`` on
    ``U(x) = obs_weight * sum(m (x - y)^2) + prior_weight * sum((x - phi(x))^2)``, from
    ``x_0 = m * y``. ``fields`` are the other `pipekit_cycle.FourDVarNetConfig` fields by name
    (``hidden_dim``, ``n_solver_steps``, ``cost``, ...; the config's defaults and checks).
    ``solver_adjoint`` (spec or native; default ``RecursiveCheckpointAdjoint()``) says how the
    solve is differentiated; it is stored as the torch-native adjoint. Parameters are drawn
    from ``generator`` (else ``torch.Generator().manual_seed(seed)``) in ``dtype`` (``None``:
    ``torch.get_default_dtype()``), then moved to ``device``.

    Examples
    --------
    ```python
    import torch
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    model = vd.FourDVarNet1D(16, 5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3, seed=0)
    assert isinstance(model, torch.nn.Module) and model.config.state_shape == (16,)
    assert model.config.n_solver_steps == 3
    assert model.cost == vd.SumCost(obs_weight=1.0, prior_weight=1.0)  # config.cost="sum", chosen once
    x = model(vd.make_batch(problem.obs))  # x_K, the solve's output
    assert tuple(x.shape) == (4, 5, 16)  # (B, T, N)
    ```
    """

    ndim = 1

    def __init__(
        self, state_dim: int, n_time: int, *, seed: int = 0, generator: torch.Generator | None = None,
        dtype: torch.dtype | npt.DTypeLike | None = None, device: torch.device | str | None = None,
        solver_adjoint: AdjointSpec | str | AbstractAdjoint | None = None, **fields: Any,
    ) -> None:
        super().__init__((state_dim,), n_time, seed=seed, generator=generator, dtype=dtype, device=device,
                         solver_adjoint=solver_adjoint, **fields)


class FourDVarNet2D(FourDVarNet):
    """4DVarNet on 2D states ``(B, T, H, W)``; the same maths and arguments as `FourDVarNet1D`.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_torch as vd

    obs = np.random.default_rng(0).normal(size=(2, 3, 8, 8))  # (B, T, H, W)
    obs[:, :, ::2, :] = np.nan
    model = vd.FourDVarNet2D(3, 8, 8, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=2, seed=0)
    assert model.config.state_shape == (8, 8)
    assert tuple(model(vd.make_batch(obs)).shape) == (2, 3, 8, 8)
    assert tuple(model(vd.make_batch(np.zeros((1, 3, 24, 5)))).shape) == (1, 3, 24, 5)  # any grid: no gate
    ```
    """

    ndim = 2

    def __init__(
        self, n_time: int, height: int, width: int, *, seed: int = 0, generator: torch.Generator | None = None,
        dtype: torch.dtype | npt.DTypeLike | None = None, device: torch.device | str | None = None,
        solver_adjoint: AdjointSpec | str | AbstractAdjoint | None = None, **fields: Any,
    ) -> None:
        super().__init__((height, width), n_time, seed=seed, generator=generator, dtype=dtype, device=device,
                         solver_adjoint=solver_adjoint, **fields)


def build_model(
    config: FourDVarNetConfig, *, seed: int = 0, generator: torch.Generator | None = None,
    dtype: torch.dtype | npt.DTypeLike | None = None, device: torch.device | str | None = None,
) -> FourDVarNet1D | FourDVarNet2D:
    """The model ``config`` describes (1D for ``state_shape=(N,)``, 2D for ``(H, W)``), its
    parameters drawn from ``seed`` (or ``generator``, a CPU generator) in ``dtype`` on the host
    and then placed on ``device`` (a ``torch.device`` or its name; ``None``: the CPU), so a
    seed gives the same parameters on every device. Batches must be made on the same device
    (``make_batch(..., device=model.device)``); everything the public API returns for this
    model (outputs, losses, optimizer-state buffers) is on it.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_torch as vd

    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4)
    model = vd.build_model(cfg, seed=0)  # state_shape=(H, W) builds a FourDVarNet2D
    assert isinstance(model, vd.FourDVarNet1D) and model.config == cfg
    ```
    """
    common = dict(seed=seed, generator=generator, dtype=dtype, device=device, **_fields(config))
    if config.ndim == 1:
        return FourDVarNet1D(config.state_shape[0], config.n_time, **common)
    height, width = config.state_shape
    return FourDVarNet2D(config.n_time, height, width, **common)
