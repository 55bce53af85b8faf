"""The SSH job's held-out map over the whole domain (issue 37, ``--held-out-map``): the model
trained on patches maps the full grid in one pass per window; ``auto`` picks it when the grid
obeys the model's rule and fits the patch mode's memory; a grid the rule refuses is a usage
error naming the flag."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vardax_torch as vt
from pipekit_cycle import load_backend, load_params, ssh
from pipekit_cycle.experiment import ConfigError, ExperimentConfig, latest_checkpoint, run_experiment
from pipekit_cycle.experiment.ssh import SSH
from pipekit_cycle.ssh import whole_domain_map

SMALL = {
    "system": "ssh", "steps": 2, "checkpoint_every": 2, "batch_size": 2, "solver_steps": 2, "hidden_dim": 3,
    "prior_hidden_dim": 3, "window_length": 4, "patch_size": 16, "patch_stride": 8, "train_days": 8,
    "test_days": 8, "grid": 32,
}


def test_whole_domain_map_is_learned_map_with_one_patch_the_size_of_the_grid():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(9, 12, 12))
    obs = np.where(rng.random(truth.shape) < 0.3, truth, np.nan)
    scale = ssh.Standardiser.fit(truth)
    background = 0.1 * truth

    def smooth(x: np.ndarray) -> np.ndarray:  # any map of windows (B, T, H, W) to windows
        filled = np.nan_to_num(x)
        return 0.5 * filled + 0.25 * (np.roll(filled, 1, axis=-1) + np.roll(filled, 1, axis=1))

    whole = whole_domain_map(smooth, obs, background=background, scale=scale, length=4, batch_size=3)
    patched = ssh.learned_map(smooth, obs, background=background, scale=scale, length=4, size=12, stride=12,
                              batch_size=2)
    np.testing.assert_allclose(whole, patched, rtol=0, atol=1e-13)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"held_out_map": "auto"}, "patches"),  # a window of 32 x 32 holds more than 2 patches of 16 x 16
    ({"held_out_map": "auto", "batch_size": 4}, "whole"),  # exactly 4 patches' points: it fits
    ({"held_out_map": "whole"}, "whole"),
    ({"held_out_map": "patches", "batch_size": 4}, "patches"),
])
def test_auto_picks_whole_when_the_grid_obeys_the_rule_and_fits(changes, expected):
    data = SSH.prepare(ExperimentConfig(**{**SMALL, **changes}), progress=False)
    assert data.held_out_map == expected


def test_whole_on_a_grid_the_rule_refuses_is_a_usage_error_naming_the_flag():
    config = ExperimentConfig(**{**SMALL, "grid": 18, "prior_downsample": 4, "held_out_map": "whole"})
    with pytest.raises(ConfigError, match=r"whole needs a grid with H and W multiples of 4") as info:
        SSH.prepare(config, progress=False)
    assert info.value.flag == "--held-out-map"
    # auto falls back to patches there, though a window of the grid would fit 8 patches' memory
    auto = ExperimentConfig(**{**SMALL, "grid": 18, "prior_downsample": 4, "held_out_map": "auto", "batch_size": 8})
    assert SSH.prepare(auto, progress=False).held_out_map == "patches"


def test_the_run_writes_the_whole_domain_map_of_its_model(tmp_path):
    config = ExperimentConfig(**{**SMALL, "held_out_map": "whole"})
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        run_experiment(load_backend("vardax_torch"), config, tmp_path, progress=False, figures=False)
        metrics = json.loads((tmp_path / "metrics.json").read_text())
        assert metrics["held_out_map"] == "whole"
        params, model_config = load_params(latest_checkpoint(tmp_path) / "checkpoint.safetensors")
        assert model_config.state_shape == (16, 16)  # trained on patches, maps the 32 x 32 grid
        model = vt.import_params(vt.build_model(model_config, seed=0), params)
        data = SSH.prepare(config, progress=False)
        with torch.no_grad():
            expected = whole_domain_map(lambda x: vt.to_numpy(model(vt.make_batch(x))), data.test.obs,
                                        background=data.background_test, scale=data.scale, length=4, batch_size=1)
    finally:
        torch.set_default_dtype(previous)
    score = ssh.score(expected, data.test.truth, dx_deg=data.test.dx_deg)
    assert metrics["scores"]["learned"]["rmse"] == pytest.approx(score["rmse"], rel=1e-10)
    # The same checkpoint mapped patch by patch: --resume may change the held-out map alone.
    patches = ExperimentConfig(**{**SMALL, "held_out_map": "patches"})
    torch.set_default_dtype(torch.float64)
    try:
        again = run_experiment(load_backend("vardax_torch"), patches, tmp_path, resume=True, progress=False,
                               figures=False)
    finally:
        torch.set_default_dtype(previous)
    assert again["held_out_map"] == "patches" and again["steps"] == 2
    assert again["scores"]["learned"]["rmse"] != metrics["scores"]["learned"]["rmse"]
