"""Where the SSH job's maps come from: the simulation, a gridded file, or a user's along-track
altimetry binned onto a map grid; the land; and the satellite withheld for the OSE score.

Three sources, told apart by the flags given (`resolve_inputs` checks them together):

* nothing: the simulation (`pipekit_cycle.ssh.simulated`, ``--grid``, ``--instruments``);
* ``--data FILE --var NAME``: a gridded reference (`pipekit_cycle.ssh.read_netcdf`), with
  its gridded observations ``--obs-var`` when no ``--obs`` is given;
* ``--obs FILE [FILE ...] --obs-var NAME``: along-track files
  (`pipekit_cycle.ssh.read_along_track`), binned onto the grid of ``--data`` when given
  (then the reference scores the maps, as in an OSSE), else onto ``--grid-box LAT0 LAT1 LON0
  LON1 --resolution DEG --period START END`` (`pipekit_cycle.ssh.grid_box`). Each file (one
  satellite) is binned on its own (`pipekit_cycle.ssh.bin_along_track`); a cell and day seen
  by several satellites holds the mean of their values.

Land is where the reference is NaN, or where ``--land-mask FILE --land-var NAME`` says
(`pipekit_cycle.ssh.read_land_mask`): no observation is kept there. ``--withhold FILE`` is
a satellite's along-track file kept out of the mapping (out of ``--obs`` if listed there) and
scored against (`pipekit_cycle.ssh.track_scores`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from ..ssh.alongtrack import MapGrid, bin_along_track, grid_box, read_along_track
from ..ssh.files import read_netcdf
from ..ssh.gridded import GriddedData, simulated
from ..ssh.land import read_land_mask
from ..ssh.observations import DEFAULT_INSTRUMENTS, INSTRUMENTS, AlongTrack, resolve_instruments
from .config import config_int, config_positive
from .errors import ConfigError, SparseObservationsWarning
from .task import Setting

if TYPE_CHECKING:
    from .config import ExperimentConfig

__all__ = ["DEFAULT_FILE_NOISE_STD", "INPUT_SETTINGS", "SSH_SIMULATION", "SSHInputs", "load_inputs",
           "resolve_inputs"]

# A file does not say how noisy its observations are: OI assumes a nadir altimeter's few cm.
DEFAULT_FILE_NOISE_STD = 0.03
# Without --data or --obs, the job simulates this many days of training and this grid.
SSH_SIMULATION = {"train_days": 960, "grid": 64}
# Below these the map is mostly guessed: a warning names the fraction (the run goes on).
SPARSE_DAYS = 0.25  # the fraction of days with an observation (four nadirs on a 2.5 deg box: ~0.5)
SPARSE_CELLS = 2e-3  # the fraction of ocean cell-days observed (four nadirs on a 1/10 deg grid: ~1e-2)

INPUT_SETTINGS = (
    Setting("grid", int, f"the simulated box, grid x grid points 10/128 deg apart (default {SSH_SIMULATION['grid']}; "
            "not with --data or --obs)"),
    Setting("instruments", str, f"the simulation's altimeters (default: the four nadirs, "
            f"{' '.join(DEFAULT_INSTRUMENTS)}; add swot-like for the wide swath; not with --data or --obs)",
            nargs="+", metavar="NAME", choices=tuple(sorted(INSTRUMENTS))),
    Setting("data", str, "a netCDF file of (time, lat, lon) daily maps: the reference that scores the maps, and "
            "the grid (default: none, the simulation)", metavar="FILE"),
    Setting("var", str, "the --data file's reference variable (no default: --data needs it)"),
    Setting("obs", str, "along-track netCDF files, one per satellite (1-D time, latitude, longitude and --obs-var), "
            "binned onto the map grid by day and cell (default: none)", nargs="+", metavar="FILE"),
    Setting("obs_var", str, "the observed variable: of the --obs files (e.g. sla_unfiltered), else the --data file's "
            "gridded observations, NaN where unobserved (no default: --data or --obs needs it)"),
    Setting("grid_box", float, "the map's box, its edges in degrees, when no --data gives the grid (no default: "
            "--obs without --data needs it)", nargs=4,
            metavar=("LAT0", "LAT1", "LON0", "LON1")),
    Setting("resolution", float, "the map's cell size in degrees (no default: --grid-box needs it)", metavar="DEG"),
    Setting("period", str, "the map's first and last days, YYYY-MM-DD (no default: --grid-box needs it)", nargs=2,
            metavar=("START", "END")),
    Setting("land_mask", str, "a netCDF file marking land (--land-var nonzero or NaN), sampled at the map's cell "
            "centres (default: land is where --data is NaN, else none)", metavar="FILE"),
    Setting("land_var", str, "the --land-mask file's variable (no default: --land-mask needs it)"),
    Setting("withhold", str, "one satellite's along-track file kept out of the mapping and scored against, as the "
            "2021a OSE challenge does (default: none)", metavar="FILE"),
    Setting("obs_noise_std", float, f"the observations' noise (m), for OI (default {DEFAULT_FILE_NOISE_STD} for "
            f"files)"),
)
_FILE_ONLY = ("var", "obs", "obs_var", "grid_box", "resolution", "period", "land_mask", "land_var", "withhold",
              "obs_noise_std")
_GRID_BOX = ("grid_box", "resolution", "period")


def _a_path(field: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"must be the path of a netCDF file, got {value!r}")
    return value


def _a_name(field: str, value: object, needed_by: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"must name the file's variable ({needed_by} needs it)")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _sequence(field: str, value: object, count: int, words: str) -> list[Any]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != count:
        raise ConfigError(field, f"must be {count} values, {words}, got {value!r}")
    return list(value)


def _numbers(field: str, value: object, count: int, words: str) -> list[float]:
    values = _sequence(field, value, count, words)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(field, f"must be {count} numbers, {words}, got {value!r}")
    return [float(v) for v in values]


def resolve_inputs(ssh: dict[str, Any]) -> None:
    """Check the source flags together, in place (``ssh``: the task's settings, defaults
    applied); lists become lists (as JSON keeps them). `ConfigError` names the flag."""
    if ssh["data"] is None and ssh["obs"] is None:
        for field in _FILE_ONLY:
            if ssh[field] is not None:
                raise ConfigError(field, "is a setting of the user's files (--data or --obs); the simulation has "
                                  "its own")
        for field, value in SSH_SIMULATION.items():
            if ssh[field] is None:
                ssh[field] = value
        config_int("grid", ssh["grid"], 8)
        if ssh["instruments"] is not None:
            ssh["instruments"] = list(ssh["instruments"])
            try:
                resolve_instruments(ssh["instruments"])
            except ValueError:
                raise ConfigError("instruments", f"must be distinct names of {', '.join(sorted(INSTRUMENTS))}; got "
                                  f"{' '.join(map(str, ssh['instruments']))}") from None
        return
    if ssh["grid"] is not None:
        raise ConfigError("grid", "sets the simulation's size; with --data or --obs the files set the grid")
    if ssh["instruments"] is not None:
        raise ConfigError("instruments", "sets the simulation's altimeters; with --data or --obs the files are the "
                          "observations")
    if ssh["data"] is not None:
        _a_path("data", ssh["data"])
        _a_name("var", ssh["var"], "--data")
        for field in _GRID_BOX:
            if ssh[field] is not None:
                raise ConfigError(field, "defines a grid when no --data does; --data has its own grid")
    if ssh["obs"] is not None:
        paths = [ssh["obs"]] if isinstance(ssh["obs"], str) else ssh["obs"]  # one file, from Python
        ssh["obs"] = [_a_path("obs", path) for path in paths]
        _a_name("obs_var", ssh["obs_var"], "--obs")
        if ssh["data"] is None:
            missing = [field for field in _GRID_BOX if ssh[field] is None]
            if missing:
                raise ConfigError(missing[0], "is needed with --obs and no --data: --grid-box LAT0 LAT1 LON0 LON1 "
                                  "--resolution DEG --period START END define the map")
            ssh["grid_box"] = _numbers("grid_box", ssh["grid_box"], 4, "LAT0 LAT1 LON0 LON1 (degrees)")
            ssh["period"] = [str(day) for day in _sequence("period", ssh["period"], 2, "START END (YYYY-MM-DD)")]
            config_positive("resolution", ssh["resolution"])
    else:
        _a_name("obs_var", ssh["obs_var"], "--data without --obs")
    if (ssh["land_mask"] is None) != (ssh["land_var"] is None):
        raise ConfigError("land_var" if ssh["land_var"] is None else "land_mask",
                          "goes with --land-mask / --land-var: give both (the file and its variable)")
    if ssh["land_mask"] is not None:
        _a_path("land_mask", ssh["land_mask"])
    if ssh["withhold"] is not None:
        _a_path("withhold", ssh["withhold"])
        if ssh["obs"] is None:
            raise ConfigError("withhold", "scores against a satellite of the along-track --obs files; give --obs "
                              "with it")
    if ssh["obs"] is not None and ssh["data"] is None:
        mapped = [path for path in ssh["obs"] if ssh["withhold"] is None or not _same_file(path, ssh["withhold"])]
        if len(mapped) < 2:
            raise ConfigError("obs", f"training without a gridded reference (--data) holds one satellite out as the "
                              f"target: give at least two --obs files (one per satellite) besides --withhold, got "
                              f"{len(mapped)}")
    if ssh["obs_noise_std"] is not None:
        config_positive("obs_noise_std", ssh["obs_noise_std"])


@dataclasses.dataclass(frozen=True)
class SSHInputs:
    """The whole period to map: ``data`` (``truth`` ``None`` without a gridded reference; land
    NaN in ``obs`` and ``truth``); ``satellites`` ``(n, time, lat, lon)``, each along-track file
    binned on its own (``None`` for gridded observations), whose mean over ``n`` is
    ``data.obs``; ``withheld``, the satellite scored against (``None`` without
    ``--withhold``)."""

    data: GriddedData
    satellites: np.ndarray | None
    withheld: AlongTrack | None


def _tracks(config: ExperimentConfig, field: str, paths: list[str]) -> list[AlongTrack]:
    try:
        return read_along_track(paths, config.obs_var)
    except (ValueError, ImportError) as error:  # ImportError: no xarray; its message says what to install
        raise ConfigError(field, str(error)) from None


def _grid(config: ExperimentConfig) -> MapGrid:
    lat0, lat1, lon0, lon1 = config.grid_box
    try:
        return grid_box(lat0, lat1, lon0, lon1, config.resolution, *config.period)
    except ValueError as error:
        raise ConfigError("grid_box", str(error)) from None


def _from_tracks(config: ExperimentConfig, reference: GriddedData | None) -> tuple[GriddedData, np.ndarray]:
    """The along-track files binned on the reference's grid or the grid box, one satellite each."""
    paths = [path for path in config.obs if config.withhold is None or not _same_file(path, config.withhold)]
    if not paths:
        raise ConfigError("withhold", "is the only --obs file: nothing would be left to map from")
    tracks = _tracks(config, "obs", paths)
    if reference is not None:
        lat, lon, dates = reference.lat, reference.lon, reference.dates
    else:
        grid = _grid(config)
        lat, lon, dates = grid.lat, grid.lon, grid.dates
    binned = [bin_along_track([track], lat=lat, lon=lon, dates=dates) for track in tracks]
    used = sum(count for _, count, _ in binned)
    if used == 0:
        box = f"{lat[0]:g}..{lat[-1]:g} N, {lon[0]:g}..{lon[-1]:g} E, {dates[0]} to {dates[-1]}"
        raise ConfigError("obs", f"no finite --obs-var {config.obs_var!r} value of the {len(paths)} file(s) falls in "
                          f"the map ({box}); check the box, the period and the variable")
    satellites = np.stack([obs for obs, _, _ in binned])
    with warnings.catch_warnings():  # a cell no satellite saw: NaN, as it should be
        warnings.simplefilter("ignore", RuntimeWarning)
        obs = np.nanmean(satellites, axis=0)
    if reference is not None:
        return dataclasses.replace(reference, obs=obs, source=f"{reference.source} and {len(paths)} --obs file(s)"), \
            satellites
    dy, dx = float(lat[1] - lat[0]), float(lon[1] - lon[0])
    days = ((dates - dates[0]) / np.timedelta64(1, "D")).astype(np.float64)
    data = GriddedData(
        truth=None, obs=obs, lat=lat, lon=lon, time=days, dates=dates, land=np.zeros(obs.shape[1:], bool),
        dx_deg=dx, dy_deg=dy, noise_std=None, source=f"{len(paths)} --obs file(s) binned on --grid-box",
    )
    return data, satellites


def _with_land(data: GriddedData, satellites: np.ndarray | None, land: np.ndarray) -> tuple[GriddedData,
                                                                                             np.ndarray | None]:
    """No observation and no truth on land."""
    land = land | data.land
    obs = np.where(land, np.nan, data.obs)
    truth = None if data.truth is None else np.where(land, np.nan, data.truth)
    if satellites is not None:
        satellites = np.where(land, np.nan, satellites)
    return dataclasses.replace(data, obs=obs, truth=truth, land=land), satellites


def _warn_if_sparse(data: GriddedData, flag: str) -> None:
    """`ConfigError` naming ``flag`` without any observation on the ocean; a warning when few."""
    observed = np.isfinite(data.obs)
    ocean_cells = (~data.land).sum() * observed.shape[0]
    if not observed.any():
        raise ConfigError(flag, f"{data.source}: no observation on the map's ocean cells; nothing to map from")
    days = observed.any(axis=(1, 2)).mean()
    cells = observed.sum() / ocean_cells
    if days < SPARSE_DAYS or cells < SPARSE_CELLS:
        warnings.warn(f"sparse observations: {days:.0%} of the days and {cells:.2%} of the ocean cell-days are "
                      f"observed; the maps will mostly be the prior's guess", SparseObservationsWarning, stacklevel=4)


def load_inputs(config: ExperimentConfig) -> SSHInputs:
    """The whole period of ``config``'s source (module docstring); `ConfigError` naming the flag
    for what does not fit, before anything is written."""
    if config.data is None and config.obs is None:
        instruments = DEFAULT_INSTRUMENTS if config.instruments is None else tuple(config.instruments)
        return SSHInputs(simulated(n_days=config.train_days + config.test_days, grid=config.grid, seed=config.seed,
                                   instruments=instruments), None, None)
    reference = None
    if config.data is not None:
        try:
            reference = read_netcdf(config.data, config.var, None if config.obs is not None else config.obs_var)
        except (ValueError, ImportError) as error:  # ImportError: no xarray; its message says what to install
            raise ConfigError("data", str(error)) from None
    satellites = None
    if config.obs is not None:
        data, satellites = _from_tracks(config, reference)
    else:
        data = reference
    if config.land_mask is not None:
        try:
            land = read_land_mask(config.land_mask, config.land_var, lat=data.lat, lon=data.lon)
        except (ValueError, ImportError) as error:
            raise ConfigError("land_mask", str(error)) from None
        if land.all():
            raise ConfigError("land_mask", f"{config.land_mask}: every cell of the map is land; nothing to map")
    else:
        land = data.land
    data, satellites = _with_land(data, satellites, land)
    _warn_if_sparse(data, "obs" if config.obs is not None else "obs_var")
    withheld = None
    if config.withhold is not None:
        (withheld,) = _tracks(config, "withhold", [config.withhold])
    return SSHInputs(data, satellites, withheld)
