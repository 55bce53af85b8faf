"""Optimizer state to and from flat numpy dicts, for checkpoints that resume bit-exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["export_optimizer_state", "import_optimizer_state"]


def export_optimizer_state(opt_state: dict[str, Any]) -> dict[str, np.ndarray]:
    """The per-parameter tensors of ``opt_state`` (an ``optimizer.state_dict()``), named
    ``state.<parameter index>.<key>`` (e.g. ``state.0.exp_avg``)."""
    arrays = {}
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            arrays[f"state.{index}.{key}"] = torch.as_tensor(value).detach().cpu().numpy().copy()
    return arrays


def import_optimizer_state(
    optimizer: torch.optim.Optimizer, opt_state: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Load ``arrays`` (from `export_optimizer_state`) into ``optimizer``; returns its new
    ``state_dict()``. ``opt_state`` gives the expected names, shapes and dtypes: a state that
    does not match raises ``ValueError`` before the optimizer is touched."""
    expected = export_optimizer_state(opt_state)
    if set(arrays) != set(expected) and expected:
        raise ValueError(
            f"optimizer state names do not match: missing {sorted(set(expected) - set(arrays))}, "
            f"unexpected {sorted(set(arrays) - set(expected))}"
        )
    for name, value in expected.items():
        got = np.asarray(arrays[name])
        if got.shape != value.shape or got.dtype != value.dtype:
            raise ValueError(f"optimizer state {name!r} must be {value.dtype}{list(value.shape)}, got {got.dtype}{list(got.shape)}")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in arrays.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = torch.from_numpy(np.array(value))
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return optimizer.state_dict()
