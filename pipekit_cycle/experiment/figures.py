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
    one held-out day: truth, observations, OI, the learned map and both errors;
``psd_score.png``
    the spectral score of the learned map on the (wavelength, period) plane and the 0.5
    contours of the learned map and OI.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..params import atomic_write
from ..ssh.metrics import rmse

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..ssh.gridded import GriddedData

__all__ = [
    "MATPLOTLIB_HINT",
    "RunSummary",
    "build_figures",
    "hovmoeller_figure",
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
    figure.suptitle(summary.headline(), fontsize=9)
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
    figure.suptitle(summary.headline(), fontsize=9)
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
    figure.suptitle(title, fontsize=9)
    return figure


def map_figure(title: str, data: GriddedData, day: int, estimates: Mapping[str, np.ndarray]) -> Figure:
    """Day ``day`` of the period ``data``: the truth, that day's observations, each estimate
    (``(time, lat, lon)`` maps of the period) and its error, with one colour scale for the
    fields and one, symmetric, for the errors; a panel's title gives its RMSE that day."""
    columns = 2 + len(estimates)
    figure = _new_figure(3.2 * columns, 6.2)
    axes = figure.subplots(2, columns, squeeze=False)
    truth = data.truth[day]
    extent = (float(data.lon[0]), float(data.lon[-1]), float(data.lat[0]), float(data.lat[-1]))
    limit = float(np.abs(truth).max())
    field_style = {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit, "origin": "lower", "extent": extent}
    errors = {name: estimate[day] - truth for name, estimate in estimates.items()}
    error_limit = max(float(np.abs(error).max()) for error in errors.values()) if errors else 1.0
    error_style = {**field_style, "cmap": "PuOr_r", "vmin": -error_limit, "vmax": error_limit}
    panels = [("truth", truth, field_style), (f"observations (day {day})", data.obs[day], field_style)]
    panels += [(name, estimate[day], field_style) for name, estimate in estimates.items()]
    image = None
    for axis, (name, field, style) in zip(axes[0], panels, strict=True):
        image = axis.imshow(field, **style)
        axis.set_title(name if name == "truth" or name.startswith("observations")
                       else f"{name} (RMSE {rmse(field, truth):.3f} m)", fontsize=8)
    figure.colorbar(image, ax=list(axes[0]), shrink=0.8, label="SSH (m)")
    for axis in axes[1, :2]:
        axis.set_axis_off()
    error_image = None
    for axis, (name, error) in zip(axes[1, 2:], errors.items(), strict=True):
        error_image = axis.imshow(error, **error_style)
        axis.set_title(f"{name} - truth", fontsize=8)
    if error_image is not None:
        figure.colorbar(error_image, ax=list(axes[1]), shrink=0.8, label="error (m)")
    for axis in axes.flat:
        axis.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def psd_score_figure(title: str, scores: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
    """The data challenge's spectral score ``1 - PSD(err) / PSD(truth)`` of each estimate on the
    (wavelength, period) plane (`pipekit_cycle.ssh.spectral_score`'s ``(wavelength, period,
    score)``): the first estimate's score filled, and every estimate's 0.5 contour, whose first
    line's smallest wavelength and period are its lambda_x and lambda_t."""
    figure = _new_figure(7.0, 5.4)
    axis = figure.subplots()
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    styles = [(colours[i % len(colours)], "solid" if i == 0 else "dashed") for i in range(len(scores))]
    for index, (name, (wavelength, period, score)) in enumerate(scores.items()):
        if index == 0:
            filled = axis.contourf(wavelength, period, np.clip(score, 0.0, 1.0), levels=np.linspace(0, 1, 11),
                                   cmap="viridis")
            figure.colorbar(filled, ax=axis, label=f"spectral score of {name}")
        axis.plot([], [], color=styles[index][0], linestyle=styles[index][1], linewidth=2.8 if index == 0 else 1.4,
                  label=f"{name}: score 0.5")
    # The first estimate's contour drawn last, on top: close contours would hide it otherwise.
    for index, (wavelength, period, score) in reversed(list(enumerate(scores.values()))):
        axis.contour(wavelength, period, score, levels=[0.5], colors=[styles[index][0]],
                     linestyles=[styles[index][1]], linewidths=2.8 if index == 0 else 1.4)
    axis.set_xscale("log")
    axis.set_yscale("log")
    for scale in (axis.xaxis, axis.yaxis):  # plain numbers at 1, 2, 5 x 10^n, not 6x10^0
        scale.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        scale.set_major_formatter(FormatStrFormatter("%g"))
        scale.set_minor_formatter(NullFormatter())
    axis.set_xlabel("wavelength (degrees)")
    axis.set_ylabel("period (days)")
    axis.legend(fontsize=8, loc="lower right")
    figure.suptitle(title, fontsize=9)
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
