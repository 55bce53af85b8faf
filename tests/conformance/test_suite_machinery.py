"""The suite's machinery: third-party backends, expected failures as data, reports, the CLI,
and proof that it catches broken backends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch

import conformance
import vardax_torch
from conformance.__main__ import main as cli
from conformance.cases import (
    CASES,
    gradient_depth,
    loss_depth,
    rounding_bound,
    solve_depth,
    tolerance,
    trajectory_depth,
)
from conformance.checks import BAD_INPUTS
from conformance.suite import ExpectedFailure, case_ids, pairs
from pipekit_cycle import OptimizerConfig, RecursiveCheckpointAdjoint, TruncatedAdjoint, available_backends


def _copy_of(module: types.ModuleType, name: str, **overrides) -> types.ModuleType:
    copy = types.ModuleType(name)
    copy.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
    copy.__dict__.update(overrides)
    return copy


def _write_backend(directory, name: str) -> None:
    (directory / f"{name}.py").write_text("from vardax_torch import *  # noqa\nfrom vardax_torch import __all__\n")


def test_entry_point_backend_is_checked_without_changes(tmp_path, monkeypatch):
    _write_backend(tmp_path, "torch_again")
    dist = tmp_path / "torch_again-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: torch-again\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pipekit_cycle.backends]\ntorch_again = torch_again\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("PIPEKIT_BACKENDS", raising=False)
    assert "torch_again" in available_backends()
    report = conformance.run_suite(only="torch_again-vs-vardax_jax::gradients::1d/truncated:2")
    assert [r.test_id for r in report.results] == ["torch_again-vs-vardax_jax::gradients::1d/truncated:2"]
    assert report.ok and report.results[0].measurement.error < 1e-12


def test_backend_named_in_the_environment(tmp_path, monkeypatch):
    _write_backend(tmp_path, "torch_by_env")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PIPEKIT_BACKENDS", "torch_by_env,vardax_jax")
    assert conformance.backends_under_test() == ["torch_by_env", "vardax_jax"]
    report = conformance.run_suite(only="*::forward::2d/checkpoint")
    assert [r.test_id for r in report.results] == ["torch_by_env-vs-vardax_jax::forward::2d/checkpoint"]
    assert report.ok


def test_ids_and_pairs():
    ids = [identifier for identifier, _, _ in case_ids("a", "b")]
    assert "a-vs-b::gradients::2d-fp/implicit" in ids and "a-vs-b::forward_invariance::1d-fp/implicit" in ids
    assert "a-vs-b::gradients::2d/implicit" not in ids  # the learned solver has no implicit adjoint
    assert "a-vs-b::truncation_exact::1d/k=4" in ids
    assert len(ids) == len(set(ids)) >= 50
    assert pairs(["x", "ref", "y"], "ref") == [("x", "ref"), ("y", "ref")]
    assert pairs(["ref"], "ref") == [("ref", "ref")]  # no golden files of "ref"


def _without_truncation(spec):
    return RecursiveCheckpointAdjoint() if isinstance(spec, TruncatedAdjoint) else spec


def _ignores_truncation() -> types.ModuleType:
    """vardax_torch, except that a Truncated spec silently gives the exact gradient."""
    return _copy_of(
        vardax_torch,
        "ignores_truncation",
        to_native_adjoint=lambda spec, layer="inner_solve": vardax_torch.to_native_adjoint(
            _without_truncation(spec), layer=layer
        ),
        loss_and_grads=lambda model, batch, adjoint=None: vardax_torch.loss_and_grads(
            model, batch, adjoint=_without_truncation(adjoint)
        ),
    )


def test_a_backend_that_ignores_truncation_is_caught():
    broken = _ignores_truncation()
    # The four ids asserted, not every truncated case (all of them took 4.5 min on 2 cores).
    failed = set()
    for only in ("*gradients::1d/truncated:1", "*gradients::2d/truncated:2", "*truncation_biased::1d/k=1",
                 "*truncation_exact::1d/k=4"):
        report = conformance.check_backend(broken, only=only)
        assert report.results, only
        failed |= {r.test_id.split("::", 1)[1] for r in report.results if not r.ok}
    assert "gradients::1d/truncated:1" in failed and "gradients::2d/truncated:2" in failed
    assert "truncation_biased::1d/k=1" in failed
    assert "truncation_exact::1d/k=4" not in failed  # still exact where exact is asked for


def _drifting_adam() -> types.ModuleType:
    """vardax_torch, except that Adam's beta1 is 0.8 whatever the config says."""

    def make_optimizer(config, model):
        return vardax_torch.make_optimizer(OptimizerConfig(**{**config.to_dict(), "betas": (0.8, 0.999)}), model)

    return _copy_of(vardax_torch, "drifting_adam", make_optimizer=make_optimizer)


def _ignores_schedule() -> types.ModuleType:
    """vardax_torch, except that its optimizer keeps the peak rate whatever the schedule says."""

    def make_optimizer(config, model):
        return vardax_torch.make_optimizer(OptimizerConfig(**{**config.to_dict(), "schedule": {"kind": "constant"}}),
                                           model)

    return _copy_of(vardax_torch, "ignores_schedule", make_optimizer=make_optimizer)


def _flipped_kernel() -> types.ModuleType:
    """vardax_torch, except that the prior's first kernel is imported back to front."""

    def import_params(model, params):
        flipped = {k: (v[..., ::-1].copy() if k == "prior.conv_in.weight" else v) for k, v in params.items()}
        return vardax_torch.import_params(model, flipped)

    return _copy_of(vardax_torch, "flipped_kernel", import_params=import_params)


def _mutant(name: str) -> types.ModuleType:
    return {"drifting_adam": _drifting_adam, "flipped_kernel": _flipped_kernel,
            "ignores_truncation": _ignores_truncation, "ignores_schedule": _ignores_schedule}[name]()


def test_a_backend_whose_optimizer_drifts_is_caught():
    report = conformance.check_backend(_drifting_adam(), only="*train_trajectory::1d")
    assert not report.ok and report.results[0].measurement.error > 1e-6


def test_a_backend_that_ignores_the_schedule_is_caught():
    report = conformance.check_backend(_ignores_schedule(), only="*scheduled_trajectory::1d")
    assert not report.ok and report.results[0].measurement.error > 1e-3
    # and its plain trajectory, at a constant rate, still passes: the check is the schedule's
    assert conformance.check_backend(_ignores_schedule(), only="*::train_trajectory::1d").ok


def test_a_backend_with_a_transposed_kernel_is_caught():
    report = conformance.check_backend(_flipped_kernel(), only="*::forward::1d/checkpoint")
    assert report.results[0].status == "FAIL" and report.results[0].measurement.error > 1e-3


@pytest.mark.parametrize(
    ("error", "words"),
    [(IndexError("bad rank"), "candidate 'IndexError: bad rank', reference 'ValueError: obs must have shape"),
     (ValueError("wrong rank"), "candidate 'ValueError: wrong rank', reference 'ValueError: obs must have shape")],
    ids=["other_type", "other_words"],
)
def test_a_backend_raising_other_exceptions_or_words_is_caught(error, words):
    """The suite compares the exception type AND its message."""

    def make_batch(obs, target=None, dtype=None):
        if np.asarray(obs).ndim not in (3, 4):
            raise error
        return vardax_torch.make_batch(obs, target=target, dtype=dtype)

    broken = _copy_of(vardax_torch, f"other_exceptions_{type(error).__name__}", make_batch=make_batch)
    report = conformance.check_backend(broken, only="*exceptions::obs_rank_2")
    assert report.results[0].status == "FAIL"
    assert words in report.results[0].measurement.detail


def test_expected_failures_are_data(tmp_path):
    broken = _ignores_truncation()
    known = tmp_path / "known.toml"
    known.write_text(
        textwrap.dedent(
            """
            [[expected_failure]]
            pattern = "ignores_truncation-vs-vardax_jax::truncation_biased::*"
            reason = "truncation not implemented yet"

            [[expected_failure]]
            pattern = "ignores_truncation-vs-vardax_jax::forward::1d/checkpoint"
            reason = "believed broken, but passes"
            """
        )
    )
    report = conformance.check_backend(
        broken, expected_failures=known, only="ignores_truncation-vs-vardax_jax::[ft]*::1d/*"
    )
    statuses = {r.test_id.split("::", 1)[1]: r.status for r in report.results}
    assert statuses["truncation_biased::1d/k=1"] == "xfail"
    assert statuses["forward::1d/checkpoint"] == "XPASS"  # reported: an expected failure that passed
    assert not report.ok and report.failed == 1
    with pytest.raises(ValueError, match="'pattern' and 'reason'"):
        bad = tmp_path / "bad.toml"
        bad.write_text('[[expected_failure]]\npattern = "x"\n')
        conformance.load_expected_failures(bad)
    assert conformance.check_backend(
        broken, expected_failures=[ExpectedFailure("*truncation_biased*", "known")], only="*truncation_biased::1d*"
    ).ok


def test_cli_formats_and_exit_status(capsys):
    assert cli(["--backends", "vardax_torch", "--only", "*variational_cost*", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"] == "5 passed, 0 failed" and data["results"][0]["error"] < 1e-12  # 5 cases
    assert cli(["--backends", "vardax_torch", "--only", "*param_round_trip::1d", "--format", "markdown"]) == 0
    output = capsys.readouterr().out
    assert output.startswith("| backends | check |") and output.strip().endswith("1 passed, 0 failed")


def test_cli_exits_1_on_failure(tmp_path, monkeypatch, capsys):
    module = tmp_path / "broken_backend.py"
    module.write_text(
        "from vardax_torch import *  # noqa\n"
        "import vardax_torch\n"
        "def variational_cost(model, x, batch):\n"
        "    return 2.0 * vardax_torch.variational_cost(model, x, batch)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli(["--backends", "broken_backend", "--only", "*variational_cost::1d"]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out


def test_float32_is_reported_separately():
    report = conformance.check_backend("vardax_torch", dtype="float32", only="*::gradients::1d/checkpoint")
    (result,) = report.results
    bound = rounding_bound("float32", gradient_depth("1d"))  # 2 N u, N the roundings the check chains
    assert result.dtype == "float32" and result.measurement.tolerance == bound
    assert result.ok and 1e-9 < result.measurement.error < bound / 100  # float32 rounding, well within


def test_float32_bounds_are_derived_from_the_depth_of_each_check():
    u = 2.0**-24
    assert tolerance("float32", "gradient", 1000) == 2 * 1000 * u and tolerance("float32", "exact", 1000) == 0.0
    assert tolerance("float64", "forward", 10**6) == 1e-10 and tolerance("float64", "gradient", 1) == 1e-8  # DESIGN
    # More solver steps chain more roundings; a gradient chains more than its forward; a
    # trajectory more than one gradient; a contracting fixed point does not grow with its steps.
    assert solve_depth("1d") == 4 * solve_depth("1d") // CASES["1d"].config.n_solver_steps
    assert solve_depth("1d") < loss_depth("1d") < gradient_depth("1d") < trajectory_depth("1d", 1)
    assert solve_depth("1d-fp") < solve_depth("1d") and CASES["1d-fp"].config.n_solver_steps == 80


# Each mutant in float32 too, where the bounds are widest: (only, the ids that must fail).
FLOAT32_MUTANTS = {
    "drifting_adam": ("*train_trajectory::1d", {"train_trajectory::1d"}),
    "flipped_kernel": ("*::forward::1d/checkpoint", {"forward::1d/checkpoint"}),
    "ignores_schedule": ("*scheduled_trajectory::1d", {"scheduled_trajectory::1d"}),
    "ignores_truncation": ("*::[gt]*::1d/[tk]*[=:]1", {"gradients::1d/truncated:1", "truncation_biased::1d/k=1"}),
}


@pytest.mark.parametrize("mutant", sorted(FLOAT32_MUTANTS))
def test_the_float32_bounds_still_catch_the_mutants(mutant):
    only, must_fail = FLOAT32_MUTANTS[mutant]
    report = conformance.check_backend(_mutant(mutant), dtype="float32", only=only)
    assert {r.test_id.split("::", 1)[1] for r in report.results} == must_fail
    assert all(r.status == "FAIL" for r in report.results), [(r.test_id, r.measurement) for r in report.results]


def test_a_float64_batch_for_a_float32_model_is_one_error_whatever_the_switches():
    """JAX without x64 cannot make the batch, torch can but the model refuses it: the same words."""
    details = []
    for dtype in ("float32", "float64", "float32"):  # each switch setting, in both orders
        result = conformance.run_one("vardax_torch", "vardax_jax", "exceptions", "float64_batch_float32_model",
                                     dtype=dtype)
        assert result.status == "pass", result.measurement.detail
        details.append(result.measurement.detail)
    assert len(set(details)) == 1 and "differs from the model's dtype float32" in details[0]
    assert "float64 needs jax_enable_x64 on" in details[0]


def test_float32_from_the_command_line_in_a_fresh_process():
    """Issue 38: a fresh float32 process has JAX's x64 off, where the float64 runs before it in
    one test process had left it on: the dtype errors must agree there too."""
    command = [sys.executable, "-m", "conformance", "--dtype", "float32", "--only", "*exceptions::*"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dtype_mismatch" in done.stdout and "float64_batch_float32_model" in done.stdout
    assert done.stdout.strip().endswith(f"{len(BAD_INPUTS)} passed, 0 failed")


def test_quick_runs_one_case_per_check(capsys):
    ids = case_ids("a", "b", quick=True)
    assert [check for _, check, _ in ids] == list(conformance.CHECKS)
    assert all(case in conformance.CHECKS[check].cases for _, check, case in ids)
    # spec_mapping and param_round_trip, one case each
    assert cli(["--backends", "vardax_torch", "--quick", "--only", "*::[sp][pa]*"]) == 0
    assert capsys.readouterr().out.strip().endswith("2 passed, 0 failed")


def test_a_run_leaves_torch_threads_as_it_found_them():
    threads = torch.get_num_threads()
    assert conformance.run_one("vardax_torch", "vardax_jax", "param_round_trip", "1d").status == "pass"
    assert torch.get_num_threads() == threads


def test_a_truncation_that_forgets_the_lstm_carry_is_caught(monkeypatch):
    """The warm-up cuts the state but lets the LSTM carry keep its graph: a realistic bug that
    leaves the forward unchanged and only biases the gradient differently."""
    import vardax_torch.adjoints as adjoints

    iterate = adjoints.iterate

    def leaky_iterate(step, carry, args, max_steps, converged=None, *, graph, history=None):
        if graph:
            return iterate(step, carry, args, max_steps, converged, graph=True, history=history)
        out, n, stopped = iterate(step, carry, args, max_steps, converged, graph=True, history=history)
        return (out[0].detach(), *out[1:]), n, stopped  # the state is cut, the LSTM carry is not

    monkeypatch.setattr(adjoints, "iterate", leaky_iterate)
    report = conformance.check_backend(vardax_torch, only="*::[fg]*::1d/truncated:[12]")
    statuses = {r.test_id.split("::", 1)[1]: r.status for r in report.results}
    assert statuses["forward::1d/truncated:2"] == "pass"  # the forward cannot see this bug
    assert statuses["gradients::1d/truncated:1"] == "FAIL"
    assert statuses["gradients::1d/truncated:2"] == "FAIL"


def test_a_sign_flip_in_the_prior_cost_is_caught(monkeypatch):
    import vardax_torch.solver as solver

    cost = solver._cost

    def flipped_cost(model, args, x):  # obs - prior instead of obs + prior
        obs = (args["m"] * (x - args["y"]) ** 2).flatten(1).sum(dim=1)
        prior = cost(model, args, x) - model.config.obs_weight * obs
        return cost(model, args, x) - 2 * prior

    monkeypatch.setattr(solver, "_cost", flipped_cost)
    report = conformance.check_backend(vardax_torch, only="*::[fv]*::1d*")
    failed = {r.test_id.split("::", 1)[1] for r in report.results if not r.ok}
    assert {"variational_cost::1d", "forward::1d/checkpoint", "forward::1d/truncated:2"} <= failed
