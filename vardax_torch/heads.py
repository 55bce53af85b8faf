r"""The parts of an amortized posterior (`vardax_torch.amortized`): the encoder and the two heads.

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

import numpy as np
import numpy.typing as npt
import torch
from jaxtyping import Float
from torch import Tensor, nn

from pipekit_cycle.amortized import coupling_permutation

from .model import as_torch_dtype

__all__ = ["AffineCoupling", "EncoderMLP", "FlowHead", "RegressionHead"]

_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- building blocks


def _linear(n_in: int, n_out: int, *, generator: torch.Generator, dtype: torch.dtype, zero: bool = False) -> nn.Linear:
    """``torch.nn.Linear`` initialised like its default, ``U(-1/sqrt(in), 1/sqrt(in))``, from
    ``generator`` (no global RNG state touched), or with zeros."""
    layer = nn.Linear(n_in, n_out, dtype=dtype)
    bound = 1.0 / math.sqrt(n_in)
    with torch.no_grad():
        for param in (layer.weight, layer.bias):
            if zero:
                param.zero_()
            else:
                param.uniform_(-bound, bound, generator=generator)
    return layer


class EncoderMLP(nn.Module):
    r"""Observation encoder :math:`c = e(\mathrm{concat}(y \odot m, m))`: ``n_layers`` linear
    layers of width ``hidden``, each followed by ``tanh`` (bounded features keep the heads'
    inputs on one scale whatever the observation count). ``(B, in_dim) -> (B, hidden)``.

    Examples
    --------
    ```python
    import torch
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    assert isinstance(model.encoder, vd.EncoderMLP)
    features = model.encode(batch)  # the encoder on concat(y * m, m), flattened: (B, 2 D) -> (B, hidden)
    assert tuple(features.shape) == (4, 16)
    ```
    """

    def __init__(
        self, in_dim: int, hidden: int, n_layers: int, *, generator: torch.Generator,
        dtype: torch.dtype | npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        dtype = as_torch_dtype(dtype)
        self.layers = nn.ModuleList(
            _linear(in_dim if i == 0 else hidden, hidden, generator=generator, dtype=dtype) for i in range(n_layers)
        )

    def forward(self, h: Float[Tensor, "*lead in"]) -> Float[Tensor, "*lead hidden"]:
        for layer in self.layers:
            h = torch.tanh(layer(h))
        return h


def _mean_logvar(out: Float[Tensor, "*lead twoD"]) -> tuple[Float[Tensor, "*lead D"], Float[Tensor, "*lead D"]]:
    flat = out.shape[-1] // 2
    return out[..., :flat], out[..., flat:]


def _std_normal_log_prob(z: Float[Tensor, "*lead D"]) -> Float[Tensor, "*lead"]:
    return -0.5 * torch.sum(z**2 + _LOG_2PI, dim=-1)


class RegressionHead(nn.Module):
    r"""Diagonal Gaussian over the flattened state: :math:`(\mu, \log\sigma^2) = \mathrm{linear}(c)`;
    :math:`\log q(x) = -\tfrac12 \sum_i [(x_i-\mu_i)^2 e^{-\log\sigma_i^2} + \log\sigma_i^2 + \log 2\pi]`.
    MAP = mean; samples :math:`\mu + e^{\log\sigma^2/2} \odot z`, :math:`z \sim \mathcal N(0, I)`.

    Examples
    --------
    ```python
    import torch
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    head = model.head
    assert isinstance(head, vd.RegressionHead) and head.flat_dim == 40
    mean = vd.to_numpy(head.map(model.encode(batch)))  # MAP = the mean, (B, D)
    assert np.array_equal(mean, vd.to_numpy(model(batch)).reshape(4, 40))
    ```
    """

    def __init__(
        self, feature_dim: int, flat_dim: int, *, generator: torch.Generator,
        dtype: torch.dtype | npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        self.linear = _linear(feature_dim, 2 * flat_dim, generator=generator, dtype=as_torch_dtype(dtype))

    @property
    def flat_dim(self) -> int:
        return self.linear.weight.shape[0] // 2

    def log_prob(self, x: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]) -> Float[Tensor, "*lead"]:
        mean, logvar = _mean_logvar(self.linear(context))
        return -0.5 * torch.sum((x - mean) ** 2 * torch.exp(-logvar) + logvar + _LOG_2PI, dim=-1)

    def forward(
        self, z: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]
    ) -> tuple[Float[Tensor, "*lead D"], Float[Tensor, "*lead"]]:
        """Base -> state: ``(x, log|det dx/dz|)``."""
        mean, logvar = _mean_logvar(self.linear(context))
        return mean + torch.exp(0.5 * logvar) * z, 0.5 * torch.sum(logvar, dim=-1)

    def inverse(
        self, x: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]
    ) -> tuple[Float[Tensor, "*lead D"], Float[Tensor, "*lead"]]:
        """State -> base: ``(z, log|det dz/dx|)``."""
        mean, logvar = _mean_logvar(self.linear(context))
        return (x - mean) * torch.exp(-0.5 * logvar), -0.5 * torch.sum(logvar, dim=-1)

    def map(self, context: Float[Tensor, "*lead F"]) -> Float[Tensor, "*lead D"]:
        return _mean_logvar(self.linear(context))[0]


class AffineCoupling(nn.Module):
    r"""One conditional affine coupling (see the module docstring):
    ``b' = b * exp(tanh(s_raw)) + t`` with ``(s_raw, t) = net(concat(a, c))``,
    ``a = v[p[:d]]`` unchanged, ``b = v[p[d:]]``; log-determinant ``sum(tanh(s_raw))``.

    Examples
    --------
    ```python
    import torch
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("flow", (8,), 5, hidden=16, n_coupling=2, seed=0)
    coupling, context = model.head.couplings[0], model.encode(batch)
    assert isinstance(coupling, vd.AffineCoupling)
    v = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))
    out, logdet = coupling.forward(v, context)
    assert np.allclose(vd.to_numpy(out), vd.to_numpy(v))  # built as the identity
    assert np.allclose(vd.to_numpy(logdet), 0.0)
    back, _ = coupling.inverse(out, context)
    assert np.allclose(vd.to_numpy(back), vd.to_numpy(v))
    ```
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(
        self,
        flat_dim: int,
        feature_dim: int,
        hidden: int,
        n_layers: int,
        permutation: np.ndarray,
        *,
        generator: torch.Generator,
        dtype: torch.dtype | npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        dtype = as_torch_dtype(dtype)
        half = flat_dim // 2
        layers = [
            _linear(half + feature_dim if j == 0 else hidden, hidden, generator=generator, dtype=dtype)
            for j in range(n_layers)
        ]
        # Zero output layer: s = 0, t = 0, so a fresh flow is the identity (stable start).
        layers.append(_linear(hidden, 2 * (flat_dim - half), generator=generator, dtype=dtype, zero=True))
        self.layers = nn.ModuleList(layers)
        # Buffers, not parameters: fixed by (flat_dim, layer index), never exported or trained.
        perm = np.asarray(permutation, dtype=np.int64)
        self.register_buffer("permutation", torch.from_numpy(perm.copy()), persistent=False)
        self.register_buffer("inverse_permutation", torch.from_numpy(np.argsort(perm)), persistent=False)

    def _split(self, v: Float[Tensor, "*lead D"]) -> tuple[Float[Tensor, "*lead d"], Float[Tensor, "*lead e"]]:
        half = self.permutation.shape[0] // 2
        return v[..., self.permutation[:half]], v[..., self.permutation[half:]]

    def _merge(self, a: Float[Tensor, "*lead d"], b: Float[Tensor, "*lead e"]) -> Float[Tensor, "*lead D"]:
        return torch.cat([a, b], dim=-1)[..., self.inverse_permutation]

    def _scale_shift(
        self, a: Float[Tensor, "*lead d"], context: Float[Tensor, "*lead F"]
    ) -> tuple[Float[Tensor, "*lead e"], Float[Tensor, "*lead e"]]:
        h = torch.cat([a, context], dim=-1)
        for layer in self.layers[:-1]:
            h = torch.tanh(layer(h))
        out = self.layers[-1](h)
        n_b = out.shape[-1] // 2
        return torch.tanh(out[..., :n_b]), out[..., n_b:]

    def forward(
        self, v: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]
    ) -> tuple[Float[Tensor, "*lead D"], Float[Tensor, "*lead"]]:
        """``(g(v), log|det dg/dv|)``."""
        a, b = self._split(v)
        log_scale, shift = self._scale_shift(a, context)
        return self._merge(a, b * torch.exp(log_scale) + shift), torch.sum(log_scale, dim=-1)

    def inverse(
        self, v: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]
    ) -> tuple[Float[Tensor, "*lead D"], Float[Tensor, "*lead"]]:
        """``(g^{-1}(v), log|det dg^{-1}/dv|)``; ``a`` is unchanged, so the conditioner sees
        the same input as in the forward pass and the inverse is exact."""
        a, b = self._split(v)
        log_scale, shift = self._scale_shift(a, context)
        return self._merge(a, (b - shift) * torch.exp(-log_scale)), -torch.sum(log_scale, dim=-1)


class FlowHead(nn.Module):
    r"""Conditional normalizing flow ``x = mu(c) + sigma(c) * g_{K-1}(...g_0(z; c)...; c)``,
    ``z ~ N(0, I)`` (module docstring). MAP: ``f(0; c)``, the image of the base mode.

    Examples
    --------
    ```python
    import torch
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8): D = 40
    model = vd.build_amortized("flow", (8,), 5, hidden=16, n_coupling=2, seed=0)
    head, context = model.head, model.encode(batch)
    assert isinstance(head, vd.FlowHead) and head.flat_dim == 40
    z = torch.randn(4, 40, generator=torch.Generator().manual_seed(0))  # base draws
    x, logdet = head.forward(z, context)  # base -> state
    z_back, _ = head.inverse(x, context)  # state -> base: exact
    assert np.allclose(vd.to_numpy(z_back), vd.to_numpy(z), atol=1e-4) and tuple(logdet.shape) == (4,)
    ```
    """

    def __init__(
        self,
        feature_dim: int,
        flat_dim: int,
        hidden: int,
        n_layers: int,
        n_coupling: int,
        *,
        generator: torch.Generator,
        dtype: torch.dtype | npt.DTypeLike | None = None,
    ) -> None:
        super().__init__()
        dtype = as_torch_dtype(dtype)
        self.affine = _linear(feature_dim, 2 * flat_dim, generator=generator, dtype=dtype)
        self.couplings = nn.ModuleList(
            AffineCoupling(
                flat_dim,
                feature_dim,
                hidden,
                n_layers,
                coupling_permutation(flat_dim, k),
                generator=generator,
                dtype=dtype,
            )
            for k in range(n_coupling)
        )

    @property
    def flat_dim(self) -> int:
        return self.affine.weight.shape[0] // 2

    def forward(
        self, z: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]
    ) -> tuple[Float[Tensor, "*lead D"], Float[Tensor, "*lead"]]:
        """Base -> state: ``(x, log|det dx/dz|)``."""
        logdet = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for coupling in self.couplings:
            z, step = coupling(z, context)
            logdet = logdet + step
        mean, logvar = _mean_logvar(self.affine(context))
        return mean + torch.exp(0.5 * logvar) * z, logdet + 0.5 * torch.sum(logvar, dim=-1)

    def inverse(
        self, x: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]
    ) -> tuple[Float[Tensor, "*lead D"], Float[Tensor, "*lead"]]:
        """State -> base: ``(z, log|det dz/dx|)``."""
        mean, logvar = _mean_logvar(self.affine(context))
        v = (x - mean) * torch.exp(-0.5 * logvar)
        logdet = -0.5 * torch.sum(logvar, dim=-1)
        for coupling in reversed(self.couplings):
            v, step = coupling.inverse(v, context)
            logdet = logdet + step
        return v, logdet

    def log_prob(self, x: Float[Tensor, "*lead D"], context: Float[Tensor, "*lead F"]) -> Float[Tensor, "*lead"]:
        z, logdet = self.inverse(x, context)
        return _std_normal_log_prob(z) + logdet

    def map(self, context: Float[Tensor, "*lead F"]) -> Float[Tensor, "*lead D"]:
        zeros = torch.zeros((*context.shape[:-1], self.flat_dim), dtype=context.dtype, device=context.device)
        return self(zeros, context)[0]


# ----------------------------------------------------------------------------- the posterior
