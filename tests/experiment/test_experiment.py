import json

import numpy as np
import pytest

from pipekit_cycle import load_backend, load_params
from pipekit_cycle.experiment import ExperimentConfig, build_parser, linear_interpolation, run_experiment


def test_linear_interpolation_closed_form():
    obs = np.full((1, 6, 2), np.nan)
    obs[0, 1, 0], obs[0, 4, 0] = 1.0, 4.0
    obs[0, 2, 1] = -2.0
    filled = linear_interpolation(obs)
    np.testing.assert_allclose(filled[0, :, 0], [1.0, 1.0, 2.0, 3.0, 4.0, 4.0])
    np.testing.assert_allclose(filled[0, :, 1], -2.0)


@pytest.mark.parametrize(
    ("changes", "word"),
    [({"system": "l99"}, "system"), ({"adjoint": "bogus"}, "unknown adjoint"), ({"steps": 0}, "steps"),
     ({"batch_size": 100}, "batch_size")],
)
def test_experiment_config_validation(changes, word):
    with pytest.raises(ValueError, match=word):
        ExperimentConfig(**changes)


def test_both_backends_share_the_command_line():
    args = build_parser("x").parse_args(["train", "--system", "l63", "--adjoint", "truncated:2", "--out", "o"])
    assert args.system == "l63" and args.adjoint == "truncated:2" and not args.resume


TINY = {"system": "l96", "steps": 4, "batch_size": 2, "solver_steps": 2, "train_windows": 4, "test_windows": 2,
        "window_length": 4, "hidden_dim": 3, "prior_hidden_dim": 3, "checkpoint_every": 2, "fourdvar_windows": 0}


@pytest.mark.parametrize("backend_name", ["vardax_jax", "vardax_torch"])
def test_resume_is_bit_exact(tmp_path, backend_name):
    backend = load_backend(backend_name)
    straight = run_experiment(backend, ExperimentConfig(**TINY), tmp_path / "straight", progress=False)
    run_experiment(backend, ExperimentConfig(**{**TINY, "steps": 2}), tmp_path / "resumed", progress=False)
    resumed = run_experiment(backend, ExperimentConfig(**TINY), tmp_path / "resumed", resume=True, progress=False)
    a, config_a = load_params(tmp_path / "straight" / "checkpoint.safetensors")
    b, _ = load_params(tmp_path / "resumed" / "checkpoint.safetensors")
    assert config_a == ExperimentConfig(**TINY).model_config()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert straight["rmse_learned"] == resumed["rmse_learned"]
    state = json.loads((tmp_path / "resumed" / "state.json").read_text())
    assert state["step"] == 4 and len(state["losses"]) == 4
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert metrics["rmse_interpolation"] > 0 and np.isfinite(metrics["rmse_learned"])
    assert (tmp_path / "straight" / "reconstruction.png").stat().st_size > 1000


def test_resume_refuses_another_experiment(tmp_path):
    backend = load_backend("vardax_torch")
    run_experiment(backend, ExperimentConfig(**{**TINY, "steps": 2}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another experiment"):
        run_experiment(backend, ExperimentConfig(**{**TINY, "seed": 5}), tmp_path, resume=True, progress=False)
