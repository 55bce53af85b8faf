"""Input checks shared by the backends, so both raise the same exception with the same words
(the learned inner solve and the dynamics layer).

Each check takes plain shapes and dtype names (``str(array.dtype)``), never a backend array.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "DYNAMICS_MESSAGES",
    "INTEGRATORS",
    "SYSTEMS",
    "as_observations",
    "check_batch_divisible",
    "check_batch_grid",
    "check_batch_shapes",
    "check_count",
    "check_field_float",
    "check_field_int",
    "check_float_dtype",
    "check_int",
    "check_poolable",
    "check_positive",
    "check_same_device",
    "check_same_dtype",
    "check_state_shape",
    "check_tolerance",
    "dims_text",
    "dynamics_message",
    "float_dtype_name",
    "grid_allows",
    "grid_rule",
    "require_target",
    "smallest_grid",
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


def float_dtype_name(dtype: object, default: str) -> str:
    """``"float32"`` or ``"float64"`` for ``dtype``: ``None`` (then ``default``, the framework's
    own switch), a name (``"float64"``, ``"torch.float64"``), a numpy/JAX dtype or scalar type,
    or a torch dtype. Anything else is a ``TypeError`` naming what was given: the one rule of
    both backends' ``dtype=`` arguments."""
    if dtype is None or isinstance(dtype, str) or type(dtype).__module__.startswith("torch"):
        name = str(default if dtype is None else dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name  # type: ignore[call-overload]
        except TypeError:
            name = repr(dtype)
    if name not in _FLOAT_NAMES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}")
    return name


def as_observations(obs: object, target: object | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate ``make_batch``'s numpy inputs: ``obs`` ``(B, T, N)`` or ``(B, T, H, W)`` floats
    with NaN where unobserved, ``target`` (optional) of the same shape, NaN where there is no
    target (land: `reconstruction_loss` leaves those points out), never inf, not all NaN."""
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
        if np.isinf(target_array).any():
            raise ValueError("target must be finite where known (NaN marks no target, e.g. land), found inf")
        if target_array.size and np.isnan(target_array).all():
            raise ValueError("target is NaN everywhere: no point to train on (NaN marks no target, e.g. land)")
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


# --- the grid rule of the convolutional models (any grid the architecture allows) ----------


def _factors(downsample: Sequence[int]) -> tuple[int, int]:
    """``(multiple, coarsest)``: every size must divide by each factor, so by their lcm; the
    coarsest grid is the one pooled by the largest."""
    factors = [int(d) for d in downsample if int(d) > 1]
    return (math.lcm(*factors), max(factors)) if factors else (1, 1)


def grid_rule(ndim: int, kernel_size: int, downsample: Sequence[int] = ()) -> str:
    """The words of the rule a spatial grid must satisfy for a convolutional model (its prior
    and modulator): every size at least the kernel on the coarsest grid it is pooled to, and
    divisible by every down-sampling factor (``downsample``: the config's ``prior_downsample``
    and ``grad_mod_downsample``; 1 is none). Both backends raise these words.

    Examples
    --------
    ```python
    from pipekit_cycle.validation import grid_rule

    assert grid_rule(1, 3) == "N at least 3 (the kernel)"
    assert grid_rule(2, 3, (2, 1)) == (
        "H and W multiples of 2 (the down-sampling) and at least 6 (the kernel 3 on the grid pooled by 2)"
    )
    ```
    """
    axes = "N" if ndim == 1 else "H and W"
    multiple, coarsest = _factors(downsample)
    if coarsest == 1:
        return f"{axes} at least {kernel_size} (the kernel)"
    return (f"{axes} multiples of {multiple} (the down-sampling) and at least {kernel_size * coarsest} "
            f"(the kernel {kernel_size} on the grid pooled by {coarsest})")


def grid_allows(spatial_shape: Sequence[int], kernel_size: int, downsample: Sequence[int] = ()) -> bool:
    """Whether the grid ``spatial_shape`` (``(N,)`` or ``(H, W)``) satisfies `grid_rule`.

    Examples
    --------
    ```python
    from pipekit_cycle.validation import grid_allows

    assert grid_allows((24, 32), 3, (2,)) and not grid_allows((24, 33), 3, (2,))  # 33 is odd
    assert not grid_allows((4,), 5)  # smaller than the kernel
    ```
    """
    multiple, coarsest = _factors(downsample)
    return all(int(n) % multiple == 0 and int(n) >= kernel_size * coarsest for n in spatial_shape)


def smallest_grid(ndim: int, kernel_size: int, downsample: Sequence[int] = ()) -> tuple[int, ...]:
    """The smallest grid `grid_rule` allows, ``(n,)`` or ``(n, n)``: where a training size is
    unknown (an ocean4dvarnet ``GradSolver`` records none), the config's placeholder.

    Examples
    --------
    ```python
    from pipekit_cycle.validation import grid_allows, smallest_grid

    assert smallest_grid(2, 3, (2, 1)) == (6, 6) and grid_allows((6, 6), 3, (2, 1))
    ```
    """
    multiple, coarsest = _factors(downsample)
    size = -(-kernel_size * coarsest // multiple) * multiple
    return (size,) * ndim


def check_poolable(shape: Sequence[int], factor: int) -> None:
    """``ValueError`` unless the spatial sizes of ``(B, C, H, W)`` divide by the pooling
    ``factor`` (a remainder would be dropped, and up-sampling would not give the grid back).

    Examples
    --------
    ```python
    from pipekit_cycle.validation import check_poolable

    check_poolable((1, 3, 8, 6), 2)
    try:
        check_poolable((1, 3, 8, 7), 2)
    except ValueError as error:
        assert str(error) == "average pooling by 2 needs H and W multiples of 2, got shape (1, 3, 8, 7)"
    else:
        raise AssertionError("an odd width was pooled")
    ```
    """
    if any(int(n) % factor for n in tuple(shape)[2:]):
        raise ValueError(f"average pooling by {factor} needs H and W multiples of {factor}, got shape {tuple(shape)}")


def check_batch_grid(
    input_shape: Sequence[int],
    mask_shape: Sequence[int],
    target_shape: Sequence[int] | None,
    *,
    ndim: int,
    n_time: int,
    kernel_size: int,
    downsample: Sequence[int] = (),
    name: str = "batch.input",
) -> None:
    """``ValueError`` unless input, mask and target all have one shape ``(B, n_time, *S)``, ``S``
    a grid `grid_rule` allows: the gate of a convolutional model, whose parameters fix the time
    axis (the channels) but not the grid. ``mask_shape`` and ``target_shape`` may be ``None``
    (a prior or a modulator called alone checks its one input, named ``name``).

    Examples
    --------
    ```python
    from pipekit_cycle.validation import check_batch_grid

    check_batch_grid((1, 5, 24, 32), (1, 5, 24, 32), None, ndim=2, n_time=5, kernel_size=3, downsample=(2,))
    try:
        check_batch_grid((1, 5, 24, 33), (1, 5, 24, 33), None, ndim=2, n_time=5, kernel_size=3, downsample=(2,))
    except ValueError as error:
        assert str(error) == (
            "batch.input must have shape (B, T=5, H, W) with H and W multiples of 2 (the down-sampling) and at "
            "least 6 (the kernel 3 on the grid pooled by 2), got (1, 5, 24, 33)"
        )
    else:
        raise AssertionError("an odd width was accepted with 2x down-sampling")
    ```
    """
    input_shape = tuple(int(n) for n in input_shape)
    dims = f"(B, T={n_time}, N)" if ndim == 1 else f"(B, T={n_time}, H, W)"
    if (len(input_shape) != 2 + ndim or input_shape[1] != n_time
            or not grid_allows(input_shape[2:], kernel_size, downsample)):
        raise ValueError(f"{name} must have shape {dims} with {grid_rule(ndim, kernel_size, downsample)}, "
                         f"got {input_shape}")
    if mask_shape is not None and tuple(mask_shape) != input_shape:
        raise ValueError(f"batch.mask must have the shape of batch.input {input_shape}, got {tuple(mask_shape)}")
    if target_shape is not None and tuple(target_shape) != input_shape:
        raise ValueError(f"batch.target must have the shape of batch.input {input_shape}, got {tuple(target_shape)}")


# How to build a model in the batch's precision instead, in words true in both backends (the
# message is shared, so a user of either reads the same; JAX's x64 switch is the one trap).
_BUILD_IN = {"float64": "float64 (in JAX, float64 needs jax_enable_x64 on)", "float32": "float32"}


def check_same_dtype(batch_dtype: str, model_dtype: str) -> None:
    """``TypeError`` when a batch's float dtype differs from the model's.

    Both backends raise it for the same input whatever the frameworks' precision switches: a
    batch that differs from its model, and a batch JAX cannot even make (float64 with
    ``jax_enable_x64`` off, where every JAX model is float32), which `vardax_jax.make_batch`
    reports with these words before converting anything.
    """
    batch_short, model_short = batch_dtype.removeprefix("torch."), model_dtype.removeprefix("torch.")
    if batch_short != model_short:
        alternative = f", or build the model in {_BUILD_IN[batch_short]}" if batch_short in _BUILD_IN else ""
        raise TypeError(
            f"batch dtype {batch_short} differs from the model's dtype {model_short}; "
            f"make the batch with make_batch(..., dtype={model_short!r}){alternative}"
        )


def check_same_device(name: str, batch_device: str, model_device: str) -> None:
    """``ValueError`` when the batch tensor ``name`` (``"input"``, ``"mask"``, ``"target"``)
    lives on another device than the model's parameters (device names as ``str(device)``:
    ``"cpu"``, ``"cuda:0"``, ``"meta"``)."""
    if batch_device != model_device:
        raise ValueError(
            f"batch.{name} is on {batch_device} but the model is on {model_device}; "
            f"pass device={model_device!r} to make_batch"
        )


def check_batch_divisible(batch_size: int, n_shards: int) -> None:
    """``ValueError`` unless the batch axis splits into ``n_shards`` equal shards (a
    data-parallel step averages per-shard means, which equals the whole-batch mean only for
    equal shards)."""
    if n_shards < 1 or batch_size % n_shards:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {n_shards} devices its batch axis is split "
            f"across; use a batch size that is a multiple of {n_shards}"
        )


def require_target(target: object | None, where: str) -> None:
    """``ValueError`` if a loss that needs the truth gets a batch without ``target``."""
    if target is None:
        raise ValueError(f"{where} needs batch.target (make_batch(obs, target=truth)); got target=None")


# --- the dynamics layer (vardax_*/dynamics.py): every user-facing error, word for word -------

# The ODE integrators of the dynamics layer (not the inner solvers: pipekit_cycle.adjoints.SOLVERS).
INTEGRATORS = ("rk4", "dopri5")
SYSTEMS = ("lorenz63", "lorenz96", "linear")
DYNAMICS_MESSAGES = {
    "state_shape": "{name} must have shape {expected} with the state dimension N={n} last, got shape {shape}",
    "dt": "dt must be a finite number > 0, got {dt!r}",
    "n_steps": "n_steps must be an int >= 0, got {value!r}",
    "substeps": "substeps must be an int >= 1, got {value!r}",
    "max_steps": "max_steps must be an int >= 1, got {value!r}",
    "solver": "solver must be one of 'rk4', 'dopri5', got {value!r}",
    "tolerance": "{name} must be a finite number > 0, got {value!r}",
    "system": "system must be one of 'lorenz63', 'lorenz96', 'linear', got {value!r}",
    "parameters": "parameters for {system!r} must be a subset of {allowed}, got {given}",
    "matrix": "a linear vector field needs a square matrix (N, N), got shape {shape}",
    "background_cov": (
        "background_cov must be variances (N={n},) > 0 or a symmetric positive definite (N, N) matrix, got {what}"
    ),
    "obs_var": "obs_var must be a variance > 0, scalar or (N={n},), got {what}",
    "obs_time": "obs must have n_steps + 1 = {expected} times on axis -2, got {got}",
}


def dynamics_message(key: str, **fields: Any) -> str:
    """The message ``DYNAMICS_MESSAGES[key]`` filled with ``fields``."""
    return DYNAMICS_MESSAGES[key].format(**fields)


def check_field_int(owner: str, field: str, value: object, *, allow_none: bool = False) -> None:
    """``ValueError`` ``"{owner}.{field} must be an int >= 1[ or None], got ..."`` unless
    ``value`` is such an int (``bool`` is not); the one rule of every count in specs and configs."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        allowed = "an int >= 1" + (" or None" if allow_none else "")
        raise ValueError(f"{owner}.{field} must be {allowed}, got {value!r}")


def check_field_float(owner: str, field: str, value: object, *, positive: bool = False,
                      allow_none: bool = False) -> None:
    """``ValueError`` ``"{owner}.{field} must be a finite float > 0 (or >= 0)[ or None], got ..."``
    unless ``value`` is such a number; the one rule of every tolerance and weight in specs and
    configs (a tolerance of 0 is allowed: it disables that part of a stopping test)."""
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):  # type: ignore[operator]
        allowed = f"a finite float {'> 0' if positive else '>= 0'}" + (" or None" if allow_none else "")
        raise ValueError(f"{owner}.{field} must be {allowed}, got {value!r}")


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float if it is a finite number > 0, else ``ValueError`` naming ``name``.

    Examples
    --------
    ```python
    from pipekit_cycle.validation import check_positive

    assert check_positive("space_scale", 70) == 70.0
    try:
        check_positive("space_scale", float("inf"))
    except ValueError as error:
        assert str(error) == "space_scale must be a finite number > 0, got inf"
    else:
        raise AssertionError("an infinite scale was accepted")
    ```
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not ok or not math.isfinite(value) or not value > 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum``, else ``ValueError`` naming ``name``.

    Examples
    --------
    ```python
    from pipekit_cycle.validation import check_int

    assert check_int("n_days", 3, 1) == 3
    try:
        check_int("n_days", 2.5, 1)
    except ValueError as error:
        assert str(error) == "n_days must be an integer >= 1, got 2.5"
    else:
        raise AssertionError("a fractional day count was accepted")
    ```
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_count(key: str, value: Any, minimum: int) -> int:
    """``value`` as an int if it is an int >= ``minimum``, else ``ValueError`` (message ``key``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(dynamics_message(key, value=value))
    return int(value)


def check_tolerance(name: str, value: Any) -> float:
    """``value`` as a float if it is finite and > 0, else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(dynamics_message("tolerance", name=name, value=value))
    return float(value)


def check_state_shape(name: str, shape: tuple[int, ...], n: int, expected: str = "(..., N)") -> None:
    """``ValueError`` unless ``shape`` ends with the state dimension ``n``."""
    if len(shape) < 1 or shape[-1] != n:
        raise ValueError(dynamics_message("state_shape", name=name, expected=expected, n=n, shape=tuple(shape)))
