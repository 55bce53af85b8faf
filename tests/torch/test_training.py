"""Losses, optimizer maths, train/eval steps, parameter export/import, bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipekit_cycle as pk
import vardax_torch as vd
from pipekit_cycle import validation
from vardax_torch import training

F64 = torch.float64


def make_problem(state_shape=(8,), batch=2, n_time=4, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    shape = (batch, n_time, *state_shape)
    truth = rng.normal(size=shape)
    obs = np.where(rng.random(shape) < 0.5, truth, np.nan)
    return obs, truth, vd.make_batch(obs, target=truth, dtype=dtype)


def make_model(n_steps=3, **kwargs):
    return vd.FourDVarNet1D(8, 4, hidden_dim=3, prior_hidden_dim=3, n_solver_steps=n_steps, dtype=F64, **kwargs)


def error_of(fn, *args, **kwargs):
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value)


def test_losses_and_eval_step():
    model = make_model()
    _, truth, batch = make_problem()
    pred = model(batch)
    assert float(vd.reconstruction_loss(pred.detach(), batch.target)) == pytest.approx(
        float(((vd.to_numpy(pred) - truth) ** 2).mean()), rel=1e-14)
    loss = vd.eval_step(model, batch)
    assert not loss.requires_grad
    assert float(loss) == pytest.approx(float(vd.train_loss_fn(model, batch).detach()), rel=1e-14)
    value, grads = vd.loss_and_grads(model, batch)
    assert value == pytest.approx(float(loss), rel=1e-14)
    assert {k: v.shape for k, v in grads.items()} == pk.schema(model.config)


@pytest.mark.parametrize(
    "cfg",
    [
        pk.OptimizerConfig(name="adam", lr=1e-2, betas=(0.8, 0.95), eps=1e-7, weight_decay=0.1, clip_norm=0.05),
        pk.OptimizerConfig(name="sgd", lr=0.05, weight_decay=0.01, clip_norm=None),
        pk.OptimizerConfig(name="adam", lr=1e-2, clip_norm=0.05,
                           schedule=pk.WarmupCosineSchedule(1, 3, init_fraction=0.5, end_fraction=0.2)),
    ],
)
def test_train_step_follows_the_contract_maths(cfg):
    """Three steps against a hand-written numpy optimizer: clip (optax formula), coupled
    weight decay, Adam with bias correction (optax.adam) or plain SGD."""
    model = make_model()
    _, _, batch = make_problem()
    optimizer, state = vd.make_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.Adam if cfg.name == "adam" else torch.optim.SGD)
    assert isinstance(state, dict) and state["param_groups"][0]["clip_norm"] == cfg.clip_norm
    params = vd.export_params(model)
    mu = {n: np.zeros_like(p) for n, p in params.items()}
    nu = {n: np.zeros_like(p) for n, p in params.items()}
    for t in range(1, 4):
        _, grads = vd.loss_and_grads(model, batch)
        if cfg.clip_norm is not None:
            norm = np.sqrt(sum((g**2).sum() for g in grads.values()))
            assert norm > cfg.clip_norm  # the clip is active
            grads = {n: g * cfg.clip_norm / max(norm, cfg.clip_norm) for n, g in grads.items()}
        for n, p in params.items():
            g = grads[n] + cfg.weight_decay * p
            if cfg.name == "adam":
                b1, b2 = cfg.betas
                mu[n] = b1 * mu[n] + (1 - b1) * g
                nu[n] = b2 * nu[n] + (1 - b2) * g**2
                update = (mu[n] / (1 - b1**t)) / (np.sqrt(nu[n] / (1 - b2**t)) + cfg.eps)
            else:
                update = g
            params[n] = p - cfg.lr * cfg.schedule.factor(t - 1) * update
        same_model, state, loss = vd.train_step(model, batch, optimizer, state)
        assert same_model is model and np.isfinite(float(loss))
        got = vd.export_params(model)
        for n in params:
            assert np.allclose(got[n], params[n], rtol=1e-12, atol=1e-14), n
    assert all(p.grad is None for p in model.parameters())


def test_train_step_reloads_the_given_state():
    model = make_model()
    _, _, batch = make_problem()
    optimizer, state0 = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2), model)
    start = vd.export_params(model)
    _, state1, _ = vd.train_step(model, batch, optimizer, state0)
    after_one = vd.export_params(model)
    vd.import_params(model, start)
    _, fresh = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2), model)
    vd.train_step(model, batch, optimizer, fresh)  # back to the empty state: the same first step
    assert all(np.array_equal(after_one[n], v) for n, v in vd.export_params(model).items())
    assert state1["state"][0]["step"] == 1


def _snapshot(model, optimizer):
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = optimizer.state_dict()
    opt = {i: {k: v.clone() for k, v in s.items()} for i, s in state["state"].items()}
    return params, opt, repr(state["param_groups"])


def _assert_same(snap, model, optimizer):
    params, opt, groups = snap
    for n, p in model.named_parameters():
        assert p.detach().numpy().tobytes() == params[n].numpy().tobytes()
    state = optimizer.state_dict()
    assert repr(state["param_groups"]) == groups
    for i, s in state["state"].items():
        for k, v in s.items():
            assert v.numpy().tobytes() == opt[i][k].numpy().tobytes()


def test_non_finite_loss_or_gradient_changes_nothing(monkeypatch):
    model = make_model()
    _, _, batch = make_problem()
    optimizer, state = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2), model)
    model, state, _ = vd.train_step(model, batch, optimizer, state)  # non-empty Adam state
    snap = _snapshot(model, optimizer)
    bad_target = batch.target.clone()
    bad_target[0, 0, 0] = float("inf")  # NaN would be no target there (land)
    bad = vd.Batch1D(batch.input, batch.mask, bad_target)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        vd.train_step(model, bad, optimizer, state)
    _assert_same(snap, model, optimizer)

    real_grads = training._grads

    def nan_grads(loss, params):
        grads = real_grads(loss, params)
        grads[-1] = torch.full_like(grads[-1], float("inf"))
        return grads

    monkeypatch.setattr(training, "_grads", nan_grads)
    with pytest.raises(FloatingPointError, match="non-finite gradient"):
        vd.train_step(model, batch, optimizer, state)
    _assert_same(snap, model, optimizer)
    assert all(p.grad is None for p in model.parameters())


def test_export_import_round_trip_and_validation():
    model, other = make_model(), vd.FourDVarNet1D(8, 4, hidden_dim=3, prior_hidden_dim=3, n_solver_steps=3,
                                                  seed=5, dtype=F64)
    _, _, batch = make_problem()
    params = vd.export_params(model)
    assert {n: a.shape for n, a in params.items()} == pk.schema(model.config)
    assert all(a.dtype == np.float64 for a in params.values())
    assert not torch.equal(other(batch), model(batch))
    assert vd.import_params(other, params) is other
    assert torch.equal(other(batch), model(batch))
    # float32 parameters are cast to the model's dtype
    vd.import_params(other, {n: a.astype(np.float32) for n, a in params.items()})
    assert other.dtype == F64
    assert np.allclose(vd.export_params(other)["prior.conv_in.weight"], params["prior.conv_in.weight"], atol=1e-7)
    vd.import_params(other, params)

    before = vd.export_params(other)
    bad_shape = dict(vd.export_params(make_model()))
    bad_shape = {n: (a * 0 + 7 if n != "grad_mod.conv_out.bias" else np.zeros(5)) for n, a in bad_shape.items()}
    missing = {n: a for n, a in params.items() if n != "prior.bilin_1.bias"}
    non_finite = {n: (a if n != "grad_mod.gates.bias" else a * np.nan) for n, a in params.items()}
    for bad in (bad_shape, missing, non_finite, {**params, "extra": np.zeros(1)}):
        expected = error_of(pk.params.validate_params, bad, other.config)
        assert error_of(vd.import_params, other, bad) == expected
        assert all(np.array_equal(before[n], a) for n, a in vd.export_params(other).items())  # nothing half-done


def test_bad_input_errors_use_the_shared_words():
    model = make_model()
    obs, truth, batch = make_problem()
    # make_batch: rank, integer obs, target shape
    assert error_of(vd.make_batch, obs[0]) == error_of(validation.as_observations, obs[0])
    assert error_of(vd.make_batch, obs[0])[0] is ValueError
    ints = np.zeros((2, 4, 8), dtype=np.int64)
    assert error_of(vd.make_batch, ints) == error_of(validation.as_observations, ints)
    assert error_of(vd.make_batch, ints)[0] is TypeError
    assert error_of(vd.make_batch, obs, truth[:, :2]) == error_of(validation.as_observations, obs, truth[:, :2])
    # a grid smaller than the kernel (any other size is mapped) / mask of another shape / dtype mismatch
    _, _, wrong = make_problem((2,))
    expected = error_of(validation.check_batch_grid, (2, 4, 2), (2, 4, 2), (2, 4, 2), ndim=1, n_time=4, kernel_size=3)
    assert error_of(model, wrong) == expected and expected[0] is ValueError
    assert tuple(model(make_problem((6,))[2]).shape) == (2, 4, 6)
    bad_mask = vd.Batch1D(batch.input, batch.mask[:, :2], batch.target)
    expected = error_of(validation.check_batch_grid, (2, 4, 8), (2, 2, 8), None, ndim=1, n_time=4, kernel_size=3)
    assert error_of(model, bad_mask) == expected
    _, _, f32 = make_problem(dtype="float32")
    expected = error_of(validation.check_same_dtype, "float32", "float64")
    assert error_of(model, f32) == expected and expected[0] is TypeError
    assert error_of(vd.eval_step, model, f32) == expected
    # a 2D batch to a 1D model
    _, _, two_d = make_problem((2, 8))
    assert error_of(model, two_d)[0] is ValueError
    # train_loss_fn without target
    no_target = vd.make_batch(obs, dtype="float64")
    expected = error_of(validation.require_target, None, "train_loss_fn")
    assert error_of(vd.train_loss_fn, model, no_target) == expected and expected[0] is ValueError
    optimizer, state = vd.make_optimizer(pk.OptimizerConfig(), model)
    assert error_of(vd.train_step, model, no_target, optimizer, state) == expected


def test_train_step_is_functional_in_params_and_opt_state():
    """The returned opt_state is a snapshot: replaying step 2 from step 1's (params, state),
    after later steps ran, gives step 2's parameters and state bit for bit."""
    model = make_model()
    _, _, batch = make_problem()
    optimizer, state = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2, clip_norm=0.05), model)
    history = []
    for _ in range(3):
        model, state, _ = vd.train_step(model, batch, optimizer, state)
        history.append((vd.export_params(model), state, vd.export_optimizer_state(state)))
    first_params, first_state, first_arrays = history[0]
    assert all(np.array_equal(v, vd.export_optimizer_state(first_state)[k]) for k, v in first_arrays.items())
    assert first_state["state"][0]["step"] == 1  # not advanced by the later steps
    vd.import_params(model, first_params)
    model, replayed, _ = vd.train_step(model, batch, optimizer, first_state)
    second_params, _, second_arrays = history[1]
    for n, v in vd.export_params(model).items():
        assert v.tobytes() == second_params[n].tobytes(), n
    for k, v in vd.export_optimizer_state(replayed).items():
        assert v.tobytes() == second_arrays[k].tobytes(), k


def test_make_train_step_takes_any_loss_and_reads_the_device_once(monkeypatch):
    model = make_model()
    _, _, batch = make_problem()
    optimizer, state = vd.make_optimizer(pk.OptimizerConfig(lr=1e-2), model)

    def half_loss(m, b):
        return 0.5 * vd.train_loss_fn(m, b)

    step = vd.make_train_step(half_loss, name="half_step")
    assert step.__name__ == "half_step"
    # Host reads of tensor values, outside optimizer.step: torch's Adam reads its own step
    # counters there, which live on the host (not capturable), so they are no device sync.
    reads, inside_optimizer = [], []
    for method in ("__bool__", "__float__", "item", "tolist"):
        real = getattr(torch.Tensor, method)

        def counted(self, *args, _real=real, _method=method, **kwargs):
            if not inside_optimizer:
                reads.append(_method)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    real_step = optimizer.step

    def optimizer_step(*args, **kwargs):
        inside_optimizer.append(True)
        try:
            return real_step(*args, **kwargs)
        finally:
            inside_optimizer.clear()

    monkeypatch.setattr(optimizer, "step", optimizer_step)
    expected = float(half_loss(model, batch).detach())
    reads.clear()
    _, state, loss = step(model, batch, optimizer, state)
    assert reads == ["tolist"]  # the finiteness flags of loss and every gradient, once
    monkeypatch.undo()
    assert float(loss) == expected
    bad_target = batch.target.clone()
    bad_target[0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="^half_step: non-finite loss"):
        step(model, vd.Batch1D(batch.input, batch.mask, bad_target), optimizer, state)


def test_a_nan_target_is_no_target_in_value_and_gradient():
    # Land: the mean over the points that have a target; the gradient equals the one of the
    # same batch with those points' errors cut out by hand (plain autograd).
    model = make_model()
    obs, truth, _ = make_problem(seed=3)
    land = np.zeros(truth.shape, bool)
    land[..., :3] = True
    obs[land] = np.nan
    batch = vd.make_batch(obs, target=np.where(land, np.nan, truth), dtype="float64")
    value, grads = vd.loss_and_grads(model, batch)
    pred = model(batch)
    cut = ((pred - torch.as_tensor(truth)) ** 2)[..., 3:].sum() / (~land).sum()
    assert value == pytest.approx(float(cut.detach()), rel=1e-12)
    names, params = zip(*model.named_parameters(), strict=True)
    expected = torch.autograd.grad(cut, list(params))
    for name, grad in zip(names, expected, strict=True):
        np.testing.assert_allclose(grads[name], grad.numpy(), rtol=1e-10, atol=1e-14)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    with pytest.raises(ValueError, match="target is NaN everywhere"):
        vd.make_batch(obs, target=np.full(truth.shape, np.nan))


def test_a_schedule_resumes_from_the_step_it_reached():
    """The steps taken along a schedule are in the optimizer state and its export: a run that
    stops after 2 steps and loads its export into a fresh optimizer takes the same third step."""
    schedule = pk.OptimizerConfig(name="adam", lr=1e-2, schedule=pk.WarmupCosineSchedule(2, 6, end_fraction=0.1))
    _, _, batch = make_problem()
    model = make_model()
    optimizer, state = vd.make_optimizer(schedule, model)
    for _ in range(2):
        model, state, _ = vd.train_step(model, batch, optimizer, state)
    arrays, params = vd.export_optimizer_state(state), vd.export_params(model)
    assert arrays["schedule.steps"].tolist() == [2] and state["param_groups"][0]["scheduled_steps"] == 2
    vd.train_step(model, batch, optimizer, state)
    straight = vd.export_params(model)
    again = vd.import_params(make_model(), params)
    fresh, fresh_state = vd.make_optimizer(schedule, again)
    fresh_state = vd.import_optimizer_state(fresh, fresh_state, arrays)
    vd.train_step(again, batch, fresh, fresh_state)
    assert all(np.array_equal(straight[n], a) for n, a in vd.export_params(again).items())
    # A constant rate exports no position; the two cannot be mixed up on import.
    constant, constant_state = vd.make_optimizer(pk.OptimizerConfig(name="adam", lr=1e-2), make_model())
    assert "schedule.steps" not in vd.export_optimizer_state(vd.train_step(make_model(), batch, constant,
                                                                           constant_state)[1])
    with pytest.raises(ValueError, match="constant"):
        vd.import_optimizer_state(constant, constant_state, arrays)
    scheduled, scheduled_state = vd.make_optimizer(schedule, make_model())
    unplaced = {k: v for k, v in arrays.items() if k != "schedule.steps"}
    with pytest.raises(ValueError, match="schedule.steps"):
        vd.import_optimizer_state(scheduled, scheduled_state, unplaced)
