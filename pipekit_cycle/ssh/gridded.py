"""Gridded SSH data: the daily maps a mapping job reads, simulated or from a file."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from .observations import DEFAULT_INSTRUMENTS, KM_PER_DEG
from .simulation import simulate

__all__ = ["LON_CONVENTIONS", "SEA_LEVEL_ANOMALY", "GriddedData", "simulated"]

# The CF standard name of a sea level anomaly (SLA: the height above the mean sea surface, as
# CMEMS's `sla` and the simulation's eddy field); an absolute dynamic topography (ADT) is
# `sea_surface_height_above_geoid`.
SEA_LEVEL_ANOMALY = "sea_surface_height_above_sea_level"
# The longitude conventions a file may use: the ranges, [-180, 180) and [0, 360), its
# longitudes are written back into (`GriddedData.lon_convention`).
LON_CONVENTIONS = ("-180..180", "0..360")


@dataclasses.dataclass(frozen=True)
class GriddedData:
    """Daily maps on a regular (lat, lon) grid: ``truth`` (the gridded reference; ``None`` when
    there is none, only observations) and ``obs`` (NaN where unobserved), ``(time, lat, lon)``, m.

    * ``lat`` (degrees, ascending) and ``lon`` (degrees, increasing and contiguous: a box that
      crosses 0° or 180° in its file's convention is unwrapped, e.g. 350..370 or 170..190),
      the cell centres; ``dy_deg`` and ``dx_deg`` their spacings (they may differ), `dx_km`
      the zonal spacing in km at the mean latitude (derived from them);
    * ``dates`` (``datetime64[D]``, one a map) and ``time``, float days since the first date of
      the data they were read or simulated as (`period` keeps it: a held-out period's ``time``
      starts where it starts in the whole);
    * ``land`` ``(lat, lon)`` bool, True on land (the reference is NaN there on every day; all
      False for the simulation);
    * ``noise_std`` the observation noise if known; ``source`` where the data came from;
    * how to write the grid as it was read (`pipekit_cycle.ssh.write_netcdf`):
      ``lat_descending`` (the file's latitudes ran north to south: the maps were flipped to
      ascending) and ``lon_convention`` (``"-180..180"`` or ``"0..360"``: the range
      the longitudes are wrapped back into; ``None``: written as they are);
      ``standard_name``, the CF name of the quantity (`SEA_LEVEL_ANOMALY` unless the file
      says otherwise).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh.gridded import simulated

    data = simulated(n_days=6, grid=32, seed=0)
    held_out = data.period(4, 6)  # the last two days
    assert held_out.truth.shape == (2, 32, 32) and held_out.time.tolist() == data.time[4:].tolist()
    assert held_out.dates[0] == np.datetime64("2012-10-05") and not data.land.any()
    ```
    """

    truth: np.ndarray | None
    obs: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    time: np.ndarray
    dates: np.ndarray
    land: np.ndarray
    dx_deg: float
    dy_deg: float
    noise_std: float | None
    source: str
    lat_descending: bool = False
    lon_convention: str | None = None
    standard_name: str = SEA_LEVEL_ANOMALY

    def __post_init__(self) -> None:
        shape = (len(self.time), np.size(self.lat), np.size(self.lon))
        if np.ndim(self.obs) != 3 or np.shape(self.obs) != shape:
            raise ValueError(f"GriddedData: obs must be (time, lat, lon) = {shape}, got {np.shape(self.obs)}")
        if self.truth is not None and np.shape(self.truth) != shape:
            raise ValueError(f"GriddedData: truth must be None or (time, lat, lon) = {shape}, "
                             f"got {np.shape(self.truth)}")
        if len(self.dates) != shape[0] or not np.issubdtype(np.asarray(self.dates).dtype, np.datetime64):
            raise ValueError(f"GriddedData: dates must be {shape[0]} datetime64 values (one a map), got {self.dates!r}")
        if np.shape(self.land) != shape[1:] or np.asarray(self.land).dtype != bool:
            raise ValueError(f"GriddedData: land must be bool (lat, lon) = {shape[1:]}, got {np.shape(self.land)}")
        if self.lon_convention not in (None, *LON_CONVENTIONS):
            raise ValueError(f"GriddedData: lon_convention must be None or one of {LON_CONVENTIONS}, "
                             f"got {self.lon_convention!r}")

    @property
    def dx_km(self) -> float:
        r"""The zonal spacing in km at the mean latitude :math:`\bar\varphi` of ``lat``,

        .. math::
            \Delta x = \frac{\pi R}{180} \, \Delta\lambda \cos\bar\varphi,

        with :math:`\Delta\lambda` = ``dx_deg`` and :math:`R` = 6371 km (``KM_PER_DEG``, 111.2 km a
        degree): derived from the grid, not stored, so it cannot disagree with it (the
        simulation's ``dx_km`` is the same number).

        Examples
        --------
        ```python
        import math
        from pipekit_cycle.ssh.gridded import simulated

        data = simulated(n_days=1, grid=16, seed=0)
        assert math.isclose(data.dx_km, data.dx_deg * 111.195 * math.cos(math.radians(data.lat.mean())), rel_tol=1e-5)
        ```
        """
        return self.dx_deg * KM_PER_DEG * math.cos(math.radians(float(np.mean(self.lat))))

    def period(self, start: int, stop: int) -> GriddedData:
        """The days ``start:stop`` (``truth``, ``obs``, ``time`` and ``dates``)."""
        days = slice(start, stop)
        truth = None if self.truth is None else self.truth[days]
        return dataclasses.replace(self, truth=truth, obs=self.obs[days], time=self.time[days],
                                   dates=self.dates[days])


def simulated(
    *, n_days: int, grid: int, seed: int, instruments: Sequence[str] = DEFAULT_INSTRUMENTS
) -> GriddedData:
    """The default `pipekit_cycle.ssh.simulate` (the two-layer model seen by ``instruments``,
    names of `pipekit_cycle.ssh.INSTRUMENTS`: by default the four nadirs; add ``"swot-like"``
    for the wide swath) on a ``grid x grid`` box (``n_days`` days from 2012-10-01; ``time`` in
    days from its first map; open ocean: no land; a square grid, ``dy_deg == dx_deg``).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh.gridded import simulated

    data = simulated(n_days=3, grid=32, seed=0)
    assert data.truth.shape == (3, 32, 32) and data.noise_std == 0.03 and data.source.startswith("simulate(")
    assert data.dates.tolist() == (np.datetime64("2012-10-01") + np.arange(3)).tolist()
    assert data.dy_deg == data.dx_deg and not data.lat_descending and data.lon_convention is None
    ```
    """
    run = simulate(n_days, shape=(grid, grid), seed=seed, instruments=instruments)
    noise = sorted({satellite.noise_std for satellite in run.instruments})
    # One noise level for OI: the instruments' own when they share it, else their rms.
    noise_std = float(np.sqrt(np.mean(np.square(noise)))) if len(noise) > 1 else (noise[0] if noise else None)
    return GriddedData(
        truth=run.truth, obs=run.obs, lat=run.lat, lon=run.lon, time=run.days, dates=run.time, land=run.land,
        dx_deg=run.dx_deg, dy_deg=run.dx_deg, noise_std=noise_std,
        source=f"simulate({n_days}, shape=({grid}, {grid}), seed={seed}"
               + ("" if tuple(instruments) == DEFAULT_INSTRUMENTS else f", instruments={tuple(instruments)}") + ")",
    )
