"""Land in the learned map (issue 34, point 2): a box half land maps its ocean half as the same
ocean mapped without the land, to the precision the stitching of patches already accepts, and a
land value that entered as data would show at once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import vardax_torch as vt
from pipekit_cycle import ssh
from pipekit_cycle.experiment import ExperimentConfig
from pipekit_cycle.experiment.ssh import SSHTask

SMALL = {
    "system": "ssh", "solver_steps": 2, "hidden_dim": 3, "prior_hidden_dim": 3, "window_length": 4,
    "patch_size": 16, "patch_stride": 8, "train_days": 8, "test_days": 8, "grid": 32,
}
OCEAN = 16  # the west half is ocean, the east half land


def _rms(field: np.ndarray, axis: tuple[int, ...] | None = None) -> np.ndarray:
    return np.sqrt(np.mean(field**2, axis=axis))


@pytest.fixture(scope="module")
def maps():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = vt.build_model(ExperimentConfig(**SMALL).model_config(), seed=0)

        def predict(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return vt.to_numpy(model(vt.make_batch(x)))

        data = ssh.simulated(n_days=16, grid=32, seed=0)
        test = data.period(8, 16)
        defaults = SSHTask().defaults
        oi = {"space_km": defaults["oi_space_km"], "time_days": defaults["oi_time_days"], "noise_std": data.noise_std}
        scale = ssh.Standardiser.fit(test.truth - ssh.oi_background(test, **oi))

        def learned(period: ssh.GriddedData) -> np.ndarray:
            background = ssh.oi_background(period, **oi)
            return ssh.whole_domain_map(predict, period.obs, background=background, scale=scale, length=4,
                                        batch_size=2)

        land = np.zeros((32, 32), bool)
        land[:, OCEAN:] = True
        coast_obs = np.where(land, np.nan, test.obs)  # as the driver reads a land mask: no data on land
        alone = dataclasses.replace(test, obs=test.obs[:, :, :OCEAN], truth=test.truth[:, :, :OCEAN],
                                    lon=test.lon[:OCEAN], land=land[:, :OCEAN])
        # A land value entering as data (a fill value of 1 m where a track crosses land): the leak
        # the driver must never let through, to show the comparison would see it.
        leaking = np.where(land & np.isfinite(test.obs), 1.0, coast_obs)
        background = ssh.oi_background(test, **oi)
        return {
            "with_land": learned(dataclasses.replace(test, obs=coast_obs, land=land))[:, :, :OCEAN],
            "alone": learned(alone),
            "leaking": learned(dataclasses.replace(test, obs=leaking))[:, :, :OCEAN],
            "background_alone": ssh.oi_background(alone, **oi),
            # The stitching's precision: patches of 16 at stride 8, blended, against the whole grid
            # in one pass, both of the same ocean by the same model.
            "stitch": ssh.learned_map(predict, test.obs, background=background, scale=scale, length=4, size=16,
                                      stride=8, batch_size=2)
            - ssh.whole_domain_map(predict, test.obs, background=background, scale=scale, length=4, batch_size=2),
        }
    finally:
        torch.set_default_dtype(previous)


def test_the_ocean_half_maps_as_the_ocean_alone_to_the_stitchings_precision(maps):
    land_effect = maps["with_land"] - maps["alone"]
    stitching = _rms(maps["stitch"])
    assert _rms(maps["alone"] - maps["background_alone"]) > 100 * stitching  # the solver does change the map
    # Every column but the coast's own: within the stitching's RMS. The coast column is the one
    # place a convolution sees the land cells' activations (their biases) where the box alone has
    # zero padding; it stays within the largest single difference the stitching makes.
    assert _rms(land_effect[:, :, : OCEAN - 1]) <= stitching
    assert _rms(land_effect[:, :, OCEAN - 1]) <= np.abs(maps["stitch"]).max()
    # Away from the coast the two maps agree far better than that: the effect fades with distance.
    assert _rms(land_effect[:, :, : OCEAN - 8]) <= 0.2 * stitching


def test_a_land_value_entering_as_data_would_be_seen(maps):
    leak = _rms(maps["leaking"] - maps["alone"])
    assert leak > 1000 * _rms(maps["stitch"])
