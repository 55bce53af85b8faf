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

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

import pipekit_cycle as pk
from pipekit_cycle.config import model_components
from pipekit_cycle.validation import as_observations, check_batch_divisible, check_batch_shapes, check_same_dtype

from .adjoints import to_native_adjoint, to_spec
from .grad_mod import (
    ConvLSTMGradMod1D,
    ConvLSTMGradMod2D,
    NormalizedConvLSTMGradMod1D,
    NormalizedConvLSTMGradMod2D,
    default_dtype,
)
from .priors import BilinAEPrior1D, BilinAEPrior2D
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


def make_batch(obs: Any, target: Any = None, dtype: Any = None, sharding: Any = None) -> AbstractBatch:
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


def _batch_shards(sharding: Any, ndim: int) -> int:
    """How many pieces ``sharding`` cuts an ``ndim``-dimensional array's first (batch) axis
    into: the tiling of a probe shape every mesh divides (each axis the device count)."""
    n_devices = len(sharding.device_set)
    return n_devices // sharding.shard_shape((n_devices,) * ndim)[0]


def to_numpy(array: Any) -> np.ndarray:
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


def check_batch(model, batch) -> None:
    """The shared shape and dtype checks (same words as vardax_torch)."""
    target_shape = None if batch.target is None else tuple(batch.target.shape)
    check_batch_shapes(
        tuple(jnp.shape(batch.input)),
        tuple(jnp.shape(batch.mask)),
        target_shape,
        state_shape=model.state_shape,
        n_time=model.n_time,
    )
    model_dtype = str(model.dtype)
    for array in (batch.input, batch.mask, batch.target):
        if array is not None:
            check_same_dtype(str(jnp.asarray(array).dtype), model_dtype)


class AbstractFourDVarNet(eqx.Module):
    """A 4DVarNet: learned prior ``phi`` and ConvLSTM gradient modulator, solved as DESIGN 3.1.

    ``solver_adjoint`` is always the native (optimistix) adjoint. ``__call__(batch, *,
    adjoint=None)`` checks the batch, then runs the solve under ``eqx.filter_jit``.
    """

    prior: Any
    grad_mod: Any
    solver_adjoint: Any
    state_shape: tuple[int, ...] = eqx.field(static=True)
    n_time: int = eqx.field(static=True)
    hidden_dim: int = eqx.field(static=True)
    prior_hidden_dim: int = eqx.field(static=True)
    kernel_size: int = eqx.field(static=True)
    n_solver_steps: int = eqx.field(static=True)
    alpha: float = eqx.field(static=True)
    obs_weight: float = eqx.field(static=True)
    prior_weight: float = eqx.field(static=True)
    padding: str = eqx.field(static=True)
    solver: str = eqx.field(static=True)
    fixed_point_rtol: float = eqx.field(static=True)
    fixed_point_atol: float = eqx.field(static=True)
    cost: str = eqx.field(static=True)
    step_rule: str = eqx.field(static=True)
    lr_grad: float = eqx.field(static=True)
    output: str = eqx.field(static=True)
    grad_mod_dropout: float = eqx.field(static=True)

    ndim: ClassVar[int]

    def _build(self, state_shape, n_time, hidden_dim, prior_hidden_dim, kernel_size, n_solver_steps, alpha,
               obs_weight, prior_weight, padding, solver_adjoint, key, dtype, solver,
               fixed_point_rtol, fixed_point_atol, components):
        native = to_native_adjoint(solver_adjoint)
        # The config validates every field with the shared error words.
        config = pk.FourDVarNetConfig(
            state_shape=tuple(state_shape), n_time=n_time, hidden_dim=hidden_dim, prior_hidden_dim=prior_hidden_dim,
            kernel_size=kernel_size, n_solver_steps=n_solver_steps, alpha=alpha, obs_weight=obs_weight,
            prior_weight=prior_weight, padding=padding, solver=solver, fixed_point_rtol=fixed_point_rtol,
            fixed_point_atol=fixed_point_atol, solver_adjoint=_spec_or_default(native), **components,
        )
        self.solver = solver
        self.fixed_point_rtol, self.fixed_point_atol = float(fixed_point_rtol), float(fixed_point_atol)
        self.cost, self.step_rule, self.output = config.cost, config.step_rule, config.output
        self.lr_grad, self.grad_mod_dropout = float(config.lr_grad), float(config.grad_mod_dropout)
        pkey, gkey = jr.split(key)
        prior_cls = BilinAEPrior1D if self.ndim == 1 else BilinAEPrior2D
        self.prior = prior_cls(n_time, prior_hidden_dim, kernel_size, padding, key=pkey, dtype=dtype,
                               downsample=config.prior_downsample, bilin_quad=config.bilin_quad)
        if config.grad_mod == "convlstm":
            grad_mod_cls = ConvLSTMGradMod1D if self.ndim == 1 else ConvLSTMGradMod2D
            self.grad_mod = grad_mod_cls(n_time, hidden_dim, kernel_size, padding, key=gkey, dtype=dtype)
        else:
            grad_mod_cls = NormalizedConvLSTMGradMod1D if self.ndim == 1 else NormalizedConvLSTMGradMod2D
            self.grad_mod = grad_mod_cls(n_time, hidden_dim, kernel_size, padding, key=gkey, dtype=dtype,
                                         downsample=config.grad_mod_downsample)
        self.solver_adjoint = native
        self.state_shape = tuple(state_shape)
        self.n_time, self.hidden_dim, self.prior_hidden_dim = n_time, hidden_dim, prior_hidden_dim
        self.kernel_size, self.n_solver_steps = kernel_size, n_solver_steps
        self.alpha, self.obs_weight, self.prior_weight = float(alpha), float(obs_weight), float(prior_weight)
        self.padding = padding

    @property
    def dtype(self) -> jnp.dtype:
        return self.prior.conv_in.weight.dtype

    @property
    def config(self) -> pk.FourDVarNetConfig:
        return pk.FourDVarNetConfig(
            state_shape=self.state_shape, n_time=self.n_time, hidden_dim=self.hidden_dim,
            prior_hidden_dim=self.prior_hidden_dim, kernel_size=self.kernel_size,
            n_solver_steps=self.n_solver_steps, alpha=self.alpha, obs_weight=self.obs_weight,
            prior_weight=self.prior_weight, padding=self.padding, solver=self.solver,
            fixed_point_rtol=self.fixed_point_rtol, fixed_point_atol=self.fixed_point_atol,
            solver_adjoint=to_spec(self.solver_adjoint), **self.components,
        )

    @property
    def components(self) -> dict[str, Any]:
        """The config's component fields (`pipekit_cycle.COMPONENT_FIELDS`) of this model."""
        normalized = isinstance(self.grad_mod, (NormalizedConvLSTMGradMod1D, NormalizedConvLSTMGradMod2D))
        return model_components(self, normalized=normalized)

    def checked_adjoint(self, adjoint: Any) -> Any:
        """``adjoint`` as a native adjoint, after the shared solver check (``ImplicitAdjoint``
        needs ``solver="fixed_point"``). An adjoint of the user's own, which no spec
        describes, is taken as it is."""
        native = to_native_adjoint(adjoint)
        pk.check_solver_adjoint(self.solver, _spec_or_default(native))
        return native

    def with_adjoint(self, spec: Any):
        """This model, differentiated by ``spec`` (spec or native adjoint); the value it
        computes is unchanged."""
        return eqx.tree_at(lambda m: m.solver_adjoint, self, self.checked_adjoint(spec))

    def __call__(self, batch: AbstractBatch, *, adjoint: Any = None) -> Float[Array, "batch time *space"]:
        """``x_K``, the output of the model's solver, differentiated by ``adjoint`` (``None``:
        ``solver_adjoint``)."""
        check_batch(self, batch)
        native = self.solver_adjoint if adjoint is None else self.checked_adjoint(adjoint)
        return solve_4dvarnet_jit(self, batch, native)


_DEFAULT_ADJOINT = pk.RecursiveCheckpointAdjoint()


def _spec_or_default(native: Any) -> pk.AdjointSpec:
    # A user's own adjoint has no spec: validate the rest of the config with the default.
    try:
        return to_spec(native)
    except ValueError:
        return _DEFAULT_ADJOINT


class FourDVarNet1D(AbstractFourDVarNet):
    """4DVarNet on 1D states ``(B, T, N)`` (``N = state_dim``, ``T = n_time``).

    Examples
    --------
    ```python
    import jax.random as jr
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    model = vd.FourDVarNet1D(16, 5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3, key=jr.PRNGKey(0))
    assert model.config.state_shape == (16,) and model.config.n_solver_steps == 3
    x = model(vd.make_batch(problem.obs))  # x_K, the solve's output
    assert x.shape == (4, 5, 16)  # (B, T, N)
    ```
    """

    ndim: ClassVar[int] = 1

    def __init__(self, state_dim: int, n_time: int, hidden_dim: int = 16, prior_hidden_dim: int = 16,
                 kernel_size: int = 3, n_solver_steps: int = 10, alpha: float = 0.1, obs_weight: float = 1.0,
                 prior_weight: float = 1.0, padding: str = "zeros", solver_adjoint: Any = _DEFAULT_ADJOINT, *,
                 key: PRNGKeyArray, dtype: Any = None, solver: str = "learned", fixed_point_rtol: float = 1e-6,
                 fixed_point_atol: float = 1e-6, **components: Any):
        self._build((state_dim,), n_time, hidden_dim, prior_hidden_dim, kernel_size, n_solver_steps, alpha,
                    obs_weight, prior_weight, padding, solver_adjoint, key, dtype, solver, fixed_point_rtol,
                    fixed_point_atol, components)


class FourDVarNet2D(AbstractFourDVarNet):
    """4DVarNet on 2D states ``(B, T, H, W)``.

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
    ```
    """

    ndim: ClassVar[int] = 2

    def __init__(self, n_time: int, height: int, width: int, hidden_dim: int = 16, prior_hidden_dim: int = 16,
                 kernel_size: int = 3, n_solver_steps: int = 10, alpha: float = 0.1, obs_weight: float = 1.0,
                 prior_weight: float = 1.0, padding: str = "zeros", solver_adjoint: Any = _DEFAULT_ADJOINT, *,
                 key: PRNGKeyArray, dtype: Any = None, solver: str = "learned", fixed_point_rtol: float = 1e-6,
                 fixed_point_atol: float = 1e-6, **components: Any):
        self._build((height, width), n_time, hidden_dim, prior_hidden_dim, kernel_size, n_solver_steps, alpha,
                    obs_weight, prior_weight, padding, solver_adjoint, key, dtype, solver, fixed_point_rtol,
                    fixed_point_atol, components)


def build_model(config: pk.FourDVarNetConfig, *, seed: int, dtype: Any = None) -> AbstractFourDVarNet:
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
    common = dict(
        hidden_dim=config.hidden_dim, prior_hidden_dim=config.prior_hidden_dim, kernel_size=config.kernel_size,
        n_solver_steps=config.n_solver_steps, alpha=config.alpha, obs_weight=config.obs_weight,
        prior_weight=config.prior_weight, padding=config.padding, solver_adjoint=config.solver_adjoint,
        solver=config.solver, fixed_point_rtol=config.fixed_point_rtol, fixed_point_atol=config.fixed_point_atol,
        key=jr.PRNGKey(seed), dtype=dtype, **{field: getattr(config, field) for field in pk.COMPONENT_FIELDS},
    )
    if config.ndim == 1:
        return FourDVarNet1D(config.state_shape[0], config.n_time, **common)
    return FourDVarNet2D(config.n_time, *config.state_shape, **common)
