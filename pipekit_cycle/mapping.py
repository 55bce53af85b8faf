r"""The SSH mapping job on gridded fields: space-time samples, the stitched reconstruction, scores.

A sample is a window of :math:`T` consecutive days of a :math:`p_y \times p_x` spatial patch
(`pipekit_cycle.patches`): ``(T, p_y, p_x)``, the time axis being the channel axis of the
4DVarNet's convolutions. A period of :math:`N_t` days has the windows starting at
:math:`0, 1, \dots, N_t - T` (`window_starts`) and each window the patches of
`pipekit_cycle.patches.patch_origins`; `samples` cuts them out.

`reconstruct` maps a whole period from its observations: every window and every patch is
passed through ``predict``, each window is stitched in space with the triangular weight of
`pipekit_cycle.patches.stitch`, and the windows are blended in time with the tent
:math:`\tau(u) = 1 + \min(u, T - 1 - u)` over the window's days :math:`u`,

.. math::
    \hat\eta(t) = \frac{\sum_w \tau(t - t_w)\, S_w(t - t_w)}{\sum_w \tau(t - t_w)},

summed over the windows :math:`w` (first day :math:`t_w`) that contain :math:`t`, with
:math:`S_w` the spatially stitched window. Every day and every point is covered, and a
``predict`` that returns its input unchanged gives back the field (exactly, in float64):
the weights cancel.

`score` is the data challenge's report of one estimate: RMSE, :math:`\mu`, :math:`\sigma`
(`pipekit_cycle.metrics.rmse_score`) and :math:`\lambda_x`, :math:`\lambda_t`
(`pipekit_cycle.metrics.psd_score`).

`GriddedData` is what the driver maps: the simulation (`simulated`,
`pipekit_cycle.ssh.ssh_osse`) or a user's netCDF file (`read_netcdf`, with the optional
``xarray`` and ``h5netcdf``: ``pip install 'pipekit-cycle[netcdf]'``); `write_netcdf` writes
reconstructions next to the truth, atomically and with the umask's permissions.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .metrics import psd_score, rmse, rmse_score
from .patches import patch_origins, stitch
from .ssh import KM_PER_DEG, ssh_osse

__all__ = [
    "NETCDF_HINT",
    "GriddedData",
    "read_netcdf",
    "reconstruct",
    "samples",
    "score",
    "simulated",
    "time_tent",
    "window_starts",
    "write_netcdf",
]

NETCDF_HINT = "pip install 'pipekit-cycle[netcdf]' (or pip install xarray h5netcdf h5py)"


@dataclasses.dataclass(frozen=True)
class GriddedData:
    """Daily maps on a regular (lat, lon) grid: ``truth`` and ``obs`` (NaN where unobserved)
    ``(time, lat, lon)``; ``lat``, ``lon`` in degrees; ``time`` in days; ``dx_deg`` the grid
    spacing (degrees), ``dx_km`` the zonal spacing at the central latitude; ``noise_std`` the
    observation noise if known; ``source`` says where the data came from.

    Examples
    --------
    ```python
    from pipekit_cycle import mapping

    data = mapping.simulated(n_days=6, grid=32, seed=0)
    held_out = data.period(4, 6)  # the last two days
    assert held_out.truth.shape == (2, 32, 32) and held_out.time.tolist() == data.time[4:].tolist()
    ```
    """

    truth: np.ndarray
    obs: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    time: np.ndarray
    dx_deg: float
    dx_km: float
    noise_std: float | None
    source: str

    def period(self, start: int, stop: int) -> GriddedData:
        """The days ``start:stop``."""
        days = slice(start, stop)
        return dataclasses.replace(self, truth=self.truth[days], obs=self.obs[days], time=self.time[days])


def simulated(*, n_days: int, grid: int, seed: int) -> GriddedData:
    """The default `pipekit_cycle.ssh.ssh_osse` on a ``grid x grid`` box (``n_days`` days).

    Examples
    --------
    ```python
    from pipekit_cycle import mapping

    data = mapping.simulated(n_days=3, grid=32, seed=0)
    assert data.truth.shape == (3, 32, 32) and data.noise_std == 0.03 and data.source.startswith("ssh_osse(")
    ```
    """
    osse = ssh_osse(n_days=n_days, shape=(grid, grid), seed=seed)
    return GriddedData(
        truth=osse.truth, obs=osse.obs, lat=osse.lat, lon=osse.lon, time=osse.time, dx_deg=osse.dx_deg,
        dx_km=osse.dx_km, noise_std=osse.noise_std, source=f"ssh_osse(n_days={n_days}, shape=({grid}, {grid}), "
        f"seed={seed})",
    )


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

    from pipekit_cycle import mapping

    path = os.path.join(tempfile.mkdtemp(), "maps.nc")
    mapping.write_netcdf(path, mapping.simulated(n_days=3, grid=32, seed=0), {})
    try:
        mapping.read_netcdf(path, "ssh", "obs")
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
    from pipekit_cycle import mapping

    data = mapping.simulated(n_days=3, grid=32, seed=0)
    path = os.path.join(tempfile.mkdtemp(), "maps.nc")
    mapping.write_netcdf(path, data, {"estimate": np.zeros_like(data.truth)})
    again = mapping.read_netcdf(path, "truth", "obs")  # the variables written: truth, obs, estimate
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


def window_starts(n_days: int, length: int, stride: int = 1) -> np.ndarray:
    """First days of the windows of ``length`` days in ``n_days``: ``0, stride, ...`` up to
    ``n_days - length`` (always included, so the windows cover every day).

    Examples
    --------
    ```python
    from pipekit_cycle import mapping

    assert mapping.window_starts(10, 4).tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert mapping.window_starts(10, 4, stride=4).tolist() == [0, 4, 6]  # the last window ends on day 10
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
    from pipekit_cycle import mapping

    assert mapping.time_tent(5).tolist() == [1.0, 2.0, 3.0, 2.0, 1.0]  # a window's middle day counts most
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
    from pipekit_cycle import mapping

    field = np.arange(6 * 8 * 8, dtype=float).reshape(6, 8, 8)
    cut = mapping.samples(field, np.array([0, 2]), np.array([[0, 0], [4, 4]]), length=3, size=4)
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
    from pipekit_cycle import mapping

    truth = np.random.default_rng(0).normal(size=(6, 16, 16))
    mapped = mapping.reconstruct(lambda x: x, truth, length=4, size=8, stride=6, batch_size=5)
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
    resolved nowhere (infinite) is ``None``, so the result is plain JSON.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle import mapping

    truth = np.random.default_rng(0).normal(size=(16, 4, 32))
    perfect = mapping.score(truth, truth, dx_deg=0.1)
    assert perfect["rmse"] == 0.0 and perfect["mu"] == 1.0
    assert mapping.score(np.zeros_like(truth), truth, dx_deg=0.1)["lambda_x_deg"] is None  # nothing resolved
    ```
    """
    mu, sigma = rmse_score(estimate, truth)
    lambda_x, lambda_t = psd_score(estimate, truth, dx=dx_deg, dt=dt_days)
    return {
        "rmse": rmse(estimate, truth),
        "mu": mu,
        "sigma": sigma,
        "lambda_x_deg": lambda_x if math.isfinite(lambda_x) else None,
        "lambda_t_days": lambda_t if math.isfinite(lambda_t) else None,
    }
