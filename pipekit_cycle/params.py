"""Parameters crossing backends: canonical names, shapes, and safetensors files.

A model's parameters travel as a flat ``dict[str, numpy.ndarray]``. Names and shapes are
fixed by `schema`; every convolution weight is laid out ``(out_channels, in_channels,
*kernel)`` (cross-correlation, the convention of ``torch.nn.functional.conv*d`` and
``jax.lax.conv_general_dilated``), every bias is ``(out_channels,)``. With ``T = n_time``,
``P = prior_hidden_dim``, ``H = hidden_dim`` and ``k = (kernel_size,) * ndim``::

    prior.conv_in.{weight,bias}       (P, T, *k), (P,)
    prior.conv_hidden.{weight,bias}   (P, P, *k), (P,)
    prior.bilin_1.{weight,bias}       (P, P, *k), (P,)
    prior.bilin_21.{weight,bias}      (P, P, *k), (P,)
    prior.bilin_22.{weight,bias}      (P, P, *k), (P,)
    prior.conv_out.{weight,bias}      (T, 2P, *k), (T,)     input: concat(bilin_1, bilin_21 * bilin_22)
    grad_mod.gates.{weight,bias}      (4H, 2T + H, *k), (4H,)   input: concat(grad, state, hidden);
                                                                 output channels: gates i, f, g, o
    grad_mod.conv_out.{weight,bias}   (T, H, *k), (T,)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .config import FourDVarNetConfig

__all__ = ["CONFIG_METADATA_KEY", "load_params", "save_params", "schema", "validate_params"]

CONFIG_METADATA_KEY = "pipekit_cycle.config"
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def schema(config: FourDVarNetConfig) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names and shapes of the model ``config`` describes (see module doc).

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4)
    shapes = pk.schema(cfg)  # {canonical name: shape}, the same in both backends
    assert shapes["prior.conv_in.weight"] == (4, 5, 3)  # (prior_hidden_dim, n_time, kernel_size)
    assert shapes["grad_mod.conv_out.bias"] == (5,)
    ```
    """
    t, p, h = config.n_time, config.prior_hidden_dim, config.hidden_dim
    kernel = (config.kernel_size,) * config.ndim
    convs = {
        "prior.conv_in": (p, t),
        "prior.conv_hidden": (p, p),
        "prior.bilin_1": (p, p),
        "prior.bilin_21": (p, p),
        "prior.bilin_22": (p, p),
        "prior.conv_out": (t, 2 * p),
        # convlstm reads [g, x, h]; convlstm_normalized reads [g / r, h]
        "grad_mod.gates": (4 * h, (2 * t if config.grad_mod == "convlstm" else t) + h),
        "grad_mod.conv_out": (t, h),
    }
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (out_channels, in_channels) in convs.items():
        shapes[f"{name}.weight"] = (out_channels, in_channels, *kernel)
        shapes[f"{name}.bias"] = (out_channels,)
    return shapes


def validate_params(params: Mapping[str, np.ndarray], config: FourDVarNetConfig | None = None) -> dict[str, np.ndarray]:
    """Check ``params`` (names, shapes against ``schema(config)``, one float dtype) and return
    them as a plain dict of numpy arrays. Raises ``ValueError`` or ``TypeError`` naming the
    offending parameter."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name -> array, got {type(params).__name__}")
    arrays = {str(name): np.asarray(value) for name, value in params.items()}
    dtypes = {array.dtype for array in arrays.values()}
    for name, array in arrays.items():
        if array.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"parameter {name!r} must be float32 or float64, got {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"parameter {name!r} holds non-finite values")
    if len(dtypes) > 1:
        raise TypeError(f"parameters must share one dtype, got {sorted(str(d) for d in dtypes)}")
    if config is not None:
        check_against_schema(arrays, schema(config))
    return arrays


def check_against_schema(arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]]) -> None:
    """``ValueError`` unless ``arrays`` has exactly the names of ``expected``, each of its shape."""
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ValueError(f"parameter names do not match the schema: missing {missing}, unexpected {unexpected}")
    for name, shape in expected.items():
        if np.shape(arrays[name]) != tuple(shape):
            raise ValueError(f"parameter {name!r} must have shape {shape}, got {np.shape(arrays[name])}")


def save_params(
    path: str | os.PathLike[str], params: Mapping[str, np.ndarray], config: FourDVarNetConfig | None = None
) -> None:
    """Write ``params`` (and ``config`` as JSON metadata) to a safetensors file, atomically.

    The parameters are validated first; the file is written to a temporary file in the same
    directory and renamed over ``path``, so a failed write leaves any old file intact.

    Examples
    --------
    ```python
    import os
    import tempfile

    import numpy as np
    import pipekit_cycle as pk

    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4)
    params = {name: np.zeros(shape, np.float32) for name, shape in pk.schema(cfg).items()}
    path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    pk.save_params(path, params, cfg)  # the config travels as metadata
    loaded, config = pk.load_params(path)
    assert config == cfg and loaded.keys() == params.keys()
    assert all(np.array_equal(loaded[name], params[name]) for name in params)
    ```
    """
    from safetensors.numpy import save

    arrays = validate_params(params, config)
    metadata = {CONFIG_METADATA_KEY: config.to_json()} if config is not None else None
    payload = save({name: np.ascontiguousarray(a) for name, a in arrays.items()}, metadata=metadata)
    atomic_write(path, payload)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: readers see the old file or the new one, never a half-written one.

    The file gets the mode a plain ``open(path, "w")`` would give (``0o666`` less the umask):
    ``tempfile.mkstemp`` creates ``0o600``, which would hide results from the user's group.
    """
    target = Path(path)
    # The umask can only be read by setting it; set it straight back.
    umask = os.umask(0)
    os.umask(umask)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_params(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], FourDVarNetConfig | None]:
    """Read a file written by `save_params`; validate before returning ``(params, config)``.

    Examples
    --------
    ```python
    import os
    import tempfile

    import numpy as np
    import pipekit_cycle as pk

    cfg = pk.FourDVarNetConfig(state_shape=(16,), n_time=5, hidden_dim=4, prior_hidden_dim=4)
    params = {name: np.zeros(shape, np.float32) for name, shape in pk.schema(cfg).items()}
    path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
    pk.save_params(path, params, cfg)  # the config travels as metadata
    loaded, config = pk.load_params(path)
    assert config == cfg and loaded.keys() == params.keys()
    assert all(np.array_equal(loaded[name], params[name]) for name in params)
    ```
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            params = {name: handle.get_tensor(name) for name in handle.keys()}
    except FileNotFoundError:
        raise
    except Exception as error:  # safetensors raises its own error types for a corrupt header
        raise ValueError(f"{os.fspath(path)!r} is not a readable safetensors file: {error}") from error
    config = None
    if CONFIG_METADATA_KEY in metadata:
        try:
            config = FourDVarNetConfig.from_dict(json.loads(metadata[CONFIG_METADATA_KEY]))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{os.fspath(path)!r} carries an invalid config: {error}") from error
    return validate_params(params, config), config
