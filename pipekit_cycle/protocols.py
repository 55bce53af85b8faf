"""Structural interfaces (``typing.Protocol``, runtime-checkable) shared by the backends.

Shapes: a 1D state is ``(B, T, N)``, a 2D state ``(B, T, H, W)``; ``T`` (time) is the channel
axis of every convolution. "Array" means the backend's array type (``jax.Array`` or
``torch.Tensor``). ``isinstance`` checks only that the members exist.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Backend",
    "EvalStep",
    "ForwardModel",
    "GradModulator",
    "InnerSolver",
    "Prior",
    "TrainStep",
]


@runtime_checkable
class GradModulator(Protocol):
    """Turns the gradient of the variational cost into a state update, with memory.

    ``init_carry(state)`` returns the carry for a state of shape ``(B, T, *S)``: for the
    ConvLSTM an ``LSTMState(hidden, cell)`` of zeros, each ``(B, hidden_dim, *S)``. The carry
    is an explicit value threaded through the solver: a modulator stores no state between
    calls, so a recomputed step (checkpointing) gives the same result.
    ``__call__(grad, state, carry) -> (update, carry)``: ``grad`` and ``state`` have the
    state's shape, ``update`` too. Raises ``ValueError`` on mismatched shapes.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk

    class Momentum:  # a numpy modulator: the carry is the last update
        def init_carry(self, state):
            return np.zeros_like(state)

        def __call__(self, grad, state, carry):
            update = 0.5 * carry + grad
            return update, update

    modulator = Momentum()
    assert isinstance(modulator, pk.GradModulator)
    state = np.ones((2, 3, 4))
    update, carry = modulator(np.ones_like(state), state, modulator.init_carry(state))
    assert update.shape == state.shape and np.array_equal(update, carry)
    ```
    """

    def init_carry(self, state: Any) -> Any: ...

    def __call__(self, grad: Any, state: Any, carry: Any) -> tuple[Any, Any]: ...


@runtime_checkable
class Prior(Protocol):
    """A learned prior ``phi``: ``__call__(x) -> phi(x)`` with ``x`` and ``phi(x)`` of the state's
    shape. The prior cost of a state is ``sum((x - phi(x))**2)`` per sample.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk

    def smoother(x):  # phi: a running mean over time, the state's shape kept
        return (np.roll(x, 1, axis=1) + x + np.roll(x, -1, axis=1)) / 3

    assert isinstance(smoother, pk.Prior)
    x = np.random.default_rng(0).normal(size=(2, 5, 8))
    prior_cost = ((x - smoother(x)) ** 2).sum(axis=(1, 2))  # one value per sample
    assert prior_cost.shape == (2,) and (prior_cost > 0).all()
    ```
    """

    def __call__(self, x: Any) -> Any: ...


@runtime_checkable
class InnerSolver(Protocol):
    """The learned inner solve: ``__call__(batch) -> state``, the reconstruction of shape
    ``batch.input.shape``, differentiated as the model's ``solver_adjoint`` says. Raises
    ``ValueError`` for a batch of the wrong shape and ``TypeError`` for a dtype mismatch.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    def identity_solve(batch):  # returns its input: an InnerSolver by shape, not a good one
        return batch.input

    assert isinstance(identity_solve, pk.InnerSolver)
    ```
    """

    def __call__(self, batch: Any) -> Any: ...


@runtime_checkable
class TrainStep(Protocol):
    """``__call__(model, batch, optimizer, opt_state) -> (model, opt_state, loss)``: one
    optimizer step on ``train_loss_fn``. ``batch.target`` is required (``ValueError``); a
    non-finite loss or gradient raises ``FloatingPointError`` and changes nothing.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    def no_op_step(model, batch, optimizer, opt_state):
        return model, opt_state, 0.0

    assert isinstance(no_op_step, pk.TrainStep)
    assert no_op_step("model", "batch", "optimizer", "state") == ("model", "state", 0.0)
    ```
    """

    def __call__(self, model: Any, batch: Any, optimizer: Any, opt_state: Any) -> tuple[Any, Any, Any]: ...


@runtime_checkable
class EvalStep(Protocol):
    """``__call__(model, batch) -> loss``: the training loss without any gradient.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    def zero_loss(model, batch):
        return 0.0

    assert isinstance(zero_loss, pk.EvalStep)
    ```
    """

    def __call__(self, model: Any, batch: Any) -> Any: ...


@runtime_checkable
class ForwardModel(Protocol):
    """A time-stepping forward model (the dynamics layer).

    ``step(state, dt)`` integrates ``state`` (``(..., N)``) over ``dt > 0`` and returns the new
    state; ``dt`` is the model's default step; ``adjoint`` the spec (or native adjoint) its
    gradients follow; ``with_adjoint(spec)`` returns a new model differentiated by ``spec``
    (``ValueError`` for a spec of another layer). Models are immutable.

    Examples
    --------
    ```python
    import dataclasses

    import numpy as np
    import pipekit_cycle as pk

    @dataclasses.dataclass(frozen=True)
    class Decay:  # dx/dt = -x, one explicit Euler step
        dt: float = 0.1
        adjoint: pk.AdjointSpec = pk.DirectAdjoint()

        def step(self, state, dt):
            return state - dt * state

        def with_adjoint(self, spec):
            pk.check_layer(spec, pk.DYNAMICS)  # ValueError for an inner-solve spec
            return dataclasses.replace(self, adjoint=spec)

    model = Decay()
    assert isinstance(model, pk.ForwardModel)
    assert np.allclose(model.step(np.ones(3), model.dt), 0.9)
    assert model.with_adjoint(pk.BacksolveAdjoint()).adjoint == pk.BacksolveAdjoint()
    ```
    """

    @property
    def dt(self) -> float: ...

    @property
    def adjoint(self) -> Any: ...

    def step(self, state: Any, dt: float) -> Any: ...

    def with_adjoint(self, spec: Any) -> ForwardModel: ...


@runtime_checkable
class Backend(Protocol):
    """What a backend module exports for backend-neutral pipelines (DESIGN section 3).

    ``build_model(config, *, seed)``, ``make_batch(obs, target=None, dtype=None)``,
    ``to_numpy(array)``, ``export_params(model)``, ``import_params(model, params)``,
    ``make_optimizer(optimizer_config, model)``, ``train_step``, ``eval_step``,
    ``train_loss_fn``, ``reconstruction_loss``, ``to_native_adjoint(spec, layer=...)``.

    Examples
    --------
    ```python
    import types

    import pipekit_cycle as pk

    # A module is a Backend when it has every member; vardax_jax and vardax_torch are.
    partial = types.SimpleNamespace(build_model=lambda config, *, seed: None)
    assert not isinstance(partial, pk.Backend)  # make_batch, to_numpy, ... are missing
    ```
    """

    def build_model(self, config: Any, *, seed: int) -> Any: ...

    def make_batch(self, obs: Any, target: Any = None, dtype: Any = None) -> Any: ...

    def to_numpy(self, array: Any) -> Any: ...

    def export_params(self, model: Any) -> dict[str, Any]: ...

    def import_params(self, model: Any, params: dict[str, Any]) -> Any: ...

    def make_optimizer(self, optimizer_config: Any, model: Any) -> tuple[Any, Any]: ...

    def train_step(self, model: Any, batch: Any, optimizer: Any, opt_state: Any) -> tuple[Any, Any, Any]: ...

    def eval_step(self, model: Any, batch: Any) -> Any: ...

    def train_loss_fn(self, model: Any, batch: Any) -> Any: ...

    def reconstruction_loss(self, prediction: Any, target: Any) -> Any: ...

    def to_native_adjoint(self, spec: Any, layer: str = ...) -> Any: ...
