r"""The parts of an amortized posterior (`vardax_jax.amortized`): the encoder and the two heads.

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

Every weight is laid out ``(out, in)`` like ``torch.nn.Linear``; ``y = x @ W.T + b`` in both backends.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from pipekit_cycle.amortized import coupling_permutation

from .grad_mod import default_dtype

__all__ = ["AffineCoupling", "EncoderMLP", "FlowHead", "Linear", "RegressionHead"]

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- building blocks


class Linear(eqx.Module):
    """``y = x @ weight.T + bias`` over any leading axes; ``weight`` ``(out, in)`` as in
    ``torch.nn.Linear`` (and initialised like it, ``U(-1/sqrt(in), 1/sqrt(in))``, or zeros)."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __init__(self, n_in: int, n_out: int, *, key: PRNGKeyArray, dtype: DTypeLike | None = None, zero: bool = False):
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

    def __init__(self, in_dim: int, hidden: int, n_layers: int, *, key: PRNGKeyArray, dtype: DTypeLike | None = None):
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

    def __init__(self, feature_dim: int, flat_dim: int, *, key: PRNGKeyArray, dtype: DTypeLike | None = None):
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
        dtype: DTypeLike | None = None,
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
        dtype: DTypeLike | None = None,
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
