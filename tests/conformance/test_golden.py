"""Golden outputs: a backend held to the shipped outputs of the reference, without it installed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import conformance
import conformance.golden as golden
from conformance.__main__ import main as cli
from conformance.suite import pairs, run_one
from pipekit_cycle import BackendNotInstalledError

# A sample of every kind of check: values, gradients, a training trajectory, exceptions, dynamics.
SAMPLE = ("gradients::2d-o4d/truncated:2", "train_trajectory::1d", "exceptions::missing_target",
          "forward::2d-fp/implicit", "functional_step::2d")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_shipped_files_are_current_and_agree_with_the_live_reference(dtype):
    # The reference replayed against its own files: they are what it computes now.
    for key in SAMPLE:
        check, case = key.split("::")
        live = run_one("vardax_torch", "vardax_jax", check, case, dtype=dtype)
        replayed = run_one("vardax_torch", "vardax_jax:golden", check, case, dtype=dtype)
        assert live.status == replayed.status == "pass", (key, replayed.measurement.detail)
        # float64 replays bit for bit; float32 kernels round differently on another CPU (files made
        # on an AMD EPYC, replayed on an Intel Xeon: 8.4464061e-08 vs 8.4464068e-08), so to ulps.
        exact = {"float64": 0.0, "float32": 1e-5}[dtype]
        assert replayed.measurement.error == pytest.approx(live.measurement.error, rel=exact, abs=0.0), key
        assert replayed.reference == "vardax_jax (golden)"
        itself = run_one("vardax_jax", "vardax_jax:golden", check, case, dtype=dtype)
        assert itself.status == "pass", (key, itself.measurement.detail)


def test_a_missing_reference_falls_back_to_its_files_and_says_so(tmp_path, monkeypatch):
    for dtype in ("float64", "float32"):
        shutil.copy(golden.golden_path("vardax_jax", dtype), tmp_path / f"not_installed-{dtype}.npz")
    monkeypatch.setattr(golden, "GOLDEN_DIR", tmp_path)
    result = run_one("vardax_torch", "not_installed", "variational_cost", "2d")
    assert result.status == "pass" and result.reference == "not_installed (golden)"
    assert pairs(["not_installed"], "not_installed") == [("not_installed", "not_installed:golden")]
    (tmp_path / "not_installed-float64.npz").unlink()
    with pytest.raises(BackendNotInstalledError, match="not_installed-float64.npz \\(its golden outputs\\) is missing"):
        conformance.check_backend("vardax_torch", "not_installed", only="variational_cost::2d")


def test_one_backend_alone_is_held_to_the_files_never_silently_to_itself():
    assert pairs(["vardax_jax"], "vardax_jax") == [("vardax_jax", "vardax_jax:golden")]
    assert pairs(["mine"], "mine") == [("mine", "mine")]  # no files: itself, and the report says so
    report = conformance.check_backend("vardax_jax", "vardax_jax", only="variational_cost::1d")
    assert report.results[0].reference == "vardax_jax (itself)"
    assert report.summary().endswith("; vardax_jax compared with itself, not with another backend")


def test_a_check_that_changed_since_the_files_is_a_clear_error(tmp_path, monkeypatch):
    path = golden.golden_path("vardax_jax", "float64")
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    meta["logs"]["variational_cost::2d"] = meta["logs"]["variational_cost::2d"][:1]  # cut short
    np.savez(tmp_path / "vardax_jax-float64.npz", __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             **arrays)
    monkeypatch.setattr(golden, "GOLDEN_DIR", tmp_path)
    result = run_one("vardax_torch", "vardax_jax:golden", "variational_cost", "2d")
    assert result.status == "ERROR"
    assert "GoldenMismatch" in result.measurement.detail and "--write-golden" in result.measurement.detail


def test_cli_reference_golden(capsys):
    assert cli(["--backends", "vardax_torch", "--reference", "vardax_jax:golden", "--only", "*losses::1d*"]) == 0
    out = capsys.readouterr().out
    assert "vardax_torch vs vardax_jax (golden)" in out and out.strip().endswith("2 passed, 0 failed")  # 1d and 1d-fp
