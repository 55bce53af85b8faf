r"""The SSH OSSE: `simulate`, a spun-up ocean model seen by altimeters.

``model="two_layer"`` (the default) is the two-layer quasi-geostrophic model of
`pipekit_cycle.ssh.qg` (pyqg's ``QGModel``) on a doubly periodic :math:`\beta`-plane box, forced
by a meandering eastward jet: the upper layer's zonal-mean potential vorticity is relaxed toward
that of a Gaussian jet over a lower layer at rest (`pipekit_cycle.ssh.JetRelaxation`), whose
baroclinic and barotropic instability makes the meanders, rings and eddies; bottom drag and the
exponential small-scale filter take the energy out. Its settings (`TwoLayerSettings`) are chosen
for the eddy-rich Gulf Stream region: the deformation radius :math:`L_d` = 20 km (Chelton et
al. 1998 give 20-30 km there), a thin upper layer (:math:`H_1 / H_2 = 1/4`), a jet of 1 m/s
with an e-folding half-width of 30 km relaxed over 20 days, its axis a quarter of the way up
the box (the middle of the driver's maps), and a 30-day bottom drag. There is no imposed
uniform flow by default (``u1 = u2 = 0``); ``jet_speed=0`` with ``u1=0.08`` is the earlier
configuration, eddies of a uniform shear everywhere and no jet. The sea-surface height is the
upper layer's geostrophic streamfunction scaled by :math:`f_0 / g`,

.. math::
    \eta = \frac{f_0}{g}\, \psi_1, \qquad f_0 = 2\Omega \sin\varphi_0, \quad
    \beta = 2\Omega \cos\varphi_0 / R_E,

(the surface pressure :math:`\rho_0 g \eta` is the upper layer's pressure
:math:`\rho_0 f_0 \psi_1`), :math:`\varphi_0` the model box's central latitude. The jet is part of
:math:`\psi_1` (the zonal-mean column of the spectra), so the maps carry its step in SSH, as
the 2020a challenge's NATL60 maps carry the Gulf Stream's; an imposed uniform flow's tilt,
:math:`-(f_0 / g)\, U_1 y`, is not periodic and is left out.

The box. The model runs on a doubly periodic grid of 128 points each way (``box_points``: a
10° box), ``dx_deg`` apart from ``(lat0, lon0)`` (default 33° N, 65° W, the 2020a data
challenge's Gulf Stream box, ``dx_deg = 10/128``), enlarged to the maps' ``shape`` where that
is larger, with metric spacings :math:`\Delta y` = ``dx_deg`` :math:`\times` 111.19 km and
:math:`\Delta x = \Delta y \cos\varphi_0` (8.7 and 6.8 km). The maps are its first ``shape``
points from that corner: a smaller box is a window onto the same ocean (not periodic itself),
so the windows of one seed on one box show the same flow and share one spin-up. Maps of at
most a quarter of ``box_points`` each way (32 points: the tests' sizes) run on a box of half
of it (64 points, a 5° box), eight times cheaper, its jet a quarter of the way up that box
(the middle of a 32-point map); its largest eddies are cut by the box and its jet's step is
smaller (measured over 150 days on the whole 64-point box: SSH std 0.24 m, kurtosis 2.1, a
0.61 m step, slope -4.4, Laplacian kurtosis 3.6). The
step is chosen daily from the CFL condition (`pipekit_cycle.ssh.TwoLayerQG.run_days`; 50-80
steps a day).

Spin-up. The run starts from the jet plus a random large-scale field (a spectrum peaked at
400 km, 15 cm of SSH, the lower layer at half the upper one's streamfunction), drawn from the
seed, and is integrated ``spinup_days`` (default 200) days before the first map; the jet's
instability grows out of it in about 60 days and the SSH variance levels off after about 150.
``time`` counts from `START_DATE`, 2012-10-01 (the start of the 2020a challenge's NATL60 year),
one map a day.

Cache. The spun-up state and the daily maps are kept on disk, keyed by every setting and the
seed, under ``$PIPEKIT_CACHE`` or else ``$XDG_CACHE_HOME/pipekit_cycle``
(``~/.cache/pipekit_cycle``); ``PIPEKIT_CACHE=off`` (or ``cache=False``) turns it off. Files
are written atomically (a temporary file renamed into place); a shorter run reads the first
days of a longer one (the days do not depend on how many follow), a longer one recomputes from
the cached spin-up. A cold and a warm cache give identical arrays.

Measured with the defaults on the 128-point box (seed 0, 730 days after the spin-up;
``python -m benchmarks.ssh_ocean_statistics``, which says how each number is computed): over
the driver's 64 x 64 map the SSH has a standard deviation of 0.46 m, its skewness is -0.05 and
its kurtosis 1.46, far from a Gaussian's 3: a bimodal distribution, the two sides of the jet,
whose time- and zonal-mean SSH steps by 0.99 m across it; the anomaly from the time mean has a
standard deviation of 0.22 m, skewness -0.20 and kurtosis 3.6; the Laplacian (:math:`f_0/g`
times the relative vorticity) has kurtosis 4.9: fat tails, the rings and the meanders' fronts.
The time-mean isotropic wavenumber spectrum of the periodic maps falls as :math:`k^{-4.26}`
between 70 and 250 km (the zonal one as :math:`k^{-4.56}`), and the anomaly's autocorrelation
falls to :math:`1/e` in 16 days. Published values for the Gulf Stream region: an SSH step of
about 1 m across the Stream; SSH wavenumber spectra of :math:`k^{-4}` to :math:`k^{-5}` over
70-250 km in eddy-rich regions (Xu & Fu 2012); SSH anomaly standard deviations of 0.1-0.2 m away
from the Stream and 0.3-0.4 m along its axis (Ducet et al. 2000); temporal correlation scales
of order 10-20 days in the DUACS mapping there (Pujol et al. 2016). Without the jet (the earlier
configuration) the SSH was near-Gaussian (kurtosis 3.0) with a 0.19 m standard deviation.
Generation, on two CPU cores: 930 days (the spin-up and 730) on the 128-point box in 51 s
cold; the driver's default 1020 days on 64 x 64 in 65 s cold, milliseconds from the cache;
32 x 32 for 150 days (the 64-point box) 4 s cold.

``model="one_and_half_layer"`` is the earlier forced 1.5-layer model, `pipekit_cycle.ssh.ssh_osse`
(its defaults, 40 days of spin-up); the observations are this module's either way
(`pipekit_cycle.ssh.observe`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..validation import check_int
from .observations import (
    DEFAULT_INSTRUMENTS,
    EARTH_RADIUS_KM,
    KM_PER_DEG,
    AlongTrack,
    Satellite,
    observe,
    resolve_instruments,
)
from .osse import DEFAULT_DX_DEG, EARTH_ROTATION, GRAVITY, ssh_osse
from .qg import JetRelaxation, TwoLayerQG

__all__ = ["CACHE_ENV", "MODELS", "START_DATE", "SSHSimulation", "TwoLayerSettings", "cache_directory", "simulate"]

START_DATE = np.datetime64("2012-10-01", "D")
MODELS = ("two_layer", "one_and_half_layer")
CACHE_ENV = "PIPEKIT_CACHE"
_CACHE_OFF = ("", "0", "off", "false", "no", "none")
_CACHE_VERSION = 2  # bump when the model's arithmetic changes: old files then no longer match


@dataclasses.dataclass(frozen=True)
class TwoLayerSettings:
    """The two-layer model's settings: ``deformation_km`` (:math:`L_d`), ``delta``
    (:math:`H_1 / H_2`), ``u1``, ``u2`` (m/s: a uniform imposed flow), ``drag_days`` (the bottom
    drag's e-folding time), ``filter_strength``, ``cfl``, ``spinup_days``, ``box_points`` (the
    smallest model grid, each way); the jet (`pipekit_cycle.ssh.JetRelaxation`): ``jet_speed``
    (m/s; 0 for none), ``jet_width_km``, ``jet_position`` (its axis, as a fraction of the box
    from its southern edge) and ``jet_relaxation_days``; and the initial state: ``initial_ssh``
    (m) of eddies at ``initial_wavelength_km``, the lower layer's streamfunction
    ``initial_ratio`` times the upper one's.

    Examples
    --------
    ```python
    from pipekit_cycle.ssh import TwoLayerSettings, simulate

    quick = TwoLayerSettings(spinup_days=5, box_points=32)
    run = simulate(3, shape=(16, 16), seed=0, settings=quick, cache=False)
    assert run.parameters["box_points"] == 32 and TwoLayerSettings().deformation_km == 20.0
    eddies_alone = TwoLayerSettings(u1=0.08, jet_speed=0.0)  # no jet: baroclinic eddies everywhere
    ```
    """

    deformation_km: float = 20.0
    delta: float = 0.25
    u1: float = 0.0
    u2: float = 0.0
    drag_days: float = 30.0
    filter_strength: float = 23.6
    cfl: float = 0.6
    spinup_days: int = 200
    box_points: int = 128
    jet_speed: float = 1.0
    jet_width_km: float = 30.0
    jet_position: float = 0.25
    jet_relaxation_days: float = 20.0
    initial_ssh: float = 0.15
    initial_wavelength_km: float = 400.0
    initial_ratio: float = 0.5

    def __post_init__(self) -> None:
        positive = ("deformation_km", "delta", "drag_days", "cfl", "jet_width_km", "jet_relaxation_days",
                    "initial_ssh", "initial_wavelength_km")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number > 0, got {value!r}")
        for name in ("u1", "u2", "jet_speed", "filter_strength", "initial_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.jet_position, bool) or not (
            isinstance(self.jet_position, (int, float)) and 0 <= self.jet_position < 1
        ):
            raise ValueError(f"jet_position must be a fraction of the box in [0, 1), got {self.jet_position!r}")
        check_int("spinup_days", self.spinup_days, 0)
        check_int("box_points", self.box_points, 16)


@dataclasses.dataclass(frozen=True)
class SSHSimulation:
    """An OSSE: ``truth`` (m), ``obs`` (NaN where unobserved) and ``mask`` (bool), each
    ``(time, lat, lon)``; ``land`` ``(lat, lon)`` (all False: open ocean); ``lat`` and ``lon``
    (degrees, 1-D); ``time`` (``datetime64[D]``, daily from `START_DATE`); ``tracks``, each
    instrument's observations as points (`pipekit_cycle.ssh.AlongTrack`, by name); ``dx_deg``,
    ``dx_km``, ``dy_km`` the grid spacings; ``model`` its name, ``parameters`` its settings and
    derived values, ``instruments`` the observing system.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import TwoLayerSettings, simulate

    run = simulate(4, shape=(16, 16), seed=0, settings=TwoLayerSettings(spinup_days=5, box_points=32), cache=False)
    assert run.time[0] == np.datetime64("2012-10-01") and run.days.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert np.allclose(run.observed_fraction(), run.mask.mean(axis=(1, 2))) and not run.land.any()
    ```
    """

    truth: np.ndarray
    obs: np.ndarray
    mask: np.ndarray
    land: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    time: np.ndarray
    tracks: dict[str, AlongTrack]
    dx_deg: float
    dx_km: float
    dy_km: float
    model: str
    parameters: dict[str, float | str]
    instruments: tuple[Satellite, ...]

    @property
    def days(self) -> np.ndarray:
        """``time`` as days (float) since the first map."""
        return (self.time - self.time[0]) / np.timedelta64(1, "D")

    def observed_fraction(self) -> np.ndarray:
        """The fraction of grid points observed on each day, ``(time,)``."""
        return self.mask.mean(axis=(1, 2))


def cache_directory(cache: str | os.PathLike[str] | bool | None = None) -> Path | None:
    """Where `simulate` keeps its runs: ``cache`` itself (a directory), nowhere (``False``), or
    for ``None``/``True`` ``$PIPEKIT_CACHE`` (``off``, ``0``, ``none`` or empty: nowhere), else
    ``$XDG_CACHE_HOME/pipekit_cycle``, else ``~/.cache/pipekit_cycle``.

    Examples
    --------
    ```python
    from pipekit_cycle.ssh import cache_directory

    assert cache_directory(False) is None and cache_directory("/tmp/mine").name == "mine"
    ```
    """
    if cache is False:
        return None
    if cache is None or cache is True:
        chosen = os.environ.get(CACHE_ENV)
        if chosen is not None:
            return None if chosen.strip().lower() in _CACHE_OFF else Path(chosen).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "pipekit_cycle"
    return Path(cache)


def _load(path: Path | None, shape: tuple[int, ...], dtype: type) -> np.ndarray | None:
    """The array stored at ``path`` if it is there, whole and of this shape and dtype."""
    if path is None or not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if array.dtype != dtype or array.shape[1:] != shape[1:] or array.shape[0] < shape[0]:
        return None
    return array


def _store(path: Path | None, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically; a cache that cannot be written is skipped."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as handle:
            np.save(handle, array, allow_pickle=False)
        os.replace(handle.name, path)
    except OSError:
        try:
            os.unlink(handle.name)
        except (OSError, UnboundLocalError):
            pass


def _initial_state(model: TwoLayerQG, settings: TwoLayerSettings, f0: float, rng: np.random.Generator) -> np.ndarray:
    """Random large-scale PV spectra: an upper streamfunction with an isotropic spectrum peaked
    at ``initial_wavelength_km`` and ``initial_ssh`` of SSH, the lower one proportional; plus
    the jet's own streamfunction in the upper layer, if there is a jet."""
    k0 = 2.0 * np.pi / (settings.initial_wavelength_km * 1e3)
    envelope = (model.k2 / k0**2) * np.exp(-model.k2 / k0**2)
    psi = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((model.ny, model.nx))) * envelope, s=(model.ny, model.nx))
    psi *= settings.initial_ssh * GRAVITY / f0 / psi.std()
    lower = settings.initial_ratio * psi
    if model.jet is not None:
        psi = psi + model.jet.streamfunction(model.ny, model.dy_m)[:, None]
    ph = np.fft.rfft2(np.stack([psi, lower]))
    return np.stack(
        [-model.k2 * ph[0] + model.f1 * (ph[1] - ph[0]), -model.k2 * ph[1] + model.f2 * (ph[0] - ph[1])]
    ) * model.spectral_filter


def _jet(settings: TwoLayerSettings) -> JetRelaxation | None:
    if settings.jet_speed == 0:
        return None
    return JetRelaxation(speed=settings.jet_speed, width_m=settings.jet_width_km * 1e3, position=settings.jet_position,
                         timescale_s=settings.jet_relaxation_days * 86400.0)


def _two_layer(
    n_days: int,
    *,
    shape: tuple[int, int],
    seed: int,
    settings: TwoLayerSettings,
    lat0: float,
    dx_deg: float,
    lon0: float,
    cache: Path | None,
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Daily SSH ``(n_days, *shape)`` of the two-layer model and its parameters."""
    base = settings.box_points if max(shape) > settings.box_points // 4 else settings.box_points // 2
    box = (max(shape[0], base), max(shape[1], base))
    lat_mid = lat0 + dx_deg * (box[0] - 1) / 2.0
    if abs(lat_mid) < 5.0 or abs(lat0) > 80.0 or abs(lat0 + dx_deg * (box[0] - 1)) > 80.0:
        raise ValueError(f"the model box must lie between 5° and 80° from the equator, got central latitude "
                         f"{lat_mid:.2f} for {box[0]} points from {lat0}")
    f0 = 2.0 * EARTH_ROTATION * math.sin(math.radians(lat_mid))
    beta = 2.0 * EARTH_ROTATION * math.cos(math.radians(lat_mid)) / (EARTH_RADIUS_KM * 1e3)
    dy_m = dx_deg * KM_PER_DEG * 1e3
    dx_m = dy_m * math.cos(math.radians(lat_mid))
    model = TwoLayerQG(
        ny=box[0], nx=box[1], dx_m=dx_m, dy_m=dy_m, beta=beta, deformation_m=settings.deformation_km * 1e3,
        delta=settings.delta, u1=settings.u1, u2=settings.u2, bottom_drag=1.0 / (settings.drag_days * 86400.0),
        filter_strength=settings.filter_strength, jet=_jet(settings),
    )
    parameters: dict[str, float | str] = {
        **dataclasses.asdict(settings), "f0": f0, "beta": beta, "box_lat": box[0], "box_lon": box[1],
        "phillips_shear": beta / model.f2, "seed": seed,
    }
    identity = {"version": _CACHE_VERSION, "settings": dataclasses.asdict(settings), "box": box, "lat0": lat0,
                "lon0": lon0, "dx_deg": dx_deg, "seed": seed}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    spun_path = None if cache is None else cache / f"two_layer-{key}-spinup.npy"
    days_path = None if cache is None else cache / f"two_layer-{key}-{shape[0]}x{shape[1]}-ssh.npy"

    stored = _load(days_path, (n_days, *shape), np.float64)
    if stored is not None:
        return stored[:n_days].copy(), parameters
    spun = _load(spun_path, (2, box[0], box[1] // 2 + 1), np.complex128)
    if spun is None:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
        spun, _, _ = model.run_days(_initial_state(model, settings, f0, rng), n_days=settings.spinup_days,
                                    cfl=settings.cfl, save=lambda _: None)
        _store(spun_path, spun)
    scale = f0 / GRAVITY

    def ssh(qh: np.ndarray) -> np.ndarray:
        return scale * np.fft.irfft2(model.invert(qh)[0], s=box)[: shape[0], : shape[1]]

    _, maps, _ = model.run_days(spun, n_days=n_days, cfl=settings.cfl, save=ssh)
    truth = np.asarray(maps).reshape(n_days, *shape)
    _store(days_path, truth)
    return truth, parameters


def simulate(
    n_days: int,
    *,
    shape: tuple[int, int] = (128, 128),
    seed: int = 0,
    model: str = "two_layer",
    instruments: Sequence[str | Satellite] = DEFAULT_INSTRUMENTS,
    settings: TwoLayerSettings | None = None,
    lat0: float = 33.0,
    lon0: float = -65.0,
    dx_deg: float = DEFAULT_DX_DEG,
    cache: str | os.PathLike[str] | bool | None = None,
) -> SSHSimulation:
    """Simulate ``n_days`` daily SSH maps on ``shape = (n_lat, n_lon)`` points ``dx_deg`` apart
    from ``(lat0, lon0)`` with ``model`` (one of `MODELS`), observed by ``instruments`` (names
    of `pipekit_cycle.ssh.INSTRUMENTS` or `pipekit_cycle.ssh.Satellite` objects; default the
    four nadirs, add ``"swot-like"`` for the swath). ``settings`` tunes the two-layer model;
    ``cache`` is a directory, ``False``, or ``None`` for `cache_directory`'s default. The same
    arguments give identical arrays. See the module docstring for the model and the numbers.

    Examples
    --------
    ```python
    import numpy as np
    from pipekit_cycle.ssh import TwoLayerSettings, simulate

    quick = TwoLayerSettings(spinup_days=5, box_points=32)  # the default spins up 200 days on 128 x 128
    run = simulate(3, shape=(16, 24), seed=1, settings=quick, instruments=("jason-like", "swot-like"), cache=False)
    assert run.truth.shape == run.obs.shape == (3, 16, 24) and set(run.tracks) == {"jason-like", "swot-like"}
    assert np.array_equal(np.isfinite(run.obs), run.mask) and run.land.shape == (16, 24)
    old = simulate(3, shape=(32, 32), model="one_and_half_layer", cache=False)
    assert old.model == "one_and_half_layer" and old.truth.shape == (3, 32, 32)
    ```
    """
    n_days = check_int("n_days", n_days, 1)
    if not (isinstance(shape, tuple) and len(shape) == 2):
        raise ValueError(f"shape must be a pair of ints (n_lat, n_lon), got {shape!r}")
    shape = (check_int("shape[0]", shape[0], 8), check_int("shape[1]", shape[1], 8))
    seed = check_int("seed", seed, 0)
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    satellites = resolve_instruments(instruments)
    if isinstance(dx_deg, bool) or not (isinstance(dx_deg, (int, float)) and math.isfinite(dx_deg) and dx_deg > 0):
        raise ValueError(f"dx_deg must be a number > 0, got {dx_deg!r}")
    lat = lat0 + dx_deg * np.arange(shape[0])
    lon = lon0 + dx_deg * np.arange(shape[1])
    if model == "two_layer":
        if settings is None:
            settings = TwoLayerSettings()
        truth, parameters = _two_layer(n_days, shape=shape, seed=seed, settings=settings, lat0=lat0, lon0=lon0,
                                       dx_deg=dx_deg, cache=cache_directory(cache))
    else:
        if settings is not None:
            raise ValueError("settings are the two-layer model's; the one_and_half_layer model takes none")
        old = ssh_osse(n_days=n_days, shape=shape, seed=seed, n_satellites=0, lat0=lat0, lon0=lon0, dx_deg=dx_deg)
        truth, parameters = old.truth, dict(old.parameters)
    time = START_DATE + np.arange(n_days).astype("timedelta64[D]")
    obs, mask, tracks = observe(truth, lat=lat, lon=lon, time=time, instruments=satellites, seed=seed)
    dy_km = dx_deg * KM_PER_DEG
    return SSHSimulation(
        truth=truth, obs=obs, mask=mask, land=np.zeros(shape, dtype=bool), lat=lat, lon=lon, time=time,
        tracks=tracks, dx_deg=float(dx_deg), dx_km=dy_km * math.cos(math.radians(float(lat.mean()))), dy_km=dy_km,
        model=model, parameters=parameters, instruments=satellites,
    )
