"""Optimizer state to and from flat numpy dicts, for checkpoints that resume bit-exactly.

Examples
--------
```python
import pipekit_cycle as pk
import vardax_torch as vd

cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
model = vd.build_model(cfg, seed=0)
optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-3), model)
arrays = vd.checkpoint.export_optimizer_state(opt_state)
assert arrays == {}  # torch.optim.Adam holds no state before its first step
```
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pipekit_cycle.schedules import ConstantSchedule

from .training import snapshot_optimizer

__all__ = ["export_optimizer_state", "import_optimizer_state"]

# The steps taken along a learning-rate schedule (`make_optimizer` keeps them in the param groups).
SCHEDULE_STEPS = "schedule.steps"


def _scheduled(groups: list[dict[str, Any]]) -> bool:
    """Whether the groups follow a schedule whose position matters (not a constant rate)."""
    return not groups[0].get("lr_schedule", ConstantSchedule()).is_constant


def export_optimizer_state(opt_state: dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-parameter tensors of ``opt_state`` (an ``optimizer.state_dict()``), named
    ``state.<parameter index>.<key>`` (e.g. ``state.0.exp_avg``), and, under a learning-rate
    schedule other than a constant one, the steps taken along it (``schedule.steps``). Scalars
    (Adam's ``step``) travel with shape ``(1,)``: safetensors has no 0-d tensors.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
    model, opt_state, loss = vd.train_step(model, batch, optimizer, opt_state)
    arrays = vd.export_optimizer_state(opt_state)  # flat numpy arrays, as a checkpoint file holds them
    assert arrays["state.0.step"].tolist() == [1]  # Adam's step count for parameter 0, shape (1,)
    assert all(isinstance(a, np.ndarray) and a.ndim >= 1 for a in arrays.values())
    ```
    """
    arrays = {}
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            arrays[f"state.{index}.{key}"] = np.atleast_1d(torch.as_tensor(value).detach().cpu().numpy()).copy()
    if _scheduled(opt_state["param_groups"]):
        arrays[SCHEDULE_STEPS] = np.array([opt_state["param_groups"][0]["scheduled_steps"]], dtype=np.int64)
    return arrays


def import_optimizer_state(
    optimizer: torch.optim.Optimizer, opt_state: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Load ``arrays`` (from `export_optimizer_state`) into ``optimizer``; returns a snapshot
    of its new state (as `train_step` returns one: passing it back costs no reload). Every
    entry is checked against the optimizer's parameters (index in range, per-parameter
    buffers of the parameter's shape and dtype) and, where ``opt_state`` already holds state,
    against its names, before the optimizer is touched.

    Examples
    --------
    ```python
    import numpy as np
    import pipekit_cycle as pk
    import vardax_torch as vd

    problem = pk.lorenz96(n_windows=4, window_length=5, state_dim=16, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    model = vd.build_model(cfg, seed=0)
    batch = vd.make_batch(problem.obs, target=problem.truth)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), model)
    model, opt_state, loss = vd.train_step(model, batch, optimizer, opt_state)
    arrays = vd.export_optimizer_state(opt_state)  # flat numpy arrays, as a checkpoint file holds them
    assert arrays["state.0.step"].tolist() == [1]  # Adam's step count for parameter 0, shape (1,)
    restored = vd.import_optimizer_state(optimizer, opt_state, arrays)  # e.g. after a restart
    again = vd.export_optimizer_state(restored)
    assert again.keys() == arrays.keys() and all(np.array_equal(again[k], arrays[k]) for k in arrays)
    ```
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    # The per-parameter names (the schedule's position is checked below): none before a first step.
    template = set(export_optimizer_state(opt_state)) - {SCHEDULE_STEPS}
    given = set(arrays) - {SCHEDULE_STEPS}
    if template and given != template:
        raise ValueError(
            f"optimizer state names do not match: missing {sorted(template - given)}, "
            f"unexpected {sorted(given - template)}"
        )
    groups = optimizer.state_dict()["param_groups"]
    arrays = dict(arrays)
    steps = arrays.pop(SCHEDULE_STEPS, None)
    if _scheduled(groups) != (steps is not None):
        raise ValueError(
            "the optimizer follows a learning-rate schedule but the state holds no 'schedule.steps' (it was saved "
            "with a constant rate)" if steps is None else
            "the state was saved under a learning-rate schedule ('schedule.steps') but the optimizer's rate is "
            "constant: build it from the same OptimizerConfig"
        )
    if steps is not None:
        steps = np.asarray(steps)
        if steps.size != 1 or not np.issubdtype(steps.dtype, np.integer) or int(steps.reshape(())) < 0:
            raise ValueError(f"optimizer state 'schedule.steps' must hold one count >= 0, got {steps!r}")
        for group in groups:
            group["scheduled_steps"] = int(steps.reshape(()))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in arrays.items():
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit() or int(parts[1]) >= len(params):
            raise ValueError(f"optimizer state {name!r} is not 'state.<index < {len(params)}>.<key>'")
        index, key = int(parts[1]), parts[2]
        value = np.asarray(value)
        if key == "step":
            if value.size != 1:
                raise ValueError(f"optimizer state {name!r} must hold one step count, got shape {list(value.shape)}")
            tensor = torch.from_numpy(value.reshape(()).copy())
        else:
            param = params[index]
            expected = (str(param.dtype).removeprefix("torch."), list(param.shape))
            if (str(value.dtype), list(value.shape)) != expected:
                raise ValueError(
                    f"optimizer state {name!r} must be {expected[0]}{expected[1]}, got {value.dtype}{list(value.shape)}"
                )
            tensor = torch.from_numpy(value.copy())
        state.setdefault(index, {})[key] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return snapshot_optimizer(optimizer)
