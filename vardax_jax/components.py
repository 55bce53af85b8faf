r"""The parts of a 4DVarNet that its config chooses by name (DESIGN 7): the variational cost,
the step rule of the learned solve and the inference output. Each is a small ``eqx.Module``
whose settings are static fields; `make_components` picks them ONCE, when the model is built,
from the config's ``cost``, ``step_rule`` and ``output`` strings (the JSON vocabulary of
`pipekit_cycle.FourDVarNetConfig`), and the model holds them. The solver and the training code
call them and never read the strings.

* ``cost="sum"``, `SumCost`: :math:`U_b = w_o\, o_b + w_p\, p_b` (samples independent);
  ``cost="mean"``, `MeanCost`: :math:`U_b = w_o\, o_b / \sum m + w_p\, p_b / |x|` (batch-wide means);
* ``step_rule="alpha"``, `AlphaStep`: :math:`x_{k+1} = x_k - \alpha u_k`;
  ``step_rule="annealed"``, `AnnealedStep`: :math:`x_{k+1} = x_k - (u_k / (k + 1) + \eta (k + 1) / K\, g_k)`;
* ``output="state"``, `StateOutput`: :math:`x_K`; ``output="prior"``, `PriorOutput`: :math:`\phi(x_K)`;

with :math:`o_b = \sum m (x - y)^2` and :math:`p_b = \sum (x - \phi(x))^2` the misfits of sample
:math:`b`, :math:`g = \partial U / \partial x`, :math:`u` the modulator's output and :math:`k` the
step number from 0.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_jax as vd

cost, step_rule, output = vd.components.make_components(pk.FourDVarNetConfig(state_shape=(16,), n_time=5))
assert cost == vd.SumCost(obs_weight=1.0, prior_weight=1.0) and step_rule == vd.AlphaStep(alpha=0.1)
assert output == vd.StateOutput()
```
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

import pipekit_cycle as pk

__all__ = [
    "AbstractCost",
    "AbstractOutput",
    "AbstractStepRule",
    "AlphaStep",
    "AnnealedStep",
    "MeanCost",
    "PriorOutput",
    "StateOutput",
    "SumCost",
    "make_components",
]

State = Float[Array, "batch time *space"]
PerSample = Float[Array, " batch"]


class AbstractCost(eqx.Module):
    """The variational cost ``U(x)`` per sample from its two misfits.

    ``__call__(obs, prior, mask, x) -> (B,)``: ``obs`` is ``sum(m (x - y)^2)`` and ``prior``
    ``sum((x - phi(x))^2)``, each summed over every non-batch axis (shape ``(B,)``); ``mask``
    and ``x`` are the batch's mask and the state (``(B, T, *S)``), for costs that normalise.

    Examples
    --------
    ```python
    import vardax_jax as vd

    assert issubclass(vd.SumCost, vd.AbstractCost) and issubclass(vd.MeanCost, vd.AbstractCost)
    ```
    """

    @abc.abstractmethod
    def __call__(self, obs: PerSample, prior: PerSample, mask: State, x: State) -> PerSample:
        """The cost of each sample, ``(B,)``, from its two misfits."""


class SumCost(AbstractCost):
    r"""``cost="sum"``: :math:`U_b = w_o \sum m (x - y)^2 + w_p \sum (x - \phi(x))^2`, sums per
    sample, so a sample's cost never depends on its batch-mates (DESIGN 3.1).

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import vardax_jax as vd

    cost = vd.SumCost(obs_weight=2.0, prior_weight=1.0)
    obs, prior = jnp.array([8.0, 16.0]), jnp.array([4.0, 8.0])  # the misfits' sums, per sample
    x = mask = jnp.ones((2, 1, 4))
    assert cost(obs, prior, mask, x).tolist() == [20.0, 40.0]  # 2 * obs + prior
    ```
    """

    obs_weight: float = eqx.field(static=True, default=1.0)
    prior_weight: float = eqx.field(static=True, default=1.0)

    @classmethod
    def from_config(cls, config: pk.FourDVarNetConfig) -> SumCost:
        """The cost with ``config``'s ``obs_weight`` and ``prior_weight``."""
        return cls(float(config.obs_weight), float(config.prior_weight))

    def __call__(self, obs: PerSample, prior: PerSample, mask: State, x: State) -> PerSample:
        return self.obs_weight * obs + self.prior_weight * prior


class MeanCost(AbstractCost):
    r"""``cost="mean"`` (ocean4dvarnet's): each sample's share of the batch-wide means,
    :math:`U_b = w_o \sum_b m (x - y)^2 / \sum m + w_p \sum_b (x - \phi(x))^2 / |x|`; the shares
    sum to ocean4dvarnet's cost, and a sample's share depends on its batch-mates' mask.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import vardax_jax as vd

    cost = vd.MeanCost(obs_weight=2.0, prior_weight=1.0)
    obs, prior = jnp.array([8.0, 16.0]), jnp.array([4.0, 8.0])
    x = mask = jnp.ones((2, 1, 4))  # sum(mask) = x.size = 8
    assert cost(obs, prior, mask, x).tolist() == [2.5, 5.0]  # 2 * obs / 8 + prior / 8
    ```
    """

    obs_weight: float = eqx.field(static=True, default=1.0)
    prior_weight: float = eqx.field(static=True, default=1.0)

    @classmethod
    def from_config(cls, config: pk.FourDVarNetConfig) -> MeanCost:
        """The cost with ``config``'s ``obs_weight`` and ``prior_weight``."""
        return cls(float(config.obs_weight), float(config.prior_weight))

    def __call__(self, obs: PerSample, prior: PerSample, mask: State, x: State) -> PerSample:
        obs, prior = obs / jnp.sum(mask), prior / x.size
        return self.obs_weight * obs + self.prior_weight * prior


class AbstractStepRule(eqx.Module):
    """One step of the learned solve: ``__call__(x, u, g, k) -> x_{k+1}`` from the state ``x``,
    the modulator's output ``u``, the cost's gradient ``g = dU/dx`` and the step number ``k``
    (from 0; a Python or traced integer).

    Examples
    --------
    ```python
    import vardax_jax as vd

    assert issubclass(vd.AlphaStep, vd.AbstractStepRule) and issubclass(vd.AnnealedStep, vd.AbstractStepRule)
    ```
    """

    @abc.abstractmethod
    def __call__(self, x: State, u: State, g: State, k: ArrayLike) -> State:
        """``x_{k+1}`` from ``x_k``, the modulator's output ``u``, the gradient ``g`` and the step ``k``."""


class AlphaStep(AbstractStepRule):
    r"""``step_rule="alpha"``: :math:`x_{k+1} = x_k - \alpha u_k` (DESIGN 3.1).

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import vardax_jax as vd

    step = vd.AlphaStep(alpha=0.5)
    x, u, g = jnp.ones(3), jnp.full((3,), 2.0), jnp.zeros(3)
    assert step(x, u, g, 0).tolist() == [0.0, 0.0, 0.0]  # 1 - 0.5 * 2; g is unused
    ```
    """

    alpha: float = eqx.field(static=True, default=0.1)

    @classmethod
    def from_config(cls, config: pk.FourDVarNetConfig) -> AlphaStep:
        """The rule with ``config.alpha``."""
        return cls(float(config.alpha))

    def __call__(self, x: State, u: State, g: State, k: ArrayLike) -> State:
        return x - self.alpha * u


class AnnealedStep(AbstractStepRule):
    r"""``step_rule="annealed"`` (ocean4dvarnet's):
    :math:`x_{k+1} = x_k - \big(u_k / (k + 1) + \eta\, (k + 1) / K\, g_k\big)`, with
    :math:`\eta` = ``lr_grad`` and :math:`K` = ``n_steps``, the config's ``n_solver_steps``.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import numpy as np
    import vardax_jax as vd

    step = vd.AnnealedStep(lr_grad=0.2, n_steps=4)
    x, u, g = jnp.ones(3), jnp.ones(3), jnp.ones(3)
    assert np.allclose(step(x, u, g, 1), 1 - (1 / 2 + 0.2 * 2 / 4))  # k = 1: u / 2 + 0.1 g
    ```
    """

    lr_grad: float = eqx.field(static=True, default=0.2)
    n_steps: int = eqx.field(static=True, default=10)

    @classmethod
    def from_config(cls, config: pk.FourDVarNetConfig) -> AnnealedStep:
        """The rule with ``config.lr_grad`` and ``n_steps = config.n_solver_steps``."""
        return cls(float(config.lr_grad), int(config.n_solver_steps))

    def __call__(self, x: State, u: State, g: State, k: ArrayLike) -> State:
        count = jnp.asarray(k + 1, x.dtype)
        return x - (u / count + self.lr_grad * count / self.n_steps * g)


class AbstractOutput(eqx.Module):
    """What inference returns (`predict`): ``__call__(x, prior) -> output`` from the solve's
    ``x_K`` and the model's prior ``phi`` (a callable). ``model(batch)`` is always ``x_K``.

    Examples
    --------
    ```python
    import vardax_jax as vd

    assert issubclass(vd.StateOutput, vd.AbstractOutput) and issubclass(vd.PriorOutput, vd.AbstractOutput)
    ```
    """

    @abc.abstractmethod
    def __call__(self, x: State, prior: Callable[[State], State]) -> State:
        """What inference returns from the solve's output ``x`` and the prior ``phi``."""


class StateOutput(AbstractOutput):
    """``output="state"``: the solve's ``x_K`` itself.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import vardax_jax as vd

    x = jnp.arange(3.0)
    assert vd.StateOutput()(x, lambda z: 2 * z).tolist() == [0.0, 1.0, 2.0]  # phi is not applied
    ```
    """

    @classmethod
    def from_config(cls, config: pk.FourDVarNetConfig) -> StateOutput:
        """The output (it has no settings)."""
        return cls()

    def __call__(self, x: State, prior: Callable[[State], State]) -> State:
        return x


class PriorOutput(AbstractOutput):
    """``output="prior"`` (ocean4dvarnet's eval mode): ``phi(x_K)``.

    Examples
    --------
    ```python
    import jax.numpy as jnp
    import vardax_jax as vd

    x = jnp.arange(3.0)
    assert vd.PriorOutput()(x, lambda z: 2 * z).tolist() == [0.0, 2.0, 4.0]  # phi(x_K)
    ```
    """

    @classmethod
    def from_config(cls, config: pk.FourDVarNetConfig) -> PriorOutput:
        """The output (it has no settings)."""
        return cls()

    def __call__(self, x: State, prior: Callable[[State], State]) -> State:
        return prior(x)


# The one place a config string becomes a component: keyed by the config's vocabulary
# (pipekit_cycle.COSTS, STEP_RULES, OUTPUTS), which the config has already validated.
_CHOICES: dict[str, dict[str, Any]] = {
    "cost": {"sum": SumCost, "mean": MeanCost},
    "step_rule": {"alpha": AlphaStep, "annealed": AnnealedStep},
    "output": {"state": StateOutput, "prior": PriorOutput},
}


def make_components(config: pk.FourDVarNetConfig) -> tuple[AbstractCost, AbstractStepRule, AbstractOutput]:
    """``(cost, step_rule, output)``: the components ``config``'s ``cost``, ``step_rule`` and
    ``output`` name, with their settings from ``config``; the model holds them under those names.

    Examples
    --------
    ```python
    import pipekit_cycle as pk
    import vardax_jax as vd

    cfg = pk.ocean4dvarnet_config((16, 16), 5, n_step=3, hidden_dim=4, prior_hidden_dim=4)
    cost, step_rule, output = vd.make_components(cfg)
    assert cost == vd.MeanCost(obs_weight=cfg.obs_weight, prior_weight=1.0)
    assert step_rule == vd.AnnealedStep(lr_grad=cfg.lr_grad, n_steps=3) and output == vd.PriorOutput()
    model = vd.build_model(cfg, seed=0)
    assert (model.cost, model.step_rule, model.output) == (cost, step_rule, output)
    ```
    """
    cost, step_rule, output = (choices[getattr(config, field)].from_config(config)
                               for field, choices in _CHOICES.items())
    return cost, step_rule, output
