r"""Along-track altimetry: read the points (`read_along_track`), define a map grid where there is
no gridded reference (`MapGrid`, `grid_box`), and average the points on it (`bin_along_track`).

The files are those of the data challenges and of CMEMS's L3 products: the points along one
dimension (often ``time``), with a 1-D CF ``time`` (sub-daily instants), ``latitude`` or
``lat``, ``longitude`` or ``lon`` (coordinates or plain variables) and the height, e.g.
``sla_filtered`` or ``sla_unfiltered``; netCDF-4 or netCDF-3 (`pipekit_cycle.ssh.files`).

Binning. A cell of centres :math:`c_0 < \dots < c_{n-1}` spans :math:`[e_i, e_{i+1})`, its edges
halfway between centres (:math:`e_i = (c_{i-1} + c_i)/2`; the outer ones half a spacing out:
:math:`e_0 = c_0 - (c_1 - c_0)/2`, :math:`e_n = c_{n-1} + (c_{n-1} - c_{n-2})/2`): a point on
an inner edge falls in the cell above it, one on the outer edge :math:`e_n` outside. A point's
longitude is taken modulo 360° into :math:`[e_0, e_0 + 360)` first, so the points' and the
grid's conventions (-180..180, 0..360, unwrapped) need not agree. A day is
:math:`[d\ 00{:}00, d + 1\ 00{:}00)` in UTC (CF times are UTC), so a point at 23:59 belongs to
its date. The map of a (day, cell) is the mean of its points, NaN without any.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .files import LAT_NAMES, LON_NAMES, cf_time, import_xarray, metres_per_unit, open_netcdf
from .observations import AlongTrack

__all__ = ["MapGrid", "bin_along_track", "grid_box", "read_along_track"]

FLAG = "along-track file"


def _read_one(xr: object, file: str, var: str) -> AlongTrack:
    dataset = open_netcdf(xr, file, FLAG)
    with dataset:
        if var not in dataset.data_vars:
            have = ", ".join(map(str, dataset.data_vars)) or "none"
            raise ValueError(f"{file}: has no variable {var!r} ({FLAG}); its variables: {have}; pass one of them")
        dims = tuple(map(str, dataset[var].dims))
        time_dim, time = cf_time(xr, dataset, file, FLAG)
        columns = {}
        for what, names in (("latitude", LAT_NAMES), ("longitude", LON_NAMES)):
            found = [name for name in names if name in dataset.variables and dataset.variables[name].dims == dims]
            columns[what] = np.asarray(dataset.variables[found[0]].values, dtype=np.float64) if found else None
        if len(dims) != 1 or dims != (time_dim,) or columns["latitude"] is None or columns["longitude"] is None:
            raise ValueError(f"{file}: {var!r} ({FLAG}) has dimensions {dims}; expected one dimension shared with "
                             f"1-D time, latitude or lat, longitude or lon variables (an along-track file)")
        value = np.asarray(dataset[var].values, dtype=np.float64) * metres_per_unit(dataset[var].attrs, file, var, FLAG)
    lat, lon = columns["latitude"], columns["longitude"]
    keep = np.isfinite(value) & np.isfinite(lat) & np.isfinite(lon) & ~np.isnat(time)
    return AlongTrack(name=Path(file).name, time=time[keep], lat=lat[keep], lon=lon[keep], value=value[keep])


def read_along_track(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], var: str) -> list[AlongTrack]:
    """The points of ``var`` (m; ``cm`` and ``mm`` converted) in each file of ``paths`` (one
    path or several), one `pipekit_cycle.ssh.AlongTrack` a file, named by the file's name:
    ``time`` the instants (``datetime64[ns]``, UTC), ``lat``, ``lon`` as the file has them;
    the points where the value, the position or the time is missing (NaN, NaT) are dropped.
    ``ValueError`` (one line naming the file) for a file that does not fit; ``ImportError``
    without xarray.

    Examples
    --------
    ```python
    import os
    import tempfile

    import numpy as np
    import xarray as xr
    from pipekit_cycle.ssh.alongtrack import read_along_track

    path = os.path.join(tempfile.mkdtemp(), "track.nc")
    hours = np.array([0.5, 6.0, 23.99])
    xr.Dataset({"sla_unfiltered": ("time", [0.1, np.nan, -0.2]),
                "latitude": ("time", [33.0, 33.1, 33.2]), "longitude": ("time", [295.0, 295.1, 295.2])},
               coords={"time": ("time", hours, {"units": "hours since 2012-10-01"})}).to_netcdf(path, engine="scipy")
    (track,) = read_along_track(path, "sla_unfiltered")
    assert track.value.tolist() == [0.1, -0.2] and track.lon.tolist() == [295.0, 295.2]  # the NaN dropped
    assert track.time.astype("datetime64[D]").tolist() == [np.datetime64("2012-10-01", "D")] * 2
    ```
    """
    xr = import_xarray("reading along-track")
    files = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not files:
        raise ValueError(f"read_along_track: no files given ({FLAG}); pass one path or several")
    return [_read_one(xr, str(file), var) for file in files]


@dataclasses.dataclass(frozen=True)
class MapGrid:
    """A map grid without a gridded reference: ``lat`` and ``lon`` the cell centres (degrees,
    increasing, regular; ``lon`` contiguous, e.g. 170..190 across 180°) and ``dates`` the days
    (``datetime64[D]``, consecutive). ``dy_deg`` and ``dx_deg`` are the spacings.

    Examples
    --------
    ```python
    from pipekit_cycle.ssh.alongtrack import grid_box

    grid = grid_box(33.0, 34.0, -65.0, -64.0, 0.25, "2012-10-01", "2012-10-03")
    assert grid.shape == (3, 4, 4) and grid.dy_deg == grid.dx_deg == 0.25
    ```
    """

    lat: np.ndarray
    lon: np.ndarray
    dates: np.ndarray

    @property
    def dy_deg(self) -> float:
        return float(self.lat[1] - self.lat[0])

    @property
    def dx_deg(self) -> float:
        return float(self.lon[1] - self.lon[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(time, lat, lon)``."""
        return (len(self.dates), len(self.lat), len(self.lon))


def _cells(low: float, high: float, step: float, name: str) -> np.ndarray:
    """The centres of the cells of ``step`` that tile ``[low, high]``."""
    if not (np.isfinite(step) and step > 0.0):
        raise ValueError(f"grid_box: resolution must be > 0 degrees, got {step!r}")
    count = (high - low) / step
    if not high > low or abs(count - round(count)) > 1e-6 * max(1.0, count) or round(count) < 2:
        raise ValueError(f"grid_box: {name} {low:g}..{high:g} must be increasing and hold a whole number (at least 2) "
                         f"of {step:g}-degree cells")
    return low + step * (np.arange(round(count)) + 0.5)


def grid_box(
    lat0: float,
    lat1: float,
    lon0: float,
    lon1: float,
    resolution: float | tuple[float, float],
    start: str | np.datetime64,
    end: str | np.datetime64,
) -> MapGrid:
    """The `MapGrid` of the box ``[lat0, lat1] x [lon0, lon1]`` (the box's edges, degrees) cut
    into cells of ``resolution`` degrees (one number, or ``(dlat, dlon)``), their centres
    half a cell in from the edges, and the days ``start`` to ``end``, both included. A box
    across 180° is given with ``lon1 > 180`` (170..190), one across 0° with ``lon0 < 0``.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh.alongtrack import grid_box

    grid = grid_box(33.0, 43.0, -65.0, -55.0, 0.05, "2012-10-01", "2012-12-02")
    assert grid.shape == (63, 200, 200) and grid.lat[0] == 33.025 and abs(grid.lon[-1] + 55.025) < 1e-9
    wide = grid_box(-1.0, 1.0, 170.0, 190.0, (0.5, 1.0), "2012-10-01", "2012-10-01")
    assert wide.shape == (1, 4, 20) and wide.dates[0] == np.datetime64("2012-10-01")
    ```
    """
    dlat, dlon = (resolution, resolution) if np.isscalar(resolution) else resolution
    if lat0 < -90.0 or lat1 > 90.0:
        raise ValueError(f"grid_box: latitudes must lie in -90..90, got {lat0:g}..{lat1:g}")
    if lon1 - lon0 > 360.0:
        raise ValueError(f"grid_box: the box spans {lon1 - lon0:g} degrees of longitude, more than 360")
    lat, lon = _cells(float(lat0), float(lat1), float(dlat), "latitudes"), _cells(float(lon0), float(lon1),
                                                                                  float(dlon), "longitudes")
    first, last = np.datetime64(start, "D"), np.datetime64(end, "D")
    if last < first:
        raise ValueError(f"grid_box: end {last} is before start {first}")
    return MapGrid(lat=lat, lon=lon, dates=np.arange(first, last + np.timedelta64(1, "D")))


def _edges(centres: np.ndarray, name: str) -> np.ndarray:
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 1 or centres.size < 2 or not np.all(np.diff(centres) > 0):
        raise ValueError(f"bin_along_track: {name} must be at least 2 increasing cell centres, got {centres!r}")
    middle = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[centres[0] - (middle[0] - centres[0])], middle, [centres[-1] + (centres[-1] - middle[-1])]])


def bin_along_track(
    tracks: Iterable[AlongTrack] | Mapping[str, AlongTrack],
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    dates: np.ndarray,
) -> tuple[np.ndarray, int, int]:
    """``(obs, used, dropped)``: ``obs`` ``(time, lat, lon)`` the mean of the points of
    ``tracks`` (`pipekit_cycle.ssh.AlongTrack`, a list or by name) in each day of ``dates``
    and each cell of centres ``lat``, ``lon`` (see the module docstring), NaN where none fell;
    ``used`` the number of points averaged, ``dropped`` that of the others (outside the box or
    the days, or not finite).

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import AlongTrack
    from pipekit_cycle.ssh.alongtrack import bin_along_track, grid_box

    grid = grid_box(0.0, 2.0, 358.0, 362.0, 1.0, "2012-10-01", "2012-10-02")  # across Greenwich
    time = np.array(["2012-10-01T03:00", "2012-10-01T23:59", "2012-10-02T12:00", "2012-10-05T00:00"],
                    dtype="datetime64[ns]")
    track = AlongTrack("t", time=time, lat=np.array([0.5, 0.5, 1.0, 0.5]), lon=np.array([-1.5, 358.5, 0.2, 0.5]),
                       value=np.array([0.25, 0.75, 1.0, 9.0]))
    obs, used, dropped = bin_along_track([track], lat=grid.lat, lon=grid.lon, dates=grid.dates)
    assert obs[0, 0, 0] == 0.5 and obs[1, 1, 2] == 1.0  # the mean of two points; 1.0 N is the row above
    assert np.isfinite(obs).sum() == 2 and (used, dropped) == (3, 1)  # 2012-10-05 is not a day of the grid
    ```
    """
    lat_edges, lon_edges = _edges(lat, "lat"), _edges(lon, "lon")
    if lon_edges[-1] - lon_edges[0] > 360.0:
        raise ValueError(f"bin_along_track: lon spans {lon_edges[-1] - lon_edges[0]:g} degrees, more than 360")
    days = np.asarray(dates, dtype="datetime64[D]")
    if days.ndim != 1 or days.size < 1 or not np.all(np.diff(days) > np.timedelta64(0, "D")):
        raise ValueError(f"bin_along_track: dates must be increasing datetime64 days, got {dates!r}")
    tracks = list(tracks.values()) if isinstance(tracks, Mapping) else list(tracks)
    shape = (days.size, lat_edges.size - 1, lon_edges.size - 1)
    total = np.zeros(int(np.prod(shape)))
    count = np.zeros(total.size, dtype=np.int64)
    dropped = 0
    for track in tracks:
        value = np.asarray(track.value, dtype=np.float64)
        y = np.asarray(track.lat, dtype=np.float64)
        x = np.asarray(track.lon, dtype=np.float64)
        x = x - 360.0 * np.floor((x - lon_edges[0]) / 360.0)  # into [e_0, e_0 + 360), unchanged if there
        day = np.asarray(track.time).astype("datetime64[D]")
        t = np.searchsorted(days, day)
        row = np.searchsorted(lat_edges, y, side="right") - 1
        column = np.searchsorted(lon_edges, x, side="right") - 1
        inside = (
            np.isfinite(value) & (t < days.size) & (row >= 0) & (row < shape[1]) & (column >= 0)
            & (column < shape[2])
        )
        inside[inside] &= days[t[inside]] == day[inside]
        flat = np.ravel_multi_index((t[inside], row[inside], column[inside]), shape)
        total += np.bincount(flat, weights=value[inside], minlength=total.size)
        count += np.bincount(flat, minlength=total.size)
        dropped += int(value.size - inside.sum())
    obs = np.full(total.size, np.nan)
    seen = count > 0
    obs[seen] = total[seen] / count[seen]
    return obs.reshape(shape), int(count.sum()), dropped
