"""Modules, model construction, batches, statelessness, and the maths against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipekit_cycle as pk
import vardax_torch as vd
from pipekit_cycle.protocols import GradModulator, InnerSolver, Prior

F64 = torch.float64


def make_problem(state_shape=(8,), batch=2, n_time=4, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    shape = (batch, n_time, *state_shape)
    truth = rng.normal(size=shape)
    obs = np.where(rng.random(shape) < 0.5, truth, np.nan)
    return obs, truth, vd.make_batch(obs, target=truth, dtype=dtype)


def test_protocols_and_attributes():
    model = vd.FourDVarNet1D(8, 4, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3, dtype=F64)
    assert isinstance(model, torch.nn.Module) and isinstance(model, InnerSolver)
    assert isinstance(model.grad_mod, GradModulator) and isinstance(model.prior, Prior)
    assert isinstance(vd.ConvLSTMGradMod2D(4, 3), GradModulator) and isinstance(vd.BilinAEPrior2D(4, 3), Prior)
    assert model.solver_adjoint == vd.RecursiveCheckpointAdjoint()
    assert model.dtype == F64
    assert model.config == pk.FourDVarNetConfig(state_shape=(8,), n_time=4, hidden_dim=4, prior_hidden_dim=4,
                                                n_solver_steps=3)
    names = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert names == pk.schema(model.config)


@pytest.mark.parametrize("state_shape", [(8,), (3, 5)])
def test_build_model_matches_constructor_and_seed(state_shape):
    cfg = pk.FourDVarNetConfig(state_shape=state_shape, n_time=4, hidden_dim=3, prior_hidden_dim=2,
                               n_solver_steps=2, padding="circular", solver_adjoint=pk.TruncatedAdjoint(2))
    a, b, c = (vd.build_model(cfg, seed=s, dtype=F64) for s in (0, 0, 1))
    assert type(a) is (vd.FourDVarNet1D if len(state_shape) == 1 else vd.FourDVarNet2D)
    assert a.config == cfg and a.solver_adjoint == vd.KStepAdjoint(2)
    pa, pb, pc = (vd.export_params(m) for m in (a, b, c))
    assert all(np.array_equal(pa[n], pb[n]) for n in pa)
    assert not all(np.array_equal(pa[n], pc[n]) for n in pa)
    gen_model = vd.build_model(cfg, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert all(np.array_equal(pa[n], vd.export_params(gen_model)[n]) for n in pa)
    f32 = vd.build_model(cfg, seed=0, dtype="float32")
    assert f32.dtype == torch.float32
    assert np.allclose(vd.export_params(f32)["prior.conv_in.weight"], pa["prior.conv_in.weight"], atol=1e-7)


def test_default_dtype_switch_is_followed():
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        model = vd.FourDVarNet1D(8, 4, hidden_dim=2, prior_hidden_dim=2, n_solver_steps=1)
        batch = vd.make_batch(np.ones((1, 4, 8)))
        assert model.dtype == batch.input.dtype == batch.mask.dtype == torch.float64
        torch.set_default_dtype(torch.float32)
        assert vd.make_batch(np.ones((1, 4, 8))).input.dtype == torch.float32
        assert vd.FourDVarNet1D(8, 4, hidden_dim=2, prior_hidden_dim=2).dtype == torch.float32
    finally:
        torch.set_default_dtype(old)


def test_make_batch_and_to_numpy():
    obs, truth, batch = make_problem((3, 4))
    assert isinstance(batch, vd.Batch2D)
    assert np.array_equal(vd.to_numpy(batch.mask), np.isfinite(obs).astype(float))
    assert np.array_equal(vd.to_numpy(batch.input), np.nan_to_num(obs))
    assert np.array_equal(vd.to_numpy(batch.target), truth)
    assert vd.make_batch(obs[:, :, 0], dtype=np.float32).input.dtype == torch.float32
    assert vd.make_batch(obs[:, :, 0], dtype=torch.float64).target is None
    with pytest.raises(TypeError, match="float32 or float64"):
        vd.make_batch(obs, dtype="int32")


@pytest.mark.parametrize("state_shape", [(8,), (3, 4)])
def test_no_state_between_calls_and_batch_independence(state_shape):
    _, _, batch = make_problem(state_shape, batch=3)
    cls_args = (8, 4) if len(state_shape) == 1 else (4, *state_shape)
    cls = vd.FourDVarNet1D if len(state_shape) == 1 else vd.FourDVarNet2D
    model = cls(*cls_args, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=4, dtype=F64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    first, second = model(batch), model(batch)
    assert torch.equal(first, second)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    single = type(batch)(batch.input[1:2], batch.mask[1:2], batch.target[1:2])
    assert torch.allclose(model(single)[0], first[1], rtol=0, atol=1e-13)
    with torch.no_grad():
        assert torch.equal(model(batch), first.detach())


def test_with_adjoint_shares_parameters():
    model = vd.FourDVarNet1D(8, 4, hidden_dim=2, prior_hidden_dim=2, dtype=F64)
    other = model.with_adjoint(pk.TruncatedAdjoint(3))
    assert other.solver_adjoint == vd.KStepAdjoint(3) and model.solver_adjoint == vd.RecursiveCheckpointAdjoint()
    assert all(p is q for p, q in zip(model.parameters(), other.parameters(), strict=True))
    assert other.config.solver_adjoint == pk.TruncatedAdjoint(3)


def test_grad_mod_carry_and_shape_errors():
    gm = vd.ConvLSTMGradMod1D(4, 3, dtype=F64)
    x = torch.randn(2, 4, 8, dtype=F64)
    carry = gm.init_carry(x)
    assert isinstance(carry, vd.LSTMState1D) and carry.hidden.shape == (2, 3, 8)
    assert not carry.hidden.any() and not carry.cell.any()
    update, new = gm(x, x, carry)
    assert update.shape == x.shape and isinstance(new, vd.LSTMState1D)
    assert not carry.hidden.any()  # the input carry is untouched (values, not state)
    with pytest.raises(ValueError, match="same shape"):
        gm(x[:, :, :4], x, carry)
    with pytest.raises(ValueError, match="carry must be"):
        gm(x, x, (carry.hidden[:, :2], carry.cell))
    assert isinstance(vd.ConvLSTMGradMod2D(4, 3).init_carry(torch.zeros(1, 4, 2, 3)), vd.LSTMState2D)


# ----------------------------------------------------------------------------- numpy maths


def np_conv1d(x, w, b, padding):
    pad = w.shape[-1] // 2
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)), mode="wrap" if padding == "circular" else "constant")
    n = x.shape[-1]
    out = np.zeros((x.shape[0], w.shape[0], n))
    for j in range(w.shape[-1]):
        out += np.einsum("oi,bin->bon", w[:, :, j], xp[:, :, j:j + n])
    return out + b[None, :, None]


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_prior_grad_mod_and_cost_against_numpy(padding):
    model = vd.FourDVarNet1D(8, 4, hidden_dim=3, prior_hidden_dim=2, obs_weight=0.7, prior_weight=1.3,
                             padding=padding, dtype=F64)
    p = vd.export_params(model)
    _, _, batch = make_problem()
    x = torch.randn(2, 4, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    xn = x.numpy()

    def c(name, z):
        return np_conv1d(z, p[f"{name}.weight"], p[f"{name}.bias"], padding)

    h = c("prior.conv_hidden", np.maximum(c("prior.conv_in", xn), 0))
    phi = c("prior.conv_out", np.concatenate([c("prior.bilin_1", h), c("prior.bilin_21", h) * c("prior.bilin_22", h)],
                                             axis=1))
    assert np.allclose(vd.to_numpy(model.prior(x)), phi, rtol=1e-12, atol=1e-13)

    hid = np.random.default_rng(1).normal(size=(2, 3, 8))
    cell = np.random.default_rng(2).normal(size=(2, 3, 8))
    g = np.random.default_rng(4).normal(size=(2, 4, 8))
    gates = c("grad_mod.gates", np.concatenate([g, xn, hid], axis=1))
    i, f, gg, o = np.split(gates, 4, axis=1)
    cell_new = sigmoid(f) * cell + sigmoid(i) * np.tanh(gg)
    hid_new = sigmoid(o) * np.tanh(cell_new)
    update, carry = model.grad_mod(torch.tensor(g), x, vd.LSTMState1D(torch.tensor(hid), torch.tensor(cell)))
    assert np.allclose(vd.to_numpy(carry.cell), cell_new, rtol=1e-12, atol=1e-13)
    assert np.allclose(vd.to_numpy(carry.hidden), hid_new, rtol=1e-12, atol=1e-13)
    assert np.allclose(vd.to_numpy(update), c("grad_mod.conv_out", hid_new), rtol=1e-12, atol=1e-13)

    y, m = vd.to_numpy(batch.input), vd.to_numpy(batch.mask)
    cost = 0.7 * (m * (xn - y) ** 2).sum(axis=(1, 2)) + 1.3 * ((xn - phi) ** 2).sum(axis=(1, 2))
    assert np.allclose(vd.to_numpy(vd.variational_cost(model, x, batch)), cost, rtol=1e-12)

    # One solver step, with dU/dx checked by central finite differences of the numpy cost.
    def np_cost_total(xv):
        hh = c("prior.conv_hidden", np.maximum(c("prior.conv_in", xv), 0))
        ph = c("prior.conv_out", np.concatenate([c("prior.bilin_1", hh), c("prior.bilin_21", hh)
                                                 * c("prior.bilin_22", hh)], axis=1))
        return float((0.7 * m * (xv - y) ** 2).sum() + (1.3 * (xv - ph) ** 2).sum())

    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(vd.variational_cost(model, xg, batch).sum(), xg)
    eps, idx = 1e-6, [(0, 0, 0), (1, 3, 7), (0, 2, 4)]
    for ix in idx:
        e = np.zeros_like(xn)
        e[ix] = eps
        fd = (np_cost_total(xn + e) - np_cost_total(xn - e)) / (2 * eps)
        assert fd == pytest.approx(float(grad[ix]), rel=1e-6, abs=1e-8)


def test_with_adjoint_shares_parameters_but_no_module_state():
    model = vd.build_model(pk.FourDVarNetConfig(state_shape=(8,), n_time=3, hidden_dim=2, prior_hidden_dim=2), seed=0)
    clone = model.with_adjoint("truncated:1")
    assert all(a is b for a, b in zip(model.parameters(), clone.parameters(), strict=True))
    clone.eval()
    assert model.training and model.prior.training and not clone.prior.training
    calls = []
    clone.prior.register_forward_hook(lambda *args: calls.append(1))
    batch = vd.make_batch(np.random.default_rng(0).normal(size=(1, 3, 8)))
    model(batch)
    assert calls == []
    clone(batch)
    assert len(calls) > 0
    with torch.no_grad():
        next(clone.parameters()).add_(1.0)  # shared: the original sees it
    assert torch.equal(next(model.parameters()), next(clone.parameters()))


def test_device_is_kept_and_a_mismatch_is_a_clear_error():
    # "meta" is a second device every torch build has: tensors with shapes and no data.
    config = pk.FourDVarNetConfig(state_shape=(6,), n_time=4, n_solver_steps=2, hidden_dim=3, prior_hidden_dim=3)
    obs = np.where(np.arange(24).reshape(1, 4, 6) % 3 == 0, 1.0, np.nan)
    on_meta = vd.build_model(config, seed=0, device="meta")
    assert on_meta.device == torch.device("meta")
    assert all(p.device.type == "meta" for p in on_meta.parameters())
    assert vd.make_batch(obs, target=np.zeros((1, 4, 6)), device="meta").target.device.type == "meta"
    with pytest.raises(ValueError, match=r"batch.input is on cpu but the model is on meta; pass device='meta'"):
        on_meta(vd.make_batch(obs))
    on_cpu = vd.build_model(config, seed=0)
    with pytest.raises(ValueError, match=r"batch.input is on meta but the model is on cpu"):
        on_cpu(vd.make_batch(obs, device="meta"))
    # The parameters were drawn on the host, then moved: the seed gives the same model anywhere.
    same = vd.build_model(config, seed=0, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(on_cpu.parameters(), same.parameters(), strict=True))


# ------------------------------------------------------------------ components (DESIGN 7)

OCEAN = pk.ocean4dvarnet_config((4, 4), 4, n_step=3, hidden_dim=2, prior_hidden_dim=2, dropout=0.0, lbd=2.0)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (pk.FourDVarNetConfig(state_shape=(8,), n_time=4, alpha=0.3, obs_weight=0.5),
         (vd.SumCost(0.5, 1.0), vd.AlphaStep(0.3), vd.StateOutput())),
        (OCEAN, (vd.MeanCost(4.0, 1.0), vd.AnnealedStep(0.2, 3), vd.PriorOutput())),
    ],
    ids=["defaults", "ocean4dvarnet"],
)
def test_components_are_chosen_once_from_the_config(config, expected):
    assert vd.make_components(config) == expected
    model = vd.build_model(config, seed=0)
    assert model.config == config  # the one place the settings live
    assert (model.cost, model.step_rule, model.output) == expected
    mixed = config.replace(cost="sum", step_rule="annealed", output="state")  # each choice on its own
    assert [type(c) for c in vd.make_components(mixed)] == [vd.SumCost, vd.AnnealedStep, vd.StateOutput]


def test_predict_applies_the_output_component():
    _, _, batch = make_problem()
    for output in ("state", "prior"):
        model = vd.build_model(pk.FourDVarNetConfig(state_shape=(8,), n_time=4, hidden_dim=3, prior_hidden_dim=3,
                                                    n_solver_steps=2, output=output), seed=0, dtype=F64)
        with torch.no_grad():
            x = model(batch)
            expected = model.prior(x) if output == "prior" else x
        assert torch.equal(vd.predict(model, batch), expected)


def test_with_adjoint_updates_the_config():
    model = vd.build_model(pk.FourDVarNetConfig(state_shape=(8,), n_time=4, hidden_dim=2, prior_hidden_dim=2), seed=0)
    swapped = model.with_adjoint(pk.TruncatedAdjoint(2))
    assert swapped.config == model.config.replace(solver_adjoint=pk.TruncatedAdjoint(2))
    assert model.config.solver_adjoint == pk.RecursiveCheckpointAdjoint()


def test_the_model_checks_once_and_the_solver_calls_nothing_back(monkeypatch):
    """The model's call checks the batch and resolves the adjoint, once; the solver's functions
    read the model's parts and never call the model's checks."""
    model = vd.build_model(pk.FourDVarNetConfig(state_shape=(8,), n_time=4, hidden_dim=2, prior_hidden_dim=2,
                                                n_solver_steps=2), seed=0, dtype=F64)
    _, _, batch = make_problem()
    calls: list[str] = []
    for name in ("check_batch", "checked_adjoint"):
        method = getattr(vd.FourDVarNet1D, name)
        monkeypatch.setattr(vd.FourDVarNet1D, name,
                            lambda self, *args, _m=method, _n=name: calls.append(_n) or _m(self, *args))
    model(batch, adjoint="truncated:1")
    assert calls == ["check_batch", "checked_adjoint"]
    calls.clear()
    vd.solve_4dvarnet(model, batch, adjoint="truncated:1")
    vd.variational_cost(model, batch.input, batch)
    vd.fixedpoint_unrolled(model, batch, 2)
    assert calls == []
