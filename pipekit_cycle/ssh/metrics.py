r"""Scores of an SSH map against the truth, as defined by the 2020a SSH-mapping data challenge.

Arrays are ``(time, lat, lon)``; ``err = estimate - truth``.

RMSE-based scores (`rmse_score`): over all points where the truth is finite,

.. math::
    \mu = 1 - \frac{\mathrm{RMS}(\mathrm{err})}{\mathrm{RMS}(\mathrm{truth})},
    \qquad
    \sigma = \operatorname{std}_t \Big(1 - \frac{\mathrm{RMS}_t(\mathrm{err})}{\mathrm{RMS}_t(\mathrm{truth})}\Big),

with :math:`\mathrm{RMS}_t` over the points of day :math:`t` and the standard deviation over the
days (population, ``ddof = 0``). RMS is the root mean square of the values themselves, not of
anomalies, as in the challenge. :math:`\mu = 1` is a perfect map, :math:`\mu = 0` the zero map.

Spectral scores (`spectral_score`, `psd_score`): for each latitude the error and the truth are
detrended (the least-squares plane :math:`a + b t + c x` removed) and tapered with a periodic
Hann window in time and in longitude, their 2-D power spectra over (time, lon) computed by FFT
and averaged over latitude, and the spectra folded onto non-negative frequencies and
wavenumbers (the power at :math:`\pm m` summed). The zero frequency and zero wavenumber are
dropped (the detrending empties them). On the bins :math:`m_x = 1 \dots \lfloor n_x/2 \rfloor`
(wavelength :math:`\lambda = n_x\, dx / m_x`) and :math:`m_t = 1 \dots \lfloor n_t/2 \rfloor`
(period :math:`T = n_t\, dt / m_t`),

.. math::
    S(T, \lambda) = 1 - \frac{\mathrm{PSD}_\mathrm{err}(T, \lambda)}{\mathrm{PSD}_\mathrm{truth}(T, \lambda)}

(:math:`0/0` counts as a perfect 1). The challenge reads the effective resolution off the
:math:`S = 0.5` contour in the (wavelength, period) plane: :math:`\lambda_x` is the smallest
wavelength and :math:`\lambda_t` the smallest period on it. Here, precisely: along each period
bin, scan the wavelengths from the longest to the shortest; if :math:`S \ge 0.5` at the longest,
the resolved wavelength of that row is where :math:`S` first drops below 0.5, linearly
interpolated in wavelength between the two bins around the crossing (the shortest wavelength
:math:`\lambda = n_x\, dx / \lfloor n_x/2 \rfloor`, i.e. :math:`2\,dx` for even :math:`n_x`, if it
never drops); :math:`\lambda_x` is the smallest over the rows, and :math:`\lambda_t` the same
with the axes swapped. A perfect map gives :math:`(2\,dx, 2\,dt)` (even sizes); a map that
resolves nothing (:math:`S < 0.5` at the longest scale of every row, e.g. the zero map, for
which :math:`S \equiv 0`) gives infinity. The units are those of ``dx`` and ``dt``
(the challenge: degrees of longitude and days). This is the challenge's contour rule, not an
average of :math:`S` over the other axis: an estimate that is perfect inside a box of
wavenumbers and periods and useless outside it has :math:`\lambda_x, \lambda_t` at the box's
edges, where an average would depend on the box's width along the other axis.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psd_score", "rmse", "rmse_score", "spectral_score"]

LEVEL = 0.5


def _pair_of_fields(estimate: np.ndarray, truth: np.ndarray, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    estimate = np.asarray(estimate, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate and truth must have the same shape, got {estimate.shape} and {truth.shape}")
    if ndim is not None and truth.ndim != ndim:
        raise ValueError(f"estimate and truth must be (time, lat, lon), got shape {truth.shape}")
    if truth.ndim < 1 or truth.size == 0:
        raise ValueError(f"estimate and truth must be non-empty arrays with time first, got shape {truth.shape}")
    return estimate, truth


def rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    r""":math:`\sqrt{\mathrm{mean}((\hat x - x)^2)}` over every entry, in the units of the fields.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import rmse

    assert rmse(np.array([1.0, -1.0, 1.0, -1.0]), np.zeros(4)) == 1.0
    ```
    """
    return float(np.sqrt(np.mean((np.asarray(estimate) - np.asarray(truth)) ** 2)))


def rmse_score(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    r"""``(mu, sigma)``: :math:`1 - \mathrm{RMS(err)}/\mathrm{RMS(truth)}` over all points, and the
    standard deviation over time (axis 0) of the daily score. Points where ``truth`` is NaN are
    ignored; ``estimate`` must be finite wherever ``truth`` is.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import rmse_score

    truth = np.random.default_rng(0).normal(size=(10, 8, 8))
    assert rmse_score(truth, truth) == (1.0, 0.0)  # perfect: mu = 1, every day the same
    mu, sigma = rmse_score(np.zeros_like(truth), truth)
    assert np.isclose(mu, 0.0)  # a zero estimate: the error is the truth
    ```
    """
    estimate, truth = _pair_of_fields(estimate, truth)
    valid = np.isfinite(truth)
    if not valid.any():
        raise ValueError("truth must have at least one finite value")
    if (valid & ~np.isfinite(estimate)).any():
        raise ValueError("estimate must be finite wherever truth is finite")
    axes = tuple(range(1, truth.ndim))
    err2 = np.where(valid, (estimate - truth) ** 2, 0.0)
    truth2 = np.where(valid, truth**2, 0.0)
    if truth2.sum() == 0.0:
        raise ValueError("truth must not be identically zero (its RMS normalises the score)")
    mu = 1.0 - math.sqrt(err2.sum() / truth2.sum())
    err2_t, truth2_t = err2.sum(axis=axes), truth2.sum(axis=axes)
    days = truth2_t > 0.0
    daily = 1.0 - np.sqrt(err2_t[days] / truth2_t[days])  # the day's point count cancels
    return float(mu), float(daily.std())


def _hann(n: int) -> np.ndarray:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi k / n)``."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _spectrum(field: np.ndarray) -> np.ndarray:
    """Latitude-mean power over (time, lon) of ``(time, lat, lon)``, detrended and windowed,
    folded onto bins ``(0..nt//2, 0..nx//2)``."""
    nt, _, nx = field.shape
    t = np.arange(nt) - (nt - 1) / 2.0
    x = np.arange(nx) - (nx - 1) / 2.0
    # t and x are centred, so on the full (time, lon) grid the plane fit is three projections.
    mean = field.mean(axis=(0, 2), keepdims=True)
    slope_t = np.einsum("tyx,t->y", field, t)[None, :, None] / (nx * (t**2).sum())
    slope_x = np.einsum("tyx,x->y", field, x)[None, :, None] / (nt * (x**2).sum())
    detrended = field - mean - slope_t * t[:, None, None] - slope_x * x[None, None, :]
    tapered = detrended * _hann(nt)[:, None, None] * _hann(nx)[None, None, :]
    power = (np.abs(np.fft.fft2(tapered, axes=(0, 2))) ** 2).mean(axis=1)
    return _fold(_fold(power, 0), 1)


def _fold(power: np.ndarray, axis: int) -> np.ndarray:
    n = power.shape[axis]
    half = n // 2
    positive = np.take(power, np.arange(half + 1), axis=axis).copy()
    negative = np.take(power, (-np.arange(1, (n - 1) // 2 + 1)) % n, axis=axis)
    index = [slice(None)] * power.ndim
    index[axis] = slice(1, (n - 1) // 2 + 1)
    positive[tuple(index)] += negative
    return positive


def spectral_score(
    estimate: np.ndarray, truth: np.ndarray, *, dx: float, dt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(wavelength, period, score)``: the bins ``(n_x//2,)`` (longest first, units of ``dx``)
    and ``(n_t//2,)`` (units of ``dt``) and :math:`1 - \mathrm{PSD_{err}}/\mathrm{PSD_{truth}}`
    on them, ``(n_t//2, n_x//2)`` (rows: periods). See the module docstring.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import spectral_score

    truth = np.random.default_rng(0).normal(size=(16, 4, 32))  # (time, lat, lon)
    wavelength, period, score = spectral_score(0.5 * truth, truth, dx=0.1, dt=1.0)
    assert wavelength.shape == (16,) and period.shape == (8,) and score.shape == (8, 16)
    assert np.allclose(score, 0.75)  # error = truth / 2 at every scale: 1 - 1/4
    ```
    """
    estimate, truth = _pair_of_fields(estimate, truth, ndim=3)
    for name, value in (("dx", dx), ("dt", dt)):
        if isinstance(value, bool) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    nt, _, nx = truth.shape
    if nt < 4 or nx < 4:
        raise ValueError(f"psd scores need at least 4 times and 4 longitudes, got shape {truth.shape}")
    if not (np.isfinite(estimate).all() and np.isfinite(truth).all()):
        raise ValueError("psd scores need complete fields: estimate and truth must be finite everywhere")
    psd_err = _spectrum(estimate - truth)[1:, 1:]
    psd_truth = _spectrum(truth)[1:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(psd_truth > 0, psd_err / np.where(psd_truth > 0, psd_truth, 1.0), np.inf)
    ratio = np.where((psd_err == 0) & (psd_truth == 0), 0.0, ratio)
    wavelength = nx * float(dx) / np.arange(1, nx // 2 + 1)
    period = nt * float(dt) / np.arange(1, nt // 2 + 1)
    return wavelength, period, 1.0 - ratio


def _smallest_resolved(score: np.ndarray, scales: np.ndarray) -> float:
    """The smallest scale at which some row of ``score`` (scales longest first) drops below the
    level, each row scanned from its longest scale; infinity when no row starts at or above it."""
    best = math.inf
    for row in score:
        if not row[0] >= LEVEL:
            continue
        below = np.flatnonzero(row < LEVEL)
        if below.size == 0:
            best = min(best, float(scales[-1]))
            continue
        m = int(below[0])
        s0, s1 = float(row[m - 1]), float(row[m])
        fraction = 0.0 if math.isinf(s1) else (s0 - LEVEL) / (s0 - s1)
        best = min(best, float(scales[m - 1] + fraction * (scales[m] - scales[m - 1])))
    return best


def psd_score(estimate: np.ndarray, truth: np.ndarray, *, dx: float, dt: float) -> tuple[float, float]:
    """``(lambda_x, lambda_t)``: the smallest wavelength (units of ``dx``) and period (units of
    ``dt``) on the 0.5 contour of the spectral score; infinity where nothing is resolved.

    Examples
    --------
    ```python
    import math

    import numpy as np
    from pipekit_cycle.ssh import psd_score

    truth = np.random.default_rng(0).normal(size=(16, 4, 32))
    lambda_x, lambda_t = psd_score(truth, truth, dx=0.1, dt=1.0)
    assert (lambda_x, lambda_t) == (0.2, 2.0)  # perfect: the shortest resolved scales, 2 dx and 2 dt
    assert psd_score(np.zeros_like(truth), truth, dx=0.1, dt=1.0) == (math.inf, math.inf)  # nothing resolved
    ```
    """
    wavelength, period, score = spectral_score(estimate, truth, dx=dx, dt=dt)
    return _smallest_resolved(score, wavelength), _smallest_resolved(score.T, period)
