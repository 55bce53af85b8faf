"""The two-layer quasi-geostrophic model (`pipekit_cycle.ssh.qg`): its right-hand side and its
stepper against pyqg-jax's ``QGModel`` (the dev extra; float64), its inversion, the jet's
relaxation, and linear baroclinic instability against the dispersion relation."""

from __future__ import annotations

import numpy as np
import pytest

from pipekit_cycle.ssh import JetRelaxation, TwoLayerQG

# A non-square grid of non-square cells, both layers moving, drag and beta: every term counts.
PARAMETERS = {"beta": 1.8e-11, "deformation_m": 20e3, "delta": 0.25, "u1": 0.08, "u2": -0.01, "bottom_drag": 4e-7}
NY, NX, DX, DY = 24, 32, 6.8e3, 8.7e3


def _model(**changes: float) -> TwoLayerQG:
    return TwoLayerQG(ny=NY, nx=NX, dx_m=DX, dy_m=DY, **{**PARAMETERS, **changes})


def _state(seed: int = 0) -> np.ndarray:
    """A random PV field of mesoscale size (1e-5 s^-1), as ``rfft2`` spectra."""
    return np.fft.rfft2(1e-5 * np.random.default_rng(seed).standard_normal((2, NY, NX)))


@pytest.fixture(scope="module")
def pyqg_jax():
    # Imported, never skipped: make test installs the dev extra, and a missing peer must fail.
    import jax
    import pyqg_jax
    # float64 for these tests only: the JAX tests elsewhere in the session expect float32.
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield pyqg_jax
    jax.config.update("jax_enable_x64", before)


def _pyqg_model(pyqg_jax):
    return pyqg_jax.qg_model.QGModel(
        nx=NX, ny=NY, L=NX * DX, W=NY * DY, rek=PARAMETERS["bottom_drag"], beta=PARAMETERS["beta"],
        rd=PARAMETERS["deformation_m"], delta=PARAMETERS["delta"], U1=PARAMETERS["u1"], U2=PARAMETERS["u2"],
        precision=pyqg_jax.state.Precision.DOUBLE,
    )


def test_right_hand_side_matches_pyqg_jax(pyqg_jax):
    import jax

    reference = _pyqg_model(pyqg_jax)
    ours = _model()
    for seed in range(3):
        qh = _state(seed)
        state = reference.create_initial_state(jax.random.key(0)).update(qh=qh)
        expected = np.asarray(reference.get_updates(state).qh)
        got = ours.tendency(qh)
        assert got.dtype == np.complex128
        # Relative to the tendency's size: agreement to rounding (measured: 4e-16).
        assert np.abs(got - expected).max() <= 1e-8 * np.abs(expected).max()
        np.testing.assert_allclose(ours.invert(qh), np.asarray(reference.get_full_state(state).ph),
                                   rtol=0, atol=1e-12 * np.abs(ours.invert(qh)).max())
    np.testing.assert_allclose(ours.spectral_filter, np.asarray(reference.filtr), rtol=1e-12, atol=1e-300)


def test_stepper_matches_pyqg_jax_ab3_with_the_filter(pyqg_jax):
    import jax

    dt, n_steps = 1800.0, 12
    stepped = pyqg_jax.steppers.SteppedModel(_pyqg_model(pyqg_jax), pyqg_jax.steppers.AB3Stepper(dt=dt))
    qh = _state(4)
    state = stepped.initialize_stepper_state(stepped.model.create_initial_state(jax.random.key(0)).update(qh=qh))
    expected = []
    for _ in range(n_steps):
        state = stepped.step_model(state)
        expected.append(np.asarray(state.state.qh))
    final, saved = _model().integrate(qh, dt=dt, n_steps=n_steps)
    for ours, theirs in zip(saved, expected, strict=True):
        assert np.abs(ours - theirs).max() <= 1e-10 * np.abs(theirs).max()
    assert np.array_equal(final, saved[-1])


def test_inversion_satisfies_the_pv_definition():
    model = _model()
    qh = _state(1)
    ph = model.invert(qh)
    laplacian = -model.k2 * ph
    q1 = laplacian[0] + model.f1 * (ph[1] - ph[0])
    q2 = laplacian[1] + model.f2 * (ph[0] - ph[1])
    scale = np.abs(qh).max()
    np.testing.assert_allclose(q1[1:], qh[0][1:], atol=1e-12 * scale)  # all but the mean row
    np.testing.assert_allclose(q2[:, 1:], qh[1][:, 1:], atol=1e-12 * scale)
    assert np.all(ph[:, 0, 0] == 0)  # no mean streamfunction


def _operator_for(model: TwoLayerQG, kx: float) -> np.ndarray:
    """The linearised dynamics (s^-1) of a zonal wave exp(i kx x) of PV amplitudes (q1, q2):
    the mean flow, the mean PV gradient and the drag act on it; its self-advection vanishes."""
    k2 = kx**2
    to_psi = np.linalg.inv(np.array([[-(k2 + model.f1), model.f1], [model.f2, -(k2 + model.f2)]]))
    operator = -1j * kx * np.diag([model.u1, model.u2]) - 1j * kx * np.diag(model.qy) @ to_psi
    operator[1] += model.bottom_drag * k2 * to_psi[1]
    return operator


def test_a_zonal_wave_grows_at_the_baroclinic_instability_rate():
    # No filter at this scale and no self-advection for a wave with l = 0: the amplitude follows
    # the unstable eigenvalue of the 2 x 2 linear problem.
    model = _model()
    ix = 1  # 218 km: k L_d = 0.58, near the fastest-growing wave
    rates, vectors = np.linalg.eig(_operator_for(model, model.k[0, ix]))
    growth = rates.real.max()
    assert growth > 1e-7  # unstable: the shear 0.09 m/s exceeds beta / F2 = 0.036 m/s
    qh = np.zeros((2, NY, NX // 2 + 1), dtype=complex)
    qh[:, 0, ix] = 1e-9 * NY * NX * vectors[:, np.argmax(rates.real)]
    dt, n_steps = 1800.0, 480  # 10 days
    final, _ = model.integrate(qh, dt=dt, n_steps=n_steps)
    amplitude = np.linalg.norm(final[:, 0, ix]) / np.linalg.norm(qh[:, 0, ix])
    assert amplitude == pytest.approx(np.exp(growth * dt * n_steps), rel=1e-4)
    others = final.copy()
    others[:, 0, ix] = 0
    assert np.abs(others).max() < 1e-12 * np.abs(final).max()  # nothing else is excited
    # Below the Phillips threshold the same wave does not grow.
    stable = _model(u1=0.02, u2=0.0)
    assert np.linalg.eigvals(_operator_for(stable, model.k[0, ix])).real.max() <= 1e-12


def test_tendency_is_linear_algebra_of_the_operator_for_one_wave():
    model = _model()
    ix = 2
    qh = np.zeros((2, NY, NX // 2 + 1), dtype=complex)
    qh[:, 0, ix] = [3e-6 * NY * NX, -1e-6 * NY * NX]
    expected = _operator_for(model, model.k[0, ix]) @ qh[:, 0, ix]
    np.testing.assert_allclose(model.tendency(qh)[:, 0, ix], expected, rtol=1e-10)


def test_single_precision_stays_single():
    model = _model()
    qh = _state(2).astype(np.complex64)
    assert model.tendency(qh).dtype == np.complex64
    final, _ = model.integrate(qh, dt=1800.0, n_steps=3)
    assert final.dtype == np.complex64
    reference, _ = model.integrate(qh.astype(np.complex128), dt=1800.0, n_steps=3)
    assert np.abs(final - reference).max() < 1e-4 * np.abs(reference).max()


def test_run_days_chooses_steps_from_the_flow_and_saves_each_day():
    model = _model()
    _, _, weak_steps = model.run_days(0.01 * _state(3), n_days=2, save=lambda _: None)
    strong, days, strong_steps = model.run_days(30 * _state(3), n_days=2)
    assert len(days) == 2 and np.array_equal(days[-1], strong)
    assert weak_steps[0] == 8 and strong_steps[0] > weak_steps[0]  # faster flow, more steps
    assert all(step % 4 == 0 for step in weak_steps + strong_steps)
    rate = model.advective_rate(30 * _state(3))
    assert 86400 / strong_steps[0] * rate <= 0.6


def test_energy_of_a_known_state():
    # psi1 = A cos(2 pi x / Lx), psi2 = 0: kinetic (1/2)<|grad psi1|^2> = A^2 k^2 / 4 in layer 1
    # and the available potential energy F1 <psi1^2> / 2 = F1 A^2 / 4, weighted by H1 / H.
    model = _model()
    amplitude, kx = 1e4, 2 * np.pi / (NX * DX)
    x = DX * np.arange(NX)
    psi = np.zeros((2, NY, NX))
    psi[0] = amplitude * np.cos(kx * x)[None, :]
    ph = np.fft.rfft2(psi)
    qh = np.stack([-model.k2 * ph[0] + model.f1 * (ph[1] - ph[0]), -model.k2 * ph[1] + model.f2 * (ph[0] - ph[1])])
    h1 = 0.25 / 1.25
    expected = h1 * (amplitude**2 * kx**2 / 4 + model.f1 * amplitude**2 / 4)
    assert model.energy(qh) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"ny": 2}, "ny must be an integer >= 4"), ({"dx_m": 0.0}, "dx_m must be a number > 0"),
     ({"bottom_drag": -1.0}, "bottom_drag must be a number >= 0")],
)
def test_bad_parameters_raise(changes: dict, match: str):
    arguments = {"ny": NY, "nx": NX, "dx_m": DX, "dy_m": DY, **PARAMETERS, **changes}
    with pytest.raises(ValueError, match=match):
        TwoLayerQG(**arguments)


def test_the_jet_relaxes_the_upper_zonal_mean_toward_its_profile():
    # The forcing is -(q1_bar - Q*) / tau on the k = 0 column of the upper layer, nothing else;
    # Q* is the PV of the jet U*(y) over a lower layer at rest.
    jet = JetRelaxation(speed=0.8, width_m=40e3, position=0.3, timescale_s=10 * 86400.0)
    common = dict(ny=48, nx=32, dx_m=9e3, dy_m=11e3, beta=1.7e-11, deformation_m=20e3, delta=0.25, u1=0.0,
                  u2=0.0, bottom_drag=3e-7)
    plain, forced = TwoLayerQG(**common), TwoLayerQG(**common, jet=jet)
    qh = np.fft.rfft2(1e-6 * np.random.default_rng(3).standard_normal((2, 48, 32)))
    difference = forced.tendency(qh) - plain.tendency(qh)
    target = jet.target(48, 32, 11e3, plain.f1)
    np.testing.assert_allclose(difference[0, :, 0], -(qh[0, :, 0] - target) / jet.timescale_s, rtol=1e-12)
    assert not difference[1].any() and not difference[0, :, 1:].any()
    # The target state (upper PV Q*, lower PV F2 Psi*: psi2 = 0) inverts to the jet's velocity.
    psi_star = jet.streamfunction(48, 11e3)
    state = np.stack([target, 32 * plain.f2 * np.fft.fft(psi_star)])
    full = np.zeros((2, 48, 17), complex)
    full[:, :, 0] = state
    psi = np.fft.irfft2(plain.invert(full), s=(48, 32))
    u = -np.gradient(np.pad(psi[0, :, 0], 1, mode="wrap"), 11e3)[1:-1]  # -d psi / dy, periodic
    y = 11e3 * np.arange(48)
    expected = 0.8 * np.exp(-(((y - 0.3 * 48 * 11e3) / 40e3) ** 2))
    np.testing.assert_allclose(u, expected - expected.mean(), atol=0.02)  # centred differences, 11 km
    np.testing.assert_allclose(psi[1], 0.0, atol=1e-9 * np.abs(psi[0]).max())
    np.testing.assert_allclose(psi[0, :, 0], psi_star, rtol=1e-10, atol=1e-10 * np.abs(psi_star).max())
