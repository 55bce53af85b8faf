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
