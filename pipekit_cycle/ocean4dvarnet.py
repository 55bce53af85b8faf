r"""ocean4dvarnet's 4DVarNet (``models.GradSolver`` with ``BilinAEPriorCost``, ``BaseObsCost``,
``ConvLstmGradModel``; PyPI 1.0.6) as a `FourDVarNetConfig` and canonical parameters (DESIGN 7).

Its maths, in this project's terms (every item a config value, which the backends turn into a
component once, when the model is built, never a mode the solver tests):

.. math::

    U(x) = \mathrm{mean}\big((x - \phi(x))^2\big)
         + \lambda^2 w\, \frac{\sum m (x - y)^2}{\sum m} \quad\text{(means over the whole batch)},

    x_{k+1} = x_k - \Big(\frac{u_k}{k + 1} + \eta \frac{k + 1}{K} g_k\Big),\quad g_k = \nabla U(x_k),

from ``x_0 = m y``, ``u_k`` the normalised ConvLSTM's output (``grad_mod="convlstm_normalized"``),
``eta = lr_grad``; the training-mode output is ``x_K``, the eval-mode output ``phi(x_K)``
(``output="prior"``, what ``predict`` returns). So ``cost="mean"``, ``step_rule="annealed"``,
``obs_weight = lbd^2 w``, ``prior_weight = 1``. Because of the batch-wide means and the
batch-wide gradient RMS, a sample's solution depends on the other samples of its batch; this
project's own architecture (the config defaults) keeps samples independent.

Parameters map one to one: ``prior_cost.*`` -> ``prior.*``, ``grad_mod.*`` -> ``grad_mod.*``;
the gate rows keep ocean4dvarnet's order ``(i, f, o, c)``, which the normalised modulator uses.

The grid is not part of the conversion: ``GradSolver`` is fully convolutional, and so are the
models built from the config, which map any grid of `pipekit_cycle.validation.grid_rule` (at
least the kernel on the pooled grid, divisible by the down-sampling factors). The config's
``state_shape`` only records the training patch: a Lightning checkpoint's ``rec_weight`` (the
loss weight over the training patch, ``(..., H, W)``) where the state_dict holds one, else the
smallest grid the rule allows (`pipekit_cycle.validation.smallest_grid`), a placeholder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .config import FourDVarNetConfig
from .params import validate_params
from .validation import grid_allows, smallest_grid

__all__ = ["from_state_dict", "ocean4dvarnet_config", "training_patch"]

_PRIOR_CONVS = ("conv_in", "conv_hidden", "bilin_1", "bilin_21", "bilin_22", "conv_out")
_GRAD_MOD_CONVS = ("gates", "conv_out")
# Prefixes of a GradSolver inside a Lightning module's state_dict (Lit4dVarNet.solver).
_SOLVER_PREFIXES = ("solver.", "")


def ocean4dvarnet_config(
    state_shape: Sequence[int] | None,
    n_time: int,
    *,
    n_step: int,
    hidden_dim: int,
    prior_hidden_dim: int,
    kernel_size: int = 3,
    lr_grad: float = 0.2,
    lbd: float = 1.0,
    obs_weight: float = 1.0,
    grad_mod_downsample: int | None = None,
    prior_downsample: int | None = None,
    bilin_quad: bool = True,
    dropout: float = 0.1,
    **fields: Any,
) -> FourDVarNetConfig:
    """The `FourDVarNetConfig` of ``GradSolver(BilinAEPriorCost(n_time, prior_hidden_dim,
    kernel_size, prior_downsample, bilin_quad), BaseObsCost(obs_weight),
    ConvLstmGradModel(n_time, hidden_dim, kernel_size, dropout, grad_mod_downsample),
    n_step, lr_grad, lbd)`` (ocean4dvarnet's defaults for what it defaults). ``fields``: any
    other config field (e.g. ``solver_adjoint``). ``state_shape`` ``(H, W)`` is the training
    patch, recorded, not a gate (the model maps any grid the rule allows); ``None``: the
    smallest grid the rule allows, a placeholder.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    cfg = pk.ocean4dvarnet_config((32, 32), 15, n_step=5, hidden_dim=16, prior_hidden_dim=16, prior_downsample=2)
    assert (cfg.state_shape, cfg.n_time, cfg.n_solver_steps) == ((32, 32), 15, 5)
    assert cfg.grad_mod == "convlstm_normalized" and cfg.step_rule == "annealed" and cfg.bilin_quad
    assert pk.ocean4dvarnet_config((32, 32), 15, n_step=5, hidden_dim=16, prior_hidden_dim=16,
                                   solver_adjoint=pk.TruncatedAdjoint(k=1)).solver_adjoint == pk.TruncatedAdjoint(k=1)
    unknown = pk.ocean4dvarnet_config(None, 15, n_step=5, hidden_dim=16, prior_hidden_dim=16, prior_downsample=2)
    assert unknown.state_shape == (6, 6)  # no training patch known: the smallest grid (kernel 3 x pooling 2)
    ```
    """
    if state_shape is None:
        factors = (prior_downsample or 1, grad_mod_downsample or 1)
        state_shape = smallest_grid(2, int(kernel_size), factors)
    return FourDVarNetConfig(
        state_shape=tuple(int(s) for s in state_shape),
        n_time=int(n_time),
        hidden_dim=int(hidden_dim),
        prior_hidden_dim=int(prior_hidden_dim),
        kernel_size=int(kernel_size),
        n_solver_steps=int(n_step),
        obs_weight=float(lbd) ** 2 * float(obs_weight),
        prior_weight=1.0,
        grad_mod="convlstm_normalized",
        grad_mod_dropout=float(dropout),
        grad_mod_downsample=1 if grad_mod_downsample is None else int(grad_mod_downsample),
        prior_downsample=1 if prior_downsample is None else int(prior_downsample),
        bilin_quad=bool(bilin_quad),
        cost="mean",
        step_rule="annealed",
        lr_grad=float(lr_grad),
        output="prior",
        **fields,
    )


def _solver_prefix(state_dict: Mapping[str, np.ndarray]) -> str:
    for prefix in _SOLVER_PREFIXES:
        if f"{prefix}prior_cost.conv_in.weight" in state_dict and f"{prefix}grad_mod.gates.weight" in state_dict:
            return prefix
    raise ValueError(
        "not an ocean4dvarnet GradSolver state_dict: expected keys 'prior_cost.conv_in.weight' and "
        "'grad_mod.gates.weight' (or with the 'solver.' prefix of a Lightning checkpoint)"
    )


def training_patch(state_dict: Mapping[str, Any]) -> tuple[int, int] | None:
    """The ``(H, W)`` a Lightning ``Lit4dVarNet`` was trained on, read from its ``rec_weight``
    buffer (the loss weight over a training patch, ``(..., H, W)``), or ``None`` where the
    state_dict holds none (a bare ``GradSolver``'s).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ocean4dvarnet import training_patch

    assert training_patch({"rec_weight": np.ones((15, 240, 240))}) == (240, 240)
    assert training_patch({"prior_cost.conv_in.weight": np.ones((4, 3, 3, 3))}) is None
    ```
    """
    weight = state_dict.get("rec_weight")
    shape = np.shape(weight) if weight is not None else ()
    return (int(shape[-2]), int(shape[-1])) if len(shape) >= 2 else None


def from_state_dict(
    state_dict: Mapping[str, np.ndarray], *, n_step: int, state_shape: Sequence[int] | None = None, **settings: Any
) -> tuple[dict[str, np.ndarray], FourDVarNetConfig]:
    """Canonical parameters and config of a ``GradSolver`` state_dict (numpy arrays; a
    Lightning module's, with the ``solver.`` prefix, is accepted). ``n_time``,
    ``hidden_dim``, ``prior_hidden_dim`` and ``kernel_size`` are read from the shapes;
    ``n_step`` is not stored in a state_dict and must be given; ``settings`` are
    `ocean4dvarnet_config`'s other keywords (its defaults are ocean4dvarnet's). The parameters
    are checked against the config's schema, which no grid enters.

    No grid is needed (module docstring). ``state_shape``, optional, is recorded as the
    training patch; ``None``: `training_patch` where the rule allows it, else the smallest grid
    the rule allows."""
    prefix = _solver_prefix(state_dict)
    conv_in = np.asarray(state_dict[f"{prefix}prior_cost.conv_in.weight"])
    gates = np.asarray(state_dict[f"{prefix}grad_mod.gates.weight"])
    if conv_in.ndim != 4 or gates.ndim != 4:
        raise ValueError(f"expected 2D convolution weights (out, in, k, k), got {conv_in.shape} and {gates.shape}")
    inferred = {
        "n_time": conv_in.shape[1],
        "prior_hidden_dim": conv_in.shape[0],
        "hidden_dim": gates.shape[0] // 4,
        "kernel_size": conv_in.shape[-1],
    }
    clash = sorted(set(inferred) & set(settings))
    if clash:
        raise ValueError(f"{clash} are read from the state_dict's shapes; do not pass them")
    if state_shape is None:
        patch = training_patch(state_dict)
        factors = (settings.get("prior_downsample") or 1, settings.get("grad_mod_downsample") or 1)
        state_shape = patch if patch is not None and grid_allows(patch, inferred["kernel_size"], factors) else None
    config = ocean4dvarnet_config(state_shape, n_step=n_step, **inferred, **settings)
    params: dict[str, np.ndarray] = {}
    for source, target, convs in (("prior_cost", "prior", _PRIOR_CONVS), ("grad_mod", "grad_mod", _GRAD_MOD_CONVS)):
        for conv in convs:
            for kind in ("weight", "bias"):
                key = f"{prefix}{source}.{conv}.{kind}"
                if key not in state_dict:
                    raise ValueError(f"the state_dict has no {key!r}")
                params[f"{target}.{conv}.{kind}"] = np.array(state_dict[key])
    return validate_params(params, config), config
