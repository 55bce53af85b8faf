r"""Amortized posteriors: one network maps observations to a distribution over the state.

Where the 4DVarNet solver returns one state per window, an `AmortizedPosterior` returns a
density :math:`q(x \mid y, m)` over the whole window, with :math:`x` flattened to
:math:`D = T \cdot \prod S` entries (``S`` the state shape, ``(N,)`` or ``(H, W)``).

* the encoder and the heads, `vardax_jax.heads`: `EncoderMLP` features of ``concat(y * m, m)``, a
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
import vardax_jax as vd

model = vd.amortized.build_amortized("regression", (4,), 2, hidden=8, seed=0)
shapes = {name: a.shape for name, a in vd.amortized.export_amortized_params(model).items()}
assert shapes == pk.amortized.amortized_schema("regression", (4,), 2, hidden=8)
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import DTypeLike
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

from .heads import AffineCoupling, EncoderMLP, FlowHead, Linear, RegressionHead
from .training import make_train_step

if TYPE_CHECKING:
    from .model import AbstractBatch

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
    def dtype(self) -> jnp.dtype:
        return self.encoder.layers[0].weight.dtype

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments of `amortized_schema` / `build_amortized` describing this model."""
        n_coupling = len(self.head.couplings) if isinstance(self.head, FlowHead) else None
        hidden = int(self.encoder.layers[0].weight.shape[0])
        return amortized_config(self.kind, self.state_shape, self.n_time, hidden, len(self.encoder.layers), n_coupling)

    def _check(self, batch: AbstractBatch, x: Array | None = None) -> None:
        check_amortized_batch(
            batch, state_shape=self.state_shape, n_time=self.n_time, dtype=str(self.dtype),
            x_shape=None if x is None else x.shape,
        )

    def encode(self, batch: AbstractBatch) -> Float[Array, "B F"]:
        """Features ``c = encoder(concat(input * mask, mask))`` of each window, ``(B, F)``."""
        self._check(batch)
        size = batch.input.shape[0]
        mask = batch.mask.reshape(size, -1)
        return self.encoder(jnp.concatenate([batch.input.reshape(size, -1) * mask, mask], axis=-1))

    def log_prob(self, x: Float[Array, "B T *S"], batch: AbstractBatch) -> Float[Array, " B"]:
        """``log q(x | batch)`` per window, ``(B,)``; ``x`` shaped like ``batch.input``."""
        self._check(batch, x)
        return self.head.log_prob(x.reshape(x.shape[0], -1), self.encode(batch))

    def sample(self, batch: AbstractBatch, n: int, key: PRNGKeyArray) -> Float[Array, "n B T *S"]:
        """``n`` independent draws per window, ``(n, B, T, *state_shape)``: ``x = f(z; c)``,
        ``z ~ N(0, I)`` from ``key``."""
        context = self.encode(batch)
        z = jax.random.normal(key, (int(n), context.shape[0], self.head.flat_dim), context.dtype)
        x, _ = self.head.forward(z, jnp.broadcast_to(context, (int(n), *context.shape)))
        return x.reshape(int(n), *batch.input.shape)

    def __call__(self, batch: AbstractBatch) -> Float[Array, "B T *S"]:
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
    dtype: DTypeLike | None = None,
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
    dtype: DTypeLike | None,
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


def _nll(model: AmortizedPosterior, batch: AbstractBatch) -> Float[Array, ""]:
    return -jnp.mean(model.log_prob(batch.target, batch))


def amortized_nll_loss_fn(model: AmortizedPosterior, batch: AbstractBatch) -> Float[Array, ""]:
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


def _arrays(batch: AbstractBatch, where: str) -> _Arrays:
    require_target(getattr(batch, "target", None), where)
    return _Arrays(jnp.asarray(batch.input), jnp.asarray(batch.mask), jnp.asarray(batch.target))


@eqx.filter_jit
def _value_and_grad(model: AmortizedPosterior, arrays: _Arrays) -> tuple[Array, AmortizedPosterior]:
    return eqx.filter_value_and_grad(_nll)(model, arrays)


def amortized_loss_and_grads(model: AmortizedPosterior, batch: AbstractBatch) -> tuple[float, dict[str, np.ndarray]]:
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
    model: AmortizedPosterior, batch: AbstractBatch, optimizer: optax.GradientTransformation, opt_state: optax.OptState
) -> tuple[AmortizedPosterior, optax.OptState, Array]:
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
    model: AmortizedPosterior, batch: AbstractBatch, level: float = 0.9, n_samples: int = 500, *, key: PRNGKeyArray
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
