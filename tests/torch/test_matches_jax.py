"""vardax_torch against vardax_jax on identical parameters and inputs (float64): forward solve,
variational cost, losses and parameter gradients under every inner-solve adjoint, both export
directions, 1D and 2D; an Adam trajectory; and the same exception for the same bad input."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
import torch

import pipekit_cycle as pk
import vardax_jax as vj
import vardax_torch as vt

jax.config.update("jax_enable_x64", True)

ADJOINTS = [
    pk.RecursiveCheckpointAdjoint(),
    pk.TruncatedAdjoint(1),
    pk.TruncatedAdjoint(2),
    pk.ImplicitAdjoint("gmres", rtol=1e-12, atol=1e-12),
]


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def pair(state_shape, padding, direction, solver="learned"):
    # fixed point: tolerances 0, exactly n_solver_steps iterations in both backends
    cfg = pk.FourDVarNetConfig(state_shape=state_shape, n_time=4, hidden_dim=4, prior_hidden_dim=4,
                               n_solver_steps=4, padding=padding, obs_weight=0.8, prior_weight=1.2, solver=solver,
                               fixed_point_rtol=0.0, fixed_point_atol=0.0)
    mj, mt = vj.build_model(cfg, seed=0), vt.build_model(cfg, seed=1, dtype=torch.float64)
    if direction == "jax->torch":
        vt.import_params(mt, vj.export_params(mj))
    else:
        mj = vj.import_params(mj, vt.export_params(mt))
    rng = np.random.default_rng(0)
    shape = (2, 4, *state_shape)
    truth = rng.normal(size=shape)
    obs = np.where(rng.random(shape) < 0.5, truth, np.nan)
    return mj, mt, vj.make_batch(obs, target=truth), vt.make_batch(obs, target=truth, dtype="float64")


@pytest.mark.parametrize("solver", ["learned", "fixed_point"])
@pytest.mark.parametrize("direction", ["jax->torch", "torch->jax"])
@pytest.mark.parametrize(("state_shape", "padding"), [((8,), "zeros"), ((3, 4), "circular")])
def test_forward_cost_and_gradients_match_jax(state_shape, padding, direction, solver):
    mj, mt, bj, bt = pair(state_shape, padding, direction, solver)
    for name, value in vj.export_params(mj).items():
        assert np.array_equal(value, vt.export_params(mt)[name])
    assert rel(vt.to_numpy(mt(bt)), vj.to_numpy(mj(bj))) < 1e-10
    x = np.random.default_rng(1).normal(size=bt.input.shape)
    cost_t = vt.variational_cost(mt, torch.tensor(x), bt)
    cost_j = vj.variational_cost(mj, jax.numpy.asarray(x), bj)
    assert rel(vt.to_numpy(cost_t), np.asarray(cost_j)) < 1e-10
    for spec in ADJOINTS:
        if isinstance(spec, pk.ImplicitAdjoint) and solver == "learned":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error", pk.ConvergenceWarning)
            loss_j, grads_j = vj.loss_and_grads(mj, bj, adjoint=spec)
            loss_t, grads_t = vt.loss_and_grads(mt, bt, adjoint=spec)
        assert loss_t == pytest.approx(loss_j, rel=1e-10), spec
        # Implicit: both solve the adjoint system to rtol 1e-12, so agreement is to ~1e-10
        tolerance = 1e-9 if isinstance(spec, pk.ImplicitAdjoint) else 1e-10
        for name in grads_t:
            scale = max(np.abs(grads_j[name]).max(), 1e-12)
            assert np.abs(grads_t[name] - np.asarray(grads_j[name])).max() <= tolerance * scale, (spec, name)


def test_adam_trajectory_matches_jax():
    mj, mt, bj, bt = pair((8,), "zeros", "jax->torch")
    cfg = pk.OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.05, clip_norm=0.1)
    opt_j, state_j = vj.make_optimizer(cfg, mj)
    opt_t, state_t = vt.make_optimizer(cfg, mt)
    for _ in range(3):
        mj, state_j, loss_j = vj.train_step(mj, bj, opt_j, state_j)
        mt, state_t, loss_t = vt.train_step(mt, bt, opt_t, state_t)
        assert float(loss_t) == pytest.approx(float(loss_j), rel=1e-10)
    pj, pt = vj.export_params(mj), vt.export_params(mt)
    assert max(rel(pt[n], pj[n]) for n in pj) < 1e-10


def test_the_schedule_is_optaxs_and_both_backends_follow_it():
    """`WarmupCosineSchedule` against optax's own ``warmup_cosine_decay_schedule`` (float64), then
    six scheduled Adam steps in each backend from the same parameters."""
    import optax

    schedule = pk.WarmupCosineSchedule(warmup_steps=3, decay_steps=9, init_fraction=0.2, end_fraction=0.1)
    reference = optax.warmup_cosine_decay_schedule(0.02, 0.1, 3, 9, 0.01)
    assert max(abs(0.1 * schedule.factor(k) - float(reference(k))) for k in range(14)) < 1e-15
    mj, mt, bj, bt = pair((8,), "zeros", "jax->torch")
    cfg = pk.OptimizerConfig(name="adam", lr=1e-2, schedule=pk.WarmupCosineSchedule(2, 5, init_fraction=0.3))
    opt_j, state_j = vj.make_optimizer(cfg, mj)
    opt_t, state_t = vt.make_optimizer(cfg, mt)
    start = vt.export_params(mt)
    for _ in range(6):
        mj, state_j, _ = vj.train_step(mj, bj, opt_j, state_j)
        mt, state_t, _ = vt.train_step(mt, bt, opt_t, state_t)
        pj, pt = vj.export_params(mj), vt.export_params(mt)
        assert max(rel(pt[n], pj[n]) for n in pj) < 1e-10
    assert max(rel(pt[n], start[n]) for n in pt) > 1e-3  # the steps moved the parameters


def _error(fn, *args):
    with pytest.raises(Exception) as info:
        fn(*args)
    return type(info.value), str(info.value)


def test_same_exception_for_the_same_bad_input():
    mj, mt, _bj, bt = pair((8,), "zeros", "jax->torch")
    obs = vt.to_numpy(bt.input)
    assert _error(vt.make_batch, obs[0]) == _error(vj.make_batch, obs[0])
    assert _error(vt.make_batch, obs.astype(np.int32)) == _error(vj.make_batch, obs.astype(np.int32))
    assert _error(vt.to_native_adjoint, pk.DirectAdjoint()) == _error(vj.to_native_adjoint, pk.DirectAdjoint())
    assert _error(vt.to_native_adjoint, "backsolve") == _error(vj.to_native_adjoint, "backsolve")
    no_target_t, no_target_j = vt.make_batch(obs, dtype="float64"), vj.make_batch(obs)
    assert _error(vt.train_loss_fn, mt, no_target_t) == _error(vj.train_loss_fn, mj, no_target_j)
    wrong = np.zeros((2, 4, 2))  # N=2: below the kernel (3), a grid no model maps
    assert _error(mt, vt.make_batch(wrong, dtype="float64")) == _error(mj, vj.make_batch(wrong))
    assert _error(mt, vt.make_batch(obs, dtype="float32")) == _error(mj, vj.make_batch(obs, dtype="float32"))


def test_stitched_ssh_reconstruction_matches_jax():
    # The SSH job's whole-domain map (DESIGN 8): every window and patch of a small simulated
    # period through each backend's predict, stitched and blended in numpy.
    from pipekit_cycle import ssh as mapping

    data = mapping.simulated(n_days=6, grid=32, seed=0)
    cfg = pk.FourDVarNetConfig(state_shape=(8, 8), n_time=4, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3)
    mj, mt = vj.build_model(cfg, seed=0), vt.build_model(cfg, seed=1, dtype=torch.float64)
    vt.import_params(mt, vj.export_params(mj))
    scale = float(np.nanstd(data.obs))

    def through(backend, model, **batch_options):
        def predict(inputs):
            return backend.to_numpy(backend.predict(model, backend.make_batch(inputs / scale, **batch_options))) * scale
        return mapping.reconstruct(predict, data.obs, length=4, size=8, stride=6, batch_size=7)

    jax_map, torch_map = through(vj, mj), through(vt, mt, dtype="float64")
    assert jax_map.shape == data.truth.shape and np.isfinite(jax_map).all()
    assert np.abs(jax_map - data.obs)[np.isfinite(data.obs)].max() > 0  # the solver changed the map
    assert rel(torch_map, jax_map) < 1e-10


def test_the_public_solve_refuses_implicit_on_the_learned_solver_in_both_backends():
    # Called directly (not through the model), both backends refuse before solving, in the same words.
    cfg = pk.FourDVarNetConfig(state_shape=(8,), n_time=3, hidden_dim=2, prior_hidden_dim=2, n_solver_steps=2)
    obs = np.zeros((1, 3, 8))
    messages = []
    for backend in (vt, vj):
        model = backend.build_model(cfg, seed=0)
        with pytest.raises(ValueError, match='solver="fixed_point"') as caught:
            backend.solve_4dvarnet(model, backend.make_batch(obs), adjoint=pk.ImplicitAdjoint())
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
