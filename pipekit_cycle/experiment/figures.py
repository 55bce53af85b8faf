"""The figures of an experiment run (`pipekit_cycle.experiment`), drawn with matplotlib.

matplotlib is optional (``pip install 'pipekit-cycle[all]'`` or ``pip install matplotlib``):
every builder imports it when called and raises ``ImportError`` without it, which the
driver turns into a one-line notice. Figures are built on ``matplotlib.figure.Figure``
directly, never through ``pyplot``, so drawing touches no global backend state, and they
are written atomically with the umask's permissions (`pipekit_cycle.params.atomic_write`).

Every figure's title names the backend, the system, the adjoint, the steps trained and the
held-out RMSE of the learned solver and of the two baselines (linear interpolation and
classical strong-constraint 4D-Var):

``reconstruction.png``
    a few components of the first held-out window: truth, observations, the learned
    reconstruction and both baselines;
``hovmoeller.png`` (Lorenz-96)
    time x component panels of the first held-out windows, stacked: truth, observations,
    reconstruction, its error and the interpolation's error (shared colour scales);
``loss.png``
    the training loss of every step and the held-out loss recorded at every checkpoint.

The SSH job (`pipekit_cycle.experiment.ssh`) draws ``loss.png`` too, and

``maps.png``
    the best-observed held-out day, dated, on longitude/latitude axes with land in grey: the
    truth (when there is a gridded reference), the observations, each estimate (OI, the learned
    map, linear interpolation) and, under each, its error;
``psd_score.png``
    the spectral score of the learned map on the (wavelength, period) plane and the 0.5
    contours of every estimate.

Long titles (a user's file path in them) are wrapped to the figure's width.
"""

from __future__ import annotations

import dataclasses
import io
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..params import atomic_write
from ..ssh.metrics import rmse

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MATPLOTLIB_HINT",
    "RunSummary",
    "build_figures",
    "hovmoeller_figure",
    "latitude_label",
    "learning_curve_figure",
    "longitude_label",
    "loss_figure",
    "map_figure",
    "psd_score_figure",
    "reconstruction_figure",
    "save_figures",
]

MATPLOTLIB_HINT = "pip install 'pipekit-cycle[all]' (or pip install matplotlib)"
SYSTEM_NAMES = {"l63": "Lorenz-63", "l96": "Lorenz-96"}
HOVMOELLER_WINDOWS = 4
RECONSTRUCTION_COMPONENTS = 3
DPI = 110
SMOOTHING_WINDOWS = 25
MIN_SMOOTHING = 5
TITLE_SIZE = 9
TITLE_MARGIN_PT = 24.0
PANEL_WIDTH = 3.0  # inches, one map
FIELD_CMAP = "viridis"  # never white or grey: unobserved cells (white) and land (grey) stand out
ERROR_CMAP = "RdBu_r"
LAND_COLOUR = "0.8"
HATCH_COLOUR = "0.6"
# (colour, dash pattern, width) of the 0.5 contours of the spectral score, in the order given:
# distinct colours and dashes, the first widest and drawn first, so a later one lies on it visibly.
CONTOUR_STYLES: tuple[tuple[str, str | tuple[float, tuple[float, ...]], float], ...] = (
    ("black", "solid", 2.8),
    ("tab:red", (0.0, (5.0, 2.5)), 1.8),
    ("white", (0.0, (1.5, 1.5)), 1.8),
    ("tab:orange", (0.0, (6.0, 2.0, 1.5, 2.0)), 1.8),
)


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a figure's title says about the run."""

    backend: str
    system: str
    adjoint: str
    steps: int
    rmse_learned: float
    rmse_interpolation: float
    rmse_fourdvar: float | None
    fourdvar_windows: int
    test_windows: int

    def headline(self) -> str:
        """Two lines: the run, then the held-out RMSE of the solver and the baselines."""
        system = SYSTEM_NAMES.get(self.system, self.system)
        scores = [f"learned {self.rmse_learned:.3f}", f"interpolation {self.rmse_interpolation:.3f}"]
        if self.rmse_fourdvar is not None:
            plural = "s" if self.fourdvar_windows != 1 else ""
            scores.append(f"4D-Var {self.rmse_fourdvar:.3f} ({self.fourdvar_windows} window{plural})")
        return (
            f"{system}, {self.backend}, adjoint {self.adjoint}, {self.steps} steps\n"
            f"held-out RMSE over {self.test_windows} windows: {', '.join(scores)}"
        )


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _wrapped(line: str, width_pt: float, fontsize: float) -> list[str]:
    """``line`` as it is if it fits ``width_pt`` at ``fontsize``, else wrapped to as many characters
    as fit at its own mean character width (long words broken too), less a margin."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    drawn = text_to_path.get_text_width_height_descent(line, FontProperties(size=fontsize), ismath=False)[0]
    if drawn <= width_pt:
        return [line]
    return textwrap.wrap(line, max(20, int(0.95 * len(line) * width_pt / drawn)), break_on_hyphens=False)


def _suptitle(figure: Figure, title: str, fontsize: float = TITLE_SIZE) -> None:
    """``title`` as the figure's suptitle, each line wrapped to the figure's width (long words, such
    as a file's path, are broken too); the figure grows by the lines the wrapping adds, so the
    panels keep their size and nothing is cut off."""
    given = title.splitlines() or [""]
    width_pt = figure.get_figwidth() * 72 - TITLE_MARGIN_PT
    lines = [piece for line in given for piece in _wrapped(line, width_pt, fontsize)]
    figure.set_figheight(figure.get_figheight() + (len(lines) - len(given)) * 1.3 * fontsize / 72)
    figure.suptitle("\n".join(lines), fontsize=fontsize)


def reconstruction_figure(
    summary: RunSummary,
    truth: np.ndarray,
    obs: np.ndarray,
    learned: np.ndarray,
    interpolation: np.ndarray,
    fourdvar: np.ndarray | None,
) -> Figure:
    """Time series of the first components of one window (each array ``(T, N)``); the legend
    gives each estimate's RMSE on this window, the title the held-out RMSE."""
    components = min(RECONSTRUCTION_COMPONENTS, truth.shape[-1])
    figure = _new_figure(9.0, 1.2 + 2.1 * components)
    axes: Sequence[Axes] = figure.subplots(components, 1, sharex=True, squeeze=False)[:, 0]
    times = np.arange(truth.shape[0])
    estimates = [
        (learned, "learned solver", {"color": "tab:blue", "linewidth": 1.6}),
        (interpolation, "linear interpolation", {"color": "tab:gray", "linestyle": "--", "linewidth": 1.1}),
    ]
    if fourdvar is not None:
        estimates.append((fourdvar, "4D-Var", {"color": "tab:green", "linestyle": ":", "linewidth": 1.4}))
    for n, axis in enumerate(axes):
        axis.plot(times, truth[:, n], color="black", linewidth=1.2, label="truth")
        for estimate, label, style in estimates:
            axis.plot(times, estimate[:, n], label=f"{label} (RMSE {rmse(estimate, truth):.3f})", **style)
        axis.plot(times, obs[:, n], "o", color="tab:red", markersize=3, label="observations")
        axis.set_ylabel(f"x[{n}]")
    axes[0].legend(loc="upper right", fontsize=7, ncol=2)
    axes[-1].set_xlabel("time step (first held-out window)")
    _suptitle(figure, summary.headline())
    return figure


def _stack(windows: np.ndarray) -> np.ndarray:
    return windows.reshape(-1, windows.shape[-1])


def hovmoeller_figure(
    summary: RunSummary, truth: np.ndarray, obs: np.ndarray, learned: np.ndarray, interpolation: np.ndarray
) -> Figure:
    """Time x component panels (arrays ``(W, T, N)``; the first windows are stacked along time,
    separated by lines): truth, observations, reconstruction, its error and the interpolation's
    error. States share one colour scale and errors another, so the two error panels compare."""
    import matplotlib

    count = min(HOVMOELLER_WINDOWS, truth.shape[0])
    length = truth.shape[1]
    truth, obs = _stack(truth[:count]), _stack(obs[:count])
    learned, interpolation = _stack(learned[:count]), _stack(interpolation[:count])
    error_learned, error_interpolation = learned - truth, interpolation - truth
    state_range = (float(np.min(truth)), float(np.max(truth)))
    error_bound = float(max(np.max(np.abs(error_learned)), np.max(np.abs(error_interpolation)), 1e-12))
    state_map = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")  # unobserved entries in grey
    error_map = matplotlib.colormaps["RdBu_r"]
    panels = [
        (truth, "truth", state_map, state_range),
        (obs, "observations (grey: unobserved)", state_map, state_range),
        (learned, "learned reconstruction", state_map, state_range),
        (error_learned, f"reconstruction - truth\nRMSE {rmse(learned, truth):.3f}", error_map, None),
        (error_interpolation, f"interpolation - truth\nRMSE {rmse(interpolation, truth):.3f}", error_map, None),
    ]
    figure = _new_figure(15.0, 2.0 + 0.12 * truth.shape[0])
    axes: Sequence[Axes] = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    for axis, (values, title, cmap, value_range) in zip(axes, panels, strict=True):
        low, high = value_range if value_range is not None else (-error_bound, error_bound)
        image = axis.imshow(
            np.ma.masked_invalid(values), aspect="auto", origin="upper", cmap=cmap, vmin=low, vmax=high,
            interpolation="nearest",
        )
        for start in range(length, truth.shape[0], length):
            axis.axhline(start - 0.5, color="white", linewidth=1.0)
        axis.set_title(title, fontsize=8)
        axis.set_xlabel("component")
        if value_range is None or axis is axes[2]:
            figure.colorbar(image, ax=axis, shrink=0.85)
    axes[0].set_yticks([w * length for w in range(count)], [f"window {w}" for w in range(count)])
    axes[0].set_ylabel(f"time ({length} steps per window)")
    _suptitle(figure, summary.headline())
    return figure


def loss_figure(
    title: str,
    losses: Sequence[float],
    held_out: Sequence[Sequence[float]],
    interpolation_loss: float | None = None,
    *,
    held_out_label: str = "windows",
) -> Figure:
    """The training loss of every step and the held-out loss ``[[step, loss], ...]``; with
    ``interpolation_loss`` (the same loss of linear interpolation on the held-out windows), the
    line the learned solver has to get under. ``held_out_label`` says what the held-out loss
    averages over (``"16 windows"``)."""
    figure = _new_figure(7.5, 4.2)
    axis = figure.subplots()
    if losses:
        steps = np.arange(1, len(losses) + 1)
        axis.semilogy(steps, losses, color="tab:blue", alpha=0.35, linewidth=0.8,
                      label=f"train (one batch per step; last {losses[-1]:.4f})")
        width = len(losses) // SMOOTHING_WINDOWS
        if width >= MIN_SMOOTHING:  # one batch per step is noisy; a running mean shows the trend
            smooth = np.convolve(np.asarray(losses, dtype=float), np.ones(width) / width, mode="valid")
            axis.semilogy(steps[width - 1 :], smooth, color="tab:blue", linewidth=1.5,
                          label=f"train, running mean over {width} steps")
    if held_out:
        steps, values = zip(*held_out, strict=True)
        axis.semilogy(steps, values, "o-", color="tab:orange", markersize=4,
                      label=f"held-out ({held_out_label}; last {values[-1]:.4f})")
    if interpolation_loss is not None:
        axis.axhline(interpolation_loss, color="tab:gray", linestyle="--", linewidth=1.1,
                     label=f"linear interpolation, held-out ({interpolation_loss:.4f})")
    axis.set_xlabel("training step")
    axis.set_ylabel("loss (standardised MSE)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    _suptitle(figure, title)
    return figure


def learning_curve_figure(
    title: str,
    curve: Sequence[Mapping[str, float | None]],
    panels: Sequence[tuple[str, str]],
    references: Mapping[str, Mapping[str, float | None]],
) -> Figure:
    """The learning curve: one panel per ``(key, label)`` of ``panels``, the learned model's
    score ``point[key]`` at each checkpoint of ``curve`` against its training time (minutes,
    ``point["train_seconds"]``), each of ``references`` (``{"OI": scores}``) a dashed line at its
    own ``scores[key]``. A score that is ``None`` (not resolved) is not drawn."""
    figure = _new_figure(4.0 * len(panels) + 1.0, 3.8)
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    minutes = np.array([point["train_seconds"] for point in curve], dtype=float) / 60.0
    for axis, (key, label) in zip(axes, panels, strict=True):
        values = np.array([np.nan if point.get(key) is None else point[key] for point in curve], dtype=float)
        axis.plot(minutes, values, "o-", color="tab:orange", markersize=4, label="learned")
        for (name, scores), style in zip(references.items(), ("--", ":", "-."), strict=False):
            if scores.get(key) is not None:
                axis.axhline(scores[key], color="tab:gray", linestyle=style, linewidth=1.1,
                             label=f"{name} ({scores[key]:.3f})")
        axis.set_xlabel("training time (minutes, steps alone)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    _suptitle(figure, title)
    return figure


def _edges(centres: np.ndarray) -> np.ndarray:
    """The cell edges of a 1-D grid of (increasing) cell centres: the midpoints, and half a cell
    beyond the first and last centre."""
    centres = np.asarray(centres, dtype=float)
    if centres.size < 2:
        return np.concatenate([centres - 0.5, centres + 0.5])
    middle = (centres[:-1] + centres[1:]) / 2
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def _degrees(value: float, positive: str, negative: str) -> str:
    magnitude = f"{round(abs(value), 6):g}"
    return f"{magnitude}°" if magnitude == "0" else f"{magnitude}°{positive if value > 0 else negative}"


def latitude_label(value: float, _position: int | None = None) -> str:
    """A latitude tick: ``35°N``, ``10.5°S``, ``0°``."""
    return _degrees(value, "N", "S")


def longitude_label(value: float, _position: int | None = None) -> str:
    """A longitude tick, given in -180..180, 0..360 or unwrapped (350..370): ``60°W`` for 300,
    ``10°E`` for 370, ``0°``, ``180°``."""
    wrapped = (value + 180.0) % 360.0 - 180.0
    return "180°" if np.isclose(abs(wrapped), 180.0) else _degrees(wrapped, "E", "W")


def _day_string(dates: np.ndarray, day: int) -> str:
    return str(np.asarray(dates)[day].astype("datetime64[D]"))


def _map_rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """The RMSE where both are finite (land and gaps left out); NaN if nowhere."""
    both = np.isfinite(estimate) & np.isfinite(truth)
    return float(np.sqrt(np.mean((estimate[both] - truth[both]) ** 2))) if both.any() else float("nan")


def _range(fields: Sequence[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([np.ravel(field) for field in fields])
    values = values[np.isfinite(values)]
    if not values.size:
        return -1.0, 1.0
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low - 1e-3, high + 1e-3)


@dataclasses.dataclass(frozen=True)
class _MapGrid:
    """The shared geometry of a figure's map panels."""

    lon_edges: np.ndarray
    lat_edges: np.ndarray
    aspect: float
    land: np.ndarray | None


def _map_grid(lat: np.ndarray, lon: np.ndarray, land: np.ndarray | None) -> _MapGrid:
    lon = np.unwrap(np.asarray(lon, dtype=float), period=360.0)  # 358, 359, 0, 1 -> 358 .. 361
    aspect = 1.0 / float(np.cos(np.deg2rad(np.mean(lat))))
    mask = None if land is None or not np.any(land) else np.asarray(land, dtype=bool)
    return _MapGrid(_edges(lon), _edges(lat), aspect, mask)


def _day_on_sea(fields: np.ndarray, day: int, grid: _MapGrid) -> np.ndarray:
    """The map of day ``day`` of ``fields`` ``(time, lat, lon)``, NaN on land."""
    field = np.asarray(fields, dtype=float)[day]
    return field if grid.land is None else np.where(grid.land, np.nan, field)


def _draw_map(axis: Axes, grid: _MapGrid, field: np.ndarray, title: str, style: Mapping[str, object]) -> object:
    """One map on longitude/latitude axes (degrees, hemisphere ticks, a degree of longitude as long
    as it is at the mean latitude); NaN cells are left out (white, or the axes' background) and
    land drawn over in `LAND_COLOUR`. Returns the field's mesh (for a colour bar)."""
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    mesh = axis.pcolormesh(grid.lon_edges, grid.lat_edges, np.ma.masked_invalid(field), shading="flat", **style)
    if grid.land is not None:
        land = np.ma.masked_where(~grid.land, np.ones(grid.land.shape))
        layer = axis.pcolormesh(grid.lon_edges, grid.lat_edges, land, shading="flat",
                                cmap=ListedColormap([LAND_COLOUR]), vmin=0.0, vmax=1.0)
        layer.set_label("land")
    axis.set_aspect(grid.aspect)
    for scale, label in ((axis.xaxis, longitude_label), (axis.yaxis, latitude_label)):
        scale.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
        scale.set_major_formatter(FuncFormatter(label))
    axis.tick_params(labelsize=7)
    axis.set_title(title, fontsize=8)
    return mesh


def map_figure(
    title: str,
    *,
    lat: np.ndarray,
    lon: np.ndarray,
    dates: np.ndarray,
    day: int,
    obs: np.ndarray,
    estimates: Mapping[str, np.ndarray],
    truth: np.ndarray | None = None,
    land: np.ndarray | None = None,
) -> Figure:
    """Day ``day`` (shown as its date, ``dates[day]``) of a period's maps, every panel on
    longitude/latitude axes in degrees with the cells' edges from the centres ``lat`` and ``lon``
    (1-D; ``lon`` in any convention, 0..360 included) and land (``land``, bool ``(lat, lon)``,
    True on land) in grey.

    With ``truth`` (``(time, lat, lon)``, like ``obs`` and each estimate): a grid of two rows,
    truth over that day's observations in the first column, then a column per estimate (in the
    order given) with its map (its RMSE that day in the title) over its error (estimate - truth,
    hatched where it has no value). Without ``truth`` (along-track data, no gridded reference):
    one row, the observations and each estimate. Every panel is drawn (no empty axes); the maps
    share one colour scale (the truth's range that day, else the range of all maps), the errors
    one symmetric scale, each with a colour bar in m."""
    grid = _map_grid(lat, lon, land)
    fields = {name: _day_on_sea(estimate, day, grid) for name, estimate in estimates.items()}
    reference = None if truth is None else _day_on_sea(truth, day, grid)
    observations = _day_on_sea(obs, day, grid)
    date = _day_string(dates, day)
    low, high = _range([reference] if reference is not None else [observations, *fields.values()])
    field_style = {"cmap": FIELD_CMAP, "vmin": low, "vmax": high}
    rows, columns = 1 if reference is None else 2, 1 + len(fields)
    ratio = (grid.lat_edges[-1] - grid.lat_edges[0]) * grid.aspect / (grid.lon_edges[-1] - grid.lon_edges[0])
    panel_height = float(np.clip(PANEL_WIDTH * ratio, 1.2, 2.2 * PANEL_WIDTH)) + 0.7
    figure = _new_figure(PANEL_WIDTH * columns + 1.8, panel_height * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False)
    obs_axis = axes[0, 0] if reference is None else axes[1, 0]
    observed = f"observations, {date}\n({int(np.isfinite(observations).sum())} cells)"
    mesh = _draw_map(obs_axis, grid, observations, observed, field_style)
    if reference is not None:
        _draw_map(axes[0, 0], grid, reference, f"truth, {date}", field_style)
    for axis, (name, field) in zip(axes[0, 1:], fields.items(), strict=True):
        rmse_text = "" if reference is None else f"\nRMSE {_map_rmse(field, reference):.3f} m"
        _draw_map(axis, grid, field, f"{name}, {date}{rmse_text}", field_style)
    if reference is None:
        figure.colorbar(mesh, ax=list(axes.flat), shrink=0.85, label="SSH (m)")
    else:  # under the truth and observations; the error scale under the errors, beside it
        figure.colorbar(mesh, ax=list(axes[:, 0]), location="bottom", shrink=0.9, label="SSH (m)")
    if reference is not None and fields:
        _draw_errors(figure, axes[1, 1:], grid, {name: field - reference for name, field in fields.items()})
    for axis in axes[-1]:
        axis.set_xlabel("longitude", fontsize=8)
    for axis in axes[:, 0]:
        axis.set_ylabel("latitude", fontsize=8)
    _suptitle(figure, title)
    return figure


def _draw_errors(figure: Figure, axes: Sequence[Axes], grid: _MapGrid, errors: Mapping[str, np.ndarray]) -> None:
    """Each estimate's error map on one symmetric scale, cells without a value hatched. The
    scale is the median over the estimates of their largest error, so that one poor baseline
    (linear interpolation's errors are several times OI's) does not wash the others out; larger
    errors take the end colours (the bar's arrows)."""
    bound = float(np.median([np.nanmax(np.abs(error), initial=0.0) for error in errors.values()])) or 1e-3
    style = {"cmap": ERROR_CMAP, "vmin": -bound, "vmax": bound}
    mesh = None
    for axis, (name, error) in zip(axes, errors.items(), strict=True):
        axis.patch.set_hatch("////")  # the background: shows where an estimate has no value
        axis.patch.set_edgecolor(HATCH_COLOUR)
        mesh = _draw_map(axis, grid, error, f"{name} - truth", style)
    figure.colorbar(mesh, ax=list(axes), location="bottom", shrink=0.6, label="estimate - truth (m)", extend="both")


def psd_score_figure(title: str, scores: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
    """The data challenge's spectral score ``1 - PSD(err) / PSD(truth)`` of each estimate on the
    (wavelength, period) plane (`pipekit_cycle.ssh.spectral_score`'s ``(wavelength, period,
    score)``, wavelengths in degrees of longitude, periods in days): the first estimate's score
    filled, then every estimate's 0.5 contour on top, each in its own colour and dash pattern,
    later ones thinner so that where contours coincide every one still shows; the first line's
    smallest wavelength and period are an estimate's lambda_x and lambda_t."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    figure = _new_figure(7.0, 5.4)
    axis = figure.subplots()
    for index, (name, (wavelength, period, score)) in enumerate(scores.items()):
        score = np.ma.masked_invalid(score)
        if index == 0:
            filled = axis.contourf(wavelength, period, np.clip(score, 0.0, 1.0), levels=np.linspace(0, 1, 11),
                                   cmap=FIELD_CMAP)
            figure.colorbar(filled, ax=axis, label=f"spectral score of {name}")
        colour, dashes, width = CONTOUR_STYLES[index % len(CONTOUR_STYLES)]
        axis.contour(wavelength, period, score, levels=[0.5], colors=[colour], linestyles=[dashes],
                     linewidths=width)
        axis.plot([], [], color=colour, linestyle=dashes, linewidth=width, label=f"{name}: score 0.5")
    axis.set_xscale("log")
    axis.set_yscale("log")
    for scale in (axis.xaxis, axis.yaxis):  # plain numbers at 1, 2, 5 x 10^n, not 6x10^0
        scale.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        scale.set_major_formatter(FormatStrFormatter("%g"))
        scale.set_minor_formatter(NullFormatter())
    axis.set_xlabel("wavelength (degrees of longitude)")
    axis.set_ylabel("period (days)")
    axis.legend(fontsize=8, loc="lower right", facecolor="0.85", framealpha=0.9)
    _suptitle(figure, title)
    return figure


def build_figures(
    summary: RunSummary,
    *,
    truth: np.ndarray,
    obs: np.ndarray,
    learned: np.ndarray,
    interpolation: np.ndarray,
    fourdvar: np.ndarray | None,
    losses: Sequence[float],
    held_out: Sequence[Sequence[float]],
    interpolation_loss: float | None = None,
) -> dict[str, Figure]:
    """Every figure of a run by file name; arrays are the held-out windows ``(W, T, N)``
    (``fourdvar``: its first windows, or ``None``). ``ImportError`` without matplotlib."""
    first_fourdvar = fourdvar[0] if fourdvar is not None and len(fourdvar) else None
    figures = {
        "reconstruction.png": reconstruction_figure(
            summary, truth[0], obs[0], learned[0], interpolation[0], first_fourdvar
        ),
        "loss.png": loss_figure(summary.headline(), losses, held_out, interpolation_loss,
                                held_out_label=f"{summary.test_windows} windows"),
    }
    if summary.system == "l96":  # three of 40 components say little; a Hovmoeller shows them all
        figures["hovmoeller.png"] = hovmoeller_figure(summary, truth, obs, learned, interpolation)
    return figures


def save_figures(out: str | Path, figures: Mapping[str, Figure]) -> list[str]:
    """Write each figure as PNG into ``out`` (rendered in memory, then written atomically, so
    an interrupted run never leaves half an image); returns the file names."""
    for name, figure in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
        atomic_write(Path(out) / name, buffer.getvalue())
    return list(figures)
