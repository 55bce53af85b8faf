"""The figures: titles, baselines, the Hovmoeller panel, the loss curves; a notice without
matplotlib."""

import sys

import matplotlib  # noqa: F401  (installed by `make test`, the [all] extra: the figures are tested, never skipped)
import numpy as np
import pytest

from pipekit_cycle import load_backend
from pipekit_cycle.experiment import ExperimentConfig, run_experiment
from pipekit_cycle.experiment.figures import RunSummary, build_figures

SUMMARY = RunSummary(backend="vardax_torch", system="l96", adjoint="truncated:2", steps=300, rmse_learned=0.731,
                     rmse_interpolation=1.321, rmse_fourdvar=0.646, fourdvar_windows=4, test_windows=16)


def _data(windows=5, length=10, components=40):
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((windows, length, components))
    obs = np.where(rng.random(truth.shape) < 0.5, truth + 0.1, np.nan)
    return {
        "truth": truth, "obs": obs, "learned": truth + 0.1, "interpolation": truth - 0.3,
        "fourdvar": truth[:4] + 0.2, "losses": list(np.linspace(1.0, 0.2, 300)),
        "held_out": [[0, 1.1], [50, 0.8], [300, 0.4]], "interpolation_loss": 0.6,
    }


def _texts(figure):
    return [figure.get_suptitle(), *(axis.get_title() for axis in figure.axes)]


def test_figures_carry_the_run_and_draw_the_baselines():
    figures = build_figures(SUMMARY, **_data())
    assert set(figures) == {"reconstruction.png", "loss.png", "hovmoeller.png"}
    for figure in figures.values():
        title = figure.get_suptitle()
        for word in ("Lorenz-96", "vardax_torch", "adjoint truncated:2", "300 steps", "learned 0.731",
                     "interpolation 1.321", "4D-Var 0.646"):
            assert word in title
    labels = [line.get_label() for line in figures["reconstruction.png"].axes[0].get_lines()]
    assert any(label.startswith("linear interpolation (RMSE") for label in labels)
    assert any(label.startswith("4D-Var (RMSE") for label in labels)
    assert "truth" in labels and "observations" in labels


def test_hovmoeller_shows_every_component_of_truth_reconstruction_and_error():
    data = _data()
    figure = build_figures(SUMMARY, **data)["hovmoeller.png"]
    panels = [axis for axis in figure.axes if axis.images]
    titles = [axis.get_title() for axis in panels]
    assert titles[0] == "truth" and titles[2] == "learned reconstruction"
    assert titles[3].startswith("reconstruction - truth") and titles[4].startswith("interpolation - truth")
    image = panels[0].images[0].get_array()
    assert image.shape == (4 * 10, 40)  # 4 windows of 10 steps stacked, all 40 components
    np.testing.assert_allclose(panels[3].images[0].get_array(), 0.1)


def test_loss_figure_has_train_and_held_out_curves():
    axis = build_figures(SUMMARY, **_data())["loss.png"].axes[0]
    labels = [line.get_label() for line in axis.get_lines()]
    assert any(label.startswith("train (") for label in labels)
    assert any(label.startswith("held-out (16 windows") for label in labels)
    held_out = next(line for line in axis.get_lines() if line.get_label().startswith("held-out"))
    assert list(held_out.get_xdata()) == [0, 50, 300]
    assert any(label.startswith("linear interpolation, held-out (0.6000)") for label in labels)
    assert any(label.startswith("train, running mean over 12 steps") for label in labels)


def test_lorenz63_has_no_hovmoeller_and_every_component():
    summary = RunSummary(**{**SUMMARY.__dict__, "system": "l63"})
    figures = build_figures(summary, **{**_data(components=3), "fourdvar": None})
    assert set(figures) == {"reconstruction.png", "loss.png"}
    assert len(figures["reconstruction.png"].axes) == 3
    assert "4D-Var" not in " ".join(line.get_label() for line in figures["reconstruction.png"].axes[0].get_lines())


def test_a_run_writes_its_figures(tmp_path, tiny):
    metrics = run_experiment(load_backend("vardax_torch"), ExperimentConfig(**{**tiny, "fourdvar_windows": 1}),
                             tmp_path, progress=False)
    assert metrics["figures"] == ["reconstruction.png", "loss.png", "hovmoeller.png"]
    for name in metrics["figures"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 10_000


def test_without_matplotlib_one_line_says_how_to_get_figures(tmp_path, cli, tiny_flags, monkeypatch):
    for name in [name for name in sys.modules if name == "matplotlib" or name.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, err = cli(["train", *tiny_flags(), "--out", str(tmp_path), "--no-progress"])
    assert status == 0
    assert err.count("\n") == 1 and err.startswith("warning: figures skipped")
    assert "pip install 'pipekit-cycle[all]'" in err and "pip install matplotlib" in err
    assert not list(tmp_path.glob("*.png"))


def _ssh_day(*, truth=True, lon=None, estimates=("OI", "learned", "interpolation")):
    """A 12 x 16 grid of 3 days, 30..36°N and 2°W..2°E (across 0°), with land in its south-west
    corner; the estimates are the truth plus 0.01, 0.02, ... m."""
    lat = np.linspace(30.0, 36.0, 12)
    lon = np.linspace(-2.0, 2.0, 16) if lon is None else lon
    y, x = np.meshgrid(lat, np.arange(16), indexing="ij")
    field = np.stack([0.5 + 0.2 * np.sin(0.4 * x + day) * np.cos(y / 3) for day in range(3)])
    land = np.zeros((12, 16), dtype=bool)
    land[:4, :5] = True
    field[:, land] = np.nan
    obs = np.where(np.random.default_rng(0).random(field.shape) < 0.2, field, np.nan)
    return {
        "lat": lat, "lon": lon, "dates": np.datetime64("2012-11-13") + np.arange(3), "day": 1, "obs": obs,
        "truth": field if truth else None, "land": land,
        "estimates": {name: field + 0.01 * (k + 1) for k, name in enumerate(estimates)},
    }


def _panels(figure):
    """The map panels: the axes with a title (colour bars have none)."""
    return [axis for axis in figure.axes if axis.get_title()]


def _mesh(axis, land=False):
    from matplotlib.collections import QuadMesh

    meshes = [item for item in axis.collections if isinstance(item, QuadMesh)]
    return next(mesh for mesh in meshes if (mesh.get_label() == "land") == land)


def _drawn(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def test_ssh_maps_are_on_longitude_latitude_axes_with_a_true_aspect():
    from pipekit_cycle.experiment.figures import map_figure

    data = _ssh_day()
    figure = map_figure("run", **data)
    _drawn(figure)
    for axis in _panels(figure):
        assert axis.get_aspect() == pytest.approx(1 / np.cos(np.deg2rad(33.0)), abs=1e-6)
        assert axis.xaxis.get_major_formatter()(-1.5) == "1.5°W"
        assert axis.xaxis.get_major_formatter()(1.0) == "1°E"
        assert axis.xaxis.get_major_formatter()(0.0) == "0°"
        assert axis.yaxis.get_major_formatter()(33.0) == "33°N"
        assert axis.yaxis.get_major_formatter()(-10.5) == "10.5°S"
        labels = [label.get_text() for label in axis.get_xticklabels() if label.get_text()]
        assert "2°W" in labels and "2°E" in labels
        assert all(label.get_text().endswith("°N") for label in axis.get_yticklabels() if label.get_text())
        corners = _mesh(axis).get_coordinates()  # cell edges around the centres
        assert corners.shape == (13, 17, 2)
        np.testing.assert_allclose(corners[0, [0, -1], 0], [-2 - 2 / 15, 2 + 2 / 15])
        np.testing.assert_allclose(corners[[0, -1], 0, 1], [30 - 3 / 11, 36 + 3 / 11])
    assert [axis.get_xlabel() for axis in _panels(figure)[-4:]] == ["longitude"] * 4


def test_ssh_longitudes_given_0_to_360_are_shown_east_and_west():
    from pipekit_cycle.experiment.figures import longitude_label, map_figure

    figure = map_figure("run", **_ssh_day(lon=np.linspace(-2.0, 2.0, 16) % 360))  # 358 .. 359.7, 0.3 .. 2
    edges = _mesh(_panels(figure)[0]).get_coordinates()[0, :, 0]
    assert np.all(np.diff(edges) > 0)  # unwrapped: one box across 0°, not two halves 358° apart
    assert [longitude_label(value) for value in (358.0, 300.0, 370.0, 180.0, -180.0, 0.0, 360.0)] == [
        "2°W", "60°W", "10°E", "180°", "180°", "0°", "0°"]


def test_ssh_maps_draw_every_panel_dated_and_each_error_under_its_estimate():
    from pipekit_cycle.experiment.figures import map_figure

    data = _ssh_day()
    figure = map_figure("run", **data)
    assert all(axis.axison and axis.get_visible() for axis in figure.axes)  # no empty axes
    panels = _panels(figure)
    assert len(panels) == 8 and len(figure.axes) == 8 + 2  # 2 rows of 4 panels and 2 colour bars
    titles = [axis.get_title() for axis in panels]
    assert titles[0] == "truth, 2012-11-14" and titles[4].startswith("observations, 2012-11-14")
    assert titles[1:4] == [f"{name}, 2012-11-14\nRMSE {k / 100:.3f} m"
                           for k, name in enumerate(("OI", "learned", "interpolation"), start=1)]
    assert titles[5:] == ["OI - truth", "learned - truth", "interpolation - truth"]
    assert [axis.patch.get_hatch() for axis in panels[5:]] == ["////"] * 3  # an error without a value: hatched
    for column, name in enumerate(("OI", "learned", "interpolation"), start=1):  # the error under its map
        top, bottom = panels[column].get_subplotspec(), panels[column + 4].get_subplotspec()
        assert (top.colspan, top.rowspan.start, bottom.rowspan.start) == (bottom.colspan, 0, 1)
        np.testing.assert_allclose(_mesh(panels[column + 4]).get_array().compressed(), column / 100)
        np.testing.assert_array_equal(_mesh(panels[column]).get_array().filled(np.nan),
                                      data["estimates"][name][1])
    fields = [_mesh(axis).get_clim() for axis in panels[:5]]
    assert len(set(fields)) == 1  # one colour scale for truth, observations and every estimate
    errors = {_mesh(axis).get_clim() for axis in panels[5:]}
    assert len(errors) == 1 and sum(next(iter(errors))) == 0  # one symmetric error scale
    bars = [axis for axis in figure.axes if not axis.get_title()]
    assert sorted(bar.get_xlabel() or bar.get_ylabel() for bar in bars) == ["SSH (m)", "estimate - truth (m)"]


def test_ssh_maps_without_a_gridded_truth_show_observations_and_estimates_only():
    from pipekit_cycle.experiment.figures import map_figure

    data = _ssh_day(truth=False)
    figure = map_figure("run", **data)
    titles = [axis.get_title() for axis in _panels(figure)]
    observed = np.isfinite(data["obs"][1]).sum()
    assert titles == [f"observations, 2012-11-14\n({observed} cells)", "OI, 2012-11-14", "learned, 2012-11-14",
                      "interpolation, 2012-11-14"]
    assert len(figure.axes) == 4 + 1 and all(axis.axison for axis in figure.axes)


def test_ssh_maps_draw_land_in_the_land_colour_and_no_field_there():
    from matplotlib.colors import to_rgba

    from pipekit_cycle.experiment.figures import LAND_COLOUR, map_figure

    data = _ssh_day()
    data["estimates"]["learned"][:, data["land"]] = 5.0  # a value on land is not drawn either
    figure = map_figure("run", **data)
    _drawn(figure)
    for axis in _panels(figure):
        colours = _mesh(axis, land=True).get_facecolor().reshape(12, 16, 4)
        np.testing.assert_allclose(colours[data["land"]], np.broadcast_to(to_rgba(LAND_COLOUR), (20, 4)))
        assert np.all(colours[~data["land"], 3] == 0)  # transparent over the sea
        assert _mesh(axis).get_array().mask.reshape(12, 16)[data["land"]].all()


def test_ssh_long_titles_are_wrapped_inside_the_figure():
    from pipekit_cycle.experiment.figures import loss_figure, map_figure, psd_score_figure

    path = "/data/" + "/".join(["a_user_directory_with_a_long_name"] * 4) + "/ssh_alongtrack_2012.nc"
    assert len(path) > 140
    title = (f"SSH mapping, vardax_torch, adjoint truncated:2, 300 steps, data {path}\nheld-out 20 days: mu learned "
             f"0.912, OI 0.874, interpolation 0.701; lambda_x learned 1.2°, OI 1.5° (a long second line as well)")
    wavelength, period = np.array([4.0, 2.0, 1.0]), np.array([20.0, 10.0, 5.0])
    score = np.array([[0.9, 0.6, 0.2], [0.8, 0.4, 0.1], [0.3, 0.2, 0.0]])
    figures = [
        map_figure(title, **_ssh_day(truth=False, estimates=("learned",))),
        psd_score_figure(title, {"learned": (wavelength, period, score)}),
        loss_figure(title, [1.0, 0.5], [[2, 0.6]]),
    ]
    for figure in figures:
        renderer = _drawn(figure)
        inside = figure.bbox
        extent = figure._suptitle.get_window_extent(renderer)
        assert inside.x0 <= extent.x0 and extent.x1 <= inside.x1 and extent.y1 <= inside.y1
        tight = figure.get_tightbbox(renderer)  # inches: everything drawn lies in the figure
        assert tight.x0 >= -0.01 and tight.y0 >= -0.01
        assert tight.x1 <= figure.get_figwidth() + 0.01 and tight.y1 <= figure.get_figheight() + 0.01
        assert "ssh_alongtrack_2012.nc" in figure.get_suptitle().replace("\n", "")


def test_psd_score_figure_shows_every_half_contour_in_its_own_style():
    from matplotlib.colors import to_rgba

    from pipekit_cycle.experiment.figures import psd_score_figure

    wavelength, period = np.array([4.0, 2.0, 1.0]), np.array([20.0, 10.0, 5.0])
    score = np.array([[0.9, 0.6, 0.2], [0.8, 0.4, 0.1], [0.3, 0.2, 0.0]])
    figure = psd_score_figure("run", {"learned": (wavelength, period, score), "OI": (wavelength, period, score)})
    axis = figure.axes[0]
    legend = axis.get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["learned: score 0.5", "OI: score 0.5"]
    contours = [item for item in axis.collections if list(getattr(item, "levels", [])) == [0.5]]
    assert len(contours) == 2  # one 0.5 contour per estimate, besides the filled score
    colours = [tuple(contour.get_edgecolor()[0]) for contour in contours]
    dashes = [str(contour.get_linestyle()[0]) for contour in contours]
    assert len(set(colours)) == 2 and len(set(dashes)) == 2
    learned, oi = contours  # OI's, drawn after and thinner, lies visibly on the learned one
    assert learned.get_linewidth()[0] > oi.get_linewidth()[0]
    assert axis.collections.index(oi) > axis.collections.index(learned)
    handles = legend.legend_handles
    assert [to_rgba(handle.get_color()) for handle in handles] == colours
    assert (axis.get_xlabel(), axis.get_ylabel()) == ("wavelength (degrees of longitude)", "period (days)")
    assert (axis.get_xscale(), axis.get_yscale()) == ("log", "log")


def test_learning_curve_draws_each_score_against_training_time_and_oi_as_a_line():
    from pipekit_cycle.experiment.figures import learning_curve_figure

    curve = [{"step": 0, "train_seconds": 0.0, "mu": 0.80, "lambda_x_deg": None},
             {"step": 100, "train_seconds": 60.0, "mu": 0.84, "lambda_x_deg": 1.7},
             {"step": 200, "train_seconds": 150.0, "mu": 0.85, "lambda_x_deg": 1.6}]
    panels = (("mu", "held-out mu"), ("lambda_x_deg", "held-out lambda_x (degrees)"))
    figure = learning_curve_figure("run", curve, panels, {"OI": {"mu": 0.846, "lambda_x_deg": 1.63}})
    mu_axis, lambda_axis = figure.axes[:2]
    learned, oi = mu_axis.get_lines()
    np.testing.assert_allclose(learned.get_xdata(), [0.0, 1.0, 2.5])  # minutes
    np.testing.assert_allclose(learned.get_ydata(), [0.80, 0.84, 0.85])
    assert list(oi.get_ydata()) == [0.846, 0.846] and oi.get_linestyle() == "--"
    assert np.isnan(lambda_axis.get_lines()[0].get_ydata()[0])  # not resolved at step 0: a gap, not a zero
    assert [text.get_text() for text in mu_axis.get_legend().get_texts()] == ["learned", "OI (0.846)"]
    assert (mu_axis.get_ylabel(), lambda_axis.get_ylabel()) == ("held-out mu", "held-out lambda_x (degrees)")
