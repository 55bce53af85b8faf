"""FourDVarNet models (1D and 2D), batches, and the config -> model builder.

Examples
--------
```python
import numpy as np
import pipekit_cycle as pk
import vardax_jax as vd

cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.model.build_model(cfg, seed=0)
batch = vd.model.make_batch(np.zeros((2, 5, 16)))
assert tuple(model(batch).shape) == (2, 5, 16)
```
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import numpy.typing as npt
import optimistix as optx
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

import pipekit_cycle as pk
from pipekit_cycle.validation import (
    as_observations,
    check_batch_divisible,
    check_batch_grid,
    check_same_dtype,
    float_dtype_name,
)

from .adjoints import to_native_adjoint, to_spec
from .components import AbstractCost, AbstractOutput, AbstractStepRule, make_components
from .grad_mod import (
    AbstractConvLSTMGradMod,
    AbstractNormalizedConvLSTMGradMod,
    ConvLSTMGradMod1D,
    ConvLSTMGradMod2D,
    NormalizedConvLSTMGradMod1D,
    NormalizedConvLSTMGradMod2D,
    default_dtype,
)
from .priors import AbstractBilinAEPrior, BilinAEPrior1D, BilinAEPrior2D
from .solver import solve_4dvarnet_jit

__all__ = [
    "AbstractBatch",
    "AbstractFourDVarNet",
    "Batch1D",
    "Batch2D",
    "FourDVarNet1D",
    "FourDVarNet2D",
    "build_model",
    "check_batch",
    "make_batch",
    "to_numpy",
]


class AbstractBatch(eqx.Module):
    """Observations ``input`` (zeros where unobserved), ``mask`` (1 observed, 0 not) and an
    optional ``target``, all of one shape."""

    input: Float[Array, "batch time *space"]
    mask: Float[Array, "batch time *space"]
    target: Float[Array, "batch time *space"] | None = None


class Batch1D(AbstractBatch):
    """A batch of 1D states ``(B, T, N)``.

    Examples
    --------
    ```python
    import numpy as np
    import jax.numpy as jnp
    import vardax_jax as vd

    obs = np.full((2, 5, 16), np.nan)  # (B, T, N), NaN: not observed
    obs[:, :, ::4] = 1.0  # every 4th point observed
    batch = vd.make_batch(obs)
    assert isinstance(batch, vd.Batch1D) and batch.target is None
    assert tuple(batch.input.shape) == tuple(batch.mask.shape) == (2, 5, 16)
    assert float(batch.mask.sum()) == 2 * 5 * 4
    direct = vd.Batch1D(input=jnp.zeros((2, 5, 16)), mask=jnp.ones((2, 5, 16)))  # or built by hand
    assert direct.target is None
    ```
    """


class Batch2D(AbstractBatch):
    """A batch of 2D states ``(B, T, H, W)``.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_jax as vd

    obs = np.ones((2, 3, 8, 8))  # (B, T, H, W)
    obs[:, :, ::2, :] = np.nan  # every other row unobserved
    batch = vd.make_batch(obs, target=np.zeros_like(obs))
    assert isinstance(batch, vd.Batch2D)
    assert tuple(batch.target.shape) == (2, 3, 8, 8) and float(batch.mask.mean()) == 0.5
    ```
    """


def make_batch(
    obs: npt.ArrayLike, target: npt.ArrayLike | None = None, dtype: DTypeLike | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> AbstractBatch:
    """Numpy ``obs`` (NaN where unobserved) -> `Batch1D` (3-D) or `Batch2D` (4-D).

    ``mask = isfinite(obs)``, ``input = nan_to_num(obs)``; ``dtype`` ``None`` is float64 iff
    ``jax_enable_x64``, else any numpy/JAX dtype or its name. ``sharding`` (a
    ``jax.sharding.Sharding``; ``None``: the default device) places every tensor of the batch
    with it, typically split along the batch axis,
    ``NamedSharding(Mesh(jax.devices(), ("batch",)), PartitionSpec("batch"))``: data
    parallelism through XLA. The model stays as it is built (on no device in particular) and
    jit replicates it; `train_step`, `eval_step` and the model's call then run on every
    device, the gradient's batch mean reduced by XLA's collectives, and return a model
    replicated over the same devices. ``ValueError`` when the batch axis does not split
    evenly.

    Examples
    --------
    ```python
    import numpy as np
    import vardax_jax as vd

    obs = np.array([[[0.5, np.nan, -1.0]]])  # (B, T, N) = (1, 1, 3); NaN: not observed
    batch = vd.make_batch(obs, target=np.zeros((1, 1, 3)))
    assert isinstance(batch, vd.Batch1D)  # a 4-D obs (B, T, H, W) makes a Batch2D
    assert vd.to_numpy(batch.mask).tolist() == [[[1.0, 0.0, 1.0]]]
    assert vd.to_numpy(batch.input).tolist() == [[[0.5, 0.0, -1.0]]]
    ```
    """
    obs_array, target_array = as_observations(obs, target)
    if not jax.config.jax_enable_x64:
        # Without x64 JAX holds no float64 array, so a float64 batch would silently become
        # float32; every JAX model is float32 then, and vardax_torch gives a float64 batch for a
        # float32 model these words too. Checked before any conversion.
        check_same_dtype(float_dtype_name(dtype, "float32"), "float32")
    dtype = default_dtype(dtype)
    cls = Batch1D if obs_array.ndim == 3 else Batch2D
    arrays = {
        "input": np.nan_to_num(obs_array, nan=0.0),
        "mask": np.isfinite(obs_array),
        "target": target_array,
    }
    if sharding is not None:
        check_batch_divisible(obs_array.shape[0], _batch_shards(sharding, obs_array.ndim))

    def place(array: np.ndarray | None) -> Array | None:
        if array is None:
            return None
        value = jnp.asarray(array, dtype)
        return value if sharding is None else jax.device_put(value, sharding)

    return cls(**{name: place(array) for name, array in arrays.items()})


def _batch_shards(sharding: jax.sharding.Sharding, ndim: int) -> int:
    """How many pieces ``sharding`` cuts an ``ndim``-dimensional array's first (batch) axis
    into: the tiling of a probe shape every mesh divides (each axis the device count)."""
    n_devices = len(sharding.device_set)
    return n_devices // sharding.shard_shape((n_devices,) * ndim)[0]


def to_numpy(array: Array | npt.ArrayLike) -> np.ndarray:
    """A numpy copy of a JAX array (or anything array-like).

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import numpy as np
    import vardax_jax as vd

    array = vd.to_numpy(jnp.arange(3.0) * 2)
    assert isinstance(array, np.ndarray) and array.tolist() == [0.0, 2.0, 4.0]
    ```
    """
    return np.asarray(array)


def check_batch(model: AbstractFourDVarNet, batch: AbstractBatch) -> None:
    """The shared shape and dtype checks (same words as vardax_torch). The grid is free within
    `pipekit_cycle.validation.grid_rule` (the model is fully convolutional; ``config.state_shape``
    is its training size, not a gate); the time axis is fixed, being the channels."""
    config = model.config
    target_shape = None if batch.target is None else tuple(batch.target.shape)
    check_batch_grid(
        tuple(jnp.shape(batch.input)),
        tuple(jnp.shape(batch.mask)),
        target_shape,
        ndim=config.ndim,
        n_time=config.n_time,
        kernel_size=config.kernel_size,
        downsample=(config.prior_downsample, config.grad_mod_downsample),
    )
    model_dtype = str(model.dtype)
    for array in (batch.input, batch.mask, batch.target):
        if array is not None:
            check_same_dtype(str(jnp.asarray(array).dtype), model_dtype)


class AbstractFourDVarNet(eqx.Module):
    """A 4DVarNet: learned prior ``phi`` and ConvLSTM gradient modulator, solved as DESIGN 3.1.

    ``config`` (static) is the `pipekit_cycle.FourDVarNetConfig` the model was built from, the
    one place its settings live. ``cost``, ``step_rule`` and ``output`` are the components the
    config names (`make_components`, DESIGN 7), chosen once here. ``solver_adjoint`` is always
    the native (optimistix) adjoint; ``config.solver_adjoint`` is its spec (the default spec
    for an adjoint of the user's own, which no spec describes). ``__call__(batch, *,
    adjoint=None)`` checks the batch and the adjoint, then runs the solve under
    ``eqx.filter_jit``.
    """

    config: pk.FourDVarNetConfig = eqx.field(static=True)
    prior: AbstractBilinAEPrior
    grad_mod: AbstractConvLSTMGradMod | AbstractNormalizedConvLSTMGradMod
    cost: AbstractCost
    step_rule: AbstractStepRule
    output: AbstractOutput
    solver_adjoint: optx.AbstractAdjoint

    ndim: ClassVar[int]

    def _build(self, state_shape: tuple[int, ...], n_time: int,
               solver_adjoint: pk.AdjointSpec | str | optx.AbstractAdjoint, key: PRNGKeyArray,
               dtype: DTypeLike | None, fields: dict[str, Any]) -> None:
        native = to_native_adjoint(solver_adjoint)
        # The config validates every field with the shared error words.
        config = pk.FourDVarNetConfig(state_shape=tuple(state_shape), n_time=n_time,
                                      solver_adjoint=_spec_or_default(native), **fields)
        pkey, gkey = jr.split(key)
        prior_cls = BilinAEPrior1D if self.ndim == 1 else BilinAEPrior2D
        self.prior = prior_cls(config.n_time, config.prior_hidden_dim, config.kernel_size, config.padding, key=pkey,
                               dtype=dtype, downsample=config.prior_downsample, bilin_quad=config.bilin_quad)
        grad_mod_args = (config.n_time, config.hidden_dim, config.kernel_size, config.padding)
        if config.grad_mod == "convlstm":
            grad_mod_cls = ConvLSTMGradMod1D if self.ndim == 1 else ConvLSTMGradMod2D
            self.grad_mod = grad_mod_cls(*grad_mod_args, key=gkey, dtype=dtype)
        else:
            grad_mod_cls = NormalizedConvLSTMGradMod1D if self.ndim == 1 else NormalizedConvLSTMGradMod2D
            self.grad_mod = grad_mod_cls(*grad_mod_args, key=gkey, dtype=dtype, downsample=config.grad_mod_downsample)
        self.cost, self.step_rule, self.output = make_components(config)
        self.solver_adjoint = native
        self.config = config

    @property
    def dtype(self) -> jnp.dtype:
        return self.prior.conv_in.weight.dtype

    def checked_adjoint(self, adjoint: pk.AdjointSpec | str | optx.AbstractAdjoint) -> optx.AbstractAdjoint:
        """``adjoint`` as a native adjoint, after the shared solver check (``ImplicitAdjoint``
        needs ``solver="fixed_point"``). An adjoint of the user's own, which no spec
        describes, is taken as it is."""
        native = to_native_adjoint(adjoint)
        pk.check_solver_adjoint(self.config.solver, _spec_or_default(native))
        return native

    def with_adjoint(self, spec: pk.AdjointSpec | str | optx.AbstractAdjoint) -> AbstractFourDVarNet:
        """This model, differentiated by ``spec`` (spec or native adjoint); the value it
        computes is unchanged."""
        native = self.checked_adjoint(spec)
        config = self.config.replace(solver_adjoint=_spec_or_default(native))
        # The config is static, out of eqx.tree_at's reach: build the new model's skeleton
        # (shapes only, nothing drawn), then give it this model's arrays and adjoint.
        skeleton = eqx.filter_eval_shape(build_model, config, seed=0, dtype=self.dtype)
        return eqx.tree_at(lambda m: (m.prior, m.grad_mod, m.solver_adjoint), skeleton,
                           (self.prior, self.grad_mod, native))

    def __call__(
        self, batch: AbstractBatch, *, adjoint: pk.AdjointSpec | str | optx.AbstractAdjoint | None = None
    ) -> Float[Array, "batch time *space"]:
        """``x_K``, the output of the model's solver, differentiated by ``adjoint`` (``None``:
        ``solver_adjoint``)."""
        check_batch(self, batch)
        native = self.solver_adjoint if adjoint is None else self.checked_adjoint(adjoint)
        return solve_4dvarnet_jit(self, batch, native)


_DEFAULT_ADJOINT = pk.RecursiveCheckpointAdjoint()
_GRID = ("state_shape", "n_time")


def _spec_or_default(native: optx.AbstractAdjoint) -> pk.AdjointSpec:
    # A user's own adjoint has no spec: validate the rest of the config with the default.
    try:
        return to_spec(native)
    except ValueError:
        return _DEFAULT_ADJOINT


def _fields(config: pk.FourDVarNetConfig) -> dict[str, Any]:
    """Every field of ``config`` but the grid (``state_shape``, ``n_time``, the model classes'
    positional arguments): their keywords."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _GRID}


class FourDVarNet1D(AbstractFourDVarNet):
    """4DVarNet on 1D states ``(B, T, N)`` (``N = state_dim``, ``T = n_time``).

    ``fields`` are the other `pipekit_cycle.FourDVarNetConfig` fields by name (``hidden_dim``,
    ``n_solver_steps``, ``cost``, ...; the config's defaults and checks); ``solver_adjoint`` is
    a spec, its string or a native adjoint. Parameters are drawn from ``key`` in ``dtype``
    (``None``: float64 iff ``jax_enable_x64``).

    Examples
    --------
    ```python
    import jax.random as jr
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    model = vd.FourDVarNet1D(16, 5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3, key=jr.PRNGKey(0))
    assert model.config.state_shape == (16,) and model.config.n_solver_steps == 3
    assert model.cost == vd.SumCost(obs_weight=1.0, prior_weight=1.0)  # config.cost="sum", chosen once
    x = model(vd.make_batch(problem.obs))  # x_K, the solve's output
    assert x.shape == (4, 5, 16)  # (B, T, N)
    ```
    """

    ndim: ClassVar[int] = 1

    def __init__(self, state_dim: int, n_time: int, *, key: PRNGKeyArray, dtype: DTypeLike | None = None,
                 solver_adjoint: pk.AdjointSpec | str | optx.AbstractAdjoint = _DEFAULT_ADJOINT, **fields: Any):
        self._build((state_dim,), n_time, solver_adjoint, key, dtype, fields)


class FourDVarNet2D(AbstractFourDVarNet):
    """4DVarNet on 2D states ``(B, T, H, W)``; the other arguments as `FourDVarNet1D`'s.

    Examples
    --------
    ```python
    import jax.random as jr
    import numpy as np
    import vardax_jax as vd

    obs = np.random.default_rng(0).normal(size=(2, 3, 8, 8))  # (B, T, H, W)
    obs[:, :, ::2, :] = np.nan
    model = vd.FourDVarNet2D(3, 8, 8, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=2, key=jr.PRNGKey(0))
    assert model.config.state_shape == (8, 8)
    assert model(vd.make_batch(obs)).shape == (2, 3, 8, 8)
    assert model(vd.make_batch(np.zeros((1, 3, 24, 5)))).shape == (1, 3, 24, 5)  # any grid: state_shape is no gate
    ```
    """

    ndim: ClassVar[int] = 2

    def __init__(self, n_time: int, height: int, width: int, *, key: PRNGKeyArray, dtype: DTypeLike | None = None,
                 solver_adjoint: pk.AdjointSpec | str | optx.AbstractAdjoint = _DEFAULT_ADJOINT, **fields: Any):
        self._build((height, width), n_time, solver_adjoint, key, dtype, fields)


def build_model(config: pk.FourDVarNetConfig, *, seed: int, dtype: DTypeLike | None = None) -> AbstractFourDVarNet:
    """The model ``config`` describes, initialised from ``jax.random.PRNGKey(seed)``.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4)
    model = vd.build_model(cfg, seed=0)  # state_shape=(H, W) builds a FourDVarNet2D
    assert isinstance(model, vd.FourDVarNet1D) and model.config == cfg
    ```
    """
    common = dict(key=jr.PRNGKey(seed), dtype=dtype, **_fields(config))
    if config.ndim == 1:
        return FourDVarNet1D(config.state_shape[0], config.n_time, **common)
    return FourDVarNet2D(config.n_time, *config.state_shape, **common)
