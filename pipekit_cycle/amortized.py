"""Backend-neutral pieces of the amortized posteriors: parameter schema, validation, and the
fixed coupling permutations (numpy only, hence identical in both backends)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .params import check_against_schema, validate_params
from .validation import check_batch_shapes, check_field_int, check_same_dtype

__all__ = [
    "KINDS",
    "amortized_config",
    "amortized_schema",
    "check_amortized_batch",
    "check_amortized_kind",
    "check_amortized_sizes",
    "coupling_permutation",
    "validate_amortized_params",
]

KINDS = ("regression", "flow")


def coupling_permutation(dim: int, layer: int) -> np.ndarray:
    """The fixed permutation of coupling layer ``layer`` over ``dim`` entries.

    Even layers draw ``numpy.random.default_rng(layer // 2).permutation(dim)``; odd layers
    reverse the previous layer's permutation, so the entries transformed by layer ``2j`` (its
    last ``dim - dim // 2`` positions) condition layer ``2j + 1`` and vice versa. Numpy only,
    hence identical in both backends; not a parameter (nothing to export).
    """
    perm = np.random.default_rng(layer // 2).permutation(dim)
    return perm[::-1].copy() if layer % 2 else perm


def check_amortized_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def check_amortized_sizes(hidden: int, n_layers: int, n_coupling: int) -> None:
    for name, value in (("hidden", hidden), ("n_layers", n_layers), ("n_coupling", n_coupling)):
        check_field_int("build_amortized", name, value)


def flat_dim(state_shape: Sequence[int], n_time: int) -> int:
    """``D = n_time * prod(state_shape)``: the entries of one flattened window."""
    return int(n_time) * int(np.prod(tuple(state_shape)))


def check_head_covers(head_flat_dim: int, state_shape: Sequence[int], n_time: int) -> None:
    """A head built for ``head_flat_dim`` entries must cover the window ``D`` exactly."""
    if head_flat_dim != flat_dim(state_shape, n_time):
        raise ValueError(
            f"head covers {head_flat_dim} entries, but n_time * prod(state_shape) = {flat_dim(state_shape, n_time)}"
        )


def amortized_config(
    kind: str, state_shape: Sequence[int], n_time: int, hidden: int, n_layers: int, n_coupling: int | None
) -> dict[str, Any]:
    """The keyword arguments of `amortized_schema` / ``build_amortized`` describing a model
    (``n_coupling=None``, a regression head's: the builder's default 4, which it ignores)."""
    return {
        "kind": kind,
        "state_shape": tuple(int(s) for s in state_shape),
        "n_time": int(n_time),
        "hidden": int(hidden),
        "n_layers": int(n_layers),
        "n_coupling": 4 if n_coupling is None else int(n_coupling),
    }


def check_amortized_batch(
    batch: Any, *, state_shape: Sequence[int], n_time: int, dtype: str, x_shape: Sequence[int] | None = None
) -> None:
    """A batch (duck-typed: ``input``, ``mask``, optional ``target``) fits a posterior over
    ``(T, *state_shape)`` windows of float ``dtype``; ``x_shape``, when given, is that of
    ``batch.input`` (a point to score)."""
    target = getattr(batch, "target", None)
    check_batch_shapes(
        tuple(batch.input.shape),
        tuple(batch.mask.shape),
        None if target is None else tuple(target.shape),
        state_shape=tuple(state_shape),
        n_time=n_time,
    )
    check_same_dtype(str(batch.input.dtype), dtype)
    if x_shape is not None and tuple(x_shape) != tuple(batch.input.shape):
        raise ValueError(f"x must have the shape of batch.input {tuple(batch.input.shape)}, got {tuple(x_shape)}")


def amortized_schema(
    kind: str,
    state_shape: Sequence[int],
    n_time: int,
    *,
    hidden: int = 64,
    n_layers: int = 2,
    n_coupling: int = 4,
) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names and shapes of ``build_amortized(kind, state_shape, n_time, ...)``.

    With ``D = n_time * prod(state_shape)``, ``H = hidden``, ``L = n_layers``, ``d = D // 2``::

        encoder.layers.{i}.{weight,bias}               i < L: (H, 2D if i == 0 else H), (H,)
        head.linear.{weight,bias}                      regression: (2D, H), (2D,)   [mean; log-variance]
        head.affine.{weight,bias}                      flow: (2D, H), (2D,)          [mean; log-variance]
        head.couplings.{k}.layers.{j}.{weight,bias}    flow, k < n_coupling, j <= L:
                                                       j == 0: (H, d + H); 0 < j < L: (H, H);
                                                       j == L: (2 (D - d), H)   [s_raw; t]

    ``n_coupling`` is ignored for ``kind="regression"``.
    """
    check_amortized_kind(kind)
    check_amortized_sizes(hidden, n_layers, n_coupling)
    flat = int(n_time) * int(np.prod(state_shape))
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, n_out: int, n_in: int) -> None:
        shapes[f"{name}.weight"] = (n_out, n_in)
        shapes[f"{name}.bias"] = (n_out,)

    for i in range(n_layers):
        linear(f"encoder.layers.{i}", hidden, 2 * flat if i == 0 else hidden)
    if kind == "regression":
        linear("head.linear", 2 * flat, hidden)
        return shapes
    linear("head.affine", 2 * flat, hidden)
    half = flat // 2
    for k in range(n_coupling):
        for j in range(n_layers):
            linear(f"head.couplings.{k}.layers.{j}", hidden, half + hidden if j == 0 else hidden)
        linear(f"head.couplings.{k}.layers.{n_layers}", 2 * (flat - half), hidden)
    return shapes


def validate_amortized_params(params: Mapping[str, np.ndarray], config: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check ``params`` against ``amortized_schema(**config)`` (names, shapes, one float dtype)."""
    arrays = validate_params(params)
    check_against_schema(arrays, amortized_schema(**config))
    return arrays
