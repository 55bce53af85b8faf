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
import vardax_torch as vd

model = vd.amortized.build_amortized("regression", (4,), 2, hidden=8, seed=0)
shapes = {name: a.shape for name, a in vd.amortized.export_amortized_params(model).items()}
assert shapes == pk.amortized.amortized_schema("regression", (4,), 2, hidden=8)
```
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

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
from pipekit_cycle.validation import check_same_device, require_target

from .model import _as_torch_dtype
from .training import make_train_step

__all__ = [
    "AffineCoupling",
    "AmortizedPosterior",
    "EncoderMLP",
    "FlowHead",
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
        self, in_dim: int, hidden: int, n_layers: int, *, generator: torch.Generator, dtype: Any = None
    ) -> None:
        super().__init__()
        dtype = _as_torch_dtype(dtype)
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

    def __init__(self, feature_dim: int, flat_dim: int, *, generator: torch.Generator, dtype: Any = None) -> None:
        super().__init__()
        self.linear = _linear(feature_dim, 2 * flat_dim, generator=generator, dtype=_as_torch_dtype(dtype))

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
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dtype = _as_torch_dtype(dtype)
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
        dtype: Any = None,
    ) -> None:
        super().__init__()
        dtype = _as_torch_dtype(dtype)
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


class AmortizedPosterior(nn.Module):
    r"""``q(x | batch)``: `EncoderMLP` features of ``concat(input * mask, mask)`` (flattened),
    then a `RegressionHead` or `FlowHead` over the flattened window ``(T * prod(state_shape))``.

    ``log_prob(x, batch) -> (B,)``, ``sample(batch, n, seed=|generator=) -> (n, B, T, *state_shape)``,
    ``__call__(batch) -> (B, T, *state_shape)`` (MAP; see the heads). Batches are duck-typed:
    anything with ``input``, ``mask`` (and ``target`` for losses) tensors of shape
    ``(B, T, *state_shape)`` and the model's dtype.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("flow", (8,), 5, hidden=16, n_coupling=2, seed=0)
    assert tuple(model.log_prob(batch.target, batch).shape) == (4,)  # log q(x | y, m), one per window
    samples = model.sample(batch, 3, seed=1)  # 3 draws per window
    assert tuple(samples.shape) == (3, 4, 5, 8)
    assert tuple(model(batch).shape) == (4, 5, 8)  # MAP: the image of the base mode
    ```
    """

    def __init__(
        self, encoder: EncoderMLP, head: RegressionHead | FlowHead, *, state_shape: Sequence[int], n_time: int
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.state_shape = tuple(int(s) for s in state_shape)
        self.n_time = int(n_time)
        check_head_covers(head.flat_dim, self.state_shape, self.n_time)

    @property
    def kind(self) -> str:
        return "regression" if isinstance(self.head, RegressionHead) else "flow"

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.layers[0].weight.dtype

    @property
    def device(self) -> torch.device:
        """The parameters' device (``build_amortized(..., device=)``); batches must be on it."""
        return self.encoder.layers[0].weight.device

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
        for name, tensor in (("input", batch.input), ("mask", batch.mask), ("target", getattr(batch, "target", None))):
            if tensor is not None:
                check_same_device(name, str(tensor.device), str(self.device))

    def encode(self, batch: Any) -> Float[Tensor, "B F"]:
        """Features ``c = encoder(concat(input * mask, mask))`` of each window, ``(B, F)``."""
        self._check(batch)
        size = batch.input.shape[0]
        mask = batch.mask.reshape(size, -1)
        return self.encoder(torch.cat([batch.input.reshape(size, -1) * mask, mask], dim=-1))

    def log_prob(self, x: Float[Tensor, "B T *S"], batch: Any) -> Float[Tensor, " B"]:
        """``log q(x | batch)`` per window, ``(B,)``; ``x`` shaped like ``batch.input``."""
        self._check(batch, x)
        return self.head.log_prob(x.reshape(x.shape[0], -1), self.encode(batch))

    def sample(
        self, batch: Any, n: int, seed: int | None = None, *, generator: torch.Generator | None = None
    ) -> Float[Tensor, "n B T *S"]:
        """``n`` independent draws per window, ``(n, B, T, *state_shape)``: ``x = f(z; c)``,
        ``z ~ N(0, I)`` from ``generator``, else a generator seeded with ``seed``, else torch's
        global RNG (both ``None``)."""
        context = self.encode(batch)
        if generator is None and seed is not None:
            generator = torch.Generator(device=context.device).manual_seed(int(seed))
        z = torch.randn(
            (int(n), context.shape[0], self.head.flat_dim),
            generator=generator,
            dtype=context.dtype,
            device=context.device,
        )
        x, _ = self.head(z, context.expand(int(n), *context.shape))
        return x.reshape(int(n), *batch.input.shape)

    def forward(self, batch: Any) -> Float[Tensor, "B T *S"]:
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
    generator: torch.Generator | None = None,
    dtype: Any = None,
    device: Any = None,
) -> AmortizedPosterior:
    """An `AmortizedPosterior` with ``kind`` ``"regression"`` or ``"flow"`` (names and shapes:
    `amortized_schema`). ``seed`` seeds a private ``torch.Generator`` (or pass ``generator``);
    the two backends draw different initial values for the same seed (move parameters with
    export/import). Parameters are drawn on the host and then placed on ``device`` (a
    ``torch.device`` or its name; ``None``: the CPU): one seed, the same values everywhere.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

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
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    flat = int(n_time) * int(np.prod(state_shape))
    encoder = EncoderMLP(2 * flat, hidden, n_layers, generator=generator, dtype=dtype)
    if kind == "regression":
        head: RegressionHead | FlowHead = RegressionHead(hidden, flat, generator=generator, dtype=dtype)
    else:
        head = FlowHead(hidden, flat, hidden, n_layers, n_coupling, generator=generator, dtype=dtype)
    return AmortizedPosterior(encoder, head, state_shape=state_shape, n_time=n_time).to(device)


# ----------------------------------------------------------------------------- parameters


def export_amortized_params(model: AmortizedPosterior) -> dict[str, np.ndarray]:
    """Flat ``{canonical name: numpy array}`` (`amortized_schema`), in the model's dtype. The
    module tree is laid out so that ``named_parameters()`` yields exactly the canonical names.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    params = vd.export_amortized_params(model)  # what pipekit_cycle.save_params writes
    assert params["head.linear.weight"].shape == (2 * 5 * 8, 16)  # (out, in) = (2D, hidden), D = T N
    assert all(isinstance(a, np.ndarray) for a in params.values())
    ```
    """
    return {name: param.detach().cpu().numpy().copy() for name, param in model.named_parameters()}


def import_amortized_params(model: AmortizedPosterior, params: Mapping[str, np.ndarray]) -> AmortizedPosterior:
    """The same module, updated in place under ``torch.no_grad`` with ``params`` (validated
    against the schema first, so nothing changes on bad input), cast to the model's dtype.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    other = vd.build_amortized("regression", (8,), 5, hidden=16, seed=1)  # other initial values
    other = vd.import_amortized_params(other, vd.export_amortized_params(model))
    assert np.array_equal(vd.to_numpy(other(batch)), vd.to_numpy(model(batch)))
    ```
    """
    arrays = validate_amortized_params(params, model.config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.as_tensor(arrays[name], dtype=param.dtype, device=param.device))
    return model


# ----------------------------------------------------------------------------- losses, training


def amortized_nll_loss_fn(model: AmortizedPosterior, batch: Any) -> Float[Tensor, ""]:
    r"""Mean negative log-likelihood of the truth, :math:`-\frac1B \sum_b \log q(x^\star_b \mid y_b, m_b)`;
    needs ``batch.target`` (``ValueError`` otherwise).

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    loss = vd.amortized_nll_loss_fn(model, batch)
    assert np.isclose(float(loss), -float(model.log_prob(batch.target, batch).mean()), rtol=1e-6)
    ```
    """
    require_target(getattr(batch, "target", None), "amortized_nll_loss_fn")
    return -torch.mean(model.log_prob(batch.target, batch))


def amortized_loss_and_grads(model: AmortizedPosterior, batch: Any) -> tuple[float, dict[str, np.ndarray]]:
    """``(amortized_nll_loss_fn(model, batch), its gradients keyed by canonical names)``.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    loss, grads = vd.amortized_loss_and_grads(model, batch)  # a float and numpy gradients
    assert grads.keys() == vd.export_amortized_params(model).keys()  # canonical names
    assert np.isclose(loss, float(vd.amortized_nll_loss_fn(model, batch)), rtol=1e-5)
    ```
    """
    names, params = zip(*model.named_parameters(), strict=True)
    loss = amortized_nll_loss_fn(model, batch)
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), {name: g.detach().cpu().numpy().copy() for name, g in zip(names, grads, strict=True)}


amortized_train_step = make_train_step(amortized_nll_loss_fn, name="amortized_train_step")
"""One optimizer step on `amortized_nll_loss_fn` (`make_train_step`): ``(model, opt_state,
loss)``. ``optimizer`` a ``torch.optim`` optimizer over ``model.parameters()``, e.g. from
``make_optimizer`` (its ``"clip_norm"`` clips by global norm first); ``opt_state`` a state it
returned (or ``optimizer.state_dict()``; ``None``: the optimizer as it is).

Examples
--------
```python
import numpy as np
import pipekit_cycle as pk
import vardax_torch as vd

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


def coverage(
    model: AmortizedPosterior,
    batch: Any,
    level: float = 0.9,
    n_samples: int = 500,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> float:
    """Fraction of ``batch.target`` entries inside the central ``level`` posterior interval,
    estimated per entry from ``n_samples`` draws (linear-interpolated empirical quantiles at
    ``(1 - level) / 2`` and ``(1 + level) / 2``). Calibrated: close to ``level``.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=8, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)  # (B, T, N) = (4, 5, 8)
    model = vd.build_amortized("regression", (8,), 5, hidden=16, seed=0)
    fraction = vd.coverage(model, batch, level=0.9, n_samples=100, seed=0)
    assert 0.0 <= fraction <= 1.0  # of the truth's entries inside the central 90 % interval
    ```
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    require_target(getattr(batch, "target", None), "coverage")
    with torch.no_grad():
        samples = model.sample(batch, n_samples, seed, generator=generator)
        q = torch.tensor([(1.0 - level) / 2.0, (1.0 + level) / 2.0], dtype=samples.dtype, device=samples.device)
        lower, upper = torch.quantile(samples, q, dim=0)
        inside = (batch.target >= lower) & (batch.target <= upper)
        return float(inside.to(samples.dtype).mean())
