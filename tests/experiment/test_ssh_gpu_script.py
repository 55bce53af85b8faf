"""``benchmarks/ssh_gpu.py``, the larger SSH configuration a lent GPU runs (issue 36), run on the
CPU at its smoke size: the code path a device call takes, its resume, and what it reports."""

from __future__ import annotations

import json

from benchmarks import ssh_gpu


def test_the_gpu_script_trains_each_backend_resumes_and_reports_the_runs_scores(tmp_path, capsys):
    assert ssh_gpu.main(["--smoke", "--out", str(tmp_path)]) == 0
    summaries = json.loads((tmp_path / "summary.json").read_text())
    rows = capsys.readouterr().out.splitlines()
    assert [summary["backend"] for summary in summaries] == ["vardax_torch", "vardax_jax"] and len(rows) == 2
    for summary, row in zip(summaries, rows, strict=True):
        metrics = json.loads((tmp_path / summary["backend"] / "metrics.json").read_text())
        assert metrics["backend"] == summary["backend"] and metrics["steps"] == 4
        assert metrics["training_samples"] == 5  # windows of 4 days in 8, the 32 x 32 box as one patch
        assert summary["learned"] == metrics["scores"]["learned"] and summary["oi"] == metrics["scores"]["oi"]
        assert summary["card"].startswith("CPU") and f"{metrics['scores']['learned']['mu']:.4f}" in row
    # Called again (a device call cut off), each run continues from its checkpoint: the same run, evaluated again.
    assert ssh_gpu.main(["--smoke", "--backends", "vardax_torch", "--out", str(tmp_path), "--", "--steps", "6"]) == 0
    metrics = json.loads((tmp_path / "vardax_torch" / "metrics.json").read_text())
    assert [point["step"] for point in metrics["learning_curve"]] == [0, 2, 4, 6]


def test_a_usage_error_is_the_drivers_line_and_its_status_not_a_row(tmp_path, capfd):
    argv = ["--smoke", "--backends", "vardax_torch", "--out", str(tmp_path), "--", "--patch-stride", "0"]
    status = ssh_gpu.main(argv)
    out, err = capfd.readouterr()
    assert status == 2 and out == "" and not (tmp_path / "summary.json").exists()
    assert "--patch-stride" in err and "Traceback" not in err and "exit status 2" in err


def test_the_gpu_configuration_is_4dvarnet_starters_sizes_on_the_240_box(tmp_path):
    from pipekit_cycle.experiment import build_parser
    from pipekit_cycle.experiment.cli import _config_from_args

    argv = ssh_gpu.train_argv(tmp_path / "run", ssh_gpu.GRID, "cuda", [*ssh_gpu.STARTER_SIZES, "--steps", "4000"])
    config = _config_from_args(build_parser("python -m vardax_torch").parse_args(argv))  # what the child builds
    model = config.model_config()
    assert model.state_shape == (240, 240) and model.n_time == 15 and model.n_solver_steps == 10
    assert (model.hidden_dim, model.prior_hidden_dim, config.lr, config.steps) == (48, 32, 1e-3, 4000)
    assert (config.train_days, config.test_days, config.lr_schedule) == (300, 60, "cosine")
