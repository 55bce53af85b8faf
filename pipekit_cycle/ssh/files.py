"""SSH files: netCDF maps in and reconstructions out (the optional ``xarray`` and ``h5netcdf``:
``pip install 'pipekit-cycle[netcdf]'``), written atomically with the umask's permissions."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .gridded import GriddedData
from .osse import KM_PER_DEG

__all__ = ["NETCDF_HINT", "read_netcdf", "write_netcdf"]

NETCDF_HINT = "pip install 'pipekit-cycle[netcdf]' (or pip install xarray h5netcdf h5py)"



def _regular_spacing(name: str, values: np.ndarray, file: str) -> float:
    steps = np.diff(values)
    if values.ndim != 1 or values.size < 2 or not np.all(steps > 0) or not np.allclose(steps, steps[0], rtol=1e-4):
        raise ValueError(f"{file}: {name} must be 1-D, increasing and regularly spaced (a regular grid)")
    return float(steps[0])


def read_netcdf(path: str | os.PathLike[str], var: str, obs_var: str) -> GriddedData:
    """Read ``var`` (the reference field) and ``obs_var`` (observations, NaN where unobserved)
    from a netCDF file, both with dimensions ``(time, lat, lon)`` on a regular grid in degrees.
    ``time`` is converted to days (datetimes: days since the first). ``ValueError`` names the
    file and what does not fit; ``ImportError`` without xarray and h5netcdf.

    Examples
    --------
    ```python
    import os
    import tempfile

    from pipekit_cycle import ssh

    path = os.path.join(tempfile.mkdtemp(), "maps.nc")
    ssh.write_netcdf(path, ssh.simulated(n_days=3, grid=32, seed=0), {})
    try:
        ssh.read_netcdf(path, "ssh", "obs")
    except ValueError as error:
        assert "has no variable 'ssh' (--var); its variables: truth, obs" in str(error)
    else:
        raise AssertionError("read_netcdf read a variable the file does not have")
    ```
    """
    try:
        import xarray as xr
    except ImportError as error:
        raise ImportError(f"reading netCDF needs xarray and h5netcdf ({error}); {NETCDF_HINT}") from None
    file = str(path)
    if not Path(file).is_file():
        raise ValueError(f"{file}: no such file")
    try:
        dataset = xr.open_dataset(file, engine="h5netcdf")
    except Exception as error:  # h5py and xarray raise many types for a file they cannot read
        raise ValueError(f"{file}: not a readable netCDF-4 file ({type(error).__name__}: {error})") from None
    with dataset:
        fields = {}
        for flag, name in (("--var", var), ("--obs-var", obs_var)):
            if name not in dataset.data_vars:
                have = ", ".join(map(str, dataset.data_vars)) or "none"
                raise ValueError(f"{file}: has no variable {name!r} ({flag}); its variables: {have}")
            array = dataset[name]
            if tuple(array.dims) != ("time", "lat", "lon"):
                raise ValueError(f"{file}: {name!r} has dimensions {tuple(array.dims)}, expected (time, lat, lon)")
            fields[name] = np.asarray(array.values, dtype=np.float64)
        lat = np.asarray(dataset["lat"].values, dtype=np.float64)
        lon = np.asarray(dataset["lon"].values, dtype=np.float64)
        raw_time = np.asarray(dataset["time"].values)
    if np.issubdtype(raw_time.dtype, np.datetime64):
        time = (raw_time - raw_time[0]) / np.timedelta64(1, "D")
    else:
        time = raw_time.astype(np.float64)
    if not np.isfinite(fields[var]).all():
        raise ValueError(f"{file}: {var!r} (--var, the reference) must be finite everywhere")
    if np.isinf(fields[obs_var]).any():
        raise ValueError(f"{file}: {obs_var!r} (--obs-var) must be finite or NaN (unobserved)")
    dlat = _regular_spacing("lat", lat, file)
    dlon = _regular_spacing("lon", lon, file)
    _regular_spacing("time", time.astype(np.float64), file)
    if not math.isclose(dlat, dlon, rel_tol=1e-3):
        raise ValueError(f"{file}: lat and lon spacings differ ({dlat} and {dlon} degrees); expected a square grid")
    return GriddedData(
        truth=fields[var], obs=fields[obs_var], lat=lat, lon=lon, time=time, dx_deg=dlon,
        dx_km=dlon * KM_PER_DEG * math.cos(math.radians(float(lat.mean()))), noise_std=None, source=file,
    )


def write_netcdf(path: str | os.PathLike[str], data: GriddedData, fields: Mapping[str, np.ndarray]) -> None:
    """Write ``truth``, ``obs`` and each of ``fields`` (``(time, lat, lon)``, metres) of the
    period ``data`` into a netCDF-4 file, atomically (a temporary file renamed into place).

    Examples
    --------
    ```python
    import os
    import tempfile

    import numpy as np
    from pipekit_cycle import ssh

    data = ssh.simulated(n_days=3, grid=32, seed=0)
    path = os.path.join(tempfile.mkdtemp(), "maps.nc")
    ssh.write_netcdf(path, data, {"estimate": np.zeros_like(data.truth)})
    again = ssh.read_netcdf(path, "truth", "obs")  # the variables written: truth, obs, estimate
    assert np.array_equal(again.truth, data.truth) and np.array_equal(np.isnan(again.obs), np.isnan(data.obs))
    ```
    """
    try:
        import xarray as xr
    except ImportError as error:
        raise ImportError(f"writing netCDF needs xarray and h5netcdf ({error}); {NETCDF_HINT}") from None
    dims = ("time", "lat", "lon")
    variables = {"truth": (dims, data.truth), "obs": (dims, data.obs)}
    variables.update({name: (dims, np.asarray(field, dtype=np.float64)) for name, field in fields.items()})
    dataset = xr.Dataset(
        variables,
        coords={"time": ("time", data.time, {"units": "days"}), "lat": ("lat", data.lat, {"units": "degrees_north"}),
                "lon": ("lon", data.lon, {"units": "degrees_east"})},
        attrs={"source": data.source},
    )
    target = Path(path)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    try:
        dataset.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)

