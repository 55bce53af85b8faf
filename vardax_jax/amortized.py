r"""Amortized posteriors: one network maps observations to a distribution over the state.

Where the 4DVarNet solver returns one state per window, an `AmortizedPosterior` returns a
density :math:`q(x \mid y, m)` over the whole window, with :math:`x` flattened to
:math:`D = T \cdot \prod S` entries (``S`` the state shape, ``(N,)`` or ``(H, W)``).

* `EncoderMLP`: features :math:`c = e(\mathrm{concat}(y \odot m, m))`, a ``(B, 2D) -> (B, F)``
  multi-layer perceptron with ``n_layers`` linear layers, each followed by ``tanh``
  (``F = hidden``). The mask enters explicitly, so "observed zero" and "unobserved" differ.
* `RegressionHead`: a diagonal Gaussian, :math:`(\mu, \log\sigma^2) = \mathrm{linear}(c)`
  (the first ``D`` outputs are the mean, the last ``D`` the log-variance);
  :math:`\log q(x) = -\tfrac12 \sum_i [(x_i - \mu_i)^2 e^{-\log\sigma_i^2} + \log\sigma_i^2 + \log 2\pi]`.
* `FlowHead`: a conditional normalizing flow. Generative direction, base
  :math:`z \sim \mathcal N(0, I_D)`:

  .. math::
      u = g_{K-1} \circ \dots \circ g_0(z; c), \qquad x = \mu(c) + \sigma(c) \odot u,

  where :math:`(\mu, \log\sigma^2) = \mathrm{affine}(c)` exactly as in the regression head and
  each :math:`g_k` is an `AffineCoupling`. With the couplings at the identity the flow IS the
  regression head, so it can only add to it; the couplings model what a diagonal Gaussian
  cannot (correlations across time and components, skewness). Density by change of variables:
  :math:`\log q(x) = \log\mathcal N(z; 0, I) - \tfrac12\sum_i \log\sigma_i^2 - \sum_k \sum_j s_{k,j}`.
* `AffineCoupling` ``k``: a fixed permutation ``p`` (`coupling_permutation`) splits
  ``v`` into ``a = v[p[:d]]`` (``d = D // 2``, left unchanged) and ``b = v[p[d:]]``;
  ``(s_raw, t) = net(concat(a, c))`` (the first ``D - d`` outputs are ``s_raw``, the rest
  ``t``), ``s = tanh(s_raw)``, ``b' = b * exp(s) + t``; the output puts ``a`` back at
  ``p[:d]`` and ``b'`` at ``p[d:]``. ``net`` has ``n_layers`` ``tanh`` hidden layers of
  width ``hidden`` and a linear output layer initialised to zero (the flow starts as the
  identity). The log-scale goes through ``tanh`` for stability: each coupling scales by a
  factor in ``(1/e, e)``, so no layer can blow a sample up or collapse it in one step; the
  overall scale lives in the affine stage ``sigma(c)``, which is why that stage exists.

MAP (``__call__``): the regression head returns its mean (the exact mode). The flow returns
the image of the base mode, :math:`x = f(0; c)`: deterministic, cheap and exact when the
couplings are affine-Gaussian; for a non-Gaussian flow it is the "median-like" point of
the base, not necessarily the density's mode (the Jacobian term moves the mode).

Parameters cross backends as ``dict[str, numpy.ndarray]`` (`amortized_schema`), every
weight laid out ``(out, in)`` like ``torch.nn.Linear``; ``y = x @ W.T + b`` in both backends.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_jax as vd

model = vd.amortized.build_amortized("regression", (4,), 2, hidden=8, seed=0)
shapes = {name: a.shape for name, a in vd.amortized.export_amortized_params(model).items()}
assert shapes == pk.amortized.amortized_schema("regression", (4,), 2, hidden=8)
```
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from pipekit_cycle.amortized import (
    amortized_config,
    amortized_schema,
    check_amortized_batch,
    check_amortized_kind,
    check_amortized_sizes,
    check_head_covers,
    coupling_permutation,
    validate_amortized_params,
)
from pipekit_cycle.validation import require_target

from .grad_mod import default_dtype
from .training import make_train_step

__all__ = [
    "AffineCoupling",
    "AmortizedPosterior",
    "EncoderMLP",
    "FlowHead",
    "Linear",
    "RegressionHead",
    "amortized_loss_and_grads",
    "amortized_nll_loss_fn",
    "amortized_schema",
    "amortized_train_step",
    "build_amortized",
    "coupling_permutation",
    "coverage",
    "export_amortized_params",
    "import_amortized_params",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- building blocks


class Linear(eqx.Module):
    """``y = x @ weight.T + bias`` over any leading axes; ``weight`` ``(out, in)`` as in
    ``torch.nn.Linear`` (and initialised like it, ``U(-1/sqrt(in), 1/sqrt(in))``, or zeros)."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __init__(self, n_in: int, n_out: int, *, key: PRNGKeyArray, dtype: Any = None, zero: bool = False):
        dtype = default_dtype(dtype)
        if zero:
            self.weight = jnp.zeros((n_out, n_in), dtype)
            self.bias = jnp.zeros((n_out,), dtype)
            return
        bound = 1.0 / math.sqrt(n_in)
        wkey, bkey = jax.random.split(key)
        self.weight = jax.random.uniform(wkey, (n_out, n_in), dtype, -bound, bound)
        self.bias = jax.random.uniform(bkey, (n_out,), dtype, -bound, bound)

    def __call__(self, x: Float[Array, "*lead in"]) -> Float[Array, "*lead out"]:
        return x @ self.weight.T + self.bias


class EncoderMLP(eqx.Module):
    r"""Observation encoder :math:`c = e(\mathrm{concat}(y \odot m, m))`: ``n_layers`` linear
    layers of width ``hidden``, each followed by ``tanh`` (bounded features keep the heads'
    inputs on one scale whatever the observation count). ``(B, in_dim) -> (B, hidden)``.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    assert isinstance(model.encoder, vd.EncoderMLP)
    features = model.encode(batch)  # the encoder on concat(y * m, m), flattened: (B, 2 D) -> (B, hidden)
    assert tuple(features.shape) == (4, 16)
    ```
    """

    layers: tuple[Linear, ...]

    def __init__(self, in_dim: int, hidden: int, n_layers: int, *, key: PRNGKeyArray, dtype: Any = None):
        keys = jax.random.split(key, n_layers)
        self.layers = tuple(
            Linear(in_dim if i == 0 else hidden, hidden, key=keys[i], dtype=dtype) for i in range(n_layers)
        )

    def __call__(self, h: Float[Array, "*lead in"]) -> Float[Array, "*lead hidden"]:
        for layer in self.layers:
            h = jnp.tanh(layer(h))
        return h


def _mean_logvar(out: Float[Array, "*lead twoD"]) -> tuple[Float[Array, "*lead D"], Float[Array, "*lead D"]]:
    flat = out.shape[-1] // 2
    return out[..., :flat], out[..., flat:]


def _std_normal_log_prob(z: Float[Array, "*lead D"]) -> Float[Array, "*lead"]:
    return -0.5 * jnp.sum(z**2 + _LOG_2PI, axis=-1)


class RegressionHead(eqx.Module):
    r"""Diagonal Gaussian over the flattened state: :math:`(\mu, \log\sigma^2) = \mathrm{linear}(c)`;
    :math:`\log q(x) = -\tfrac12 \sum_i [(x_i-\mu_i)^2 e^{-\log\sigma_i^2} + \log\sigma_i^2 + \log 2\pi]`.
    MAP = mean; samples :math:`\mu + e^{\log\sigma^2/2} \odot z`, :math:`z \sim \mathcal N(0, I)`.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    head = model.head
    assert isinstance(head, vd.RegressionHead) and head.flat_dim == 40
    mean = vd.to_numpy(head.map(model.encode(batch)))  # MAP = the mean, (B, D)
    assert np.array_equal(mean, vd.to_numpy(model(batch)).reshape(4, 40))
    ```
    """

    linear: Linear

    def __init__(self, feature_dim: int, flat_dim: int, *, key: PRNGKeyArray, dtype: Any = None):
        self.linear = Linear(feature_dim, 2 * flat_dim, key=key, dtype=dtype)

    @property
    def flat_dim(self) -> int:
        return self.linear.weight.shape[0] // 2

    def log_prob(self, x: Float[Array, "*lead D"], context: Float[Array, "*lead F"]) -> Float[Array, "*lead"]:
        mean, logvar = _mean_logvar(self.linear(context))
        return -0.5 * jnp.sum((x - mean) ** 2 * jnp.exp(-logvar) + logvar + _LOG_2PI, axis=-1)

    def forward(
        self, z: Float[Array, "*lead D"], context: Float[Array, "*lead F"]
    ) -> tuple[Float[Array, "*lead D"], Float[Array, "*lead"]]:
        """Base -> state: ``(x, log|det dx/dz|)``."""
        mean, logvar = _mean_logvar(self.linear(context))
        return mean + jnp.exp(0.5 * logvar) * z, 0.5 * jnp.sum(logvar, axis=-1)

    def inverse(
        self, x: Float[Array, "*lead D"], context: Float[Array, "*lead F"]
    ) -> tuple[Float[Array, "*lead D"], Float[Array, "*lead"]]:
        """State -> base: ``(z, log|det dz/dx|)``."""
        mean, logvar = _mean_logvar(self.linear(context))
        return (x - mean) * jnp.exp(-0.5 * logvar), -0.5 * jnp.sum(logvar, axis=-1)

    def map(self, context: Float[Array, "*lead F"]) -> Float[Array, "*lead D"]:
        return _mean_logvar(self.linear(context))[0]


class AffineCoupling(eqx.Module):
    r"""One conditional affine coupling (see the module docstring):
    ``b' = b * exp(tanh(s_raw)) + t`` with ``(s_raw, t) = net(concat(a, c))``,
    ``a = v[p[:d]]`` unchanged, ``b = v[p[d:]]``; log-determinant ``sum(tanh(s_raw))``.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("flow", (8,), 5, hidden=16, n_coupling=2, seed=0)
    coupling, context = model.head.couplings[0], model.encode(batch)
    assert isinstance(coupling, vd.AffineCoupling)
    v = jax.random.normal(jax.random.key(0), (4, 40))
    out, logdet = coupling.forward(v, context)
    assert np.allclose(vd.to_numpy(out), vd.to_numpy(v))  # built as the identity
    assert np.allclose(vd.to_numpy(logdet), 0.0)
    back, _ = coupling.inverse(out, context)
    assert np.allclose(vd.to_numpy(back), vd.to_numpy(v))
    ```
    """

    layers: tuple[Linear, ...]
    permutation: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        flat_dim: int,
        feature_dim: int,
        hidden: int,
        n_layers: int,
        permutation: np.ndarray,
        *,
        key: PRNGKeyArray,
        dtype: Any = None,
    ):
        half = flat_dim // 2
        keys = jax.random.split(key, n_layers)
        layers = [
            Linear(half + feature_dim if j == 0 else hidden, hidden, key=keys[j], dtype=dtype) for j in range(n_layers)
        ]
        # Zero output layer: s = 0, t = 0, so a fresh flow is the identity (stable start).
        layers.append(Linear(hidden, 2 * (flat_dim - half), key=keys[0], dtype=dtype, zero=True))
        self.layers = tuple(layers)
        self.permutation = tuple(int(i) for i in permutation)

    def _split(self, v: Float[Array, "*lead D"]) -> tuple[Float[Array, "*lead d"], Float[Array, "*lead e"]]:
        perm = np.asarray(self.permutation)
        half = len(perm) // 2
        return v[..., perm[:half]], v[..., perm[half:]]

    def _merge(self, a: Float[Array, "*lead d"], b: Float[Array, "*lead e"]) -> Float[Array, "*lead D"]:
        inverse = np.argsort(np.asarray(self.permutation))
        return jnp.concatenate([a, b], axis=-1)[..., inverse]

    def _scale_shift(
        self, a: Float[Array, "*lead d"], context: Float[Array, "*lead F"]
    ) -> tuple[Float[Array, "*lead e"], Float[Array, "*lead e"]]:
        h = jnp.concatenate([a, context], axis=-1)
        for layer in self.layers[:-1]:
            h = jnp.tanh(layer(h))
        out = self.layers[-1](h)
        n_b = out.shape[-1] // 2
        return jnp.tanh(out[..., :n_b]), out[..., n_b:]

    def forward(
        self, v: Float[Array, "*lead D"], context: Float[Array, "*lead F"]
    ) -> tuple[Float[Array, "*lead D"], Float[Array, "*lead"]]:
        """``(g(v), log|det dg/dv|)``."""
        a, b = self._split(v)
        log_scale, shift = self._scale_shift(a, context)
        return self._merge(a, b * jnp.exp(log_scale) + shift), jnp.sum(log_scale, axis=-1)

    def inverse(
        self, v: Float[Array, "*lead D"], context: Float[Array, "*lead F"]
    ) -> tuple[Float[Array, "*lead D"], Float[Array, "*lead"]]:
        """``(g^{-1}(v), log|det dg^{-1}/dv|)``; ``a`` is unchanged, so the conditioner sees
        the same input as in the forward pass and the inverse is exact."""
        a, b = self._split(v)
        log_scale, shift = self._scale_shift(a, context)
        return self._merge(a, (b - shift) * jnp.exp(-log_scale)), -jnp.sum(log_scale, axis=-1)


class FlowHead(eqx.Module):
    r"""Conditional normalizing flow ``x = mu(c) + sigma(c) * g_{K-1}(...g_0(z; c)...; c)``,
    ``z ~ N(0, I)`` (module docstring). MAP: ``f(0; c)``, the image of the base mode.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("flow", (8,), 5, hidden=16, n_coupling=2, seed=0)
    head, context = model.head, model.encode(batch)
    assert isinstance(head, vd.FlowHead) and head.flat_dim == 40
    z = jax.random.normal(jax.random.key(0), (4, 40))  # base draws
    x, logdet = head.forward(z, context)  # base -> state
    z_back, _ = head.inverse(x, context)  # state -> base: exact
    assert np.allclose(vd.to_numpy(z_back), vd.to_numpy(z), atol=1e-4) and tuple(logdet.shape) == (4,)
    ```
    """

    affine: Linear
    couplings: tuple[AffineCoupling, ...]

    def __init__(
        self,
        feature_dim: int,
        flat_dim: int,
        hidden: int,
        n_layers: int,
        n_coupling: int,
        *,
        key: PRNGKeyArray,
        dtype: Any = None,
    ):
        keys = jax.random.split(key, n_coupling + 1)
        self.affine = Linear(feature_dim, 2 * flat_dim, key=keys[0], dtype=dtype)
        self.couplings = tuple(
            AffineCoupling(
                flat_dim, feature_dim, hidden, n_layers, coupling_permutation(flat_dim, k), key=keys[k + 1], dtype=dtype
            )
            for k in range(n_coupling)
        )

    @property
    def flat_dim(self) -> int:
        return self.affine.weight.shape[0] // 2

    def forward(
        self, z: Float[Array, "*lead D"], context: Float[Array, "*lead F"]
    ) -> tuple[Float[Array, "*lead D"], Float[Array, "*lead"]]:
        """Base -> state: ``(x, log|det dx/dz|)``."""
        logdet = jnp.zeros(z.shape[:-1], z.dtype)
        for coupling in self.couplings:
            z, step = coupling.forward(z, context)
            logdet = logdet + step
        mean, logvar = _mean_logvar(self.affine(context))
        return mean + jnp.exp(0.5 * logvar) * z, logdet + 0.5 * jnp.sum(logvar, axis=-1)

    def inverse(
        self, x: Float[Array, "*lead D"], context: Float[Array, "*lead F"]
    ) -> tuple[Float[Array, "*lead D"], Float[Array, "*lead"]]:
        """State -> base: ``(z, log|det dz/dx|)``."""
        mean, logvar = _mean_logvar(self.affine(context))
        v = (x - mean) * jnp.exp(-0.5 * logvar)
        logdet = -0.5 * jnp.sum(logvar, axis=-1)
        for coupling in reversed(self.couplings):
            v, step = coupling.inverse(v, context)
            logdet = logdet + step
        return v, logdet

    def log_prob(self, x: Float[Array, "*lead D"], context: Float[Array, "*lead F"]) -> Float[Array, "*lead"]:
        z, logdet = self.inverse(x, context)
        return _std_normal_log_prob(z) + logdet

    def map(self, context: Float[Array, "*lead F"]) -> Float[Array, "*lead D"]:
        zeros = jnp.zeros((*context.shape[:-1], self.flat_dim), context.dtype)
        return self.forward(zeros, context)[0]


# ----------------------------------------------------------------------------- the posterior


class AmortizedPosterior(eqx.Module):
    r"""``q(x | batch)``: `EncoderMLP` features of ``concat(input * mask, mask)`` (flattened),
    then a `RegressionHead` or `FlowHead` over the flattened window ``(T * prod(state_shape))``.

    ``log_prob(x, batch) -> (B,)``, ``sample(batch, n, key) -> (n, B, T, *state_shape)``,
    ``__call__(batch) -> (B, T, *state_shape)`` (MAP; see the heads). Batches are duck-typed:
    anything with ``input``, ``mask`` (and ``target`` for losses) arrays of shape
    ``(B, T, *state_shape)`` and the model's dtype.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("flow", (8,), 5, hidden=16, n_coupling=2, seed=0)
    assert tuple(model.log_prob(batch.target, batch).shape) == (4,)  # log q(x | y, m), one per window
    samples = model.sample(batch, 3, jax.random.key(1))  # 3 draws per window
    assert tuple(samples.shape) == (3, 4, 5, 8)
    assert tuple(model(batch).shape) == (4, 5, 8)  # MAP: the image of the base mode
    ```
    """

    encoder: EncoderMLP
    head: RegressionHead | FlowHead
    state_shape: tuple[int, ...] = eqx.field(static=True)
    n_time: int = eqx.field(static=True)

    def __init__(
        self, encoder: EncoderMLP, head: RegressionHead | FlowHead, *, state_shape: Sequence[int], n_time: int
    ):
        self.encoder = encoder
        self.head = head
        self.state_shape = tuple(int(s) for s in state_shape)
        self.n_time = int(n_time)
        check_head_covers(head.flat_dim, self.state_shape, self.n_time)

    @property
    def kind(self) -> str:
        return "regression" if isinstance(self.head, RegressionHead) else "flow"

    @property
    def dtype(self) -> Any:
        return self.encoder.layers[0].weight.dtype

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments of `amortized_schema` / `build_amortized` describing this model."""
        n_coupling = len(self.head.couplings) if isinstance(self.head, FlowHead) else None
        hidden = int(self.encoder.layers[0].weight.shape[0])
        return amortized_config(self.kind, self.state_shape, self.n_time, hidden, len(self.encoder.layers), n_coupling)

    def _check(self, batch: Any, x: Any = None) -> None:
        check_amortized_batch(
            batch, state_shape=self.state_shape, n_time=self.n_time, dtype=str(self.dtype),
            x_shape=None if x is None else x.shape,
        )

    def encode(self, batch: Any) -> Float[Array, "B F"]:
        """Features ``c = encoder(concat(input * mask, mask))`` of each window, ``(B, F)``."""
        self._check(batch)
        size = batch.input.shape[0]
        mask = batch.mask.reshape(size, -1)
        return self.encoder(jnp.concatenate([batch.input.reshape(size, -1) * mask, mask], axis=-1))

    def log_prob(self, x: Float[Array, "B T *S"], batch: Any) -> Float[Array, " B"]:
        """``log q(x | batch)`` per window, ``(B,)``; ``x`` shaped like ``batch.input``."""
        self._check(batch, x)
        return self.head.log_prob(x.reshape(x.shape[0], -1), self.encode(batch))

    def sample(self, batch: Any, n: int, key: PRNGKeyArray) -> Float[Array, "n B T *S"]:
        """``n`` independent draws per window, ``(n, B, T, *state_shape)``: ``x = f(z; c)``,
        ``z ~ N(0, I)`` from ``key``."""
        context = self.encode(batch)
        z = jax.random.normal(key, (int(n), context.shape[0], self.head.flat_dim), context.dtype)
        x, _ = self.head.forward(z, jnp.broadcast_to(context, (int(n), *context.shape)))
        return x.reshape(int(n), *batch.input.shape)

    def __call__(self, batch: Any) -> Float[Array, "B T *S"]:
        """MAP estimate, ``(B, T, *state_shape)``: the regression mean / the flow's ``f(0; c)``."""
        return self.head.map(self.encode(batch)).reshape(batch.input.shape)


def build_amortized(
    kind: str,
    state_shape: Sequence[int],
    n_time: int,
    *,
    hidden: int = 64,
    n_layers: int = 2,
    n_coupling: int = 4,
    seed: int = 0,
    dtype: Any = None,
) -> AmortizedPosterior:
    """An `AmortizedPosterior` with ``kind`` ``"regression"`` or ``"flow"`` (names and shapes:
    `amortized_schema`). ``seed`` seeds ``jax.random``; the two backends draw different
    initial values for the same seed (move parameters with export/import).

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    assert isinstance(model, vd.AmortizedPosterior) and model.kind == "regression"
    shapes = {name: a.shape for name, a in vd.export_amortized_params(model).items()}
    assert shapes == pk.amortized.amortized_schema("regression", (8,), 5, hidden=16)
    assert tuple(model(batch).shape) == (4, 5, 8)  # the MAP estimate of each window
    ```
    """
    check_amortized_kind(kind)
    check_amortized_sizes(hidden, n_layers, n_coupling)
    # One compiled initialisation instead of one eager dispatch (and compile) per layer shape.
    return _build(kind, tuple(int(s) for s in state_shape), int(n_time), hidden, n_layers, n_coupling, seed, dtype)


@eqx.filter_jit
def _build(
    kind: str,
    state_shape: tuple[int, ...],
    n_time: int,
    hidden: int,
    n_layers: int,
    n_coupling: int,
    seed: int,
    dtype: Any,
) -> AmortizedPosterior:
    flat = n_time * int(np.prod(state_shape))
    enc_key, head_key = jax.random.split(jax.random.key(seed))
    encoder = EncoderMLP(2 * flat, hidden, n_layers, key=enc_key, dtype=dtype)
    if kind == "regression":
        head: RegressionHead | FlowHead = RegressionHead(hidden, flat, key=head_key, dtype=dtype)
    else:
        head = FlowHead(hidden, flat, hidden, n_layers, n_coupling, key=head_key, dtype=dtype)
    return AmortizedPosterior(encoder, head, state_shape=state_shape, n_time=n_time)


# ----------------------------------------------------------------------------- parameters


def _linear_paths(model: AmortizedPosterior) -> list[tuple[str, Callable[[AmortizedPosterior], Linear]]]:
    """Canonical name prefix and accessor of every linear layer, in schema order."""
    paths: list[tuple[str, Callable[[AmortizedPosterior], Linear]]] = [
        (f"encoder.layers.{i}", lambda m, i=i: m.encoder.layers[i]) for i in range(len(model.encoder.layers))
    ]
    if isinstance(model.head, RegressionHead):
        paths.append(("head.linear", lambda m: m.head.linear))
        return paths
    paths.append(("head.affine", lambda m: m.head.affine))
    for k, coupling in enumerate(model.head.couplings):
        for j in range(len(coupling.layers)):
            paths.append((f"head.couplings.{k}.layers.{j}", lambda m, k=k, j=j: m.head.couplings[k].layers[j]))
    return paths


def export_amortized_params(model: AmortizedPosterior) -> dict[str, np.ndarray]:
    """Flat ``{canonical name: numpy array}`` (`amortized_schema`), in the model's dtype. Also
    works on a gradient pytree shaped like the model (that is how gradients are named).

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    params = vd.export_amortized_params(model)  # what pipekit_cycle.save_params writes
    assert params["head.linear.weight"].shape == (2 * 5 * 8, 16)  # (out, in) = (2D, hidden), D = T N
    assert all(isinstance(a, np.ndarray) for a in params.values())
    ```
    """
    params: dict[str, np.ndarray] = {}
    for name, get in _linear_paths(model):
        layer = get(model)
        params[f"{name}.weight"] = np.asarray(layer.weight)
        params[f"{name}.bias"] = np.asarray(layer.bias)
    return params


def import_amortized_params(model: AmortizedPosterior, params: Mapping[str, np.ndarray]) -> AmortizedPosterior:
    """A new model holding ``params`` (validated against the schema first, so nothing is built
    from bad input), cast to the model's dtype.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    other = vd.build_amortized("regression", (8,), 5, hidden=16, seed=1)  # other initial values
    other = vd.import_amortized_params(other, vd.export_amortized_params(model))
    assert np.array_equal(vd.to_numpy(other(batch)), vd.to_numpy(model(batch)))
    ```
    """
    arrays = validate_amortized_params(params, model.config)
    paths = _linear_paths(model)

    def where(m: AmortizedPosterior) -> list[Array]:
        return [get(m).weight for _, get in paths] + [get(m).bias for _, get in paths]

    values = [jnp.asarray(arrays[f"{name}.weight"], model.dtype) for name, _ in paths]
    values += [jnp.asarray(arrays[f"{name}.bias"], model.dtype) for name, _ in paths]
    return eqx.tree_at(where, model, values)


# ----------------------------------------------------------------------------- losses, training


def _nll(model: AmortizedPosterior, batch: Any) -> Float[Array, ""]:
    return -jnp.mean(model.log_prob(batch.target, batch))


def amortized_nll_loss_fn(model: AmortizedPosterior, batch: Any) -> Float[Array, ""]:
    r"""Mean negative log-likelihood of the truth, :math:`-\frac1B \sum_b \log q(x^\star_b \mid y_b, m_b)`;
    needs ``batch.target`` (``ValueError`` otherwise).

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    loss = vd.amortized_nll_loss_fn(model, batch)
    assert np.isclose(float(loss), -float(model.log_prob(batch.target, batch).mean()), rtol=1e-6)
    ```
    """
    require_target(getattr(batch, "target", None), "amortized_nll_loss_fn")
    return _nll(model, batch)


class _Arrays(eqx.Module):
    """The three arrays of a duck-typed batch, as a pytree (so any batch class can be jitted)."""

    input: Array
    mask: Array
    target: Array


def _arrays(batch: Any, where: str) -> _Arrays:
    require_target(getattr(batch, "target", None), where)
    return _Arrays(jnp.asarray(batch.input), jnp.asarray(batch.mask), jnp.asarray(batch.target))


@eqx.filter_jit
def _value_and_grad(model: AmortizedPosterior, arrays: _Arrays) -> tuple[Array, AmortizedPosterior]:
    return eqx.filter_value_and_grad(_nll)(model, arrays)


def amortized_loss_and_grads(model: AmortizedPosterior, batch: Any) -> tuple[float, dict[str, np.ndarray]]:
    """``(amortized_nll_loss_fn(model, batch), its gradients keyed by canonical names)``.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    loss, grads = vd.amortized_loss_and_grads(model, batch)  # a float and numpy gradients
    assert grads.keys() == vd.export_amortized_params(model).keys()  # canonical names
    assert np.isclose(loss, float(vd.amortized_nll_loss_fn(model, batch)), rtol=1e-5)
    ```
    """
    loss, grads = _value_and_grad(model, _arrays(batch, "amortized_nll_loss_fn"))
    return float(loss), export_amortized_params(grads)


_amortized_step = make_train_step(amortized_nll_loss_fn, name="amortized_train_step")


def amortized_train_step(
    model: AmortizedPosterior, batch: Any, optimizer: optax.GradientTransformation, opt_state: Any
) -> tuple[AmortizedPosterior, Any, Array]:
    """One optimizer step on `amortized_nll_loss_fn`: ``(model, opt_state, loss)``, the
    `make_train_step` step on the batch's three arrays (any batch class: they are taken out
    first). ``optimizer`` an optax ``GradientTransformation``, e.g. from ``make_optimizer``,
    ``opt_state`` its state on ``eqx.filter(model, eqx.is_inexact_array)``. A non-finite loss
    or gradient raises ``FloatingPointError``; the caller's model and state are unchanged.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    before = vd.export_amortized_params(model)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
    model, opt_state, loss = vd.amortized_train_step(model, batch, optimizer, opt_state)
    after = vd.export_amortized_params(model)
    assert np.isfinite(float(loss)) and not np.array_equal(after["head.linear.bias"], before["head.linear.bias"])
    ```
    """
    return _amortized_step(model, _arrays(batch, "amortized_nll_loss_fn"), optimizer, opt_state)


def coverage(
    model: AmortizedPosterior, batch: Any, level: float = 0.9, n_samples: int = 500, *, key: PRNGKeyArray
) -> float:
    """Fraction of ``batch.target`` entries inside the central ``level`` posterior interval,
    estimated per entry from ``n_samples`` draws (linear-interpolated empirical quantiles at
    ``(1 - level) / 2`` and ``(1 + level) / 2``). Calibrated: close to ``level``.

    Examples
    --------
    ```python
    import jax
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    fraction = vd.coverage(model, batch, level=0.9, n_samples=100, key=jax.random.key(0))
    assert 0.0 <= fraction <= 1.0  # of the truth's entries inside the central 90 % interval
    ```
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return float(_coverage(model, _arrays(batch, "coverage"), float(level), int(n_samples), key))


@eqx.filter_jit
def _coverage(model: AmortizedPosterior, arrays: _Arrays, level: float, n_samples: int, key: PRNGKeyArray) -> Array:
    samples = model.sample(arrays, n_samples, key)
    lower = jnp.quantile(samples, (1.0 - level) / 2.0, axis=0)
    upper = jnp.quantile(samples, (1.0 + level) / 2.0, axis=0)
    inside = (arrays.target >= lower) & (arrays.target <= upper)
    return jnp.mean(inside.astype(samples.dtype))
