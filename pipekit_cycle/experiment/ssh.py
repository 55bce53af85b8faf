r"""The SSH mapping job in the experiment driver: ``python -m <backend> train --system ssh``.

`SSH` is the `pipekit_cycle.experiment.Task` that trains and scores a 4DVarNet on gridded
maps; the training loop, the checkpoints and resume are the driver's.

Data (`pipekit_cycle.experiment.ssh_inputs`): the simulation (`pipekit_cycle.ssh.simulated`,
``train_days + test_days`` days on a ``grid x grid`` box from ``seed``), a gridded file
(``data``, ``var``, ``obs_var``: `pipekit_cycle.ssh.read_netcdf`), or along-track files
(``obs``, ``obs_var``) binned onto the grid of ``data`` or of ``grid_box``, ``resolution``
and ``period``; land from the reference's NaNs or ``land_mask``. The last ``test_days`` days are
held out; training uses the ``train_days`` days before them (files: all of them when
``train_days`` is unset).

Supervision: with a gridded reference the target is the truth (NaN on land: out of the loss,
`reconstruction_loss`). Without one, from the observations alone: each satellite in turn is the
target and the others the input, the departures taken from the OI of the others (so the target
never reaches the input through the background); a sample is a (satellite, window, patch) whose
target holds a point. Samples whose patch is all land, or whose target is empty, are not drawn.

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

The model: a `pipekit_cycle.FourDVarNetConfig` on the ``patch_size`` patch with the run's
widths, K and ``prior_downsample``, and ``grad_mod`` its gradient modulator (unset: this
project's ``convlstm``; ``convlstm_normalized``: ocean4dvarnet's).

Samples (`pipekit_cycle.ssh.samples`): every window of ``window_length`` days (stride 1)
of the training period times every patch of ``patch_size`` at ``patch_stride``, times the
versions of ``augment`` (``flip-y``: each also mirrored north-south with the SSH's sign changed,
`pipekit_cycle.ssh.MeridionalFlip`; unset: none); the held-out
loss uses the held-out windows at stride ``window_length`` (at most `HELD_OUT_SAMPLES`).
Scoring: the held-out period mapped whole and scored by `pipekit_cycle.ssh.score` against
the truth, like OI and linear interpolation in time (`pipekit_cycle.ssh.linear_interpolation_time`).

The map of the held-out period (``held_out_map``): the solver is fully convolutional, so the
model trained on patches maps the whole domain in one pass per window (``whole``:
`pipekit_cycle.ssh.whole_domain_map`, every window over the full grid, blended in time with
`pipekit_cycle.ssh.time_tent`, no seam in space), or patch by patch, stitched (``patches``:
`pipekit_cycle.ssh.learned_map`, the triangular weight of `pipekit_cycle.ssh.stitch`).
``auto`` is ``whole`` when the grid obeys the model's rule (`pipekit_cycle.validation.grid_rule`:
here even and at least 6 with the default pooling) and one window of it holds no more points
than a batch of patches (``batch_size * patch_size**2``, the memory the patch mode uses), else
``patches``. The README compares the two (section "Mapping sea-surface height")

Files: ``metrics.json`` (``scores``, with a reference: ``rmse``, ``mu``, ``sigma``,
``lambda_x_deg``, ``lambda_t_days`` of ``learned``, ``oi`` and ``interpolation``;
``along_track_scores`` with ``withhold``: the 2021a OSE scores of each map against the withheld
satellite, `pipekit_cycle.ssh.track_scores`; ``units`` names every score's unit;
``learning_curve``: the learned map of the held-out period scored at step 0 and at every
checkpoint, ``SSHData.checkpoint_scores``, with the step and the seconds spent in training steps),
``reconstruction.nc`` (CF-1.8, `pipekit_cycle.ssh.write_netcdf`: the reference, the observations
and the three maps of the held-out period on the user's dates, with the backend, adjoint, steps,
seed and package version), and the figures ``maps.png``, ``psd_score.png``, ``loss.png`` and
``learning_curve.png`` (held-out mu and lambda_x, or the along-track mu, against training time,
OI's as a line; with matplotlib).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import GRAD_MODS, FourDVarNetConfig
from ..placement import Placement
from ..ssh.augment import AUGMENTATIONS
from ..ssh.baselines import linear_interpolation_time
from ..ssh.files import write_netcdf
from ..ssh.gridded import GriddedData
from ..ssh.mapping import (
    Standardiser,
    learned_map,
    oi_background,
    samples,
    score,
    whole_domain_map,
    window_starts,
    zero_land,
)
from ..ssh.metrics import spectral_score
from ..ssh.patches import patch_origins
from ..ssh.track_metrics import track_scores
from ..validation import grid_allows, grid_rule
from .config import config_int, config_positive
from .errors import ConfigError, FiguresSkippedWarning, NetcdfSkippedWarning
from .ssh_inputs import DEFAULT_FILE_NOISE_STD, INPUT_SETTINGS, SSH_SIMULATION, SSHInputs, load_inputs, resolve_inputs
from .task import Setting, progress_bar

if TYPE_CHECKING:
    from ..adjoints import AdjointSpec
    from .config import ExperimentConfig

__all__ = [
    "DEFAULT_FILE_NOISE_STD",
    "HELD_OUT_MAPS",
    "HELD_OUT_SAMPLES",
    "SSH",
    "SSH_SIMULATION",
    "SSHData",
    "SSHTask",
]

HELD_OUT_SAMPLES = 128
RECONSTRUCTION_FILE = "reconstruction.nc"
MAP_FILES = ("maps.png", "psd_score.png", "loss.png", "learning_curve.png", RECONSTRUCTION_FILE)
BACKGROUNDS = ("oi", "none")
HELD_OUT_MAPS = ("auto", "whole", "patches")
HELD_OUT_MAP_DEFAULT = "auto"
DEFAULT_GRAD_MOD = FourDVarNetConfig.grad_mod
# The units of metrics.json's scores, written next to them.
SCORE_UNITS = {"rmse": "m", "mu": "1", "sigma": "1", "lambda_x_deg": "degrees of longitude", "lambda_t_days": "days",
               "lambda_x_km": "km", "n_points": "1"}

# `train --help` appends the defaults that `SSHTask.defaults` holds; a text states only the others.
SETTINGS = (
    Setting("patch_size", int, "the square patch the solver maps, in grid points"),
    Setting("patch_stride", int, "spacing of the patches (default: half the patch size)"),
    Setting("prior_downsample", int, "the prior works on the patch average-pooled by this factor"),
    Setting("train_days", int, f"training days before the held-out ones (default {SSH_SIMULATION['train_days']}; "
            f"with --data or --obs: all of them)"),
    Setting("test_days", int, "the last days, held out and mapped whole"),
    *INPUT_SETTINGS,
    Setting("oi_space_km", float, "OI's Gaussian length scale"),
    Setting("oi_time_days", float, "OI's Gaussian time scale"),
    Setting("background", str, "oi: the solver maps the departure from OI; none: the observations alone",
            choices=BACKGROUNDS),
    Setting("augment", str, "flip-y: every training sample also mirrored north-south with the SSH's sign changed, a "
            "symmetry of the beta-plane QG equations (pipekit_cycle.ssh.augment); none (default): as it is",
            choices=tuple(AUGMENTATIONS)),
    Setting("grad_mod", str, "the solver's gradient modulator: convlstm (default) reads the gradient, the state and "
            "its memory; convlstm_normalized (ocean4dvarnet's) the gradient over its first step's RMS and its memory "
            "(pipekit_cycle.FourDVarNetConfig)", choices=GRAD_MODS),
    Setting("held_out_map", str, "how the held-out period is mapped: whole (the full grid per window, one pass), "
            "patches (patch by patch, stitched), auto (whole when the grid obeys the model's rule and a window of "
            "it holds at most batch-size x patch-size^2 points)", choices=HELD_OUT_MAPS),
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
    description: str = "sea-surface height maps from altimetry (simulated, gridded --data, or along-track --obs)"
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {
        "steps": 2000, "batch_size": 8, "solver_steps": 5, "hidden_dim": 16, "prior_hidden_dim": 16,
        "checkpoint_every": 250, "lr_schedule": "cosine",
        "window_length": 15, "patch_size": 64, "prior_downsample": 2, "test_days": 60,
        "oi_space_km": 130.0, "oi_time_days": 5.0, "background": "oi", "held_out_map": HELD_OUT_MAP_DEFAULT})
    settings: tuple[Setting, ...] = SETTINGS
    outputs: tuple[str, ...] = MAP_FILES

    def resolve(self, config: ExperimentConfig) -> dict[str, Any]:
        given = {setting.name: getattr(config, setting.name) for setting in self.settings}
        ssh = {name: self.defaults[name] if value is None and name in self.defaults else value
               for name, value in given.items()}
        resolve_inputs(ssh)
        config_int("patch_size", ssh["patch_size"], 1)
        if ssh["patch_stride"] is None:  # patches overlapping by half, whatever their size
            ssh["patch_stride"] = max(1, ssh["patch_size"] // 2)
        for field in ("patch_stride", "prior_downsample", "test_days"):
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
        if ssh["augment"] is not None and ssh["augment"] not in AUGMENTATIONS:
            raise ConfigError("augment", f"must be one of {', '.join(AUGMENTATIONS)}, got {ssh['augment']!r}")
        if ssh["augment"] == "none":  # stored as unset, as runs made before the setting existed hold it
            ssh["augment"] = None
        if ssh["grad_mod"] is not None and ssh["grad_mod"] not in GRAD_MODS:
            raise ConfigError("grad_mod", f"must be one of {', '.join(GRAD_MODS)}, got {ssh['grad_mod']!r}")
        if ssh["grad_mod"] == DEFAULT_GRAD_MOD:  # stored as unset, as runs made before the setting existed hold it
            ssh["grad_mod"] = None
        if ssh["held_out_map"] not in HELD_OUT_MAPS:
            raise ConfigError("held_out_map", f"must be one of {', '.join(HELD_OUT_MAPS)}, got "
                              f"{ssh['held_out_map']!r}")
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
            grad_mod=config.grad_mod or DEFAULT_GRAD_MOD, solver_adjoint=adjoint,
        )

    def prepare(self, config: ExperimentConfig, *, progress: bool) -> SSHData:
        return SSHData(config, progress=progress)


SSH = SSHTask()


def _split(config: ExperimentConfig, inputs: SSHInputs) -> tuple[slice, slice]:
    """The training and held-out days; `ConfigError` when the data cannot hold them."""
    data = inputs.data
    n_days, ny, nx = data.obs.shape
    if config.train_days is None:
        # Training takes what the held-out days leave, so too few days is the held-out period's fault.
        train_days = n_days - config.test_days
        if train_days < config.window_length:
            raise ConfigError(
                "test_days", f"{data.source} holds {n_days} days, too few to hold out {config.test_days} and train "
                f"on one window (--window-length {config.window_length}) before them",
            )
    else:
        train_days = config.train_days
        if train_days + config.test_days > n_days:
            raise ConfigError("train_days", f"{data.source} holds {n_days} days, fewer than --train-days {train_days} "
                              f"+ --test-days {config.test_days}")
    if config.patch_size > min(ny, nx):
        raise ConfigError("patch_size", f"must be at most the grid ({ny} x {nx}), got {config.patch_size}")
    start = n_days - config.test_days
    return slice(start - train_days, start), slice(start, n_days)


class _TruthTargets:
    """Supervision by a gridded reference: the input is the observations' departure from the
    background, the target the truth's (NaN on land)."""

    variants = 1

    def __init__(self, period: GriddedData, background: np.ndarray) -> None:
        self.period, self.background = period, background

    def departures(self) -> np.ndarray:
        return self.period.truth - self.background

    def pair(self, variant: int, scale: Standardiser) -> tuple[np.ndarray, np.ndarray]:
        return scale.forward(self.period.obs - self.background), scale.forward(self.period.truth - self.background)


def _leave_one_out_means(satellites: np.ndarray) -> list[np.ndarray]:
    """Entry ``s``: the mean of the satellites ``(n, time, lat, lon)`` other than ``s``."""
    with warnings.catch_warnings():  # a cell none of the others saw: NaN, unobserved
        warnings.simplefilter("ignore", RuntimeWarning)
        return [np.nanmean(np.delete(satellites, variant, axis=0), axis=0) for variant in range(len(satellites))]


class _SatelliteTargets:
    """Supervision without a gridded reference, from the observations alone: variant ``s``
    maps ``others[s]``, the mean of the other satellites (`_leave_one_out_means` of
    ``satellites`` ``(n, time, lat, lon)``), and is scored on satellite ``s``'s cells, each
    departure taken from ``backgrounds[s]``, the OI of ``others[s]``, so that no target value
    reaches the input through the background."""

    def __init__(self, satellites: np.ndarray, others: list[np.ndarray], backgrounds: list[np.ndarray]) -> None:
        self.satellites, self.others, self.backgrounds = satellites, others, backgrounds
        self.variants = len(satellites)

    def departures(self) -> np.ndarray:
        return np.concatenate([self.satellites[s] - self.backgrounds[s] for s in range(self.variants)])

    def pair(self, variant: int, scale: Standardiser) -> tuple[np.ndarray, np.ndarray]:
        background = self.backgrounds[variant]
        return scale.forward(self.others[variant] - background), scale.forward(self.satellites[variant] - background)


class SSHData:
    """The periods of an SSH run (`pipekit_cycle.experiment.TaskData`): standardised departures
    from the background, cut into (window, patch) samples (patches with some ocean only); the
    held-out period mapped whole."""

    def __init__(self, config: ExperimentConfig, *, progress: bool = False) -> None:
        self.config, self._progress = config, progress
        inputs = load_inputs(config)
        train_days, test_days = _split(config, inputs)
        self.train, self.test = inputs.data.period(train_days.start, train_days.stop), \
            inputs.data.period(test_days.start, test_days.stop)
        self.withheld = inputs.withheld
        # The held-out days' spacing, for the scores' time spectra (one day when a single day is held out).
        self._dt_days = float(np.diff(self.test.time).mean()) if len(self.test.time) > 1 else 1.0
        satellites = None if inputs.satellites is None else (inputs.satellites[:, train_days],
                                                             inputs.satellites[:, test_days])
        self.origins = patch_origins(self.train.obs.shape[1:], config.patch_size, config.patch_stride)
        self.noise_std = next(
            value for value in (config.obs_noise_std, self.test.noise_std, DEFAULT_FILE_NOISE_STD) if value is not None
        )
        if self.train.truth is not None:
            # Minutes on a large file: a bar that moves per period says the run is not stuck.
            with progress_bar(2, 0, progress, "OI background (train, held-out)") as bar:
                self.supervision = _TruthTargets(self.train, self._background(self.train))
                bar.update(1)
                self.background_test = self._background(self.test)
                bar.update(1)
            held_out = _TruthTargets(self.test, self.background_test)
        else:
            self.background_test = self._background(self.test)
            self.supervision = self._satellite_targets(self.train, satellites[0])
            held_out = self._satellite_targets(self.test, satellites[1])
        try:
            self.scale = Standardiser.fit(self.supervision.departures())
        except ValueError as error:
            raise ConfigError("data" if config.data is not None else "obs",
                              f"{self.train.source}: the training targets: {error}") from None
        self._fields = [self.supervision.pair(variant, self.scale) for variant in range(self.supervision.variants)]
        starts = window_starts(self.train.obs.shape[0], config.window_length)
        self._variant, self._starts, self._origins = self._with_targets(self._fields, starts)
        # Sample i is version i // n (`pipekit_cycle.ssh.augment`) of the n samples with a target's i % n.
        self.augmentation = AUGMENTATIONS[config.augment or "none"]
        self.n_samples = len(self._starts) * self.augmentation.copies
        if config.batch_size > self.n_samples:
            raise ConfigError("batch_size", f"must be at most the number of training samples ({self.n_samples}: "
                              f"{len(starts)} windows x {len(self.origins)} patches x {len(self._fields)} target(s), "
                              f"those with a target point, x {self.augmentation.copies} version(s)), got "
                              f"{config.batch_size}")
        self.held_out = self._held_out(held_out)
        self.held_out_map = self._held_out_map()
        self._drawn: dict[str, Any] = {}

    def _with_targets(self, fields: list[tuple[np.ndarray, np.ndarray]], starts: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(variant, start, origin)`` of every sample whose target holds a finite point (land
        and, without a reference, days the target satellite did not pass have none)."""
        size, length = self.config.patch_size, self.config.window_length
        chosen = []
        for variant, (_, target) in enumerate(fields):
            finite = np.isfinite(target)
            seen = np.stack([finite[:, row : row + size, col : col + size].any(axis=(1, 2))
                             for row, col in self.origins], axis=1)  # (time, patch)
            total = np.concatenate([np.zeros((1, len(self.origins)), int), np.cumsum(seen, axis=0)])
            start_index, patch = np.nonzero(total[starts + length] - total[starts] > 0)
            chosen.append((np.full(len(patch), variant), starts[start_index], self.origins[patch]))
        variant, start, origin = (np.concatenate(parts) for parts in zip(*chosen, strict=True))
        return variant, start, origin.reshape(-1, 2)

    def _background(self, period: GriddedData, obs: np.ndarray | None = None) -> np.ndarray:
        """The OI of ``period``, or of ``obs`` on its days (``background="oi"``), else zeros."""
        if self.config.background != "oi":
            return np.zeros(period.obs.shape)
        return self._optimal_interpolation(period if obs is None else dataclasses.replace(period, obs=obs))

    def _satellite_targets(self, period: GriddedData, satellites: np.ndarray) -> _SatelliteTargets:
        others = _leave_one_out_means(satellites)
        backgrounds = []
        with progress_bar(len(satellites), 0, self._progress, "OI background without each satellite") as bar:
            for mean in others:
                backgrounds.append(self._background(period, mean))
                bar.update(1)
        return _SatelliteTargets(satellites, others, backgrounds)

    def _held_out_map(self) -> str:
        """``held_out_map`` resolved to ``whole`` or ``patches`` for this grid (module docstring)."""
        config, grid = self.config, self.test.obs.shape[1:]
        model = config.model_config()
        factors = (model.prior_downsample, model.grad_mod_downsample)
        allowed = grid_allows(grid, model.kernel_size, factors)
        if config.held_out_map == "whole" and not allowed:
            raise ConfigError("held_out_map", f"whole needs a grid with {grid_rule(2, model.kernel_size, factors)}, "
                              f"got {grid[0]} x {grid[1]}; use --held-out-map patches")
        if config.held_out_map == "auto":
            fits = grid[0] * grid[1] <= config.batch_size * config.patch_size**2
            return "whole" if allowed and fits else "patches"
        return config.held_out_map

    def _optimal_interpolation(self, period: GriddedData) -> np.ndarray:
        return oi_background(period, space_km=self.config.oi_space_km, time_days=self.config.oi_time_days,
                             noise_std=self.noise_std)

    def _held_out(self, supervision: _TruthTargets | _SatelliteTargets) -> tuple[np.ndarray, np.ndarray]:
        """Held-out samples like the training ones, windows ``window_length`` apart, at most
        `HELD_OUT_SAMPLES` spread over them."""
        length = self.config.window_length
        fields = [supervision.pair(variant, self.scale) for variant in range(supervision.variants)]
        variant, starts, origins = self._with_targets(fields, window_starts(fields[0][0].shape[0], length,
                                                                            stride=length))
        if not len(starts):
            raise ConfigError("test_days", f"{self.test.source}: no held-out window has a target point to score the "
                              f"training on; hold out more days")
        keep = np.unique(np.linspace(0, len(starts) - 1, min(HELD_OUT_SAMPLES, len(starts))).astype(int))
        return self._samples(fields, variant[keep], starts[keep], origins[keep])

    def _samples(self, fields: list[tuple[np.ndarray, np.ndarray]], variant: np.ndarray, starts: np.ndarray,
                 origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        length, size = self.config.window_length, self.config.patch_size
        obs = np.empty((len(starts), length, size, size))
        truth = np.empty_like(obs)
        for chosen in range(len(fields)):
            rows = np.nonzero(variant == chosen)[0]
            if len(rows):
                obs[rows] = samples(fields[chosen][0], starts[rows], origins[rows], length, size)
                truth[rows] = samples(fields[chosen][1], starts[rows], origins[rows], length, size)
        return obs, truth

    def training_samples(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chosen = np.asarray(chosen)
        version, sample = np.divmod(chosen, len(self._starts))
        obs, truth = self._samples(self._fields, self._variant[sample], self._starts[sample], self._origins[sample])
        for index in np.unique(version[version > 0]):
            rows = version == index
            obs[rows] = self.augmentation.version(int(index), obs[rows], self.scale)
            truth[rows] = self.augmentation.version(int(index), truth[rows], self.scale)
        return obs, truth

    def _learned_map(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> np.ndarray:
        """The model's map of the held-out period (``held_out_map``: whole or patches)."""
        config, test = self.config, self.test

        def predict(inputs: np.ndarray) -> np.ndarray:
            # The inference output, without a gradient: no graph is kept while the period is mapped.
            return backend.to_numpy(backend.predict(model, backend.make_batch(inputs, **placement.batch_kwargs)))

        n_days, *grid = test.obs.shape
        n_windows = len(window_starts(n_days, config.window_length))
        if self.held_out_map == "whole":
            # As many windows per pass as hold the points of a batch of patches (at least one).
            windows = max(1, config.batch_size * config.patch_size**2 // math.prod(grid))
            with progress_bar(n_windows, 0, progress, "map held-out period (whole domain)") as bar:
                return whole_domain_map(predict, test.obs, background=self.background_test, scale=self.scale,
                                        length=config.window_length, batch_size=windows, progress=bar.update)
        with progress_bar(n_windows * len(self.origins), 0, progress, "map held-out period (patches)") as bar:
            return learned_map(predict, test.obs, background=self.background_test, scale=self.scale,
                               length=config.window_length, size=config.patch_size, stride=config.patch_stride,
                               batch_size=config.batch_size, progress=bar.update)

    def checkpoint_scores(self, backend: ModuleType, model: Any, placement: Placement) -> dict[str, float | None]:
        """The held-out map's scores for the learning curve: ``mu``, ``lambda_x_deg``,
        ``lambda_t_days``, ``rmse`` against the reference, or ``along_track_mu`` and
        ``along_track_lambda_x_km`` against the withheld satellite, or none without either
        (``None``: not resolved)."""
        test = self.test
        if test.truth is None and self.withheld is None:
            return {}
        learned = np.where(test.land, np.nan, self._learned_map(backend, model, placement, progress=False))
        if test.truth is not None:
            scores = score(learned, test.truth, dx_deg=test.dx_deg, dt_days=self._dt_days)
            return {name: scores[name] for name in ("mu", "lambda_x_deg", "lambda_t_days", "rmse")}
        track = _json_numbers(track_scores(learned, dates=test.dates, lat=test.lat, lon=test.lon, track=self.withheld))
        return {"along_track_mu": track["mu"], "along_track_lambda_x_km": track["lambda_x_km"]}

    def evaluate(self, backend: ModuleType, model: Any, placement: Placement, progress: bool) -> dict[str, Any]:
        config, test = self.config, self.test
        n_days, *grid = test.obs.shape
        learned = self._learned_map(backend, model, placement, progress)
        oi = self.background_test if config.background == "oi" else self._optimal_interpolation(test)
        interpolation = linear_interpolation_time(test.obs, time=test.time)
        # Land is NaN in every map (DESIGN 8): no estimate is made there.
        maps = {name: np.where(test.land, np.nan, field)
                for name, field in (("learned", learned), ("oi", oi), ("interpolation", interpolation))}
        dt_days = self._dt_days
        scores = {} if test.truth is None else {
            name: score(field, test.truth, dx_deg=test.dx_deg, dt_days=dt_days) for name, field in maps.items()}
        along_track = {} if self.withheld is None else {
            name: _json_numbers(track_scores(field, dates=test.dates, lat=test.lat, lon=test.lon, track=self.withheld))
            for name, field in maps.items()}
        self._drawn = {"maps": maps, "dt_days": dt_days}
        metrics: dict[str, Any] = {
            "data": test.source,
            "held_out_days": int(n_days),
            "held_out_period": [str(test.dates[0]), str(test.dates[-1])],
            "train_days": int(self.train.obs.shape[0]),
            "grid": list(grid),
            "land_fraction": float(test.land.mean()),
            "training_samples": self.n_samples,
            "observed_fraction": float(np.isfinite(test.obs).sum() / max(1, n_days * int((~test.land).sum()))),
            "obs_noise_std": self.noise_std,
            "held_out_map": self.held_out_map,
            "units": {**SCORE_UNITS, "obs_noise_std": "m", "observed_fraction": "1 (of the ocean cell-days)"},
        }
        if scores:
            metrics.update({f"rmse_{name}": scores[name]["rmse"] for name in maps})
            metrics["scores"] = scores
        if along_track:
            metrics["withheld"] = config.withhold
            metrics["along_track_scores"] = along_track
        return metrics

    def write_outputs(
        self, out: Path, metrics: dict[str, Any], figures: bool, losses: list[float], held_out: list[list[float]]
    ) -> dict[str, Any]:
        maps = self._drawn["maps"]
        written: dict[str, Any] = {"reconstruction": None, "figures": []}
        provenance = {
            "title": "SSH maps of the held-out period: the learned 4DVarNet, optimal interpolation, interpolation in "
                     "time",
            "backend": metrics["backend"], "adjoint": metrics["adjoint"], "training_steps": metrics["steps"],
            "seed": self.config.seed, "pipekit_cycle_version": _version(),
            "config": json.dumps(self.config.to_dict(), sort_keys=True),
        }
        try:
            write_netcdf(out / RECONSTRUCTION_FILE, self.test, maps, attrs=provenance)
            written["reconstruction"] = RECONSTRUCTION_FILE
        except ImportError as error:
            warnings.warn(f"{RECONSTRUCTION_FILE} not written ({error})", NetcdfSkippedWarning, stacklevel=3)
        if figures:
            written["figures"] = self._draw(out, metrics, losses, held_out)
        return written

    def _draw(self, out: Path, metrics: dict[str, Any], losses: list[float], held_out: list[list[float]]) -> list[str]:
        from .figures import (
            MATPLOTLIB_HINT,
            learning_curve_figure,
            loss_figure,
            map_figure,
            psd_score_figure,
            save_figures,
        )

        maps, test = self._drawn["maps"], self.test
        title = (f"SSH mapping, {metrics['backend']}, adjoint {metrics['adjoint']}, {metrics['steps']} steps; "
                 f"held out {test.dates[0]} to {test.dates[-1]}: {_headline(metrics)}")
        day = int(np.argmax(np.isfinite(test.obs).sum(axis=(1, 2))))  # the best-observed day shows the tracks
        named = {"OI": maps["oi"], "learned": maps["learned"], "interpolation": maps["interpolation"]}
        try:
            figures = {
                "maps.png": map_figure(title, lat=test.lat, lon=test.lon, dates=test.dates, day=day, obs=test.obs,
                                       truth=test.truth, land=test.land, estimates=named),
            }
            if test.truth is not None:
                truth = zero_land(test.truth, test.land)  # as `score` sees it
                curves = {label: spectral_score(zero_land(field, test.land), truth, dx=test.dx_deg,
                                                dt=self._drawn["dt_days"]) for label, field in named.items()}
                figures["psd_score.png"] = psd_score_figure(title, curves)
            figures["loss.png"] = loss_figure(title, losses, held_out,
                                              held_out_label=f"{len(self.held_out[0])} samples")
            curve = metrics.get("learning_curve", [])
            if "scores" in metrics and any("mu" in point for point in curve):
                panels = (("mu", "held-out mu"), ("lambda_x_deg", "held-out lambda_x (degrees)"))
                references = {"OI": metrics["scores"]["oi"]}
            elif "along_track_scores" in metrics and any("along_track_mu" in point for point in curve):
                panels = (("along_track_mu", "mu against the withheld satellite"),)
                references = {"OI": {"along_track_mu": metrics["along_track_scores"]["oi"]["mu"]}}
            else:
                panels = ()
            if panels:
                figures["learning_curve.png"] = learning_curve_figure(title, curve, panels, references)
        except ImportError as error:
            warnings.warn(
                f"figures skipped ({error}); to get them: {MATPLOTLIB_HINT}", FiguresSkippedWarning, stacklevel=4
            )
            return []
        return save_figures(out, figures)


def _headline(metrics: dict[str, Any]) -> str:
    """The scores in a line: the gridded ones with a reference, the along-track ones with a
    withheld satellite."""
    parts = []
    if "scores" in metrics:
        scores = metrics["scores"]
        parts.append(f"mu learned {scores['learned']['mu']:.3f}, OI {scores['oi']['mu']:.3f}, interpolation "
                     f"{scores['interpolation']['mu']:.3f}; lambda_x learned "
                     f"{_degrees(scores['learned']['lambda_x_deg'])}, OI {_degrees(scores['oi']['lambda_x_deg'])}")
    if "along_track_scores" in metrics:
        track = metrics["along_track_scores"]
        parts.append(f"against {metrics['withheld']}: mu learned {track['learned']['mu']:.3f}, OI "
                     f"{track['oi']['mu']:.3f}")
    return "; ".join(parts) or "no reference and no withheld satellite to score against"


def _json_numbers(values: dict[str, float | int]) -> dict[str, float | int | None]:
    """``None`` for an infinite or NaN score (nothing resolved, or not enough data), so the
    result is plain JSON, as `pipekit_cycle.ssh.score` does."""
    return {key: value if math.isfinite(value) else None for key, value in values.items()}


def _version() -> str:
    try:
        return importlib.metadata.version("pipekit-cycle")
    except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown"


def _degrees(value: float | None) -> str:
    return "unresolved" if value is None or not math.isfinite(value) else f"{value:.2f} deg"


