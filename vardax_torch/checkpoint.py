"""Optimizer state to and from flat numpy dicts, for checkpoints that resume bit-exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .training import _snapshot

__all__ = ["export_optimizer_state", "import_optimizer_state"]


def export_optimizer_state(opt_state: dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-parameter tensors of ``opt_state`` (an ``optimizer.state_dict()``), named
    ``state.<parameter index>.<key>`` (e.g. ``state.0.exp_avg``). Scalars (Adam's ``step``)
    travel with shape ``(1,)``: safetensors has no 0-d tensors."""
    arrays = {}
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            arrays[f"state.{index}.{key}"] = np.atleast_1d(torch.as_tensor(value).detach().cpu().numpy()).copy()
    return arrays


def import_optimizer_state(
    optimizer: torch.optim.Optimizer, opt_state: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Load ``arrays`` (from `export_optimizer_state`) into ``optimizer``; returns a snapshot
    of its new state (as `train_step` returns one: passing it back costs no reload). Every
    entry is checked against the optimizer's parameters (index in range, per-parameter
    buffers of the parameter's shape and dtype) and, where ``opt_state`` already holds state,
    against its names, before the optimizer is touched."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    template = export_optimizer_state(opt_state)
    if template and set(arrays) != set(template):
        raise ValueError(
            f"optimizer state names do not match: missing {sorted(set(template) - set(arrays))}, "
            f"unexpected {sorted(set(arrays) - set(template))}"
        )
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
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return _snapshot(optimizer)
