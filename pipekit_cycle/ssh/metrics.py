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

Spectral scores (`spectral_score`, `psd_score`), the challenge's evaluation exactly (its
``xrft.power_spectrum(..., dim=["time", "lon"], detrend="constant", window=True)``, a periodic
Hann window since xrft 0.3, then matplotlib's contour). For each latitude, the field's mean
over (time, lon) is removed, the window :math:`w_n(k) = \tfrac12 - \tfrac12\cos(2\pi k/n)`
applied in time and in longitude, and the power :math:`|\hat f(m_t, m_x)|^2` of the 2-D DFT
taken; the powers are averaged over latitude. Only the quadrant of positive frequencies and wavenumbers of numpy's
``fftfreq`` is kept, :math:`m = 1 \dots \lfloor (n-1)/2 \rfloor` on each axis: no zero bin,
no Nyquist bin (negative in ``fftfreq`` for an even :math:`n`), and no sum over the four
quadrants: with numpy's sign convention the kept bins hold the waves
:math:`\cos 2\pi (m_t t/n_t + m_x x/n_x + \phi)`, whose crests move towards decreasing
longitude (westward on an eastward axis); the waves moving the other way are not scored.
On the bins, wavelength :math:`\lambda = n_x\,dx/m_x` and period :math:`T = n_t\,dt/m_t`,

.. math::
    S(T, \lambda) = 1 - \frac{\mathrm{PSD}_\mathrm{err}(T, \lambda)}{\mathrm{PSD}_\mathrm{truth}(T, \lambda)}

(NaN where the truth has no power). xrft's normalisations (``true_amplitude``, the density
scaling, ``window_correction``) are the same constant for both spectra and cancel in the ratio.
The effective resolution is read off the :math:`S = 0.5` contour drawn on the
(wavelength, period) grid, linear between bins in wavelength and period, by matplotlib's
default algorithm (``contourpy``'s ``mpl2014``, corner masking on, NaN masked): of its *first*
line, :math:`\lambda_x` is the smallest wavelength and :math:`\lambda_t` the smallest period, in
the units of ``dx`` and ``dt`` (the challenge: degrees of longitude and days). Where the contour
has several lines, the others are ignored, as in the challenge. The challenge's code has no
answer when there is no 0.5 contour; `psd_score` then returns the shortest bins if
:math:`S \ge 0.5` on all of them (everything resolved), infinity if :math:`S < 0.5` on all of
them (nothing resolved), and NaN otherwise (no score at all, or a plane cut by NaN bins).
"""

from __future__ import annotations

import math

import contourpy
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
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi k / n)`` (scipy's ``hann(n, sym=False)``)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _quadrant_power(field: np.ndarray) -> np.ndarray:
    """Latitude-mean power over (time, lon) of ``(time, lat, lon)``, each latitude's mean removed
    and a periodic Hann taper applied, on the bins ``m_t = 1 .. (n_t - 1)//2`` (rows) and
    ``m_x = 1 .. (n_x - 1)//2``: the frequencies and wavenumbers that are > 0 in ``fftfreq``."""
    nt, _, nx = field.shape
    anomaly = field - field.mean(axis=(0, 2), keepdims=True)
    tapered = anomaly * _hann(nt)[:, None, None] * _hann(nx)[None, None, :]
    # A real input: the non-negative wavenumbers of rfft are fft's, at half the cost.
    spectrum = np.fft.rfft2(tapered, axes=(0, 2))[1 : (nt + 1) // 2, :, 1 : (nx + 1) // 2]
    return (spectrum.real**2 + spectrum.imag**2).mean(axis=1)


def spectral_score(
    estimate: np.ndarray, truth: np.ndarray, *, dx: float, dt: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``(wavelength, period, score)``: the 2020a spectral score
    :math:`S = 1 - \mathrm{PSD_{err}}/\mathrm{PSD_{truth}}` on the quadrant of positive
    frequencies and wavenumbers (see the module docstring), ``(n_t', n_x')`` with rows the
    periods, and its bins, ``wavelength`` :math:`n_x\,dx/m_x` and ``period`` :math:`n_t\,dt/m_t`
    for :math:`m = 1 \dots \lfloor (n-1)/2 \rfloor` (longest first; units of ``dx`` and ``dt``).
    NaN where the truth has no power. This is the surface whose 0.5 contour `psd_score` reads.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import spectral_score

    truth = np.random.default_rng(0).normal(size=(16, 4, 32))  # (time, lat, lon)
    wavelength, period, score = spectral_score(0.5 * truth, truth, dx=0.1, dt=1.0)
    assert wavelength.shape == (15,) and period.shape == (7,) and score.shape == (7, 15)
    assert np.isclose(wavelength[0], 3.2) and np.isclose(period[-1], 16 / 7)  # n dx / 1 .. n dt / 7
    assert np.allclose(score, 0.75)  # error = -truth / 2 at every scale: 1 - 1/4
    ```
    """
    estimate, truth = _pair_of_fields(estimate, truth, ndim=3)
    for name, value in (("dx", dx), ("dt", dt)):
        if isinstance(value, bool) or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
    nt, _, nx = truth.shape
    if nt < 5 or nx < 5:
        # Fewer leaves under two positive bins on an axis: no grid to draw a contour on.
        raise ValueError(f"psd scores need at least 5 times and 5 longitudes, got shape {truth.shape}")
    if not (np.isfinite(estimate).all() and np.isfinite(truth).all()):
        raise ValueError("psd scores need complete fields: estimate and truth must be finite everywhere")
    psd_err = _quadrant_power(estimate - truth)
    psd_truth = _quadrant_power(truth)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(psd_truth > 0, 1.0 - psd_err / psd_truth, np.nan)
    wavelength = nx * float(dx) / np.arange(1, (nx - 1) // 2 + 1)
    period = nt * float(dt) / np.arange(1, (nt - 1) // 2 + 1)
    return wavelength, period, score


def psd_score(estimate: np.ndarray, truth: np.ndarray, *, dx: float, dt: float) -> tuple[float, float]:
    r"""``(lambda_x, lambda_t)``: the smallest wavelength (units of ``dx``) and period (units of
    ``dt``) on the first line of the 0.5 contour of `spectral_score`, as the 2020a challenge
    reads them (see the module docstring). Without a 0.5 contour: the shortest bins
    ``(wavelength[-1], period[-1])`` if the score is at least 0.5 on every bin (everything
    resolved, e.g. a perfect map), ``(inf, inf)`` if it is below 0.5 on every bin (nothing
    resolved, e.g. the zero map), and NaN otherwise (a truth without power, or bins without
    truth power that cut the resolved bins off the others).

    Examples
    --------
    ```python
    import math

    import numpy as np
    from pipekit_cycle.ssh import psd_score

    truth = np.random.default_rng(0).normal(size=(16, 4, 32))
    lambda_x, lambda_t = psd_score(truth, truth, dx=0.1, dt=1.0)
    assert math.isclose(lambda_x, 3.2 / 15) and math.isclose(lambda_t, 16 / 7)  # perfect: the shortest bins
    assert psd_score(np.zeros_like(truth), truth, dx=0.1, dt=1.0) == (math.inf, math.inf)  # nothing resolved
    ```
    """
    wavelength, period, score = spectral_score(estimate, truth, dx=dx, dt=dt)
    # matplotlib's default algorithm and settings, so the lines and their order are the ones
    # the challenge's plt.contour(...) returned; NaN bins are masked as matplotlib masks them.
    generator = contourpy.contour_generator(
        wavelength, period, score, name="mpl2014", corner_mask=True, line_type=contourpy.LineType.SeparateCode,
        chunk_size=0,
    )
    lines, _ = generator.lines(LEVEL)
    if lines:
        first = np.asarray(lines[0])
        return float(first[:, 0].min()), float(first[:, 1].min())
    finite = score[np.isfinite(score)]
    if finite.size and (finite >= LEVEL).all():
        return float(wavelength[-1]), float(period[-1])
    if finite.size and (finite < LEVEL).all():
        return math.inf, math.inf
    return math.nan, math.nan
