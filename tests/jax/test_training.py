"""Losses, optimizer maths, train/eval steps, parameter round trips, and a Lorenz-96 run."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import pipekit_cycle as pk
import vardax_jax as vd
from vardax_jax.params import get_param

B, T, N = 2, 4, 8


def _batch(seed=0, shape=(B, T, N)):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal(shape)
    obs[rng.random(shape) < 0.5] = np.nan
    return vd.make_batch(obs, target=rng.standard_normal(shape))


@pytest.fixture(scope="module")
def model():
    return vd.FourDVarNet1D(N, T, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3, key=jr.PRNGKey(0))


def test_losses(model):
    batch = _batch()
    pred = jnp.arange(6.0).reshape(2, 3)
    assert float(vd.reconstruction_loss(pred, jnp.zeros((2, 3)))) == pytest.approx(55.0 / 6.0)
    loss = float(vd.train_loss_fn(model, batch))
    assert loss == pytest.approx(float(jnp.mean((model(batch) - batch.target) ** 2)), rel=1e-12)
    assert float(vd.eval_step(model, batch)) == pytest.approx(loss, rel=1e-12)
    value, grads = vd.loss_and_grads(model, batch)
    assert value == pytest.approx(loss, rel=1e-12)
    assert {k: v.shape for k, v in grads.items()} == pk.schema(model.config)
    assert all(np.all(np.isfinite(g)) for g in grads.values()) and np.abs(grads["prior.conv_out.weight"]).max() > 0


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_optimizer_maths(name):
    """clip -> coupled weight decay -> Adam/SGD, written out by hand (what vardax_torch does)."""
    cfg = pk.OptimizerConfig(name=name, lr=0.1, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05, clip_norm=1.0)
    params = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5]])}
    optimizer, state = vd.make_optimizer(cfg, params)
    p = {k: np.asarray(v) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    for step in range(1, 4):
        grads = {"a": jnp.array([3.0, 4.0]) * step, "b": jnp.array([[-1.0]])}
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        g = {k: np.asarray(x) for k, x in grads.items()}
        norm = np.sqrt(sum(np.sum(x**2) for x in g.values()))
        for k in p:
            gk = g[k] * 1.0 / max(norm, 1.0) + 0.05 * p[k]
            if name == "sgd":
                p[k] = p[k] - 0.1 * gk
            else:
                m[k] = 0.8 * m[k] + 0.2 * gk
                v[k] = 0.9 * v[k] + 0.1 * gk**2
                p[k] = p[k] - 0.1 * (m[k] / (1 - 0.8**step)) / (np.sqrt(v[k] / (1 - 0.9**step)) + 1e-6)
        for k in p:
            np.testing.assert_allclose(params[k], p[k], rtol=1e-12)


def test_train_step_updates_and_refuses_non_finite(model):
    batch = _batch()
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2), model)
    new_model, new_state, loss = vd.train_step(model, batch, optimizer, opt_state)
    assert float(loss) == pytest.approx(float(vd.train_loss_fn(model, batch)), rel=1e-12)
    assert not np.array_equal(new_model.prior.conv_in.weight, model.prior.conv_in.weight)
    assert float(vd.eval_step(new_model, batch)) < float(loss)
    before = vd.export_params(new_model), jax.tree.map(np.asarray, new_state)
    bad = vd.Batch1D(batch.input, batch.mask, batch.target.at[0, 0, 0].set(jnp.inf))  # NaN: no target (land)
    with pytest.raises(FloatingPointError, match="non-finite"):
        vd.train_step(new_model, bad, optimizer, new_state)
    after = vd.export_params(new_model), jax.tree.map(np.asarray, new_state)
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        assert np.array_equal(x, y)
    with pytest.raises(ValueError, match="train_loss_fn needs batch.target"):
        vd.train_step(new_model, vd.Batch1D(batch.input, batch.mask), optimizer, new_state)


def test_params_round_trip(model, tmp_path):
    params = vd.export_params(model)
    assert {k: v.shape for k, v in params.items()} == pk.schema(model.config)
    assert all(v.dtype == np.float64 for v in params.values())
    other = vd.FourDVarNet1D(N, T, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3, key=jr.PRNGKey(7))
    restored = vd.import_params(other, params)
    assert all(np.array_equal(restored_v, params[k]) for k, restored_v in vd.export_params(restored).items())
    batch = _batch()
    assert np.array_equal(restored(batch), model(batch))
    pk.save_params(tmp_path / "p.safetensors", params, model.config)
    loaded, config = pk.load_params(tmp_path / "p.safetensors")
    assert config == model.config
    assert all(np.array_equal(v, params[k]) for k, v in vd.export_params(vd.import_params(other, loaded)).items())
    broken = dict(params, **{"prior.conv_in.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="prior.conv_in.bias"):
        vd.import_params(other, broken)
    assert np.array_equal(vd.export_params(other)["prior.conv_in.bias"], np.asarray(other.prior.conv_in.bias))


def test_lorenz96_training_loss_falls():
    problem = pk.lorenz96(n_windows=4, window_length=6, state_dim=16, seed=0)
    model = vd.build_model(
        pk.FourDVarNetConfig(state_shape=problem.truth.shape[2:], n_time=problem.truth.shape[1], hidden_dim=4,
                             prior_hidden_dim=4, n_solver_steps=3, padding="circular",
                             solver_adjoint=pk.TruncatedAdjoint(2)),
        seed=0,
    )
    batch = vd.make_batch(problem.obs, target=problem.truth)
    optimizer, opt_state = vd.make_optimizer(pk.OptimizerConfig(lr=2e-2), model)
    first = float(vd.eval_step(model, batch))
    for _ in range(40):
        model, opt_state, _loss = vd.train_step(model, batch, optimizer, opt_state)
    assert float(vd.eval_step(model, batch)) < 0.8 * first


def test_train_step_is_functional_in_params_and_opt_state(model):
    """An older (model, opt_state) gives the same next step, bit for bit."""
    batch = _batch()
    optimizer, state = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2, clip_norm=0.05), model)
    history = []
    current = model
    for _ in range(3):
        current, state, _ = vd.train_step(current, batch, optimizer, state)
        history.append((current, state))
    replayed, replayed_state, _ = vd.train_step(history[0][0], batch, optimizer, history[0][1])
    expected, expected_state = history[1]
    for a, b in zip(jax.tree.leaves((replayed, replayed_state)), jax.tree.leaves((expected, expected_state)),
                    strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_make_train_step_takes_any_loss_and_compiles_ahead(model):
    batch = _batch()
    optimizer, state = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2), model)

    def half_loss(m, b):
        return 0.5 * vd.train_loss_fn(m, b)

    step = vd.make_train_step(half_loss, name="half_step")
    new_model, _, loss = step(model, batch, optimizer, state)
    assert float(loss) == pytest.approx(0.5 * float(vd.train_loss_fn(model, batch)), rel=1e-12)
    compiled = step.compile(model, batch, optimizer, state)
    again, _, _ = compiled(model, batch, optimizer, state)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(new_model), strict=True))
    bad = vd.Batch1D(batch.input, batch.mask, batch.target.at[0, 0, 0].set(jnp.inf))
    with pytest.raises(FloatingPointError, match="^half_step: non-finite loss"):
        compiled(model, bad, optimizer, state)


def test_a_nan_target_is_no_target_in_value_and_gradient(model):
    # Land: the loss is the mean over the points that have a target, and the gradient of the
    # parameters equals the one of the same batch with those points' errors cut out by hand.
    rng = np.random.default_rng(3)
    truth = rng.standard_normal((B, T, N))
    land = np.zeros((B, T, N), bool)
    land[..., :3] = True
    obs = np.where(rng.random((B, T, N)) < 0.5, truth, np.nan)
    obs[land] = np.nan
    batch = vd.make_batch(obs, target=np.where(land, np.nan, truth))
    pred = np.asarray(model(batch))
    assert float(vd.train_loss_fn(model, batch)) == pytest.approx(np.mean((pred - truth)[~land] ** 2), rel=1e-12)

    def cut_by_hand(m):
        return jnp.sum(((m(batch) - truth) ** 2)[..., 3:]) / (~land).sum()

    _, grads = vd.loss_and_grads(model, batch)
    expected = eqx.filter_grad(cut_by_hand)(model)
    for name in pk.schema(model.config):
        np.testing.assert_allclose(grads[name], np.asarray(get_param(expected, name)), rtol=1e-10, atol=1e-14)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    with pytest.raises(ValueError, match="target is NaN everywhere"):
        vd.make_batch(obs, target=np.full((B, T, N), np.nan))


def test_a_schedule_resumes_from_the_step_it_reached(model):
    """optax keeps the schedule's count in the optimizer state: the export of a run stopped after
    2 steps, loaded into a fresh state, takes the same third step, at the third step's rate."""
    batch = _batch()
    config = pk.OptimizerConfig(lr=1e-2, schedule=pk.WarmupCosineSchedule(2, 6, end_fraction=0.1))
    optimizer, state = vd.make_optimizer(config, model)
    current = model
    for _ in range(2):
        current, state, _ = vd.train_step(current, batch, optimizer, state)
    arrays = vd.export_optimizer_state(state)
    straight, _, _ = vd.train_step(current, batch, optimizer, state)
    fresh, fresh_state = vd.make_optimizer(config, model)
    resumed, _, _ = vd.train_step(current, batch, fresh, vd.import_optimizer_state(fresh, fresh_state, arrays))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # Not the same step as from a fresh count: the position along the schedule matters.
    restarted, _, _ = vd.train_step(current, batch, fresh, fresh_state)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(eqx.filter(straight, eqx.is_array)),
                                                         jax.tree.leaves(eqx.filter(restarted, eqx.is_array)),
                                                         strict=True))
