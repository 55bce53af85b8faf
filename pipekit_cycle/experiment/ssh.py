r"""The SSH mapping job in the experiment driver: ``python -m <backend> train --system ssh``.

`SSH` is the `pipekit_cycle.experiment.Task` that trains and scores a 4DVarNet on gridded
maps; the training loop, the checkpoints and resume are the driver's.

Data: the simulation (`pipekit_cycle.ssh.simulated`, ``train_days + test_days`` days on
a ``grid x grid`` box from ``seed``) or a user's file (``data``, ``var``, ``obs_var``:
`pipekit_cycle.ssh.read_netcdf`). The last ``test_days`` days are held out; training uses
the ``train_days`` days before them (a file: all of them when ``train_days`` is unset).

Background: with ``background="oi"`` the learned solver maps the anomaly from the optimal
interpolation (`pipekit_cycle.ssh.oi_background`, Gaussian scales
``oi_space_km``, ``oi_time_days``, noise ``obs_noise_std``) of the same period:

.. math::
    \hat\eta = \eta_{\mathrm{OI}} + \Psi_\theta\big(y - \eta_{\mathrm{OI}}\big),

the observations :math:`y` and the truth being replaced by their departures from the OI for
training, like the 4DVarNet SSH set-ups that take the OI as the large-scale part of the state
(e.g. Beauchamp et al. 2023). The solver's first guess :math:`x_0 = m \odot (y - \eta_{OI})`
is then the OI with the observed departures at the observed points, and training only has to
learn what OI misses. ``background="none"``
maps :math:`y` directly. Either way the inputs and targets are standardised with the mean and
standard deviation of the training targets (`pipekit_cycle.ssh.Standardiser`): the
functions a Python user calls to get the same map (README, "Mapping SSH from Python").

Samples (`pipekit_cycle.ssh.samples`): every window of ``window_length`` days (stride 1)
of the training period times every patch of ``patch_size`` at ``patch_stride``; the held-out
loss uses the held-out windows at stride ``window_length`` (at most `HELD_OUT_SAMPLES`).
Scoring: the held-out period mapped whole (`pipekit_cycle.ssh.learned_map`) and scored
by `pipekit_cycle.ssh.score` against the truth, like OI and linear interpolation in time
(`pipekit_cycle.ssh.linear_interpolation_time`).

Files: ``metrics.json`` (``scores``: ``rmse``, ``mu``, ``sigma``, ``lambda_x_deg``,
``lambda_t_days`` of ``learned``, ``oi`` and ``interpolation``), ``reconstruction.nc`` (truth,
observations and the three maps of the held-out period, with xarray and h5netcdf), and the
figures ``maps.png``, ``psd_score.png`` and ``loss.png`` (with matplotlib).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import FourDVarNetConfig
from ..placement import Placement
from ..ssh.baselines import linear_interpolation_time
from ..ssh.files import read_netcdf, write_netcdf
from ..ssh.gridded import GriddedData, simulated
from ..ssh.mapping import Standardiser, learned_map, oi_background, samples, score, window_starts
from ..ssh.metrics import spectral_score
from ..ssh.patches import patch_origins
from .config import config_int, config_positive
from .errors import ConfigError, FiguresSkippedWarning, NetcdfSkippedWarning
from .task import Setting, progress_bar

if TYPE_CHECKING:
    from ..adjoints import AdjointSpec
    from .config import ExperimentConfig

__all__ = ["DEFAULT_FILE_NOISE_STD", "HELD_OUT_SAMPLES", "SSH", "SSH_SIMULATION", "SSHData", "SSHTask"]

HELD_OUT_SAMPLES = 128
# A file does not say how noisy its observations are: OI assumes a nadir altimeter's few cm.
DEFAULT_FILE_NOISE_STD = 0.03
RECONSTRUCTION_FILE = "reconstruction.nc"
MAP_FILES = ("maps.png", "psd_score.png", "loss.png", RECONSTRUCTION_FILE)
BACKGROUNDS = ("oi", "none")
# Without --data, the job simulates this many days of training and this grid.
SSH_SIMULATION = {"train_days": 960, "grid": 64}

SETTINGS = (
    Setting("patch_size", int, "the square patch the solver maps, in grid points (default 32)"),
    Setting("patch_stride", int, "spacing of the patches (default 16)"),
    Setting("prior_downsample", int, "the prior works on the patch average-pooled by this factor (default 2)"),
    Setting("train_days", int, f"training days before the held-out ones (default {SSH_SIMULATION['train_days']}; "
            f"with --data: all of them)"),
    Setting("test_days", int, "the last days, held out and mapped whole (default 60)"),
    Setting("grid", int, f"the simulated box, grid x grid points 10/128 deg apart (default {SSH_SIMULATION['grid']})"),
    Setting("data", str, "a netCDF file with (time, lat, lon) maps, mapped instead of the simulation"),
    Setting("var", str, "the --data file's reference (truth) variable"),
    Setting("obs_var", str, "the --data file's observation variable (NaN where unobserved)"),
    Setting("obs_noise_std", float, f"the --data observations' noise (m), for OI (default {DEFAULT_FILE_NOISE_STD})"),
    Setting("oi_space_km", float, "OI's Gaussian length scale (default 70.0)"),
    Setting("oi_time_days", float, "OI's Gaussian time scale (default 7.0)"),
    Setting("background", str, "oi: the solver maps the departure from OI; none: the observations alone "
            "(default oi)", choices=BACKGROUNDS),
)


@dataclasses.dataclass(frozen=True)
class SSHTask:
    """Mapping SSH from altimetry as a `pipekit_cycle.experiment.Task` (module docstring); the
    defaults are those of its quality run (README, "Mapping sea-surface height").

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import ExperimentConfig
    from pipekit_cycle.experiment.ssh import SSH

    config = ExperimentConfig(system="ssh", grid=32, train_days=8, test_days=8, window_length=4, patch_size=16,
                              patch_stride=8, batch_size=2)
    data = SSH.prepare(config, progress=False)  # simulates 16 days, computes both OIs
    assert data.n_samples == 5 * 9  # windows of 4 days in 8, times 3 x 3 patches
    obs, truth = data.training_samples([0, 44])
    assert obs.shape == truth.shape == (2, 4, 16, 16)  # standardised departures from the OI
    ```
    """

    name: str = "ssh"
    description: str = "sea-surface height maps from altimetry (simulated, or --data FILE.nc)"
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {
        "steps": 2000, "batch_size": 8, "solver_steps": 5, "hidden_dim": 16, "prior_hidden_dim": 16,
        "window_length": 15, "patch_size": 32, "patch_stride": 16, "prior_downsample": 2, "test_days": 60,
        "oi_space_km": 70.0, "oi_time_days": 7.0, "background": "oi"})
    settings: tuple[Setting, ...] = SETTINGS
    outputs: tuple[str, ...] = MAP_FILES

    def resolve(self, config: ExperimentConfig) -> dict[str, Any]:
        given = {setting.name: getattr(config, setting.name) for setting in self.settings}
        ssh = {name: self.defaults[name] if value is None and name in self.defaults else value
               for name, value in given.items()}
        if ssh["data"] is None:
            for field in ("var", "obs_var", "obs_noise_std"):
                if ssh[field] is not None:
                    raise ConfigError(field, "is a setting of a --data file; the simulation has its own")
            for field, value in SSH_SIMULATION.items():
                if ssh[field] is None:
                    ssh[field] = value
            config_int("grid", ssh["grid"], 8)
        else:
            if not isinstance(ssh["data"], str) or not ssh["data"]:
                raise ConfigError("data", f"must be the path of a netCDF file, got {ssh['data']!r}")
            if ssh["grid"] is not None:
                raise ConfigError("grid", "sets the simulation's size; a --data file has its own grid")
            for field in ("var", "obs_var"):
                if not isinstance(ssh[field], str) or not ssh[field]:
                    raise ConfigError(field, "must name the file's variable (--data needs --var and --obs-var)")
            if ssh["obs_noise_std"] is not None:
                config_positive("obs_noise_std", ssh["obs_noise_std"])
        for field in ("patch_size", "patch_stride", "prior_downsample", "test_days"):
            config_int(field, ssh[field], 1)
        if ssh["patch_size"] % ssh["prior_downsample"]:
            raise ConfigError("prior_downsample", f"must divide --patch-size ({ssh['patch_size']}), got "
                              f"{ssh['prior_downsample']}")
        if ssh["train_days"] is not None:
            config_int("train_days", ssh["train_days"], 1)
        for field in ("oi_space_km", "oi_time_days"):
            config_positive(field, ssh[field])
        if ssh["background"] not in BACKGROUNDS:
            raise ConfigError("background", f"must be one of {', '.join(BACKGROUNDS)}, got {ssh['background']!r}")
        if ssh["patch_stride"] > ssh["patch_size"]:
            raise ConfigError("patch_stride", f"must be at most --patch-size ({ssh['patch_size']}) so that the "
                              f"patches cover the domain, got {ssh['patch_stride']}")
        for field in ("test_days", "train_days"):
            days = ssh[field]
            if days is not None and days < config.window_length:
                raise ConfigError(field, f"must hold at least one window of {config.window_length} days, got {days}")
        if ssh["grid"] is not None and ssh["patch_size"] > ssh["grid"]:
            raise ConfigError("patch_size", f"must be at most --grid ({ssh['grid']}), got {ssh['patch_size']}")
        return ssh

    def model_config(self, config: ExperimentConfig, adjoint: AdjointSpec) -> FourDVarNetConfig:
        return FourDVarNetConfig(
            state_shape=(config.patch_size, config.patch_size), n_time=config.window_length,
            hidden_dim=config.hidden_dim, prior_hidden_dim=config.prior_hidden_dim,
            n_solver_steps=config.solver_steps, padding="zeros", prior_downsample=config.prior_downsample,
            solver_adjoint=adjoint,
        )

    def prepare(self, config: ExperimentConfig, *, progress: bool) -> SSHData:
        return SSHData(config, progress=progress)


SSH = SSHTask()


def _load(config: ExperimentConfig) -> tuple[GriddedData, GriddedData]:
    """The training and held-out periods; `ConfigError` when the data cannot hold them."""
    if config.data is None:
        data = simulated(n_days=config.train_days + config.test_days, grid=config.grid, seed=config.seed)
    else:
        try:
            data = read_netcdf(config.data, config.var, config.obs_var)
        except (ValueError, ImportError) as error:  # ImportError: no xarray; its message says what to install
            raise ConfigError("data", str(error)) from None
    n_days, ny, nx = data.truth.shape
    train_days = n_days - config.test_days if config.train_days is None else config.train_days
    if train_days + config.test_days > n_days:
        raise ConfigError(
            "test_days" if config.train_days is None else "train_days",
            f"{data.source} holds {n_days} days, fewer than --train-days {train_days} + --test-days {config.test_days}",
        )
    if train_days < config.window_length:
        raise ConfigError("train_days", f"{data.source} leaves {train_days} training days, fewer than one window "
                          f"(--window-length {config.window_length})")
    if config.patch_size > min(ny, nx):
        raise ConfigError("patch_size", f"must be at most the grid ({ny} x {nx}), got {config.patch_size}")
    start = n_days - config.test_days
    return data.period(start - train_days, start), data.period(start, n_days)


class SSHData:
    """The periods of an SSH run (`pipekit_cycle.experiment.TaskData`): standardised departures
    from the background, cut into (window, patch) samples; the held-out period mapped whole."""

    def __init__(self, config: ExperimentConfig, *, progress: bool = False) -> None:
        self.config = config
        self.train, self.test = _load(config)
        # The samples are counted before the OI, which takes minutes on a large file.
        self.origins = patch_origins(self.train.truth.shape[1:], config.patch_size, config.patch_stride)
        starts = window_starts(self.train.truth.shape[0], config.window_length)
        self._starts = np.repeat(starts, len(self.origins))
        self._origins = np.tile(self.origins, (len(starts), 1))
        self.n_samples = len(self._starts)
        if config.batch_size > self.n_samples:
            raise ConfigError("batch_size", f"must be at most the number of training samples ({self.n_samples}: "
                              f"{len(starts)} windows x {len(self.origins)} patches), got {config.batch_size}")
        self.noise_std = next(
            value for value in (config.obs_noise_std, self.test.noise_std, DEFAULT_FILE_NOISE_STD) if value is not None
        )
        if config.background == "oi":
            # Minutes on a large file: a bar that moves per period says the run is not stuck.
            with progress_bar(2, 0, progress, "OI background (train, held-out)") as bar:
                self.background_train = self._optimal_interpolation(self.train)
                bar.update(1)
                self.background_test = self._optimal_interpolation(self.test)
                bar.update(1)
        else:
            self.background_train = np.zeros_like(self.train.truth)
            self.background_test = np.zeros_like(self.test.truth)
        departure = self.train.truth - self.background_train
        try:
            self.scale = Standardiser.fit(departure)
        except ValueError:
            raise ConfigError("data", f"{self.train.source}: the training truth is constant; nothing to "
                              f"learn") from None
        self.inputs = self.scale.forward(self.train.obs - self.background_train)
        self.targets = self.scale.forward(departure)
        self.held_out = self._held_out()
        self._drawn: dict[str, Any] = {}

    def _optimal_interpolation(self, period: GriddedData) -> np.ndarray:
        return oi_background(period, space_km=self.config.oi_space_km, time_days=self.config.oi_time_days,
                             noise_std=self.noise_std)

    def _cut(self, field: np.ndarray, starts: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return samples(field, starts, origins, self.config.window_length, self.config.patch_size)

    def _held_out(self) -> tuple[np.ndarray, np.ndarray]:
        length = self.config.window_length
        starts = window_starts(self.test.truth.shape[0], length, stride=length)
        all_starts = np.repeat(starts, len(self.origins))
        all_origins = np.tile(self.origins, (len(starts), 1))
        keep = np.unique(np.linspace(0, len(all_starts) - 1, min(HELD_OUT_SAMPLES, len(all_starts))).astype(int))
        obs = self.scale.forward(self.test.obs - self.background_test)
        truth = self.scale.forward(self.test.truth - self.background_test)
        return (self._cut(obs, all_starts[keep], all_origins[keep]),
                self._cut(truth, all_starts[keep], all_origins[keep]))

    def training_samples(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, origins = self._starts[chosen], self._origins[chosen]
        return self._cut(self.inputs, starts, origins), self._cut(self.targets, starts, origins)

    def evaluate(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> dict[str, Any]:
        config, test = self.config, self.test

        def predict(inputs: np.ndarray) -> np.ndarray:
            return backend.to_numpy(model(backend.make_batch(inputs, **placement.batch_kwargs)))

        n_windows = len(window_starts(test.truth.shape[0], config.window_length))
        with progress_bar(n_windows * len(self.origins), 0, progress, "map held-out period") as bar:
            learned = learned_map(predict, test.obs, background=self.background_test, scale=self.scale,
                                  length=config.window_length, size=config.patch_size, stride=config.patch_stride,
                                  batch_size=config.batch_size, progress=bar.update)
        oi = self.background_test if config.background == "oi" else self._optimal_interpolation(test)
        interpolation = linear_interpolation_time(test.obs, time=test.time)
        maps = {"learned": learned, "oi": oi, "interpolation": interpolation}
        dt_days = float(np.diff(test.time).mean()) if len(test.time) > 1 else 1.0
        scores = {name: score(field, test.truth, dx_deg=test.dx_deg, dt_days=dt_days) for name, field in maps.items()}
        self._drawn = {"maps": maps, "dt_days": dt_days}
        return {
            "data": test.source,
            "held_out_days": int(test.truth.shape[0]),
            "train_days": int(self.train.truth.shape[0]),
            "grid": list(test.truth.shape[1:]),
            "training_samples": self.n_samples,
            "observed_fraction": float(np.isfinite(test.obs).mean()),
            "obs_noise_std": self.noise_std,
            "rmse_learned": scores["learned"]["rmse"],
            "rmse_oi": scores["oi"]["rmse"],
            "rmse_interpolation": scores["interpolation"]["rmse"],
            "scores": scores,
        }

    def write_outputs(
        self, out: Path, metrics: dict[str, Any], figures: bool, losses: list[float], held_out: list[list[float]]
    ) -> dict[str, Any]:
        maps = self._drawn["maps"]
        written: dict[str, Any] = {"reconstruction": None, "figures": []}
        try:
            write_netcdf(out / RECONSTRUCTION_FILE, self.test, maps)
            written["reconstruction"] = RECONSTRUCTION_FILE
        except ImportError as error:
            warnings.warn(f"{RECONSTRUCTION_FILE} not written ({error})", NetcdfSkippedWarning, stacklevel=3)
        if figures:
            written["figures"] = self._draw(out, metrics, losses, held_out)
        return written

    def _draw(self, out: Path, metrics: dict[str, Any], losses: list[float], held_out: list[list[float]]) -> list[str]:
        from .figures import MATPLOTLIB_HINT, loss_figure, map_figure, psd_score_figure, save_figures

        maps, test = self._drawn["maps"], self.test
        scores = metrics["scores"]
        title = (
            f"SSH mapping, {metrics['backend']}, adjoint {metrics['adjoint']}, {metrics['steps']} steps\n"
            f"held-out {test.truth.shape[0]} days: mu learned {scores['learned']['mu']:.3f}, "
            f"OI {scores['oi']['mu']:.3f}, interpolation {scores['interpolation']['mu']:.3f}; "
            f"lambda_x learned {_degrees(scores['learned']['lambda_x_deg'])}, "
            f"OI {_degrees(scores['oi']['lambda_x_deg'])}"
        )
        day = int(np.argmax(np.isfinite(test.obs).sum(axis=(1, 2))))  # the best-observed day shows the tracks
        curves = {label: spectral_score(maps[name], test.truth, dx=test.dx_deg, dt=self._drawn["dt_days"])
                  for label, name in (("learned", "learned"), ("OI", "oi"))}
        try:
            figures = {
                "maps.png": map_figure(title, test, day, {"OI": maps["oi"], "learned": maps["learned"]}),
                "psd_score.png": psd_score_figure(title, curves),
                "loss.png": loss_figure(title, losses, held_out, held_out_label=f"{len(self.held_out[0])} samples"),
            }
        except ImportError as error:
            warnings.warn(
                f"figures skipped ({error}); to get them: {MATPLOTLIB_HINT}", FiguresSkippedWarning, stacklevel=4
            )
            return []
        return save_figures(out, figures)


def _degrees(value: float | None) -> str:
    return "unresolved" if value is None or not math.isfinite(value) else f"{value:.2f} deg"


