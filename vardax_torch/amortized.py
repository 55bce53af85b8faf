r"""Amortized posteriors: one network maps observations to a distribution over the state.

Where the 4DVarNet solver returns one state per window, an `AmortizedPosterior` returns a
density :math:`q(x \mid y, m)` over the whole window, with :math:`x` flattened to
:math:`D = T \cdot \prod S` entries (``S`` the state shape, ``(N,)`` or ``(H, W)``).

* the encoder and the heads, `vardax_torch.heads`: `EncoderMLP` features of ``concat(y * m, m)``, a
  diagonal-Gaussian `RegressionHead` and a conditional normalizing flow `FlowHead` of
  `AffineCoupling` layers (the maths is there).

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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
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

from .heads import AffineCoupling, EncoderMLP, FlowHead, RegressionHead
from .training import make_train_step

if TYPE_CHECKING:
    from .model import Batch1D, Batch2D

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

    def _check(self, batch: Batch1D | Batch2D, x: Tensor | None = None) -> None:
        check_amortized_batch(
            batch, state_shape=self.state_shape, n_time=self.n_time, dtype=str(self.dtype),
            x_shape=None if x is None else x.shape,
        )
        for name, tensor in (("input", batch.input), ("mask", batch.mask), ("target", getattr(batch, "target", None))):
            if tensor is not None:
                check_same_device(name, str(tensor.device), str(self.device))

    def encode(self, batch: Batch1D | Batch2D) -> Float[Tensor, "B F"]:
        """Features ``c = encoder(concat(input * mask, mask))`` of each window, ``(B, F)``."""
        self._check(batch)
        size = batch.input.shape[0]
        mask = batch.mask.reshape(size, -1)
        return self.encoder(torch.cat([batch.input.reshape(size, -1) * mask, mask], dim=-1))

    def log_prob(self, x: Float[Tensor, "B T *S"], batch: Batch1D | Batch2D) -> Float[Tensor, " B"]:
        """``log q(x | batch)`` per window, ``(B,)``; ``x`` shaped like ``batch.input``."""
        self._check(batch, x)
        return self.head.log_prob(x.reshape(x.shape[0], -1), self.encode(batch))

    def sample(
        self, batch: Batch1D | Batch2D, n: int, seed: int | None = None, *, generator: torch.Generator | None = None
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

    def forward(self, batch: Batch1D | Batch2D) -> Float[Tensor, "B T *S"]:
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
    dtype: torch.dtype | npt.DTypeLike | None = None,
    device: torch.device | str | None = None,
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


def amortized_nll_loss_fn(model: AmortizedPosterior, batch: Batch1D | Batch2D) -> Float[Tensor, ""]:
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


def amortized_loss_and_grads(
    model: AmortizedPosterior, batch: Batch1D | Batch2D
) -> tuple[float, dict[str, np.ndarray]]:
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
    batch: Batch1D | Batch2D,
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
