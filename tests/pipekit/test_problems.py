import numpy as np
import pytest

from pipekit_cycle import lorenz63, lorenz96
from pipekit_cycle.problems import lorenz63_vector_field, lorenz96_vector_field, rk4_step


def test_same_seed_same_arrays_other_seed_other_arrays():
    a, b, c = lorenz96(4, 6, seed=3), lorenz96(4, 6, seed=3), lorenz96(4, 6, seed=4)
    for field in ("truth", "obs", "mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.allclose(a.truth, c.truth)
    l63a, l63b = lorenz63(3, 50, seed=1), lorenz63(3, 50, seed=1)
    np.testing.assert_array_equal(l63a.obs, l63b.obs)


def test_shapes_mask_and_noise_lorenz63():
    problem = lorenz63(64, 200, seed=0)
    assert problem.truth.shape == problem.obs.shape == problem.mask.shape == (64, 200, 3)
    assert problem.dt == 0.01 and problem.parameters["rho"] == 28.0
    observed_rows = np.flatnonzero(problem.mask[0, :, 0])
    np.testing.assert_array_equal(observed_rows, np.arange(0, 200, 8))
    assert np.array_equal(np.isfinite(problem.obs), problem.mask > 0)
    noise = (problem.obs - problem.truth)[problem.mask > 0]
    assert noise.size == 64 * 25 * 3
    assert abs(noise.var() - 2.0) < 0.1  # variance 2, 4800 samples: std error about 0.04
    assert abs(noise.mean()) < 0.06
    # On the attractor: z stays positive and x, y bounded.
    assert problem.truth[..., 2].min() > 0 and np.abs(problem.truth[..., :2]).max() < 30


def test_lorenz96_defaults_and_split():
    problem = lorenz96(10, 8, seed=0)
    assert problem.truth.shape == (10, 8, 40)
    assert problem.parameters == {"forcing": 8.0} and problem.dt == 0.05
    assert 0.4 < problem.mask.mean() < 0.6
    train, test = problem.split(7)
    assert train.truth.shape[0] == 7 and test.truth.shape[0] == 3
    np.testing.assert_array_equal(test.obs, problem.obs[7:])


def test_truth_follows_rk4_of_the_vector_fields():
    problem = lorenz96(2, 5, state_dim=12, forcing=6.0, seed=2)
    for t in range(4):
        expected = rk4_step(lambda s: lorenz96_vector_field(s, 6.0), problem.truth[:, t], problem.dt)
        np.testing.assert_allclose(problem.truth[:, t + 1], expected, rtol=1e-13)
    l63 = lorenz63(2, 4, seed=0)
    expected = rk4_step(lorenz63_vector_field, l63.truth[:, 0], 0.01)
    np.testing.assert_allclose(l63.truth[:, 1], expected, rtol=1e-13)


def test_rk4_is_fourth_order():
    state = np.array([1.0, 2.0, 20.0])

    def integrate(dt, n):
        x = state
        for _ in range(n):
            x = rk4_step(lorenz63_vector_field, x, dt)
        return x

    reference = integrate(1e-4, 1000)
    error_coarse = np.abs(integrate(0.01, 10) - reference).max()
    error_fine = np.abs(integrate(0.005, 20) - reference).max()
    assert 12 < error_coarse / error_fine < 20  # 2**4 = 16


def test_lorenz96_field_closed_form():
    x = np.arange(5.0)
    # dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, periodic.
    expected = np.array([(x[(i + 1) % 5] - x[i - 2]) * x[i - 1] - x[i] + 8.0 for i in range(5)])
    np.testing.assert_allclose(lorenz96_vector_field(x), expected)


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: lorenz63(0), "n_windows"),
        (lambda: lorenz63(2, dt=-0.1), "dt"),
        (lambda: lorenz96(2, obs_fraction=0.0), "obs_fraction"),
        (lambda: lorenz96(2, state_dim=3), "state_dim"),
        (lambda: lorenz96(2, 4.5), "window_length"),
    ],
)
def test_bad_arguments(call, word):
    with pytest.raises(ValueError, match=word):
        call()
