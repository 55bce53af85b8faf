r"""Spatial patches of gridded fields: cut a field into overlapping tiles and put it back.

A field is ``(..., n_lat, n_lon)`` (typically ``(time, lat, lon)``); a patch keeps every
leading axis and a ``size_y x size_x`` window of the last two. Along each spatial axis of
length :math:`N` the patch origins are :math:`0, s, 2s, \dots` (stride :math:`s`) below
:math:`N - p` (patch size :math:`p`), and the last patch sits flush with the border at
:math:`N - p`, so with :math:`s \le p` the patches always cover the field (a larger stride
leaves gaps, which `stitch` fills with NaN).

`stitch` averages overlapping patches with a weight :math:`w`,

.. math::
    f(i, j) = \frac{\sum_n w_n(i, j)\, P_n(i - a_n, j - b_n)}{\sum_n w_n(i, j)},

summed over the patches :math:`n` (origin :math:`(a_n, b_n)`) that contain :math:`(i, j)`.
``"uniform"``: :math:`w = 1`. ``"triangular"``: the separable tent
:math:`w(u, v) = t_{p_y}(u)\, t_{p_x}(v)` with :math:`t_p(u) = 1 + \min(u, p - 1 - u)`, largest
in the patch centre and positive everywhere, so a border pixel that one patch alone covers is
still recovered. Both are exact where the patches agree: ``stitch(*extract(f, size, stride),
f.shape)`` returns ``f``. Points no patch covers are NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["extract", "patch_origins", "stitch", "tent"]

Weight = Literal["triangular", "uniform"]


def _pair(name: str, value: int | tuple[int, int], minimum: int = 1) -> tuple[int, int]:
    values = value if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(values) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(values[0]), int(values[1])


def _axis_origins(length: int, size: int, stride: int) -> np.ndarray:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return np.asarray(starts, dtype=np.int64)


def patch_origins(
    spatial_shape: tuple[int, int], size: int | tuple[int, int], stride: int | tuple[int, int]
) -> np.ndarray:
    """The ``(n, 2)`` ``(row, column)`` origins of the patches of `extract`, row-major.

    Examples
    --------
    ```python
    from pipekit_cycle.ssh import patch_origins

    origins = patch_origins((20, 20), 8, 6)  # 0, 6, 12 along each axis: the last patch ends at 20
    assert origins.tolist()[:4] == [[0, 0], [0, 6], [0, 12], [6, 0]] and len(origins) == 9
    ```
    """
    ny, nx = _pair("spatial_shape", tuple(spatial_shape))
    sy, sx = _pair("size", size)
    ty, tx = _pair("stride", stride)
    if sy > ny or sx > nx:
        raise ValueError(f"size must fit in the field's spatial shape {(ny, nx)}, got {(sy, sx)}")
    rows, cols = _axis_origins(ny, sy, ty), _axis_origins(nx, sx, tx)
    return np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)


def extract(
    field: np.ndarray, size: int | tuple[int, int], stride: int | tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Patches ``(n, ..., size_y, size_x)`` of ``field`` ``(..., n_lat, n_lon)`` and their
    ``(n, 2)`` origins; ``size`` and ``stride`` are ints or ``(y, x)`` pairs.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import extract

    field = np.arange(5 * 16 * 16, dtype=float).reshape(5, 16, 16)  # (time, lat, lon)
    patches, origins = extract(field, 8, 4)
    assert patches.shape == (9, 5, 8, 8) and origins.shape == (9, 2)
    r, c = origins[4]
    assert np.array_equal(patches[4], field[:, r : r + 8, c : c + 8])
    ```
    """
    field = np.asarray(field)
    if field.ndim < 2:
        raise ValueError(f"field must have at least 2 dimensions (..., lat, lon), got shape {field.shape}")
    origins = patch_origins(field.shape[-2:], size, stride)
    sy, sx = _pair("size", size)
    patches = np.stack([field[..., r : r + sy, c : c + sx] for r, c in origins])
    return patches, origins


def tent(size: int | tuple[int, int]) -> np.ndarray:
    """The ``(size_y, size_x)`` triangular weight ``(1 + min(u, p_y-1-u)) (1 + min(v, p_x-1-v))``.

    Examples
    --------
    ```python
    from pipekit_cycle.ssh import tent

    weight = tent(4)
    assert weight.tolist()[0] == [1.0, 2.0, 2.0, 1.0] and weight[1, 1] == 4.0  # highest inside
    ```
    """
    sy, sx = _pair("size", size)
    ramp_y = 1.0 + np.minimum(np.arange(sy), np.arange(sy)[::-1])
    ramp_x = 1.0 + np.minimum(np.arange(sx), np.arange(sx)[::-1])
    return np.outer(ramp_y, ramp_x)


def stitch(
    patches: np.ndarray, origins: np.ndarray, shape: tuple[int, ...], weight: Weight = "triangular"
) -> np.ndarray:
    """Reassemble a field of ``shape`` from ``patches`` ``(n, ..., size_y, size_x)`` placed at
    ``origins`` ``(n, 2)``: the ``weight``-ed mean where patches overlap, NaN where none lies.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import extract, stitch

    field = np.random.default_rng(0).normal(size=(3, 20, 20))
    patches, origins = extract(field, 8, 6)  # overlapping patches
    for weight in ("triangular", "uniform"):
        assert np.allclose(stitch(patches, origins, field.shape, weight=weight), field)  # exact recovery
    ```
    """
    patches = np.asarray(patches)
    origins = np.asarray(origins)
    shape = tuple(int(s) for s in shape)
    if weight not in ("triangular", "uniform"):
        raise ValueError(f"weight must be 'triangular' or 'uniform', got {weight!r}")
    if len(shape) < 2:
        raise ValueError(f"shape must have at least 2 dimensions (..., lat, lon), got {shape}")
    if patches.ndim != len(shape) + 1 or patches.shape[1:-2] != shape[:-2]:
        raise ValueError(
            f"patches must be (n, *{shape[:-2]}, size_y, size_x) for a field of shape {shape}, got {patches.shape}"
        )
    if origins.shape != (patches.shape[0], 2) or not np.issubdtype(origins.dtype, np.integer):
        raise ValueError(f"origins must be ints shaped ({patches.shape[0]}, 2), got {origins.dtype} {origins.shape}")
    sy, sx = patches.shape[-2:]
    ny, nx = shape[-2:]
    if (origins < 0).any() or (origins[:, 0] + sy > ny).any() or (origins[:, 1] + sx > nx).any():
        raise ValueError(f"every patch of size {(sy, sx)} must lie inside the spatial shape {(ny, nx)}")
    w = tent((sy, sx)) if weight == "triangular" else np.ones((sy, sx))
    total = np.zeros(shape, dtype=np.result_type(patches.dtype, np.float64))
    norm = np.zeros((ny, nx))
    for patch, (r, c) in zip(patches, origins, strict=True):
        total[..., r : r + sy, c : c + sx] += w * patch
        norm[r : r + sy, c : c + sx] += w
    covered = norm > 0
    return np.where(covered, total / np.where(covered, norm, 1.0), np.nan)
