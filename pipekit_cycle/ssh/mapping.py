r"""The SSH mapping job on gridded fields: space-time samples, the stitched reconstruction, scores.

A sample is a window of :math:`T` consecutive days of a :math:`p_y \times p_x` spatial patch
(`pipekit_cycle.ssh.patches`): ``(T, p_y, p_x)``, the time axis being the channel axis of the
4DVarNet's convolutions. A period of :math:`N_t` days has the windows starting at
:math:`0, 1, \dots, N_t - T` (`window_starts`) and each window the patches of
`pipekit_cycle.ssh.patch_origins`; `samples` cuts them out.

`reconstruct` maps a whole period from its observations: every window and every patch is
passed through ``predict``, each window is stitched in space with the triangular weight of
`pipekit_cycle.ssh.stitch`, and the windows are blended in time with the tent
:math:`\tau(u) = 1 + \min(u, T - 1 - u)` over the window's days :math:`u`,

.. math::
    \hat\eta(t) = \frac{\sum_w \tau(t - t_w)\, S_w(t - t_w)}{\sum_w \tau(t - t_w)},

summed over the windows :math:`w` (first day :math:`t_w`) that contain :math:`t`, with
:math:`S_w` the spatially stitched window. Every day and every point is covered, and a
``predict`` that returns its input unchanged gives back the field (exactly, in float64):
the weights cancel.

`score` is the data challenge's report of one estimate: RMSE, :math:`\mu`, :math:`\sigma`
(`pipekit_cycle.ssh.rmse_score`) and :math:`\lambda_x`, :math:`\lambda_t`
(`pipekit_cycle.ssh.psd_score`), the spectra seeing land as zero (`zero_land`).

The learned solver maps a period patch by patch (`learned_map`) or, being fully
convolutional, the whole grid one window at a time (`whole_domain_map`).

"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np

from .baselines import optimal_interpolation
from .gridded import GriddedData
from .metrics import psd_score, rmse, rmse_score
from .patches import patch_origins, stitch

__all__ = [
    "Standardiser",
    "learned_map",
    "oi_background",
    "reconstruct",
    "samples",
    "score",
    "time_tent",
    "whole_domain_map",
    "window_starts",
    "zero_land",
]


def window_starts(n_days: int, length: int, stride: int = 1) -> np.ndarray:
    """First days of the windows of ``length`` days in ``n_days``: ``0, stride, ...`` up to
    ``n_days - length`` (always included, so the windows cover every day).

    Examples
    --------
    ```python
    from pipekit_cycle import ssh

    assert ssh.window_starts(10, 4).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert ssh.window_starts(10, 4, stride=4).tolist() == [0, 4, 6]  # the last window ends on day 10
    ```
    """
    if length > n_days:
        raise ValueError(f"a window of {length} days does not fit in {n_days} days")
    starts = list(range(0, n_days - length + 1, stride))
    if starts[-1] != n_days - length:
        starts.append(n_days - length)
    return np.asarray(starts, dtype=np.int64)


def time_tent(length: int) -> np.ndarray:
    """The ``(length,)`` weight ``1 + min(u, length - 1 - u)`` of a window's days.

    Examples
    --------
    ```python
    from pipekit_cycle import ssh

    assert ssh.time_tent(5).tolist() == [1.0, 2.0, 3.0, 2.0, 1.0]  # a window's middle day counts most
    ```
    """
    days = np.arange(length)
    return 1.0 + np.minimum(days, days[::-1])


def samples(
    field: np.ndarray, starts: np.ndarray, origins: np.ndarray, length: int, size: int
) -> np.ndarray:
    """``(len(starts), ..., length, size, size)`` of ``field`` ``(time, lat, lon)``: entry
    ``[i]`` holds the days ``starts[i]:starts[i] + length`` of the patch at ``origins[i]``.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    field = np.arange(6 * 8 * 8, dtype=float).reshape(6, 8, 8)
    cut = ssh.samples(field, np.array([0, 2]), np.array([[0, 0], [4, 4]]), length=3, size=4)
    assert cut.shape == (2, 3, 4, 4) and np.array_equal(cut[1], field[2:5, 4:8, 4:8])
    ```
    """
    return np.stack([field[s : s + length, r : r + size, c : c + size] for s, (r, c) in zip(starts, origins,
                                                                                            strict=True)])


def reconstruct(
    predict: Callable[[np.ndarray], np.ndarray],
    obs: np.ndarray,
    *,
    length: int,
    size: int,
    stride: int,
    batch_size: int,
    progress: Callable[[int], object] | None = None,
) -> np.ndarray:
    """Map the period ``obs`` ``(time, lat, lon)`` (NaN where unobserved): ``predict`` takes
    ``(B, length, size, size)`` samples (``B <= batch_size``) and returns estimates of the same
    shape; see the module docstring for the blending. ``progress(n)`` is called after each
    batch with the number of samples done.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    truth = np.random.default_rng(0).normal(size=(6, 16, 16))
    mapped = ssh.reconstruct(lambda x: x, truth, length=4, size=8, stride=6, batch_size=5)
    assert np.allclose(mapped, truth)  # a predict that returns its input gives the field back
    ```
    """
    obs = np.asarray(obs)
    nt, ny, nx = obs.shape
    starts = window_starts(nt, length)
    origins = patch_origins((ny, nx), size, stride)
    tau = time_tent(length)[:, None, None]
    total = np.zeros(obs.shape)
    norm = np.zeros(nt)
    pending: dict[int, list[np.ndarray]] = {}

    def flush(w: int) -> None:
        window = stitch(np.stack(pending.pop(w)), origins, (length, ny, nx))
        total[starts[w] : starts[w] + length] += tau * window
        norm[starts[w] : starts[w] + length] += tau[:, 0, 0]

    # Every (window, patch) pair, window-major: at most two windows are pending at a time.
    window_of = np.repeat(np.arange(len(starts)), len(origins))
    origin_of = np.tile(origins, (len(starts), 1))
    for first in range(0, len(window_of), batch_size):
        chunk = slice(first, first + batch_size)
        inputs = samples(obs, starts[window_of[chunk]], origin_of[chunk], length, size)
        outputs = np.asarray(predict(inputs))
        if outputs.shape != inputs.shape:
            raise ValueError(f"predict must return an array shaped like its input {inputs.shape}, got {outputs.shape}")
        for w, output in zip(window_of[chunk], outputs, strict=True):
            pending.setdefault(int(w), []).append(output)
            if len(pending[int(w)]) == len(origins):
                flush(int(w))
        if progress is not None:
            progress(len(inputs))
    return total / norm[:, None, None]


def score(estimate: np.ndarray, truth: np.ndarray, *, dx_deg: float, dt_days: float = 1.0) -> dict[str, float | None]:
    """``rmse`` (units of the fields), ``mu``, ``sigma``, ``lambda_x_deg`` and
    ``lambda_t_days`` of ``estimate`` against ``truth`` (``(time, lat, lon)``); a scale that is
    resolved nowhere (infinite) or undefined (NaN, see `psd_score`) is ``None``, so the result is
    plain JSON. Land, NaN in ``truth`` (``estimate`` may be NaN there too), is left out of
    ``rmse``, ``mu`` and ``sigma``; the spectra, which need whole fields, see it as zero in both
    (no error there), the challenge's box having no land.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    truth = np.random.default_rng(0).normal(size=(16, 4, 32))
    perfect = ssh.score(truth, truth, dx_deg=0.1)
    assert perfect["rmse"] == 0.0 and perfect["mu"] == 1.0
    assert ssh.score(np.zeros_like(truth), truth, dx_deg=0.1)["lambda_x_deg"] is None  # nothing resolved
    coast = truth.copy()
    coast[:, :, :4] = np.nan  # land: left out
    assert np.isclose(ssh.score(np.where(np.isnan(coast), np.nan, truth + 0.1), coast, dx_deg=0.1)["rmse"], 0.1)
    ```
    """
    mu, sigma = rmse_score(estimate, truth)
    ocean = np.isfinite(truth)
    lambda_x, lambda_t = psd_score(zero_land(estimate, ~ocean), zero_land(truth, ~ocean), dx=dx_deg, dt=dt_days)
    return {
        "rmse": rmse(estimate[ocean], truth[ocean]),
        "mu": mu,
        "sigma": sigma,
        "lambda_x_deg": lambda_x if math.isfinite(lambda_x) else None,
        "lambda_t_days": lambda_t if math.isfinite(lambda_t) else None,
    }


def zero_land(field: np.ndarray, land: np.ndarray) -> np.ndarray:
    """``field`` with 0 on ``land`` (bool, broadcast against it: ``(lat, lon)`` for a
    ``(time, lat, lon)`` field): the whole field a spectrum needs, land counted as a flat sea
    surface, so that a map and its reference filled alike show no error there (`score`).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    field = np.array([[[1.0, np.nan], [3.0, 4.0]]])  # (time, lat, lon): NaN on land
    land = np.array([[False, True], [False, False]])
    assert ssh.zero_land(field, land).tolist() == [[[1.0, 0.0], [3.0, 4.0]]]
    ```
    """
    return np.where(land, 0.0, field)


# --- the learned solver's preprocessing ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Standardiser:
    r"""``(x - mean) / std`` and its inverse, with the statistics of a training field.

    `fit` reduces over ``axis`` (``None``: every axis, one mean and one std, as the SSH job
    uses; ``Lorenz`` windows ``(W, T, N)`` reduce over ``(0, 1)``: one pair per component).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    field = np.random.default_rng(0).normal(3.0, 2.0, size=(10, 8, 8))
    scale = ssh.Standardiser.fit(field)
    assert abs(scale.forward(field).mean()) < 1e-12 and abs(scale.forward(field).std() - 1) < 1e-12
    assert np.allclose(scale.inverse(scale.forward(field)), field)
    ```
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, field: np.ndarray, *, axis: int | tuple[int, ...] | None = None) -> Standardiser:
        """The statistics of ``field`` over ``axis``, NaN points (land) left out; ``ValueError``
        if the field is constant there or NaN everywhere."""
        field = np.asarray(field, dtype=np.float64)
        if np.isnan(field).all():
            raise ValueError("the training field is NaN everywhere (all land?): there is nothing to standardise by")
        with warnings.catch_warnings():  # a component NaN everywhere: its std is NaN, refused below
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, std = np.nanmean(field, axis=axis), np.nanstd(field, axis=axis)
        if not np.all(std > 0):
            raise ValueError("the training field is constant: there is nothing to standardise by")
        return cls(mean=mean, std=std)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std``."""
        return (x - self.mean) / self.std

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """``x * std + mean``."""
        return x * self.std + self.mean


def oi_background(period: GriddedData, *, space_km: float, time_days: float, noise_std: float) -> np.ndarray:
    """The optimal interpolation of ``period``'s observations (`pipekit_cycle.ssh.optimal_interpolation`,
    Gaussian scales ``space_km`` and ``time_days``, noise variance ``noise_std**2``): the large-scale
    first guess the learned solver maps the departures from (`learned_map`).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    data = ssh.simulated(n_days=8, grid=32, seed=0)
    background = ssh.oi_background(data, space_km=70.0, time_days=7.0, noise_std=0.03)
    assert background.shape == data.truth.shape and np.isfinite(background).all()
    ```
    """
    return optimal_interpolation(period.obs, space_scale=space_km, time_scale=time_days, noise_var=noise_std**2,
                                 lat=period.lat, lon=period.lon, time=period.time)


def learned_map(
    predict: Callable[[np.ndarray], np.ndarray],
    obs: np.ndarray,
    *,
    background: np.ndarray,
    scale: Standardiser,
    length: int,
    size: int,
    stride: int,
    batch_size: int,
    progress: Callable[[int], object] | None = None,
) -> np.ndarray:
    r"""The learned solver's map of a period: the background plus the stitched map
    (`reconstruct`) of the observed departures, the solver seeing them standardised,

    .. math::
        \hat\eta = \eta_b + s^{-1}\big(\Psi_\theta(s(y - \eta_b))\big),

    with :math:`s` the `Standardiser` of the training departures and :math:`\eta_b` the
    background (`oi_background`, or zeros). ``predict`` maps standardised samples
    ``(B, length, size, size)`` to the solver's standardised estimates (a backend's
    ``to_numpy(predict(model, make_batch(x)))``). This is the map ``train --system ssh`` writes.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh

    data = ssh.simulated(n_days=6, grid=32, seed=0)
    background = np.zeros_like(data.truth)
    scale = ssh.Standardiser.fit(data.truth)
    # A "solver" that returns the standardised truth maps the truth back exactly.
    truth_of = lambda x: scale.forward(ssh.samples(data.truth, [0], [[0, 0]], 6, 32))
    mapped = ssh.learned_map(truth_of, data.obs, background=background, scale=scale, length=6, size=32,
                             stride=32, batch_size=1)
    assert np.allclose(mapped, data.truth)
    ```
    """
    def standardised(departures: np.ndarray) -> np.ndarray:
        return scale.inverse(np.asarray(predict(scale.forward(departures)), dtype=np.float64))

    return background + reconstruct(standardised, obs - background, length=length, size=size, stride=stride,
                                    batch_size=batch_size, progress=progress)


def whole_domain_map(
    predict: Callable[[np.ndarray], np.ndarray],
    obs: np.ndarray,
    *,
    background: np.ndarray,
    scale: Standardiser,
    length: int,
    batch_size: int,
    progress: Callable[[int], object] | None = None,
) -> np.ndarray:
    r"""`learned_map` with one patch, the whole grid: every window of ``length`` days of
    ``obs`` ``(time, lat, lon)`` passed through ``predict`` over the full grid (``batch_size``
    windows at a time), the windows blended in time with the tent of `time_tent`, exactly as
    `reconstruct` blends them:

    .. math::
        \hat\eta = \eta_b + \frac{\sum_w \tau(t - t_w)\, s^{-1}\big(\Psi_\theta(s(y - \eta_b))\big)_w(t - t_w)}
                                 {\sum_w \tau(t - t_w)}.

    No patch, so no seam; the grid must be one the model maps (`pipekit_cycle.validation.grid_rule`).
    ``progress(n)`` is called after each batch with the number of windows done.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import ssh
    from pipekit_cycle.ssh import whole_domain_map

    data = ssh.simulated(n_days=6, grid=16, seed=0)
    scale = ssh.Standardiser.fit(data.truth)
    background = np.zeros_like(data.truth)
    # A "solver" that returns its input: the observed departures come back where observed.
    mapped = whole_domain_map(lambda x: x, data.obs, background=background, scale=scale, length=4, batch_size=2)
    observed = np.isfinite(data.obs)
    assert mapped.shape == data.truth.shape and np.allclose(mapped[observed], data.obs[observed])
    patched = ssh.learned_map(lambda x: x, data.obs, background=background, scale=scale, length=4, size=16,
                              stride=16, batch_size=2)  # one patch as large as the grid: the same map
    assert np.allclose(mapped, patched, equal_nan=True)
    ```
    """
    departures = scale.forward(obs - background)
    n_days = obs.shape[0]
    starts = window_starts(n_days, length)
    tau = time_tent(length)
    total = np.zeros(obs.shape)
    norm = np.zeros(n_days)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        inputs = np.stack([departures[start : start + length] for start in chunk])
        outputs = scale.inverse(np.asarray(predict(inputs), dtype=np.float64))
        if outputs.shape != inputs.shape:
            raise ValueError(f"predict must return an array shaped like its input {inputs.shape}, got {outputs.shape}")
        for start, output in zip(chunk, outputs, strict=True):
            total[start : start + length] += tau[:, None, None] * output
            norm[start : start + length] += tau
        if progress is not None:
            progress(len(chunk))
    return background + total / norm[:, None, None]
