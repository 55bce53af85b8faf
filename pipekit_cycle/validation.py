"""Input checks shared by the backends, so both raise the same exception with the same words.

Each check takes plain shapes and dtype names (``str(array.dtype)``), never a backend array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "as_observations",
    "check_batch_shapes",
    "check_float_dtype",
    "check_same_dtype",
    "dims_text",
    "require_target",
]

_FLOAT_NAMES = ("float32", "float64")


def dims_text(state_shape: Sequence[int] | None, n_time: int | None = None) -> str:
    """``"(B, T, N)"``-style description, with sizes filled in where known."""
    t = "T" if n_time is None else f"T={n_time}"
    if state_shape is None:
        return f"(B, {t}, N) or (B, {t}, H, W)"
    if len(state_shape) == 1:
        return f"(B, {t}, N={state_shape[0]})"
    return f"(B, {t}, H={state_shape[0]}, W={state_shape[1]})"


def check_float_dtype(name: str, dtype_name: str) -> None:
    """``TypeError`` unless ``dtype_name`` is float32 or float64."""
    short = dtype_name.removeprefix("torch.")
    if short not in _FLOAT_NAMES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {short}")


def as_observations(obs: object, target: object | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate ``make_batch``'s numpy inputs: ``obs`` ``(B, T, N)`` or ``(B, T, H, W)`` floats
    with NaN where unobserved, ``target`` (optional) of the same shape and finite."""
    obs_array = np.asarray(obs)
    check_float_dtype("obs", str(obs_array.dtype))
    if obs_array.ndim not in (3, 4):
        raise ValueError(f"obs must have shape {dims_text(None)}, got shape {obs_array.shape}")
    if np.isinf(obs_array).any():
        raise ValueError("obs must be finite where observed (NaN marks unobserved), found inf")
    target_array = None
    if target is not None:
        target_array = np.asarray(target)
        check_float_dtype("target", str(target_array.dtype))
        if target_array.shape != obs_array.shape:
            raise ValueError(f"target must have the shape of obs {obs_array.shape}, got {target_array.shape}")
        if not np.isfinite(target_array).all():
            raise ValueError("target must be finite everywhere")
    return obs_array, target_array


def check_batch_shapes(
    input_shape: Sequence[int],
    mask_shape: Sequence[int],
    target_shape: Sequence[int] | None,
    *,
    state_shape: Sequence[int],
    n_time: int,
) -> None:
    """``ValueError`` unless input, mask and target all have shape ``(B, n_time, *state_shape)``."""
    expected = dims_text(state_shape, n_time)
    input_shape = tuple(input_shape)
    if len(input_shape) != 2 + len(state_shape) or tuple(input_shape[1:]) != (n_time, *state_shape):
        raise ValueError(f"batch.input must have shape {expected}, got {input_shape}")
    if tuple(mask_shape) != input_shape:
        raise ValueError(f"batch.mask must have the shape of batch.input {input_shape}, got {tuple(mask_shape)}")
    if target_shape is not None and tuple(target_shape) != input_shape:
        raise ValueError(f"batch.target must have the shape of batch.input {input_shape}, got {tuple(target_shape)}")


def check_same_dtype(batch_dtype: str, model_dtype: str) -> None:
    """``TypeError`` when a batch's float dtype differs from the model's."""
    batch_short, model_short = batch_dtype.removeprefix("torch."), model_dtype.removeprefix("torch.")
    if batch_short != model_short:
        raise TypeError(
            f"batch dtype {batch_short} differs from the model's dtype {model_short}; "
            f"make the batch with make_batch(..., dtype={model_short!r})"
        )


def require_target(target: object | None, where: str) -> None:
    """``ValueError`` if a loss that needs the truth gets a batch without ``target``."""
    if target is None:
        raise ValueError(f"{where} needs batch.target (make_batch(obs, target=truth)); got target=None")
