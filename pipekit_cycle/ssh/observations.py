r"""The observing system of the SSH OSSE: nadir altimeters and a SWOT-like wide-swath instrument.

Each instrument (`Satellite`) flies a repeat orbit of inclination :math:`i`; over a box
centred at latitude :math:`\varphi_0` its ground tracks are straight lines of heading
:math:`\pm h` from north, :math:`\sin h = \cos i / \cos\varphi_0` (ascending :math:`+h`,
descending :math:`-h`; the Earth's rotation neglected). The passes of one kind that cross the
box on one day are :math:`D = (360° / \text{revs per day})\, 111.19\,\text{km} \cos\varphi_0`
apart in longitude, :math:`D \cos h` across the tracks; from day to day the pattern moves by
``subcycle_step / cycle_days`` of that spacing (modulo it), so every track of the repeat cycle
is flown once per cycle (``subcycle_step`` coprime to ``cycle_days``). The phase of each
pattern is drawn from the seed. On its day, a grid point is seen

* by a nadir altimeter (``swath_km = 0``) when its distance to a pass is below half a track
  width, ``width_cells`` times :math:`\max(\Delta x \cos h, \Delta y \sin |h|)`: a track is a
  gap-free line one cell wide along the grid rows;
* by a swath instrument when that distance :math:`d` lies in
  :math:`[g/2,\ g/2 + s)`: two swaths of width :math:`s` (``swath_km``) either side of a gap
  :math:`g` (``gap_km``) centred on the nadir.

The expected fraction of the points seen on a day is, per instrument,
:math:`2 w / (D \cos h)` with :math:`w` the track width (nadir) or :math:`2 s` (swath): the
four default nadirs (`DEFAULT_INSTRUMENTS`) see 2.35 % of a box at the default
``dx_deg = 10/128`` and 38° N, the SWOT-like swath alone 9.2 %. A seen point is observed as
the truth plus white Gaussian noise of the instrument's ``noise_std``: 3 cm for the nadirs
(their along-track error at the map's 7-9 km, as in the 2020a data challenge's nadir
simulations), 1 cm for the swath (KaRIn's random error averaged over cells of about 8 km;
no roll, phase or other correlated error is simulated). The passes are taken as
instantaneous at the day's map.

The instruments by name (`INSTRUMENTS`): the four nadirs of the 2020a challenge's kind
(``"jason-like"``, ``"envisat-like"``, ``"gfo-like"``, ``"topex-interleaved-like"``) and
``"swot-like"`` (77.6°, 14.0 revolutions a day, a 21-day repeat that moves the pattern by one
twenty-first of the track spacing a day, as SWOT's one-day subcycle; two 50 km swaths either
side of a 20 km gap).
"""

from __future__ import annotations

import dataclasses
import math
import types
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_CONSTELLATION",
    "DEFAULT_INSTRUMENTS",
    "EARTH_RADIUS_KM",
    "INSTRUMENTS",
    "KM_PER_DEG",
    "AlongTrack",
    "Satellite",
    "coverage",
    "observe",
]

EARTH_RADIUS_KM = 6371.0
KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180.0


@dataclasses.dataclass(frozen=True)
class Satellite:
    """An altimeter on a repeat orbit: ``inclination_deg`` sets the track heading,
    ``revs_per_day`` the spacing of one day's passes, and the daily pattern moves by
    ``subcycle_step / cycle_days`` of that spacing per day. ``swath_km > 0`` makes it a
    wide-swath instrument (two swaths of that width either side of a ``gap_km`` gap);
    ``noise_std`` (m) is its observation error.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import INSTRUMENTS, Satellite, coverage

    mine = Satellite("mine", inclination_deg=66.0, revs_per_day=12.8, cycle_days=10, subcycle_step=3)
    x_km, y_km = 7.0 * np.arange(32), 8.7 * np.arange(32)
    seen = coverage(mine, n_days=4, x_km=x_km, y_km=y_km, lat_mid=38.0, rng=np.random.default_rng(0))
    assert seen.shape == (4, 32, 32) and mine.swath_km == 0.0 and mine.noise_std == 0.03
    assert INSTRUMENTS["swot-like"].swath_km == 50.0 and INSTRUMENTS["swot-like"].gap_km == 20.0
    ```
    """

    name: str
    inclination_deg: float
    revs_per_day: float
    cycle_days: int
    subcycle_step: int
    swath_km: float = 0.0
    gap_km: float = 0.0
    noise_std: float = 0.03

    def __post_init__(self) -> None:
        if not 0.0 < self.inclination_deg < 180.0:
            raise ValueError(f"inclination_deg must be in (0, 180), got {self.inclination_deg!r}")
        if not self.revs_per_day > 0.0:
            raise ValueError(f"revs_per_day must be > 0, got {self.revs_per_day!r}")
        if self.cycle_days < 1 or not 0 <= self.subcycle_step < self.cycle_days:
            raise ValueError(
                f"cycle_days must be >= 1 and subcycle_step in [0, cycle_days), got {self.cycle_days}, "
                f"{self.subcycle_step}"
            )
        for name in ("swath_km", "gap_km", "noise_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")


DEFAULT_CONSTELLATION: tuple[Satellite, ...] = (
    Satellite("jason-like", 66.0, 12.81, 10, 3),
    Satellite("envisat-like", 98.5, 14.32, 35, 11),
    Satellite("gfo-like", 108.0, 14.29, 17, 5),
    Satellite("topex-interleaved-like", 66.0, 12.81, 10, 7),
)
# Read-only: a run's instruments are part of what makes it reproducible.
INSTRUMENTS: Mapping[str, Satellite] = types.MappingProxyType(
    {
        **{satellite.name: satellite for satellite in DEFAULT_CONSTELLATION},
        "swot-like": Satellite("swot-like", 77.6, 14.0, 21, 1, swath_km=50.0, gap_km=20.0, noise_std=0.01),
    }
)
DEFAULT_INSTRUMENTS: tuple[str, ...] = tuple(satellite.name for satellite in DEFAULT_CONSTELLATION)


@dataclasses.dataclass(frozen=True)
class AlongTrack:
    """One instrument's observations as points: ``time`` (``datetime64``: the day of the pass,
    ``[D]``, in the simulation; the instant of each point, ``[ns]``, as
    `pipekit_cycle.ssh.alongtrack.read_along_track` reads a file), ``lat`` and ``lon``
    (degrees, the centre of the observed grid cell in the simulation) and ``value`` (m, truth
    plus noise), all 1-D and in the same order (the simulation's by day, then grid row, then
    column; a file's as it holds them).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import observe

    truth = np.zeros((3, 32, 32))
    lat, lon = 33.0 + 0.08 * np.arange(32), -65.0 + 0.08 * np.arange(32)
    time = np.datetime64("2012-10-01") + np.arange(3)
    _, mask, tracks = observe(truth, lat=lat, lon=lon, time=time, instruments=("jason-like",), seed=0)
    track = tracks["jason-like"]
    assert len(track) == mask.sum() and track.time.dtype == np.dtype("datetime64[D]")
    assert np.all(np.abs(track.value) < 0.2)  # noise only: a few cm
    ```
    """

    name: str
    time: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return int(self.value.size)


def _heading(satellite: Satellite, lat_deg: float) -> float:
    """Ground-track heading (radians from north) of the ascending pass at ``lat_deg``."""
    ratio = math.cos(math.radians(satellite.inclination_deg)) / math.cos(math.radians(lat_deg))
    if abs(ratio) >= 1.0:
        raise ValueError(f"{satellite.name} (inclination {satellite.inclination_deg}°) never reaches {lat_deg}°")
    return math.asin(ratio)


def coverage(
    satellite: Satellite,
    *,
    n_days: int,
    x_km: np.ndarray,
    y_km: np.ndarray,
    lat_mid: float,
    rng: np.random.Generator,
    width_cells: float = 1.0,
) -> np.ndarray:
    """``(n_days, ny, nx)`` bool: the grid points (zonal positions ``x_km``, meridional
    ``y_km``, regularly spaced) that ``satellite`` sees each day. Draws the phase of the
    ascending, then the descending pattern from ``rng``; see the module docstring.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import INSTRUMENTS, coverage

    x_km, y_km = 6.8 * np.arange(128), 8.7 * np.arange(128)
    nadir = coverage(INSTRUMENTS["jason-like"], n_days=10, x_km=x_km, y_km=y_km, lat_mid=38.0,
                     rng=np.random.default_rng(0))
    swath = coverage(INSTRUMENTS["swot-like"], n_days=10, x_km=x_km, y_km=y_km, lat_mid=38.0,
                     rng=np.random.default_rng(0))
    assert nadir.sum(axis=2).max() <= 2  # one cell a row per pass, one pass of each kind
    assert 0.05 < swath.mean() < 0.15 and swath.mean() > 10 * nadir.mean()
    ```
    """
    dx = float(x_km[1] - x_km[0]) if x_km.size > 1 else 1.0
    dy = float(y_km[1] - y_km[0]) if y_km.size > 1 else 1.0
    x, y = np.asarray(x_km)[None, :], np.asarray(y_km)[:, None]
    seen = np.zeros((n_days, y.size, x.size), dtype=bool)
    heading = _heading(satellite, lat_mid)
    zonal_spacing = 360.0 / satellite.revs_per_day * KM_PER_DEG * math.cos(math.radians(lat_mid))
    for sign in (1.0, -1.0):  # ascending, descending
        h = sign * heading
        spacing = zonal_spacing * math.cos(h)  # perpendicular distance between passes
        width = width_cells * max(dx * abs(math.cos(h)), dy * abs(math.sin(h)))
        across = x * math.cos(h) - y * math.sin(h)  # signed distance across the tracks
        phase = rng.uniform(0.0, spacing)
        for day in range(n_days):
            shift = (day * satellite.subcycle_step % satellite.cycle_days) / satellite.cycle_days * spacing
            offset = np.mod(across - phase - shift, spacing)
            distance = np.minimum(offset, spacing - offset)  # to the nearest pass of this kind
            if satellite.swath_km > 0.0:
                inner = 0.5 * satellite.gap_km
                seen[day] |= (distance >= inner) & (distance < inner + satellite.swath_km)
            else:
                seen[day] |= distance < 0.5 * width
    return seen


def resolve_instruments(instruments: Sequence[str | Satellite]) -> tuple[Satellite, ...]:
    """The `Satellite` of each name (of `INSTRUMENTS`) or object, checked and distinct."""
    if isinstance(instruments, (str, Satellite)):
        instruments = (instruments,)
    resolved = []
    for item in instruments:
        if isinstance(item, Satellite):
            resolved.append(item)
        elif isinstance(item, str) and item in INSTRUMENTS:
            resolved.append(INSTRUMENTS[item])
        else:
            raise ValueError(f"instruments must be names of {sorted(INSTRUMENTS)} or Satellite objects, got {item!r}")
    names = [satellite.name for satellite in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"instruments must have distinct names, got {names}")
    return tuple(resolved)


def observe(
    truth: np.ndarray,
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    time: np.ndarray,
    instruments: Sequence[str | Satellite] = DEFAULT_INSTRUMENTS,
    seed: int = 0,
    width_cells: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, dict[str, AlongTrack]]:
    r"""Observe daily maps ``truth`` ``(time, lat, lon)`` (a regular grid in degrees) with
    ``instruments`` (names of `INSTRUMENTS` or `Satellite` objects). Returns ``obs`` (NaN where
    unobserved; where several instruments see a cell on a day, the mean of their values),
    ``mask`` (bool) and the along-track points of each instrument (`AlongTrack`, by name).

    Each instrument draws its pattern phases and its noise from its own stream, seeded by
    ``seed`` and its name: adding or removing an instrument leaves the others' observations
    as they were. Distances are those of the central latitude: :math:`\Delta y` = 111.19 km
    per degree, :math:`\Delta x = \Delta y \cos\varphi_0`.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import observe

    truth = np.ones((4, 32, 32))
    lat, lon = 33.0 + 0.08 * np.arange(32), -65.0 + 0.08 * np.arange(32)
    time = np.datetime64("2012-10-01") + np.arange(4)
    obs, mask, tracks = observe(truth, lat=lat, lon=lon, time=time, instruments=("jason-like", "swot-like"))
    assert np.array_equal(np.isfinite(obs), mask) and set(tracks) == {"jason-like", "swot-like"}
    alone, _, _ = observe(truth, lat=lat, lon=lon, time=time, instruments=("jason-like",))
    assert np.array_equal(alone[np.isfinite(alone)], tracks["jason-like"].value)  # its own noise stream
    ```
    """
    satellites = resolve_instruments(instruments)
    truth = np.asarray(truth, dtype=np.float64)
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if truth.ndim != 3 or truth.shape[1:] != (lat.size, lon.size) or len(time) != truth.shape[0]:
        raise ValueError(f"truth must be (time, lat, lon) = ({len(time)}, {lat.size}, {lon.size}), got {truth.shape}")
    n_days = truth.shape[0]
    lat_mid = float(lat.mean())
    dy_km = float(lat[1] - lat[0]) * KM_PER_DEG if lat.size > 1 else KM_PER_DEG
    dx_km = (float(lon[1] - lon[0]) if lon.size > 1 else 1.0) * KM_PER_DEG * math.cos(math.radians(lat_mid))
    x_km, y_km = dx_km * np.arange(lon.size), dy_km * np.arange(lat.size)
    total = np.zeros(truth.shape)
    count = np.zeros(truth.shape, dtype=np.int64)
    tracks = {}
    for satellite in satellites:
        rng = np.random.default_rng([int(seed), zlib.crc32(satellite.name.encode())])
        seen = coverage(satellite, n_days=n_days, x_km=x_km, y_km=y_km, lat_mid=lat_mid, rng=rng,
                        width_cells=width_cells)
        days, rows, columns = np.nonzero(seen)
        value = truth[days, rows, columns] + satellite.noise_std * rng.standard_normal(days.size)
        total[days, rows, columns] += value
        count[days, rows, columns] += 1
        tracks[satellite.name] = AlongTrack(
            name=satellite.name, time=np.asarray(time)[days], lat=lat[rows], lon=lon[columns], value=value
        )
    mask = count > 0
    obs = np.full(truth.shape, np.nan)
    obs[mask] = total[mask] / count[mask]
    return obs, mask, tracks
