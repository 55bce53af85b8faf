"""The augmentation the SSH job may train with (`pipekit_cycle.ssh.augment`): the north-south
mirror with the sign changed is a symmetry of the two-layer QG model itself, the east-west
mirror is not; and the driver's mirrored samples are exactly those of the mirrored departures."""

from __future__ import annotations

import numpy as np
import pytest

from pipekit_cycle import ssh
from pipekit_cycle.experiment import ConfigError, ExperimentConfig
from pipekit_cycle.experiment.ssh import SSH

NY, NX = 32, 24


def _model() -> ssh.TwoLayerQG:
    # Every term of the equations: beta, a sheared mean flow, drag, the filter and the jet, whose
    # axis at mid-box is its own mirror image on the periodic grid (row j <-> row -j mod NY).
    jet = ssh.JetRelaxation(speed=0.5, width_m=30e3, position=0.5, timescale_s=20 * 86400.0)
    return ssh.TwoLayerQG(ny=NY, nx=NX, dx_m=10e3, dy_m=12e3, beta=1.6e-11, deformation_m=20e3, delta=0.25,
                          u1=0.06, u2=-0.01, bottom_drag=4e-7, jet=jet)


def _run(model: ssh.TwoLayerQG, q: np.ndarray) -> np.ndarray:
    final, _ = model.integrate(np.fft.rfft2(q), dt=1800.0, n_steps=96)  # two days
    return np.fft.irfft2(final, s=(NY, NX))


def _north_south(q: np.ndarray) -> np.ndarray:
    return -np.roll(q[..., ::-1, :], 1, axis=-2)  # -q(-y): row j from row -j mod NY


def _east_west(q: np.ndarray) -> np.ndarray:
    return -np.roll(q[..., :, ::-1], 1, axis=-1)


def _smooth_state() -> np.ndarray:
    """Random PV on the wavenumbers below half the grid's (1e-6 s^-1): the spectral derivative of
    a Nyquist mode has no mirror image, and the model's filter keeps its states far from it."""
    spectrum = np.fft.rfft2(np.random.default_rng(0).standard_normal((2, NY, NX)))
    low = (np.abs(np.fft.fftfreq(NY))[:, None] < 0.25) & (np.fft.rfftfreq(NX)[None, :] < 0.25)
    q = np.fft.irfft2(spectrum * low, s=(NY, NX))
    return 1e-6 * q / q.std()


@pytest.fixture(scope="module")
def runs() -> dict[str, np.ndarray]:
    model = _model()
    q = _smooth_state()
    return {"q": q, "run": _run(model, q), "north_south": _run(model, _north_south(q)),
            "east_west": _run(model, _east_west(q))}


def test_the_north_south_mirror_with_the_sign_changed_is_a_symmetry_of_the_qg_model(runs):
    change = np.abs(runs["run"] - runs["q"]).max()
    error = np.abs(runs["north_south"] - _north_south(runs["run"])).max()
    assert error <= 1e-12 * change  # two days of the model commute with the mirror to rounding (5e-16)


def test_the_east_west_mirror_is_not(runs):
    # Beta and the jet pick a direction: the same test on the east-west mirror fails by far.
    change = np.abs(runs["run"] - runs["q"]).max()
    assert np.abs(runs["east_west"] - _east_west(runs["run"])).max() > 0.1 * change


@pytest.fixture(scope="module")
def mirrored():
    common = {"system": "ssh", "grid": 32, "train_days": 8, "test_days": 8, "window_length": 4, "patch_size": 16,
              "patch_stride": 8, "batch_size": 2}
    return SSH.prepare(ExperimentConfig(**common), progress=False), \
        SSH.prepare(ExperimentConfig(**common, augment="flip-y"), progress=False)


def test_the_driver_adds_each_samples_mirror_with_the_sign_changed(mirrored):
    plain, flipped = mirrored
    n = plain.n_samples
    assert flipped.n_samples == 2 * n == 2 * 5 * 9  # windows of 4 days in 8, times 3 x 3 patches, twice
    chosen = np.array([0, 7, n - 1])
    obs, truth = plain.training_samples(chosen)
    same_obs, same_truth = flipped.training_samples(chosen)
    mirror_obs, mirror_truth = flipped.training_samples(chosen + n)
    np.testing.assert_array_equal(same_obs, obs)
    np.testing.assert_array_equal(same_truth, truth)
    # In metres: the departure from the OI mirrored north-south with its sign changed, NaN kept.
    scale = plain.scale
    np.testing.assert_allclose(scale.inverse(mirror_truth), -scale.inverse(truth)[..., ::-1, :], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(mirror_obs), np.isnan(obs)[..., ::-1, :])
    np.testing.assert_allclose(scale.inverse(mirror_obs), -scale.inverse(obs)[..., ::-1, :], rtol=0, atol=1e-12)
    # A batch drawing both versions of a sample gets each once.
    both_obs, _ = flipped.training_samples(np.array([7, 7 + n]))
    np.testing.assert_array_equal(both_obs[0], obs[1])
    np.testing.assert_array_equal(both_obs[1], mirror_obs[1])


def test_an_unknown_augmentation_is_refused_naming_the_choices():
    with pytest.raises(ConfigError, match="flip-y"):
        ExperimentConfig(system="ssh", grid=32, patch_size=16, augment="rotate")
