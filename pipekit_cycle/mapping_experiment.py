r"""The SSH mapping job in the experiment driver: ``python -m <backend> train --system ssh``.

`MappingTask` is what `pipekit_cycle.experiment.run_experiment` needs to train and score a
4DVarNet on gridded maps; the training loop, the checkpoints and resume are the driver's.

Data: the simulation (`pipekit_cycle.mapping.simulated`, ``train_days + test_days`` days on
a ``grid x grid`` box from ``seed``) or a user's file (``data``, ``var``, ``obs_var``:
`pipekit_cycle.mapping.read_netcdf`). The last ``test_days`` days are held out; training uses
the ``train_days`` days before them (a file: all of them when ``train_days`` is unset).

Background: with ``background="oi"`` the learned solver maps the anomaly from the optimal
interpolation (`pipekit_cycle.baselines.optimal_interpolation`, Gaussian scales
``oi_space_km``, ``oi_time_days``, noise ``obs_noise_std``) of the same period:

.. math::
    \hat\eta = \eta_{\mathrm{OI}} + \Psi_\theta\big(y - \eta_{\mathrm{OI}}\big),

the observations :math:`y` and the truth being replaced by their departures from the OI for
training, like the 4DVarNet SSH set-ups that take the OI as the large-scale part of the state
(e.g. Beauchamp et al. 2023). The solver's first guess :math:`x_0 = m \odot (y - \eta_{OI})`
is then the OI with the observed departures at the observed points, and training only has to
learn what OI misses. ``background="none"``
maps :math:`y` directly. Either way the inputs and targets are standardised with the mean and
standard deviation of the training targets.

Samples (`pipekit_cycle.mapping.samples`): every window of ``window_length`` days (stride 1)
of the training period times every patch of ``patch_size`` at ``patch_stride``; the held-out
loss uses the held-out windows at stride ``window_length`` (at most `HELD_OUT_SAMPLES`).
Scoring: the held-out period mapped whole (`pipekit_cycle.mapping.reconstruct`) and scored
by `pipekit_cycle.mapping.score` against the truth, like OI and linear interpolation in time
(`pipekit_cycle.baselines.linear_interpolation_time`).

Files: ``metrics.json`` (``scores``: ``rmse``, ``mu``, ``sigma``, ``lambda_x_deg``,
``lambda_t_days`` of ``learned``, ``oi`` and ``interpolation``), ``reconstruction.nc`` (truth,
observations and the three maps of the held-out period, with xarray and h5netcdf), and the
figures ``maps.png``, ``psd_score.png`` and ``loss.png`` (with matplotlib).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .baselines import linear_interpolation_time, optimal_interpolation
from .mapping import GriddedData, read_netcdf, reconstruct, samples, score, simulated, window_starts
from .metrics import spectral_score
from .patches import patch_origins
from .placement import Placement

if TYPE_CHECKING:
    from .experiment import ExperimentConfig

__all__ = ["DEFAULT_FILE_NOISE_STD", "HELD_OUT_SAMPLES", "MAP_FILES", "MappingTask", "NetcdfSkippedWarning"]

HELD_OUT_SAMPLES = 128
# A file does not say how noisy its observations are: OI assumes a nadir altimeter's few cm.
DEFAULT_FILE_NOISE_STD = 0.03
RECONSTRUCTION_FILE = "reconstruction.nc"
MAP_FILES = ("maps.png", "psd_score.png", "loss.png", RECONSTRUCTION_FILE)


class NetcdfSkippedWarning(UserWarning):
    """xarray or h5netcdf is not installed: the reconstruction was not written as netCDF.

    Examples
    --------
    ```python
    import warnings

    from pipekit_cycle.mapping_experiment import NetcdfSkippedWarning

    warnings.simplefilter("error", NetcdfSkippedWarning)  # make a run without xarray fail instead
    assert issubclass(NetcdfSkippedWarning, UserWarning)
    ```
    """


def _config_error(field: str, problem: str) -> Exception:
    from .experiment import ConfigError

    return ConfigError(field, problem)


def _load(config: ExperimentConfig) -> tuple[GriddedData, GriddedData]:
    """The training and held-out periods; `ConfigError` when the data cannot hold them."""
    if config.data is None:
        assert config.train_days is not None and config.grid is not None  # resolved by the config
        data = simulated(n_days=config.train_days + config.test_days, grid=config.grid, seed=config.seed)
    else:
        try:
            data = read_netcdf(config.data, config.var, config.obs_var)
        except (ValueError, ImportError) as error:  # ImportError: no xarray; its message says what to install
            raise _config_error("data", str(error)) from None
    n_days, ny, nx = data.truth.shape
    train_days = n_days - config.test_days if config.train_days is None else config.train_days
    if train_days + config.test_days > n_days:
        raise _config_error(
            "test_days" if config.train_days is None else "train_days",
            f"{data.source} holds {n_days} days, fewer than --train-days {train_days} + --test-days {config.test_days}",
        )
    if train_days < config.length:
        raise _config_error("train_days", f"{data.source} leaves {train_days} training days, fewer than one window "
                            f"(--window-length {config.length})")
    if config.patch_size > min(ny, nx):
        raise _config_error("patch_size", f"must be at most the grid ({ny} x {nx}), got {config.patch_size}")
    start = n_days - config.test_days
    return data.period(start - train_days, start), data.period(start, n_days)


class MappingTask:
    """Patches of gridded SSH maps; scored over the whole held-out period (module docstring).

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import ExperimentConfig
    from pipekit_cycle.mapping_experiment import MappingTask

    config = ExperimentConfig(system="ssh", grid=32, train_days=8, test_days=8, window_length=4, patch_size=16,
                              patch_stride=8, batch_size=2)
    task = MappingTask(config)  # simulates 16 days, computes both OIs
    assert task.n_samples == 5 * 9  # windows of 4 days in 8, times 3 x 3 patches
    obs, truth = task.training_samples([0, 44])
    assert obs.shape == truth.shape == (2, 4, 16, 16)  # standardised departures from the OI
    ```
    """

    def __init__(self, config: ExperimentConfig, *, progress: bool = False) -> None:
        from .experiment import _progress

        self.config = config
        self.train, self.test = _load(config)
        assert config.patch_size is not None and config.patch_stride is not None
        # The samples are counted before the OI, which takes minutes on a large file.
        self.origins = patch_origins(self.train.truth.shape[1:], config.patch_size, config.patch_stride)
        starts = window_starts(self.train.truth.shape[0], config.length)
        self._starts = np.repeat(starts, len(self.origins))
        self._origins = np.tile(self.origins, (len(starts), 1))
        self.n_samples = len(self._starts)
        if config.batch_size > self.n_samples:
            raise _config_error("batch_size", f"must be at most the number of training samples ({self.n_samples}: "
                                f"{len(starts)} windows x {len(self.origins)} patches), got {config.batch_size}")
        self.noise_std = next(
            value for value in (config.obs_noise_std, self.test.noise_std, DEFAULT_FILE_NOISE_STD) if value is not None
        )
        if config.background == "oi":
            # Minutes on a large file: a bar that moves per period says the run is not stuck.
            with _progress(2, 0, progress, "OI background (train, held-out)") as bar:
                self.background_train = self._optimal_interpolation(self.train)
                bar.update(1)
                self.background_test = self._optimal_interpolation(self.test)
                bar.update(1)
        else:
            self.background_train = np.zeros_like(self.train.truth)
            self.background_test = np.zeros_like(self.test.truth)
        departure = self.train.truth - self.background_train
        self.mean, self.std = float(departure.mean()), float(departure.std())
        if not self.std > 0:
            raise _config_error("data", f"{self.train.source}: the training truth is constant; nothing to learn")
        self.inputs = self._forward(self.train.obs - self.background_train)
        self.targets = self._forward(departure)
        self.held_out = self._held_out()
        self._drawn: dict[str, Any] = {}

    def _forward(self, field: np.ndarray) -> np.ndarray:
        return (field - self.mean) / self.std

    def _optimal_interpolation(self, period: GriddedData) -> np.ndarray:
        return optimal_interpolation(
            period.obs, space_scale=self.config.oi_space_km, time_scale=self.config.oi_time_days,
            noise_var=self.noise_std**2, lat=period.lat, lon=period.lon, time=period.time,
        )

    def _cut(self, field: np.ndarray, starts: np.ndarray, origins: np.ndarray) -> np.ndarray:
        return samples(field, starts, origins, self.config.length, self.config.patch_size)

    def _held_out(self) -> tuple[np.ndarray, np.ndarray]:
        starts = window_starts(self.test.truth.shape[0], self.config.length, stride=self.config.length)
        all_starts = np.repeat(starts, len(self.origins))
        all_origins = np.tile(self.origins, (len(starts), 1))
        keep = np.unique(np.linspace(0, len(all_starts) - 1, min(HELD_OUT_SAMPLES, len(all_starts))).astype(int))
        obs = self._forward(self.test.obs - self.background_test)
        truth = self._forward(self.test.truth - self.background_test)
        return (self._cut(obs, all_starts[keep], all_origins[keep]),
                self._cut(truth, all_starts[keep], all_origins[keep]))

    def training_samples(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, origins = self._starts[chosen], self._origins[chosen]
        return self._cut(self.inputs, starts, origins), self._cut(self.targets, starts, origins)

    def evaluate(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> dict[str, Any]:
        from .experiment import _progress

        config, test = self.config, self.test

        def predict(inputs: np.ndarray) -> np.ndarray:
            batch = backend.make_batch(self._forward(inputs), **placement.batch_kwargs)
            return np.asarray(backend.to_numpy(model(batch)), dtype=np.float64) * self.std + self.mean

        n_windows = len(window_starts(test.truth.shape[0], config.length))
        with _progress(n_windows * len(self.origins), 0, progress, "map held-out period") as bar:
            learned = self.background_test + reconstruct(
                predict, test.obs - self.background_test, length=config.length, size=config.patch_size,
                stride=config.patch_stride, batch_size=config.batch_size, progress=bar.update,
            )
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
        from .mapping import write_netcdf

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
        from .experiment import FiguresSkippedWarning
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


