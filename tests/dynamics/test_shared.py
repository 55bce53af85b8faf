"""pipekit_cycle.dynamics: the framework-free checks and defaults both backends call."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import pipekit_cycle as pc
from pipekit_cycle import dynamics as shared
from vardax_jax import dynamics as jd
from vardax_torch import dynamics as td


def test_imports_no_framework():
    code = "import sys, pipekit_cycle.dynamics; print(sorted({'jax', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_backends_reexport_the_shared_defaults():
    for backend in (jd, td):
        assert (backend.DEFAULT_RTOL, backend.DEFAULT_ATOL) == (shared.DEFAULT_RTOL, shared.DEFAULT_ATOL)
        for name in ("lorenz63", "lorenz96", "linear"):
            field = backend.make_vector_field(name, {"matrix": np.eye(2)} if name == "linear" else None)
            assert field.parameter_names == shared.FIELD_PARAMETERS[name]
        assert backend.make_vector_field("lorenz96").state_dim == shared.L96_STATE_DIM


HELPERS = (
    "make_vector_field",
    "make_forward_model",
    "rollout_numpy",
    "trajectory_loss_and_grads",
    "strong_4dvar_numpy",
)


@pytest.mark.parametrize("name", HELPERS)
def test_numpy_helpers_have_one_signature(name):
    assert inspect.signature(getattr(jd, name)) == inspect.signature(getattr(td, name))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (pc.BacksolveAdjoint(), (None, None)),
        (pc.BacksolveAdjoint(rtol=1e-7), (1e-7, shared.DEFAULT_ATOL)),
        (pc.BacksolveAdjoint(atol=1e-9), (shared.DEFAULT_RTOL, 1e-9)),
        (pc.BacksolveAdjoint(rtol=1e-5, atol=1e-6), (1e-5, 1e-6)),
    ],
)
def test_backsolve_tolerances(spec, expected):
    assert shared.backsolve_tolerances(spec) == expected


def test_map_dynamics_spec_dispatches_and_passes_natives_through():
    hooks = {"direct": lambda: "D", "checkpoint": lambda k: ("C", k), "backsolve": lambda r, a: ("B", r, a)}
    assert shared.map_dynamics_spec(None, str, **hooks) == ("C", None)
    assert shared.map_dynamics_spec(pc.DirectAdjoint(), bytes, **hooks) == "D"
    assert shared.map_dynamics_spec("checkpoint:4", bytes, **hooks) == ("C", 4)
    assert shared.map_dynamics_spec("backsolve", bytes, **hooks) == ("B", None, None)
    native = b"native"
    assert shared.map_dynamics_spec(native, bytes, **hooks) is native
    with pytest.raises(ValueError, match="belongs to the 'inner_solve' layer"):
        shared.map_dynamics_spec(pc.TruncatedAdjoint(2), bytes, **hooks)


def test_check_covariances_keeps_the_cholesky_factor():
    cov = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]])
    prior = shared.check_covariances(cov, 2.0, 3)
    np.testing.assert_allclose(prior.background_chol @ prior.background_chol.T, cov)
    assert prior.obs_var.shape == ()
    assert shared.check_covariances(np.ones(3), np.ones(3), 3).background_chol is None


@pytest.mark.parametrize(
    ("xb", "obs", "n_steps", "expected"), [((3,), (5, 3), None, 4), ((2, 3), (2, 4, 3), 3, 3), ((3,), (1, 3), 0, 0)]
)
def test_window_steps(xb, obs, n_steps, expected):
    assert shared.window_steps(xb, obs, 3, n_steps) == expected


def test_field_arguments():
    assert shared.field_arguments("lorenz63", {"rho": 20.0}) == {"rho": 20.0}
    assert shared.field_arguments("lorenz96") == {"state_dim": shared.L96_STATE_DIM}
    assert shared.field_arguments("lorenz96", {"forcing": 4.0}, state_dim=6) == {"state_dim": 6, "forcing": 4.0}
    assert shared.state_dim_of("lorenz96", np.ones((2, 7))) == 7
    assert shared.state_dim_of("lorenz63", np.ones((2, 3))) is None


def test_fourdvar_not_converged_is_a_convergence_warning():
    warning = shared.fourdvar_not_converged("BFGS", 7, 7)
    assert isinstance(warning, pc.ConvergenceWarning)
    assert str(warning) == "StrongFourDVar: BFGS did not converge in 7 steps (max_steps=7)"


# More bad input, the same ValueError in both backends (see test_errors.py for the rest).
CASES = [
    ("l96-small", lambda b: b.make_forward_model("lorenz96", 0.01, state_dim=3), "state_dim must be an int >= 4"),
    ("l96-bool", lambda b: b.Lorenz96(True), "got True"),
    ("matrix-shape", lambda b: b.LinearField(np.ones((2, 3))), "got shape (2, 3)"),
    ("matrix-missing", lambda b: b.make_vector_field("linear"), "got shape None"),
    ("max-steps", lambda b: b.make_forward_model("lorenz63", 0.01, max_steps=0), "max_steps must be an int >= 1"),
    ("atol", lambda b: b.make_forward_model("lorenz63", 0.01, atol=float("inf")), "atol must be a finite number"),
    (
        "cov-asymmetric",
        lambda b: b.StrongFourDVar(b.make_forward_model("lorenz63", 0.01), np.triu(np.ones((3, 3))), 1.0),
        "a non-symmetric matrix",
    ),
    (
        "obs-var-shape",
        lambda b: b.StrongFourDVar(b.make_forward_model("lorenz63", 0.01), np.ones(3), np.ones(2)),
        "got shape (2,)",
    ),
    (
        "fourdvar-n-steps",
        lambda b: b.StrongFourDVar(b.make_forward_model("lorenz63", 0.01), np.ones(3), 1.0, n_steps=-1),
        "n_steps must be an int >= 0, got -1",
    ),
]


@pytest.mark.parametrize(("action", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_more_bad_input_raises_the_same_value_error_in_both_backends(action, words):
    messages = []
    for backend in (jd, td):
        with pytest.raises(ValueError) as error:
            action(backend)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert words in messages[0], messages[0]
