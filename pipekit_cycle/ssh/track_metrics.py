r"""Along-track scores of an SSH map against a withheld altimeter, as the 2021a data challenge
(``2021a_SSH_mapping_OSE``, Cryosat-2 withheld) computes them.

**Map at the track** (`interpolate_map_to_track`): linear in time between the bracketing dates,
bilinear in (lat, lon) in the enclosing cell (on a node: the cell starting there, the last one at
the axis's end); NaN outside the map's dates, latitudes or longitudes (compared modulo 360°), or
when one of the cell's 8 corners is NaN (land), whatever its weight.

**RMSE score** (`along_track_rmse_score`): with :math:`r` the track's values and :math:`m` the
map at the points where both are finite, grouped in days :math:`d` (calendar days, or bins of
``bin_days`` days from the first point's midnight),

.. math::
    S_d = 1 - \frac{\sqrt{\mathrm{mean}_d (m - r)^2}}{\sqrt{\mathrm{mean}_d\, r^2}},
    \qquad \mu = \mathrm{mean}_d\, S_d, \qquad \sigma = \operatorname{std}_d S_d,

over the days with at least 10 points (``ddof = 0``). :math:`\mu` is the mean of the daily
scores, not the score of all points at once; the RMS is of the values, not of anomalies.

**Spectral score** (`along_track_spectrum`, `effective_resolution`): the points, in the order
given, are cut where consecutive times are more than 4 s apart; of these pieces, the one after the
last cut is dropped, and the others start at the last point before their gap (the challenge's
indexing). Each piece of at least :math:`n = \lfloor L / \Delta x \rfloor` points
(:math:`L` = 1000 km, :math:`\Delta x` = 6.77 km/s × 0.9434 s, Cryosat-2 at 1 Hz) gives the
segments of :math:`n` points starting every :math:`\lfloor n/4 \rfloor` points while the
segment ends before the piece's last point. The Welch spectrum averages, over the segments,
the periodogram of the segment minus its mean, tapered by the periodic Hann window
:math:`w_k = \tfrac12 - \tfrac12\cos(2\pi k/n)`, one-sided, density-scaled (m² per cycle/km).
On its bins, wavenumber :math:`f_k = k / (n \Delta x)`,

.. math::
    S(f_k) = 1 - \frac{\mathrm{PSD}_{m - r}(f_k)}{\mathrm{PSD}_r(f_k)},

and the effective resolution :math:`\lambda_x` (km) is the wavelength :math:`1/f` at
:math:`S = 0.5`: the bins sorted by score (stably), the wavelength linearly interpolated in the
score (the zero wavenumber, of infinite wavelength, included). Where the challenge's code fails
we return the shortest wavelength of the bins if every score is above 0.5 (everything resolved,
a perfect map), ``inf`` if all are below (nothing resolved), NaN without a segment. Bins
without a finite score are left out.

`track_scores`: the three, at the points 0.25° inside the map's latitudes and longitudes (its box).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .observations import AlongTrack

__all__ = [
    "DELTA_X_KM",
    "LENGTH_KM",
    "MARGIN_DEG",
    "MAX_GAP",
    "MIN_COUNT",
    "AlongTrackSpectrum",
    "along_track_rmse_score",
    "along_track_spectrum",
    "effective_resolution",
    "interpolate_map_to_track",
    "track_scores",
]

DELTA_X_KM = 6.77 * 0.9434  # Cryosat-2: 6.77 km/s ground speed, one point per 0.9434 s
LENGTH_KM = 1000.0
MAX_GAP = np.timedelta64(4, "s")
MIN_COUNT = 10
MARGIN_DEG = 0.25
LEVEL = 0.5
_STEP = 0.25  # segments start every quarter of a segment


def _axis(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.isfinite(values).all():
        raise ValueError(f"{name} must be a 1-D array of at least 2 finite values, got shape {values.shape}")
    return values


def _times(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.datetime64) or values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D datetime64 array (any unit), got {values.dtype} {values.shape}")
    return values


def _lon_frame(lon: np.ndarray) -> tuple[np.ndarray, bool]:
    """The map's longitudes unwrapped to increase from ``lon[0]``, and whether they go round the globe."""
    frame = lon[0] + np.mod(lon - lon[0], 360.0)
    if not (np.diff(frame) > 0).all():
        raise ValueError("lon must increase (modulo 360°) along the map's last axis, each longitude once")
    return frame, bool(frame[0] + 360.0 - frame[-1] <= np.diff(frame).max() * (1 + 1e-9))


def _check_track(track: AlongTrack) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    time = _times(track.time, "track.time")
    lat, lon, value = (np.asarray(getattr(track, name), dtype=np.float64) for name in ("lat", "lon", "value"))
    if not time.shape == lat.shape == lon.shape == value.shape:
        shapes = (time.shape, lat.shape, lon.shape, value.shape)
        raise ValueError(f"track's time, lat, lon, value must be 1-D of one length, got shapes {shapes}")
    return time, lat, lon, value


def interpolate_map_to_track(
    field: np.ndarray, *, dates: np.ndarray, lat: np.ndarray, lon: np.ndarray, track: AlongTrack
) -> np.ndarray:
    r"""The map ``field`` ``(time, lat, lon)`` on ``dates`` (datetime64, increasing), ``lat``
    and ``lon`` (degrees, monotonic; -180..180 or 0..360, either matches the track's) at the
    points of ``track``: linear in time, bilinear in space (the module docstring), NaN outside
    the map or in a cell with a NaN corner. A map going round the globe wraps in longitude.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import AlongTrack
    from pipekit_cycle.ssh.track_metrics import interpolate_map_to_track

    dates = np.datetime64("2017-01-01") + np.arange(3)
    field = np.broadcast_to(np.arange(3.0)[:, None, None], (3, 2, 2))  # 0, 1, 2 m on each day
    time = np.array(["2017-01-01T12", "2017-01-02T06", "2017-01-09"], dtype="datetime64[ns]")
    track = AlongTrack("c2", time, np.array([30.5, 30.2, 30.5]), np.array([300.5, 300.1, 300.5]), np.zeros(3))
    values = interpolate_map_to_track(field, dates=dates, lat=[30.0, 31.0], lon=[-60.0, -59.0], track=track)
    assert np.allclose(values[:2], [0.5, 1.25]) and np.isnan(values[2])  # the last is after the map
    ```
    """
    field = np.asarray(field, dtype=np.float64)
    dates = _times(dates, "dates")
    lat, lon = _axis(lat, "lat"), _axis(lon, "lon")
    if field.shape != (dates.size, lat.size, lon.size):
        raise ValueError(f"field must be (time, lat, lon) {(dates.size, lat.size, lon.size)}, got {field.shape}")
    day = np.timedelta64(1, "D")
    t_axis = _axis((dates - dates[0]) / day, "dates")
    if lat[-1] < lat[0]:
        lat, field = lat[::-1], field[:, ::-1]
    if not ((np.diff(t_axis) > 0).all() and (np.diff(lat) > 0).all()):
        raise ValueError("dates must be strictly increasing and lat strictly monotonic")
    lon, periodic = _lon_frame(lon)
    if periodic:
        lon, field = np.append(lon, lon[0] + 360.0), np.concatenate([field, field[:, :, :1]], axis=2)
    time, q_lat, q_lon, _ = _check_track(track)
    queries = ((time - dates[0]) / day, q_lat, lon[0] + np.mod(q_lon - lon[0], 360.0))
    inside, cells, weights = np.ones(time.shape, dtype=bool), [], []
    for axis, q in zip((t_axis, lat, lon), queries, strict=True):
        inside &= (q >= axis[0]) & (q <= axis[-1])
        cells.append(i := np.clip(np.searchsorted(axis, q, side="right") - 1, 0, axis.size - 2))
        weights.append((q - axis[i]) / (axis[i + 1] - axis[i]))
    out = np.zeros(time.shape)
    for corner in np.ndindex(2, 2, 2):  # a NaN corner makes the point NaN, whatever its weight
        weight = np.prod([w if c else 1.0 - w for c, w in zip(corner, weights, strict=True)], axis=0)
        out = out + weight * field[tuple(i + c for i, c in zip(cells, corner, strict=True))]
    return np.where(inside, out, np.nan)


def _valid_pairs(track: AlongTrack, mapped: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time, reference, map)`` at the points where both values are finite, in track order."""
    time, _, _, value = _check_track(track)
    mapped = np.asarray(mapped, dtype=np.float64)
    if mapped.shape != value.shape:
        raise ValueError(f"mapped must hold one value per track point, shape {value.shape}, got {mapped.shape}")
    keep = np.isfinite(value) & np.isfinite(mapped)
    if not keep.any():
        raise ValueError("no point where track and map are both finite: is the track in the map's dates, lat, lon?")
    return time[keep], value[keep], mapped[keep]


def along_track_rmse_score(
    track: AlongTrack, mapped: np.ndarray, *, min_count: int = MIN_COUNT, bin_days: int = 1
) -> tuple[float, float]:
    r"""``(mu, sigma)`` (dimensionless): mean and standard deviation over the days with at least
    ``min_count`` points of the daily score :math:`1 - \mathrm{RMSE}_d/\mathrm{RMS}_d` of ``mapped``
    (the map at the track's points) against ``track.value`` (the module docstring); points with
    a NaN left out, ``(nan, nan)`` if no day has enough. ``mu = 1``: a perfect map, 0: the zero map.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import AlongTrack
    from pipekit_cycle.ssh.track_metrics import along_track_rmse_score

    time = np.datetime64("2017-01-01T00:00", "ns") + np.arange(48) * np.timedelta64(1, "h")
    value = np.where(np.arange(48) % 2 == 0, 0.5, -0.5)  # RMS 0.5 m on each of the 2 days
    track = AlongTrack("c2", time, np.zeros(48), np.zeros(48), value)
    assert along_track_rmse_score(track, value) == (1.0, 0.0)
    mu, sigma = along_track_rmse_score(track, value + 0.1)  # 10 cm everywhere: 1 - 0.1 / 0.5
    assert np.isclose(mu, 0.8) and np.isclose(sigma, 0.0)
    ```
    """
    if int(min_count) != min_count or min_count < 1 or int(bin_days) != bin_days or bin_days < 1:
        raise ValueError(f"min_count and bin_days must be integers >= 1, got {min_count!r} and {bin_days!r}")
    time, ref, est = _valid_pairs(track, mapped)
    days = (time - time.min().astype("datetime64[D]")) // np.timedelta64(int(bin_days), "D")
    _, index, count = np.unique(days, return_inverse=True, return_counts=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        daily = 1.0 - np.sqrt(np.bincount(index, (est - ref) ** 2) / np.bincount(index, ref**2))
    daily = daily[(count >= min_count) & np.isfinite(daily)]
    if daily.size == 0:
        return math.nan, math.nan
    return float(daily.mean()), float(daily.std())


@dataclasses.dataclass(frozen=True, eq=False)
class AlongTrackSpectrum:
    r"""The challenge's Welch spectra on the bins ``wavenumber`` (cycles/km, from 0): of the track
    (``psd_ref``), of the map at the track (``psd_study``) and of their difference
    (``psd_diff``), in m² per cycle/km, over ``n_segments`` segments (all NaN when none).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh.track_metrics import AlongTrackSpectrum

    spectrum = AlongTrackSpectrum(np.array([0.0, 0.1]), np.ones(2), np.ones(2), np.array([0.5, 0.25]), 3)
    assert spectrum.wavelength_km[1] == 10.0 and np.allclose(spectrum.score, [0.5, 0.75])
    ```
    """

    wavenumber: np.ndarray
    psd_ref: np.ndarray
    psd_study: np.ndarray
    psd_diff: np.ndarray
    n_segments: int

    @property
    def wavelength_km(self) -> np.ndarray:
        """``1 / wavenumber`` (km), infinite at the zero wavenumber."""
        with np.errstate(divide="ignore"):
            return 1.0 / self.wavenumber

    @property
    def score(self) -> np.ndarray:
        """``1 - psd_diff / psd_ref`` on each bin (NaN or infinite where the track has no power)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - self.psd_diff / self.psd_ref


def _segment_starts(time: np.ndarray, npt: int, max_gap: np.timedelta64) -> np.ndarray:
    """First index of every segment of ``npt`` points, cut at the gaps as the challenge does."""
    cuts = np.flatnonzero(np.diff(time) > max_gap)
    # The pieces end at the cuts (none after the last), a later one starting at the point before its gap.
    begins, step = np.concatenate([[0], cuts[:-1]])[: cuts.size].astype(np.intp), int(npt * _STEP)
    starts = [np.arange(b, e - npt, step) for b, e in zip(begins, cuts, strict=True) if e - b >= npt]
    return np.concatenate(starts).astype(np.intp) if starts else np.zeros(0, dtype=np.intp)


def _welch(segments: np.ndarray, delta_x_km: float) -> np.ndarray:
    """Mean one-sided density periodogram of the rows, each minus its mean, periodic Hann taper."""
    npt = segments.shape[1]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(npt) / npt)
    spectrum = np.fft.rfft((segments - segments.mean(axis=1, keepdims=True)) * window, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).mean(axis=0) * delta_x_km / (window**2).sum()
    power[1 : npt // 2 + 1 if npt % 2 else npt // 2] *= 2.0  # fold the negative wavenumbers (not Nyquist)
    return power


def along_track_spectrum(
    track: AlongTrack,
    mapped: np.ndarray,
    *,
    length_km: float = LENGTH_KM,
    delta_x_km: float = DELTA_X_KM,
    max_gap: np.timedelta64 = MAX_GAP,
) -> AlongTrackSpectrum:
    r"""The Welch spectra of the track, of the map at the track (``mapped``) and of their
    difference over the challenge's segments of ``length_km`` (points ``delta_x_km`` apart,
    pieces cut at gaps over ``max_gap``; the module docstring). The points, in the order given
    (along the track, in time), where either value is NaN are left out first.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import AlongTrack
    from pipekit_cycle.ssh.track_metrics import along_track_spectrum

    n = 1000  # two passes of 500 points at 1 Hz, an hour apart
    time = np.datetime64("2017-01-01", "ns") + np.timedelta64(943_400_000, "ns") * np.arange(n)
    time[500:] += np.timedelta64(1, "h")
    value = np.random.default_rng(0).normal(size=n)
    spectrum = along_track_spectrum(AlongTrack("c2", time, np.zeros(n), np.zeros(n), value), 0.5 * value)
    assert spectrum.n_segments == 9 and spectrum.wavenumber.size == 156 // 2 + 1  # the 2nd pass is the last
    assert np.allclose(spectrum.score, 0.75)  # the error is half the signal at every wavenumber
    ```
    """
    npt = int(length_km / delta_x_km) if 0 < length_km < math.inf and delta_x_km > 0 else 0
    if npt < 4:
        raise ValueError(f"need finite length_km / delta_x_km >= 4 (both > 0), got {length_km} / {delta_x_km}")
    time, ref, est = _valid_pairs(track, mapped)
    starts = _segment_starts(time, npt, np.timedelta64(max_gap))
    wavenumber = np.fft.rfftfreq(npt, d=float(delta_x_km))
    index = starts[:, None] + np.arange(npt)
    nan = np.full(wavenumber.shape, np.nan)
    psd = [_welch(x[index], float(delta_x_km)) if starts.size else nan.copy() for x in (ref, est, est - ref)]
    return AlongTrackSpectrum(wavenumber, *psd, int(starts.size))


def _crossing(spectrum: AlongTrackSpectrum) -> float:
    """The wavelength (km) at score 0.5, read as the challenge does (the module docstring)."""
    score, wavelength = spectrum.score, spectrum.wavelength_km
    keep = np.isfinite(score)
    if spectrum.n_segments == 0 or not keep.any():
        return math.nan
    order = np.argsort(score[keep], kind="mergesort")
    x, y = score[keep][order], wavelength[keep][order]
    if x[0] > LEVEL:
        return float(wavelength[keep].min())
    if x[-1] < LEVEL:
        return math.inf
    with np.errstate(invalid="ignore"):
        return float(np.interp(LEVEL, x, y))


def effective_resolution(
    track: AlongTrack,
    mapped: np.ndarray,
    *,
    length_km: float = LENGTH_KM,
    delta_x_km: float = DELTA_X_KM,
    max_gap: np.timedelta64 = MAX_GAP,
) -> float:
    r""":math:`\lambda_x` (km): the wavelength where the score of `along_track_spectrum` crosses
    0.5; its smallest bin's wavelength if the score is above 0.5 everywhere, ``inf`` if below
    everywhere, NaN without a segment (the module docstring).

    Examples
    --------
    ```python
    import math

    import numpy as np
    from pipekit_cycle.ssh import AlongTrack
    from pipekit_cycle.ssh.track_metrics import DELTA_X_KM, effective_resolution

    n = 1000
    time = np.datetime64("2017-01-01", "ns") + np.timedelta64(1, "s") * np.arange(n)
    time[500:] += np.timedelta64(1, "h")
    track = AlongTrack("c2", time, np.zeros(n), np.zeros(n), np.random.default_rng(0).normal(size=n))
    assert math.isclose(effective_resolution(track, track.value), 2 * DELTA_X_KM)  # perfect
    assert effective_resolution(track, np.zeros(n)) == math.inf  # nothing resolved
    assert math.isnan(effective_resolution(track, track.value, length_km=5000.0))  # no segment
    ```
    """
    return _crossing(along_track_spectrum(track, mapped, length_km=length_km, delta_x_km=delta_x_km, max_gap=max_gap))


def track_scores(
    field: np.ndarray,
    *,
    dates: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    track: AlongTrack,
    margin_deg: float = MARGIN_DEG,
    length_km: float = LENGTH_KM,
    delta_x_km: float = DELTA_X_KM,
) -> dict[str, float | int]:
    r"""The challenge's leaderboard scores of the map ``field`` ``(time, lat, lon)`` against
    ``track``: ``"mu"``, ``"sigma"`` (dimensionless, `along_track_rmse_score`), ``"lambda_x_km"``
    (km, `effective_resolution`: NaN or ``inf`` as documented there), ``"n_points"`` (those with
    finite values ``margin_deg`` inside the map's latitudes and, unless global, longitudes) and
    ``"n_segments"`` (of the spectra). A ValueError when no point is left (a track off the map).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import AlongTrack
    from pipekit_cycle.ssh.track_metrics import track_scores

    dates = np.datetime64("2017-01-01") + np.arange(4)
    lat, lon = np.linspace(30.0, 40.0, 41), np.linspace(290.0, 300.0, 41)
    field = 0.1 * lat[None, :, None] + 0.01 * lon + np.arange(4.0)[:, None, None]  # linear: read exactly
    time = dates[0] + np.timedelta64(1, "s") * np.arange(200) * 1000
    points = (np.linspace(31.0, 39.0, 200), np.linspace(-69.0, -61.0, 200))  # -180..180 on a 0..360 map
    value = 0.1 * points[0] + 0.01 * (points[1] + 360.0) + (time - dates[0]) / np.timedelta64(1, "D")
    scores = track_scores(field + 0.05, dates=dates, lat=lat, lon=lon, track=AlongTrack("c2", time, *points, value))
    assert scores["n_points"] == 200 and np.isclose(scores["sigma"], 0.0, atol=0.01) and scores["mu"] > 0.9
    ```
    """
    mapped = interpolate_map_to_track(field, dates=dates, lat=lat, lon=lon, track=track)
    lat_axis, (lon_axis, periodic) = _axis(lat, "lat"), _lon_frame(_axis(lon, "lon"))
    time, t_lat, t_lon, value = _check_track(track)
    t_lon = lon_axis[0] + np.mod(t_lon - lon_axis[0], 360.0)
    keep = np.isfinite(mapped) & np.isfinite(value)
    keep &= (t_lat >= lat_axis.min() + margin_deg) & (t_lat <= lat_axis.max() - margin_deg)
    keep &= periodic | ((t_lon >= lon_axis[0] + margin_deg) & (t_lon <= lon_axis[-1] - margin_deg))
    if not keep.any():
        raise ValueError(f"no track point with finite values {margin_deg}° inside the map: check its dates, lat, lon")
    inside = dataclasses.replace(track, time=time[keep], lat=t_lat[keep], lon=t_lon[keep], value=value[keep])
    mu, sigma = along_track_rmse_score(inside, mapped[keep])
    spectrum = along_track_spectrum(inside, mapped[keep], length_km=length_km, delta_x_km=delta_x_km)
    scores = {"mu": mu, "sigma": sigma, "lambda_x_km": _crossing(spectrum)}
    return {**scores, "n_points": int(keep.sum()), "n_segments": spectrum.n_segments}
