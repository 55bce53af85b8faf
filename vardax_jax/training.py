"""Losses, gradients, the optax optimizer and the (jitted) train / eval steps.

Optimizer (backend contract): ``g <- g * c / max(||g||, c)`` (global-norm clip), then coupled
weight decay ``g <- g + wd * p``, then Adam or plain SGD.

Examples
--------
```python
import jax.numpy as jnp
import jax.random as jr
import vardax_jax as vd

x = jnp.ones((2, 3))
assert float(vd.training.reconstruction_loss(x, x)) == 0.0
```
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
import optimistix as optx
from jaxtyping import Array, Float, Scalar

import pipekit_cycle as pk
from pipekit_cycle.errors import check_no_dropout_in_training
from pipekit_cycle.validation import require_target

from .adjoints import nondiff
from .model import AbstractBatch, AbstractFourDVarNet, check_batch
from .params import get_param

M = TypeVar("M")
LossFn = Callable[[Any, Any], Scalar]

__all__ = [
    "eval_step",
    "loss_and_grads",
    "make_optimizer",
    "make_train_step",
    "predict",
    "reconstruction_loss",
    "train_loss_fn",
    "train_step",
]


def reconstruction_loss(pred: Float[Array, "..."], target: Float[Array, "..."]) -> Scalar:
    r"""Mean squared error over the points that have a target: a NaN in ``target`` (land, or
    a cell with no truth) is no target there,

    $$ L = \frac{1}{|V|} \sum_{i \in V} (\hat x_i - x_i)^2, \quad V = \{i : x_i \text{ not NaN}\}, $$

    and contributes neither value nor gradient (NaN when no point has a target); an infinite
    target is a value, whose infinite loss the training step refuses.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import vardax_jax as vd

    loss = vd.reconstruction_loss(jnp.array([1.0, 3.0]), jnp.array([0.0, 1.0]))
    assert float(loss) == 2.5  # ((1 - 0)^2 + (3 - 1)^2) / 2
    land = vd.reconstruction_loss(jnp.array([1.0, 3.0, 7.0]), jnp.array([0.0, 1.0, jnp.nan]))
    assert float(land) == 2.5  # the NaN point is left out
    ```
    """
    valid = ~jnp.isnan(target)
    # The inner where keeps the NaN out of the gradient (d/dpred of a discarded NaN is NaN * 0).
    error = jnp.where(valid, pred - jnp.where(valid, target, 0.0), 0.0)
    return jnp.sum(error**2) / jnp.sum(valid)


def train_loss_fn(
    model: AbstractFourDVarNet, batch: AbstractBatch, *,
    adjoint: pk.AdjointSpec | str | optx.AbstractAdjoint | None = None,
) -> Scalar:
    """``reconstruction_loss(model(batch), batch.target)``; needs ``batch.target``.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)

    loss = vd.train_loss_fn(model, batch)  # a scalar, differentiable in the model's parameters
    assert np.isclose(float(loss), float(vd.reconstruction_loss(model(batch), batch.target)), rtol=1e-6)
    try:
        vd.train_loss_fn(model, vd.make_batch(problem.obs))  # no target: nothing to compare with
    except ValueError as error:
        assert "batch.target" in str(error)
    else:
        raise AssertionError("a batch without a target must be refused")
    ```
    """
    require_target(batch.target, "train_loss_fn")
    check_batch(model, batch)
    return reconstruction_loss(model(batch, adjoint=adjoint), batch.target)


@eqx.filter_jit
def _value_and_grad(model, batch, adjoint):
    return eqx.filter_value_and_grad(lambda m: train_loss_fn(m, batch, adjoint=adjoint))(model)


def loss_and_grads(
    model: AbstractFourDVarNet, batch: AbstractBatch, *,
    adjoint: pk.AdjointSpec | str | optx.AbstractAdjoint | None = None,
) -> tuple[float, dict[str, np.ndarray]]:
    """The loss and its gradients keyed by schema names (what conformance compares).

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)

    loss, grads = vd.loss_and_grads(model, batch)  # a float and numpy gradients
    assert {name: g.shape for name, g in grads.items()} == pk.schema(cfg)  # one per parameter, its shape
    assert np.isclose(loss, float(vd.eval_step(model, batch)), rtol=1e-5)
    ```
    """
    require_target(batch.target, "train_loss_fn")
    check_batch(model, batch)
    loss, grads = _value_and_grad(model, batch, adjoint)
    return float(loss), {name: np.asarray(get_param(grads, name)) for name in pk.schema(model.config)}


def _learning_rate(cfg: pk.OptimizerConfig) -> float | optax.Schedule:
    """``lr`` itself when the schedule is constant (the optax state of a plain rate, as checkpoints
    made before schedules existed hold it), else optax's schedule ``count -> lr * s(count)``."""
    schedule = cfg.schedule
    if schedule.is_constant:
        return cfg.lr
    # The count as the default float (float64 under x64): int32 arithmetic would round in float32.
    return lambda count: cfg.lr * schedule.factor(jnp.asarray(count, dtype=jnp.result_type(float)), jnp)


# The update rule by OptimizerConfig.name, chosen once when the optimizer is built.
_OPTIMIZERS: dict[str, Callable[[pk.OptimizerConfig], optax.GradientTransformation]] = {
    "adam": lambda cfg: optax.adam(_learning_rate(cfg), b1=cfg.betas[0], b2=cfg.betas[1], eps=cfg.eps),
    "sgd": lambda cfg: optax.sgd(_learning_rate(cfg)),
}


def make_optimizer(
    optimizer_config: pk.OptimizerConfig, model: eqx.Module
) -> tuple[optax.GradientTransformation, optax.OptState]:
    """The optax chain of ``optimizer_config`` and its state on the model's parameters.

    Examples
    --------
    ```python
    import optax
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-3, clip_norm=1.0), model)
    assert isinstance(optimizer, optax.GradientTransformation)  # clip, then Adam: one optax chain
    ```

    A schedule other than constant (`pipekit_cycle.schedules`) becomes optax's learning-rate
    schedule ``count -> lr * s(count)``; its count is in ``opt_state`` (and its export).
    """
    cfg = optimizer_config
    parts = []
    if cfg.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    if cfg.weight_decay:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(_OPTIMIZERS[cfg.name](cfg))
    optimizer = optax.chain(*parts)
    return optimizer, optimizer.init(eqx.filter(model, eqx.is_inexact_array))


def _all_finite(tree: Any) -> Array:
    """One boolean scalar: every inexact array leaf of ``tree`` is finite (``True`` if none)."""
    leaves = jtu.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))
    return functools.reduce(jnp.logical_and, [jnp.all(jnp.isfinite(leaf)) for leaf in leaves], jnp.array(True))


def _update(
    loss_fn: LossFn, model: M, batch: Any, optimizer: optax.GradientTransformation, opt_state: Any
) -> tuple[M, Any, Array, Array, Array]:
    """The traced step: ``(new model, new opt_state, loss, loss finite, gradient finite)``."""
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
    updates, new_opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), new_opt_state, loss, jnp.isfinite(loss), _all_finite(grads)


def _checked(
    name: str, new_model: M, new_opt_state: Any, loss: Array, loss_ok: Array, grads_ok: Array
) -> tuple[M, Any, Array]:
    """``(new_model, new_opt_state, loss)`` if both flags hold, else ``FloatingPointError``
    (the new values are dropped; the caller's model and state are values, never touched)."""
    if not bool(loss_ok):
        raise FloatingPointError(f"{name}: non-finite loss {float(loss)}; model and optimizer unchanged")
    if not bool(grads_ok):
        raise FloatingPointError(f"{name}: non-finite gradient; model and optimizer unchanged")
    return new_model, new_opt_state, loss


class CompiledTrainStep:
    """A `TrainStep` compiled ahead of time for one set of argument shapes (``compile``);
    called like the step, with the same finiteness check."""

    def __init__(self, name: str, compiled: Any) -> None:
        self._name, self._compiled = name, compiled

    def __call__(
        self, model: M, batch: Any, optimizer: optax.GradientTransformation, opt_state: Any
    ) -> tuple[M, Any, Array]:
        return _checked(self._name, *self._compiled(model, batch, optimizer, opt_state))

    def memory_analysis(self) -> Any:
        """XLA's memory analysis of the compiled executable (``None`` where unsupported)."""
        return self._compiled.compiled.memory_analysis()


class TrainStep:
    """``(model, batch, optimizer, opt_state) -> (model, opt_state, loss)``: one jitted
    optimizer step on ``loss_fn`` (see `make_train_step`)."""

    def __init__(self, loss_fn: LossFn, name: str) -> None:
        self.loss_fn, self.name = loss_fn, name
        self._jitted = eqx.filter_jit(functools.partial(_update, loss_fn))

    def __call__(
        self, model: M, batch: Any, optimizer: optax.GradientTransformation, opt_state: Any
    ) -> tuple[M, Any, Array]:
        check_no_dropout_in_training(model, self.name)
        return _checked(self.name, *self._jitted(model, batch, optimizer, opt_state))

    def compile(
        self, model: M, batch: Any, optimizer: optax.GradientTransformation, opt_state: Any
    ) -> CompiledTrainStep:
        """Lower and compile the step for these arguments' shapes now (benchmarks time it)."""
        check_no_dropout_in_training(model, self.name)
        return CompiledTrainStep(self.name, self._jitted.lower(model, batch, optimizer, opt_state).compile())


def make_train_step(loss_fn: LossFn, *, name: str = "train_step") -> TrainStep:
    """The optimizer step on any loss ``loss_fn(model, batch) -> scalar``.

    ``train_step(model, batch, optimizer, opt_state) -> (model, opt_state, loss)``: ``loss``
    is the value before the step; the gradient is taken with respect to the model's inexact
    arrays; ``optimizer`` is an optax ``GradientTransformation`` (e.g. `make_optimizer`'s:
    clipping and weight decay are links of its chain) and ``opt_state`` its state. One jitted
    computation; finiteness is read on the host once, after it. Guaranteed: a non-finite loss
    or gradient raises ``FloatingPointError`` naming ``name`` and nothing is returned, so the
    caller's model and state (immutable values) are exactly as they were. The step is a pure
    function of its arguments: an older ``(model, opt_state)`` gives the same next step, bit
    for bit. Errors ``loss_fn`` raises while tracing (bad batch) propagate unchanged.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)


    def loss_fn(model, batch):  # any (model, batch) -> scalar
        return vd.train_loss_fn(model, batch) + 1e-3 * (model(batch) ** 2).mean()


    step = vd.make_train_step(loss_fn, name="damped_step")
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-3), model)
    model, opt_state, loss = step(model, batch, optimizer, opt_state)
    ```
    """
    return TrainStep(loss_fn, name)


train_step = make_train_step(train_loss_fn)
"""One jitted optimizer step on `train_loss_fn`: ``(model, opt_state, loss)`` (`make_train_step`);
``ValueError`` without ``batch.target``.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_jax as vd

problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.build_model(cfg, seed=0)
batch = vd.make_batch(problem.obs, target=problem.truth)
optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
for _ in range(3):
    model, opt_state, loss = vd.train_step(model, batch, optimizer, opt_state)
print(f"training loss before the third step: {float(loss):.3f}")
```
"""


@eqx.filter_jit
def _eval(model, batch):
    return train_loss_fn(nondiff(model), batch)


def eval_step(model: AbstractFourDVarNet, batch: AbstractBatch) -> Scalar:
    """The training loss, without any gradient.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    held_out = pk.lorenz96(n_windows=2, window_length=5, state_dim=16, seed=1)
    loss = vd.eval_step(model, vd.make_batch(held_out.obs, target=held_out.truth))  # no gradient
    print(f"held-out loss {float(loss):.3f}")
    ```
    """
    require_target(batch.target, "train_loss_fn")
    check_batch(model, batch)
    return _eval(model, batch)


@eqx.filter_jit
def _prior_of(model, x):
    return model.prior(x)


def predict(model: AbstractFourDVarNet, batch: AbstractBatch) -> Float[Array, "batch time *space"]:
    """The inference output, without gradient: the model's output component applied to
    ``x_K = model(batch)``, `PriorOutput` ``phi(x_K)`` (``config.output="prior"``,
    ocean4dvarnet's eval mode) or `StateOutput` ``x_K``.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    x = vd.to_numpy(vd.predict(model, vd.make_batch(problem.obs)))  # no target needed
    assert x.shape == problem.truth.shape  # (windows, T, N)
    ```
    """
    model = nondiff(model)
    return model.output(model(batch), functools.partial(_prior_of, model))
