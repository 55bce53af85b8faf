"""Land on a map grid, from a user's mask file: the cells a mapping job leaves out (no
observation, no loss, no score, NaN in the maps)."""

from __future__ import annotations

import os

import numpy as np

from .files import LAT_NAMES, LON_NAMES, import_xarray, open_netcdf

__all__ = ["read_land_mask"]


def _coordinate(dataset: object, names: tuple[str, ...], file: str, what: str) -> np.ndarray:
    for name in names:
        if name in dataset.variables and dataset.variables[name].ndim == 1:
            return np.asarray(dataset.variables[name].values, dtype=np.float64)
    raise ValueError(f"{file}: no 1-D {what} coordinate (looked for {', '.join(names)}) (--land-mask); name it one "
                     f"of those")


def _nearest(centres: np.ndarray, axis: np.ndarray, period: float | None) -> np.ndarray:
    """The index of the ``axis`` value nearest each of ``centres`` (``period``: longitudes)."""
    distance = centres[:, None] - axis[None, :]
    if period is not None:
        distance = (distance + period / 2) % period - period / 2
    return np.abs(distance).argmin(axis=1)


def read_land_mask(path: str | os.PathLike[str], var: str, *, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    r"""The land of the map grid of cell centres ``lat``, ``lon`` (degrees), ``(lat, lon)``
    bool: ``var`` of the netCDF file at ``path`` (a 2-D ``(lat, lon)`` field; nonzero or NaN
    is land, zero is ocean) at its nearest point to each centre, longitudes compared modulo
    360 (so a mask in 0..360 serves a map in -180..180). The mask's grid need not be the map's:
    a finer mask is sampled, a coarser one repeated. ``ValueError`` names the file and what to
    change; ``ImportError`` without xarray.

    Examples
    --------
    ```python
    import os
    import tempfile

    import numpy as np
    import xarray as xr
    from pipekit_cycle.ssh.land import read_land_mask

    path = os.path.join(tempfile.mkdtemp(), "land.nc")
    lon = np.arange(0.0, 360.0, 1.0)
    mask = np.broadcast_to(lon >= 350.0, (5, 360)).astype(np.int8)  # land from 350 E to the meridian
    xr.Dataset({"land": (("lat", "lon"), mask)}, coords={"lat": np.arange(30.0, 35.0), "lon": lon}).to_netcdf(path)
    land = read_land_mask(path, "land", lat=np.array([31.2, 32.8]), lon=np.array([-12.0, -8.4, 4.0]))
    assert land.tolist() == [[False, True, False], [False, True, False]]
    ```
    """
    xr = import_xarray("reading a land mask from")
    file = str(path)
    dataset = open_netcdf(xr, file, "--land-mask")
    with dataset:
        if var not in dataset.data_vars:
            have = ", ".join(map(str, dataset.data_vars)) or "none"
            raise ValueError(f"{file}: has no variable {var!r} (--land-var); its variables: {have}")
        field = dataset[var]
        if field.ndim != 2:
            raise ValueError(f"{file}: {var!r} has dimensions {tuple(field.dims)} (--land-var); expected a 2-D "
                             f"(lat, lon) mask")
        mask_lat = _coordinate(dataset, LAT_NAMES, file, "latitude")
        mask_lon = _coordinate(dataset, LON_NAMES, file, "longitude")
        values = np.asarray(field.transpose(*_order(field.dims, dataset)).values, dtype=np.float64)
    land = ~np.isfinite(values) | (values != 0)
    rows = _nearest(np.asarray(lat, dtype=np.float64), mask_lat, None)
    cols = _nearest(np.asarray(lon, dtype=np.float64), mask_lon, 360.0)
    return land[np.ix_(rows, cols)]


def _order(dims: tuple[str, ...], dataset: object) -> tuple[str, str]:
    """``dims`` as (latitude, longitude): by the coordinate names, else as given."""
    for name in LON_NAMES:
        if dims[0] == name or (name in dataset.variables and dataset.variables[name].dims == (dims[0],)):
            return dims[1], dims[0]
    return dims[0], dims[1]
