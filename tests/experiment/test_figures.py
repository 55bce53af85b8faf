"""The figures: titles, baselines, the Hovmoeller panel, the loss curves; a notice without
matplotlib."""

import sys

import matplotlib  # noqa: F401  (installed by `make test`, the [all] extra: the figures are tested, never skipped)
import numpy as np

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


def test_ssh_map_figure_shows_the_day_and_each_estimates_error():
    from pipekit_cycle import ssh as mapping
    from pipekit_cycle.experiment.figures import map_figure

    data = mapping.simulated(n_days=4, grid=32, seed=0)
    estimates = {"OI": data.truth + 0.01, "learned": data.truth - 0.02}
    figure = map_figure("run", data, 2, estimates)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles[:4] == ["truth", "observations (day 2)", "OI (RMSE 0.010 m)", "learned (RMSE 0.020 m)"]
    assert titles[4:] == ["OI - truth", "learned - truth"]
    panels = [axis for axis in figure.axes if axis.images]
    np.testing.assert_array_equal(panels[0].images[0].get_array(), data.truth[2])
    np.testing.assert_allclose(panels[-1].images[0].get_array(), -0.02)


def test_psd_score_figure_draws_the_half_contour_of_each_estimate():
    from pipekit_cycle.experiment.figures import psd_score_figure

    wavelength, period = np.array([4.0, 2.0, 1.0]), np.array([20.0, 10.0, 5.0])
    score = np.array([[0.9, 0.6, 0.2], [0.8, 0.4, 0.1], [0.3, 0.2, 0.0]])
    figure = psd_score_figure("run", {"learned": (wavelength, period, score), "OI": (wavelength, period, score - 0.1)})
    axis = figure.axes[0]
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["learned: score 0.5", "OI: score 0.5"]
    levels = [list(contour.levels) for contour in axis.collections if hasattr(contour, "levels")]
    assert levels.count([0.5]) == 2  # one 0.5 contour per estimate, besides the filled score
    assert (axis.get_xscale(), axis.get_yscale()) == ("log", "log")
