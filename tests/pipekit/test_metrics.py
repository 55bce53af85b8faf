import math

import numpy as np
import pytest

from pipekit_cycle.ssh.metrics import psd_score, rmse, rmse_score, spectral_score


@pytest.fixture(scope="module")
def white() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 6, 96))


def test_rmse_score_closed_forms(white: np.ndarray):
    assert rmse_score(white, white) == (1.0, 0.0)
    assert rmse_score(np.zeros_like(white), white) == (0.0, 0.0)
    mu, sigma = rmse_score(0.7 * white, white)  # err = -0.3 truth on every day
    assert mu == pytest.approx(0.7, abs=1e-12) and sigma == pytest.approx(0.0, abs=1e-12)


def test_rmse_score_against_a_direct_computation(white: np.ndarray):
    rng = np.random.default_rng(1)
    estimate = white + rng.standard_normal(white.shape) * np.linspace(0.1, 1.0, white.shape[0])[:, None, None]
    truth = white.copy()
    truth[rng.random(truth.shape) < 0.2] = np.nan  # NaN in the truth: ignored
    valid = np.isfinite(truth)
    err, ref = (estimate - truth)[valid], truth[valid]
    expected_mu = 1 - math.sqrt(np.mean(err**2)) / math.sqrt(np.mean(ref**2))
    daily = [
        1 - math.sqrt(np.mean((estimate[t] - truth[t])[valid[t]] ** 2)) / math.sqrt(np.mean(truth[t][valid[t]] ** 2))
        for t in range(truth.shape[0])
    ]
    mu, sigma = rmse_score(estimate, truth)
    assert mu == pytest.approx(expected_mu, rel=1e-12)
    assert sigma == pytest.approx(float(np.std(daily)), rel=1e-10)
    assert sigma > 0.05  # the error grows over time


def test_rmse_score_errors(white: np.ndarray):
    with pytest.raises(ValueError, match="same shape"):
        rmse_score(white[:2], white)
    with pytest.raises(ValueError, match="at least one finite"):
        rmse_score(white, np.full_like(white, np.nan))
    estimate = white.copy()
    estimate[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite wherever truth is finite"):
        rmse_score(estimate, white)
    with pytest.raises(ValueError, match="identically zero"):
        rmse_score(white, np.zeros_like(white))


def test_psd_score_perfect_and_zero_estimates(white: np.ndarray):
    # Perfect: no 0.5 contour, everything resolved: the shortest bins kept, n dx / ((n - 1) // 2)
    # (the Nyquist bin is negative in fftfreq, so the > 0 quadrant drops it).
    assert psd_score(white, white, dx=0.25, dt=1.0) == pytest.approx((96 * 0.25 / 47, 64 / 31), rel=1e-15)
    odd = white[:63, :, :95]
    assert psd_score(odd, odd, dx=1.0, dt=1.0) == pytest.approx((95 / 47, 63 / 31), rel=1e-15)
    # Zero: the score is 0 everywhere, nothing is resolved.
    assert psd_score(np.zeros_like(white), white, dx=0.25, dt=1.0) == (math.inf, math.inf)
    # A constant error is the mean the detrending removes (a slope would not be: the mean only).
    assert psd_score(white + 0.3, white, dx=0.25, dt=1.0) == pytest.approx((96 * 0.25 / 47, 64 / 31))
    # A truth without power: no score anywhere, no contour, no answer (and no crash).
    lambdas = psd_score(white, np.zeros_like(white), dx=0.25, dt=1.0)
    assert math.isnan(lambdas[0]) and math.isnan(lambdas[1])


def _low_pass(field: np.ndarray, max_time_bin: int, max_lon_bin: int) -> np.ndarray:
    spectrum = np.fft.fft2(field, axes=(0, 2))
    nt, _, nx = field.shape
    mt = np.abs(np.fft.fftfreq(nt) * nt)[:, None, None]
    mx = np.abs(np.fft.fftfreq(nx) * nx)[None, None, :]
    return np.fft.ifft2(spectrum * ((mt <= max_time_bin) & (mx <= max_lon_bin)), axes=(0, 2)).real


@pytest.mark.parametrize(("max_time_bin", "max_lon_bin"), [(8, 12), (4, 20), (16, 6)])
def test_psd_score_of_a_sharp_low_pass_is_its_cutoff(white: np.ndarray, max_time_bin: int, max_lon_bin: int):
    dx, dt = 0.25, 1.0
    estimate = _low_pass(white, max_time_bin, max_lon_bin)
    lambda_x, lambda_t = psd_score(estimate, white, dx=dx, dt=dt)
    length, duration = 96 * dx, 64 * dt
    # The 0.5 contour runs next to the cutoff (the Hann taper leaks one bin); its minimum along a
    # line may reach one bin further where the score of one quadrant, six latitudes, fluctuates.
    assert length / (max_lon_bin + 2) <= lambda_x <= length / max_lon_bin
    assert duration / (max_time_bin + 2) <= lambda_t <= duration / max_time_bin


def test_spectral_score_bins_and_shape(white: np.ndarray):
    wavelength, period, score = spectral_score(0.5 * white, white, dx=2.0, dt=0.5)
    # The bins > 0 in fftfreq: 1 .. (n - 1) // 2, longest scale first.
    np.testing.assert_allclose(wavelength, 96 * 2.0 / np.arange(1, 48))
    np.testing.assert_allclose(period, 64 * 0.5 / np.arange(1, 32))
    assert score.shape == (31, 47)
    np.testing.assert_allclose(score, 0.75)  # PSD(err) = PSD(truth) / 4 in every bin
    _, _, empty = spectral_score(white, np.zeros_like(white), dx=2.0, dt=0.5)
    assert np.isnan(empty).all()  # no truth power: no score


def test_psd_score_errors(white: np.ndarray):
    with pytest.raises(ValueError, match=r"\(time, lat, lon\)"):
        psd_score(white[:, 0], white[:, 0], dx=1.0, dt=1.0)
    with pytest.raises(ValueError, match="dx must be a number > 0"):
        psd_score(white, white, dx=0.0, dt=1.0)
    with pytest.raises(ValueError, match="at least 5 times"):
        psd_score(white[:4], white[:4], dx=1.0, dt=1.0)
    holes = white.copy()
    holes[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="complete fields"):
        psd_score(white, holes, dx=1.0, dt=1.0)


def test_rmse_closed_form():
    assert rmse(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 4.0], [3.0, 4.0]])) == pytest.approx(1.0)
    assert rmse(np.zeros(3), np.array([3.0, 4.0, 0.0])) == pytest.approx(np.sqrt(25 / 3), rel=1e-15)
