r"""SSH files: gridded netCDF maps in (`read_netcdf`), CF-1.8 reconstructions out (`write_netcdf`).

Reading takes netCDF-4 (HDF5, through ``h5netcdf``) and netCDF-3 (classic and 64-bit offset,
through xarray's ``scipy`` engine), told apart by the file's first bytes; both and ``xarray``
are the optional ``netcdf`` extra (`NETCDF_HINT`), imported when a file is read or written.
Files are written atomically (a temporary file renamed into place) with the umask's
permissions. Every error is one line that names the file, the flag it came from (``--data``,
``--var``, ``--obs-var``) and how to put it right.

Heights are in metres: a variable in ``cm`` or ``mm`` (its ``units`` attribute) is converted,
one without units is taken as metres, one in other units is an error.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .gridded import LON_CONVENTIONS, SEA_LEVEL_ANOMALY, GriddedData

__all__ = ["NETCDF_HINT", "read_netcdf", "write_netcdf"]

NETCDF_HINT = "pip install 'pipekit-cycle[netcdf]' (or pip install xarray h5netcdf h5py scipy)"
LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "longitude")
RESAMPLE_HINT = 'resample to daily first, e.g. ds.resample(time="1D").mean()'
_METRES = {
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1.0),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 0.01),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), 0.001),
}


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())


def import_xarray(doing: str) -> Any:
    """The ``xarray`` module, or an ``ImportError`` that says what ``doing`` needs and how to get it."""
    try:
        import xarray
    except ImportError as error:
        raise ImportError(f"{doing} netCDF needs xarray ({error}); {NETCDF_HINT}") from None
    return xarray


def open_netcdf(xr: Any, file: str, flag: str) -> Any:
    """The dataset of ``file`` (times left undecoded: `cf_time` decodes them), by its format."""
    if not Path(file).is_file():
        raise ValueError(f"{file}: no such file ({flag}); pass the path of an existing netCDF file")
    with open(file, "rb") as handle:
        head = handle.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        engine, kind, module = "h5netcdf", "netCDF-4", "h5netcdf"
    elif head[:4] in (b"CDF\x01", b"CDF\x02"):
        engine, kind, module = "scipy", "netCDF-3", "scipy"
    elif head[:4] == b"CDF\x05":
        raise ValueError(f"{file}: a netCDF-3 CDF-5 file, which xarray's scipy engine cannot read ({flag}); "
                         f"convert it to netCDF-4, e.g. nccopy -k nc4 {file} converted.nc")
    else:
        raise ValueError(f"{file}: not a netCDF file ({flag}): it starts with {head[:4]!r}, neither netCDF-4 "
                         f"(HDF5) nor netCDF-3 (CDF); pass a netCDF file")
    try:
        __import__(module)
    except ImportError as error:
        raise ImportError(f"reading the {kind} file {file} needs {module} ({error}); {NETCDF_HINT}") from None
    try:
        return xr.open_dataset(file, engine=engine, decode_times=False, decode_timedelta=False)
    except Exception as error:  # h5py, scipy and xarray raise many types for a file they cannot read
        raise ValueError(f"{file}: not a readable {kind} file ({flag}; {_one_line(error)}); "
                         f"check that it was written whole") from None


def _duration(step: np.timedelta64) -> str:
    """``step`` in words: ``2 days``, ``6 hours``, ``90 s``."""
    seconds = float(step / np.timedelta64(1, "s"))
    for unit, size in (("day", 86400.0), ("hour", 3600.0), ("minute", 60.0)):
        if seconds and seconds % size == 0.0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if abs(count) != 1 else ''}"
    return f"{seconds:g} s"


def cf_time(xr: Any, dataset: Any, file: str, flag: str) -> tuple[str, np.ndarray]:
    """The dimension of the 1-D CF ``time`` variable and its values (``datetime64[ns]``, NaT
    where missing): its ``units`` must read ``<unit> since <date>`` in a calendar numpy has."""
    if "time" not in dataset.variables:
        raise ValueError(f"{file}: has no 'time' variable ({flag}); add a CF time coordinate, e.g. time(time) with "
                         f"units 'days since 2012-10-01'")
    raw = dataset.variables["time"]
    if raw.ndim != 1:
        raise ValueError(f"{file}: 'time' has dimensions {raw.dims} ({flag}); it must be 1-D")
    units = str(raw.attrs.get("units", ""))
    if np.issubdtype(raw.dtype, np.datetime64):
        return raw.dims[0], raw.values.astype("datetime64[ns]")
    if " since " not in f" {units} ":
        found = f"units {units!r}" if units else "no units"
        raise ValueError(f"{file}: 'time' has {found}, not a CF time ({flag}); add units like 'days since 2012-10-01' "
                         f"(e.g. ds.time.attrs['units'] = 'days since 2012-10-01')")
    calendar = str(raw.attrs.get("calendar", "standard"))
    try:
        values = xr.decode_cf(xr.Dataset({"t": raw}), decode_timedelta=False)["t"].values
    except Exception as error:  # xarray's message names the units and calendar it could not decode
        raise ValueError(f"{file}: cannot decode 'time' (units {units!r}, calendar {calendar!r}) ({flag}; "
                         f"{_one_line(error)}); write it in the standard calendar") from None
    if not np.issubdtype(values.dtype, np.datetime64):
        raise ValueError(f"{file}: 'time' is in the calendar {calendar!r} ({flag}), which has no numpy dates; "
                         f"convert it to the standard calendar, e.g. ds.convert_calendar('standard')")
    return raw.dims[0], values.astype("datetime64[ns]")


def metres_per_unit(attrs: Mapping[str, Any], file: str, name: str, flag: str) -> float:
    """The factor from the units of ``name`` to metres."""
    units = attrs.get("units")
    if units is None:
        return 1.0
    factor = _METRES.get(str(units).strip().lower())
    if factor is None:
        raise ValueError(f"{file}: {name!r} ({flag}) has units {units!r}; expected a sea surface height in m, cm or mm "
                         f"(pass such a variable, or set its units attribute)")
    return factor


def _axis(dataset: Any, names: tuple[str, ...], dim: str) -> tuple[str, np.ndarray] | None:
    """The first variable of ``names`` that is 1-D along ``dim``, and its values (float64)."""
    for name in names:
        if name in dataset.variables and dataset.variables[name].dims == (dim,):
            return name, np.asarray(dataset.variables[name].values, dtype=np.float64)
    return None


def _regular(values: np.ndarray, name: str, file: str) -> float:
    """The step of a regular, strictly monotonic axis (negative: descending): each value within
    a thousandth of a step of the line through the end points (float32 coordinates pass)."""
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"{file}: {name!r} has {values.size} finite values (--data); the job needs a grid of at "
                         f"least 2 x 2 cells")
    steps = np.diff(values)
    step = float(values[-1] - values[0]) / (values.size - 1)
    line = values[0] + step * np.arange(values.size)
    if step == 0.0 or np.any(steps * step <= 0.0) or np.abs(values - line).max() > 1e-3 * abs(step):
        raise ValueError(f"{file}: {name!r} is not a regular monotonic axis (steps from {steps.min():g} to "
                         f"{steps.max():g} degrees) (--data); regrid to a regular grid first, e.g. with ds.interp")
    return step


def _latitudes(values: np.ndarray, name: str, file: str) -> tuple[np.ndarray, bool, float]:
    """Ascending latitudes, whether the file's descended, and their spacing."""
    step = _regular(values, name, file)
    if np.abs(values).max() > 90.0:
        raise ValueError(f"{file}: {name!r} goes beyond ±90 degrees (--data); it must hold latitudes in degrees_north")
    return (values[::-1], True, -step) if step < 0 else (values, False, step)


def _longitudes(values: np.ndarray, name: str, file: str) -> tuple[np.ndarray, str | None, float]:
    """Longitudes made contiguous (unwrapped across the file's seam), the file's convention
    (`LON_CONVENTIONS`; ``None`` when all are in [0, 180]) and their spacing."""
    low, high = float(values.min()), float(values.max())
    if low < -180.0 or high > 360.0 or (low < 0.0 and high > 180.0):
        raise ValueError(f"{file}: {name!r} spans {low:g} to {high:g} (--data); longitudes must be in -180..180 or "
                         f"in 0..360")
    lon = np.unwrap(values, period=360.0)
    step = _regular(lon, name, file)
    if step < 0:
        raise ValueError(f"{file}: {name!r} decreases (--data); sort it eastward first, e.g. ds.sortby({name!r})")
    if lon[-1] - lon[0] + step > 360.0 + 1e-3 * step:
        raise ValueError(f"{file}: {name!r} goes round the globe more than once (--data); drop the repeated "
                         f"longitudes")
    convention = LON_CONVENTIONS[0] if low < 0.0 else LON_CONVENTIONS[1] if high > 180.0 else None
    return lon, convention, step


def _lon_as_read(lon: np.ndarray, convention: str | None) -> np.ndarray:
    """``lon`` wrapped back into its file's range, [-180, 180) or [0, 360) (unchanged inside it)."""
    if convention is None:
        return lon
    low = -180.0 if convention == LON_CONVENTIONS[0] else 0.0
    return np.where(lon >= low + 360.0, lon - 360.0, np.where(lon < low, lon + 360.0, lon))


def _daily(values: np.ndarray, file: str) -> np.ndarray:
    """The dates of a daily time axis (``datetime64[D]``), or a one-line error saying what it is."""
    if np.isnat(values).any():
        raise ValueError(f"{file}: 'time' has {int(np.isnat(values).sum())} missing values (--data); every map "
                         f"needs its date")
    steps = np.diff(values)
    one = np.timedelta64(1, "D")
    if steps.size and not np.all(steps == one):
        if np.all(steps == steps[0]):
            found = f"time steps of {_duration(steps[0])}"
        else:
            found = f"irregular time steps (from {_duration(steps.min())} to {_duration(steps.max())})"
        raise ValueError(f"{file}: the time axis has {found} (--data); the job maps daily fields: {RESAMPLE_HINT}")
    return values.astype("datetime64[D]")


def read_netcdf(path: str | os.PathLike[str], var: str, obs_var: str | None = None) -> GriddedData:
    """Read ``var`` (the gridded reference, ``--var``) and ``obs_var`` (gridded observations,
    NaN where unobserved, ``--obs-var``; ``None``: none, ``obs`` all NaN for the caller to fill,
    e.g. with `pipekit_cycle.ssh.alongtrack.bin_along_track`) from a netCDF-4 or netCDF-3 file.

    What the file must hold, each point an error of one line when it does not:

    * both variables with dimensions ``(time, lat, lon)``, the latitudes a 1-D variable named
      ``lat`` or ``latitude`` along the second, the longitudes ``lon`` or ``longitude`` along
      the third (coordinates or plain variables);
    * a regular grid: latitudes ascending or descending (flipped to ascending,
      ``lat_descending`` set), longitudes in -180..180 or 0..360, a box across 0° or 180°
      unwrapped to contiguous values (``lon_convention`` keeps the file's range); the two
      spacings may differ;
    * a CF ``time`` (``units`` ``<unit> since <date>``), daily (one map a day);
    * the reference finite but on land: cells NaN on every day are land (``land``), a cell NaN
      on some days only is an error; observations on land cells are dropped (NaN).

    ``ValueError`` for a file that does not fit; ``ImportError`` without xarray (or without the
    engine of the file's format).

    Examples
    --------
    ```python
    import os
    import tempfile

    import numpy as np
    import xarray as xr
    from pipekit_cycle.ssh.files import read_netcdf

    # A netCDF-3 file: latitudes north to south, longitudes 0..360 across Greenwich, land.
    lat, lon = np.array([1.5, 0.5, -0.5]), np.array([358.5, 359.5, 0.5, 1.5])
    sla = np.ones((4, 3, 4))
    sla[:, 0, 0] = np.nan  # land: NaN on every day
    time = ("time", np.arange(4.0), {"units": "days since 2012-10-01"})
    path = os.path.join(tempfile.mkdtemp(), "maps.nc")
    xr.Dataset({"sla": (("time", "latitude", "longitude"), sla)},
               coords={"time": time, "latitude": lat, "longitude": lon}).to_netcdf(path, engine="scipy")
    data = read_netcdf(path, "sla")
    assert data.lat.tolist() == [-0.5, 0.5, 1.5] and data.lat_descending
    assert data.lon.tolist() == [358.5, 359.5, 360.5, 361.5] and data.lon_convention == "0..360"
    assert data.land[2, 0] and data.land.sum() == 1 and np.isnan(data.obs).all()
    assert data.dates[0] == np.datetime64("2012-10-01") and data.time.tolist() == [0.0, 1.0, 2.0, 3.0]
    try:
        read_netcdf(path, "ssh")
    except ValueError as error:
        assert "has no variable 'ssh' (--var); its variables: sla" in str(error)
    ```
    """
    xr = import_xarray("reading")
    file = str(path)
    dataset = open_netcdf(xr, file, "--data")
    with dataset:
        for flag, name in (("--var", var), ("--obs-var", obs_var)):
            if name is not None and name not in dataset.data_vars:
                have = ", ".join(map(str, dataset.data_vars)) or "none"
                raise ValueError(f"{file}: has no variable {name!r} ({flag}); its variables: {have}; pass one of them")
        dims = tuple(map(str, dataset[var].dims))
        time_dims = dataset.variables["time"].dims if "time" in dataset.variables else dims[:1]
        lat_axis = _axis(dataset, LAT_NAMES, dims[1]) if len(dims) == 3 else None
        lon_axis = _axis(dataset, LON_NAMES, dims[2]) if len(dims) == 3 else None
        if len(dims) != 3 or (dims[0],) != time_dims or lat_axis is None or lon_axis is None:
            raise ValueError(f"{file}: {var!r} (--var) has dimensions {dims}, expected (time, lat, lon) with 1-D "
                             f"time, lat or latitude, lon or longitude variables along them; transpose or rename "
                             f"first, e.g. ds.transpose('time', 'lat', 'lon')")
        if obs_var is not None and tuple(map(str, dataset[obs_var].dims)) != dims:
            raise ValueError(f"{file}: {obs_var!r} (--obs-var) has dimensions {tuple(dataset[obs_var].dims)}, "
                             f"expected those of {var!r} (--var), {dims}")
        fields: dict[str, np.ndarray] = {}
        for flag, name in (("--var", var), ("--obs-var", obs_var)):
            if name is not None:
                factor = metres_per_unit(dataset[name].attrs, file, name, flag)
                fields[name] = np.asarray(dataset[name].values, dtype=np.float64) * factor
        _, raw_time = cf_time(xr, dataset, file, "--data")
        standard_name = str(dataset[var].attrs.get("standard_name", ""))
    dates = _daily(raw_time, file)
    lat, lat_descending, dy_deg = _latitudes(lat_axis[1], lat_axis[0], file)
    lon, lon_convention, dx_deg = _longitudes(lon_axis[1], lon_axis[0], file)
    rows = slice(None, None, -1) if lat_descending else slice(None)
    truth = np.ascontiguousarray(fields[var][:, rows])  # a copy, not a view of negative strides
    obs = np.full(truth.shape, np.nan) if obs_var is None else fields[obs_var][:, rows]
    for flag, name, values in (("--var", var, truth), ("--obs-var", obs_var, obs)):
        if np.isinf(values).any():
            raise ValueError(f"{file}: {name!r} ({flag}) holds infinities; replace them with NaN (missing)")
    missing = np.isnan(truth)
    land = missing.all(axis=0)
    gaps = int((missing.any(axis=0) & ~land).sum())
    if gaps:
        raise ValueError(f"{file}: {var!r} (--var) is NaN at {gaps} cells on some days only; land must be NaN on "
                         f"every day, the ocean on none: fill the gaps, e.g. ds[{var!r}].interpolate_na('time')")
    if land.all():
        raise ValueError(f"{file}: {var!r} (--var) is NaN everywhere; pass a variable with values")
    return GriddedData(
        truth=truth, obs=np.where(land, np.nan, obs), lat=np.ascontiguousarray(lat), lon=lon,
        time=(dates - dates[0]) / np.timedelta64(1, "D"), dates=dates, land=land, dx_deg=dx_deg, dy_deg=dy_deg,
        noise_std=None, source=file,
        lat_descending=lat_descending, lon_convention=lon_convention,
        standard_name=standard_name if standard_name.startswith("sea_surface_height") else SEA_LEVEL_ANOMALY,
    )


def _attribute(key: str, value: Any) -> str | int | float:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    raise ValueError(f"write_netcdf: attrs[{key!r}] is a {type(value).__name__}; netCDF attributes are str, int or "
                     f"float")


def write_netcdf(
    path: str | os.PathLike[str],
    data: GriddedData,
    fields: Mapping[str, np.ndarray],
    *,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``truth`` (when there is one), ``obs`` and each of ``fields`` (``(time, lat, lon)``,
    m, the maps of ``data``'s period) into a CF-1.8 netCDF-4 file, atomically (a temporary file
    renamed into place).

    * ``time`` (dates at 00:00, units ``days since <first date>``, standard calendar),
      ``latitude`` and ``longitude`` (``degrees_north``, ``degrees_east``; ``axis`` Y and X):
      the grid as it was read (latitudes flipped back if the file's descended, longitudes
      wrapped back into its range, `GriddedData`);
    * every map a float32 variable on ``(time, latitude, longitude)``, zlib-compressed,
      ``_FillValue`` NaN, NaN on land; ``units`` ``m``, a ``long_name``, and the
      ``standard_name`` of ``data`` for all of them: the estimates are of the quantity the
      reference is. CF names a sea level anomaly (SLA, the simulation's eddy field and CMEMS's
      ``sla``) ``sea_surface_height_above_sea_level`` and an absolute dynamic topography (ADT)
      ``sea_surface_height_above_geoid``; a file's reference keeps its own name;
    * global attributes ``Conventions`` (``CF-1.8``), ``title``, ``history`` (when and what
      wrote it), ``source`` (``data.source``), then ``attrs`` (str, int, float; bool as
      ``"true"``/``"false"``), which may replace ``title`` and ``source`` but not the others.

    Examples
    --------
    ```python
    import os
    import tempfile

    import numpy as np
    import xarray as xr
    from pipekit_cycle.ssh.files import read_netcdf, write_netcdf
    from pipekit_cycle.ssh.gridded import simulated

    data = simulated(n_days=3, grid=32, seed=0)
    path = os.path.join(tempfile.mkdtemp(), "maps.nc")
    write_netcdf(path, data, {"estimate": np.zeros_like(data.truth)}, attrs={"seed": 0})
    again = read_netcdf(path, "truth", "obs")  # the variables written: truth, obs, estimate
    assert np.array_equal(again.truth, data.truth.astype(np.float32)) and again.dates.tolist() == data.dates.tolist()
    with xr.open_dataset(path) as written:
        assert written.attrs["Conventions"] == "CF-1.8" and written["estimate"].dtype == np.float32
        assert written["time"].encoding["units"] == "days since 2012-10-01" and written.attrs["seed"] == 0
    ```
    """
    xr = import_xarray("writing")
    try:
        import h5netcdf  # noqa: F401  (the engine)
    except ImportError as error:
        raise ImportError(f"writing netCDF needs h5netcdf ({error}); {NETCDF_HINT}") from None
    maps = {"obs": (data.obs, "observed sea surface height on the grid (NaN where unobserved)")}
    if data.truth is not None:
        maps = {"truth": (data.truth, f"reference sea surface height ({data.source})"), **maps}
    for name, field in fields.items():
        if name in maps or name in ("time", "latitude", "longitude"):
            raise ValueError(f"write_netcdf: fields may not be named {name!r}: the file holds that already")
        maps[name] = (field, f"sea surface height estimate {name!r}")
    shape = data.obs.shape
    for name, (field, _) in maps.items():
        if np.shape(field) != shape:
            raise ValueError(f"write_netcdf: {name!r} has shape {np.shape(field)}, expected (time, lat, lon) {shape}")
    if not shape[0]:
        raise ValueError("write_netcdf: data holds no days")
    extra = dict(attrs or {})
    if {"Conventions", "history"} & set(extra):
        raise ValueError("write_netcdf: attrs may not replace Conventions or history")
    rows = slice(None, None, -1) if data.lat_descending else slice(None)
    dims = ("time", "latitude", "longitude")
    variables = {
        name: (dims, np.where(data.land, np.nan, np.asarray(field, dtype=np.float64))[:, rows].astype(np.float32),
               {"units": "m", "long_name": long_name, "standard_name": data.standard_name})
        for name, (field, long_name) in maps.items()
    }
    first = str(np.datetime64(data.dates[0], "D"))
    coords = {
        "time": ("time", np.asarray(data.dates, dtype="datetime64[D]").astype("datetime64[ns]"),
                 {"standard_name": "time", "long_name": "time", "axis": "T"}),
        "latitude": ("latitude", np.asarray(data.lat, dtype=np.float64)[rows],
                     {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "axis": "Y"}),
        "longitude": ("longitude", _lon_as_read(np.asarray(data.lon, dtype=np.float64), data.lon_convention),
                      {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude", "axis": "X"}),
    }
    try:
        version = importlib.metadata.version("pipekit-cycle")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    global_attrs = {
        "Conventions": "CF-1.8", "title": "Sea surface height maps",
        "history": f"{now} written by pipekit_cycle {version} (pipekit_cycle.ssh.write_netcdf)",
        "source": data.source,
        **{key: _attribute(key, value) for key, value in extra.items()},
    }
    dataset = xr.Dataset(variables, coords=coords, attrs=global_attrs)
    encoding: dict[str, dict[str, Any]] = {
        name: {"dtype": "float32", "zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)} for name in maps
    }
    encoding["time"] = {"units": f"days since {first}", "calendar": "standard", "dtype": "int32"}
    encoding.update({name: {"_FillValue": None} for name in ("latitude", "longitude")})
    target = Path(path)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    try:
        dataset.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
