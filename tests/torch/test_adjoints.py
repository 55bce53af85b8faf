"""Adjoint mapping, RecursiveCheckpoint, KStep (truncated), Implicit, and calibration."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch

import pipekit_cycle as pk
import vardax_torch as vd
from pipekit_cycle import ConvergenceWarning
from vardax_torch import solver

F64 = torch.float64


def make_problem(state_shape=(8,), batch=2, n_time=4, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    shape = (batch, n_time, *state_shape)
    truth = rng.normal(size=shape)
    obs = np.where(rng.random(shape) < 0.5, truth, np.nan)
    return vd.make_batch(obs, target=truth, dtype=dtype)


def make_model(state_shape=(8,), n_steps=6, seed=0, **kwargs):
    common = dict(hidden_dim=4, prior_hidden_dim=4, n_solver_steps=n_steps, seed=seed, dtype=F64, **kwargs)
    if len(state_shape) == 1:
        return vd.FourDVarNet1D(state_shape[0], 4, **common)
    return vd.FourDVarNet2D(4, *state_shape, **common)


def unrolled_grads(model, batch):
    params = list(model.parameters())
    loss = vd.reconstruction_loss(vd.solve_4dvarnet_unrolled(model, batch), batch.target)
    return float(loss.detach()), [g.detach().numpy() for g in torch.autograd.grad(loss, params)]


def max_rel(grads, ref):
    return max(np.abs(g - r).max() / np.abs(r).max() for g, r in zip(grads, ref, strict=True))


def graph_nodes(tensor):
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return seen


# ----------------------------------------------------------------------------- mapping


@pytest.mark.parametrize(
    ("spec", "native"),
    [
        (pk.RecursiveCheckpointAdjoint(), vd.RecursiveCheckpointAdjoint()),
        (pk.RecursiveCheckpointAdjoint(3), vd.RecursiveCheckpointAdjoint(3)),
        (pk.TruncatedAdjoint(1), vd.OneStepAdjoint()),
        (pk.TruncatedAdjoint(3), vd.KStepAdjoint(3)),
        (pk.ImplicitAdjoint("dense", 1e-8, 1e-9, 50), vd.ImplicitAdjoint("dense", 1e-8, 1e-9, 50)),
        ("truncated:2", vd.KStepAdjoint(2)),
    ],
)
def test_spec_maps_to_native(spec, native):
    mapped = vd.to_torch_adjoint(spec)
    assert mapped == native and type(mapped) is type(native)
    assert isinstance(mapped, vd.AbstractAdjoint)
    assert mapped.to_spec() == pk.as_adjoint_spec(spec)
    assert vd.to_native_adjoint is vd.to_torch_adjoint


def test_duck_typed_spec_and_native_passthrough():
    class TruncatedAdjoint:  # same name and fields as the pipekit spec, another library
        k = 4

    assert vd.to_native_adjoint(TruncatedAdjoint()) == vd.KStepAdjoint(4)
    native = vd.KStepAdjoint(2)
    assert vd.to_native_adjoint(native) is native
    # A native adjoint shares its class name with the spec: isinstance must win.
    implicit = vd.ImplicitAdjoint("neumann")
    assert vd.to_native_adjoint(implicit) is implicit
    assert vd.OneStepAdjoint().k == 1 and isinstance(vd.OneStepAdjoint(), vd.KStepAdjoint)


@pytest.mark.parametrize("spec", [pk.DirectAdjoint(), pk.BacksolveAdjoint(), "direct", "backsolve"])
def test_dynamics_only_specs_raise_shared_error(spec):
    with pytest.raises(ValueError) as expected:
        pk.check_layer(spec, "inner_solve")
    with pytest.raises(ValueError) as got:
        vd.to_native_adjoint(spec)
    assert str(got.value) == str(expected.value)
    assert "'dynamics' layer" in str(got.value)
    with pytest.raises(ValueError, match="'dynamics' layer"):
        make_model(solver_adjoint=spec)


def test_dynamics_layer_delegates_lazily(monkeypatch):
    calls = []
    fake = types.ModuleType("vardax_torch.dynamics")
    fake.to_dynamics_adjoint = lambda spec: calls.append(spec) or ("dynamics", spec)
    monkeypatch.setitem(sys.modules, "vardax_torch.dynamics", fake)
    assert vd.to_native_adjoint(pk.BacksolveAdjoint(), layer="dynamics") == ("dynamics", pk.BacksolveAdjoint())
    assert calls == [pk.BacksolveAdjoint()]


def test_invalid_native_values_and_layer():
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        vd.KStepAdjoint(0)
    with pytest.raises(ValueError, match="linear_solver"):
        vd.ImplicitAdjoint("cg")
    with pytest.raises(ValueError, match="unknown layer"):
        vd.to_native_adjoint(pk.TruncatedAdjoint(), layer="outer")


# ----------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize("state_shape", [(8,), (3, 4)])
@pytest.mark.parametrize("checkpoints", [None, 1, 2, 4, 6])
def test_checkpoint_gradients_equal_unrolled(state_shape, checkpoints):
    model, batch = make_model(state_shape, n_steps=6, padding="circular"), make_problem(state_shape)
    ref_loss, ref = unrolled_grads(model, batch)
    loss, grads = vd.loss_and_grads(model, batch, adjoint=pk.RecursiveCheckpointAdjoint(checkpoints))
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    assert max_rel(list(grads.values()), ref) < 1e-10


def test_recursive_checkpoint_default_recurses_and_is_exact():
    # K=20: round(sqrt(20)) = 4 segments of 5 > leaf (4) steps: each recomputed as 2 sub-segments;
    # the last one runs at once as a stored segment of 2 steps and a live tail of 3.
    model, batch = make_model(n_steps=20), make_problem()
    adjoint = vd.RecursiveCheckpointAdjoint()
    assert adjoint.n_segments(20) == 4 and adjoint.n_segments(64) == 8 and adjoint.n_segments(8) == 3
    _ref_loss, ref = unrolled_grads(model, batch)
    _loss, grads = vd.loss_and_grads(model, batch, adjoint=adjoint)
    assert max_rel(list(grads.values()), ref) < 1e-10
    # In the graph: 4 segment nodes and the live tail (3 steps, fewer than a 4-step unrolled solve).
    out = model(batch)
    names = [type(node).__name__ for node in graph_nodes(out)]
    assert names.count("_SegmentBackward") == 4
    leaf_nodes = len(graph_nodes(vd.solve_4dvarnet_unrolled(make_model(n_steps=4), batch)))
    assert len(names) < leaf_nodes < len(graph_nodes(vd.solve_4dvarnet_unrolled(model, batch))) / 4


# ----------------------------------------------------------------------------- truncated


def test_kstep_forward_identical_and_gradient_regimes():
    model, batch = make_model(n_steps=5), make_problem()
    reference = vd.solve_4dvarnet_unrolled(model, batch)
    _, exact = unrolled_grads(model, batch)
    for k in range(1, 8):
        assert torch.equal(model(batch, adjoint=vd.KStepAdjoint(k)), reference)
        _, grads = vd.loss_and_grads(model, batch, adjoint=pk.TruncatedAdjoint(k))
        error = max_rel(list(grads.values()), exact)
        if k >= 5:
            assert error < 1e-12
        else:
            assert error > 1e-3


@pytest.mark.parametrize("k", [1, 2])
def test_kstep_cuts_state_and_lstm_carry(k):
    """The truncated gradient is the gradient of k live steps started from the warm-up's
    (x, hidden, cell) fed in as constants."""
    n_steps = 5
    model, batch = make_model(n_steps=n_steps), make_problem()
    params = dict(model.named_parameters())
    x0 = batch.mask * batch.input
    h0, c0 = model.grad_mod.init_carry(x0)
    warm = solver.run_steps(params, model.statics, x0, h0, c0, batch.input, batch.mask, n_steps - k, live=False)
    x_w, h_w, c_w = (torch.tensor(t.numpy()) for t in warm)  # plain constants
    out = solver.run_steps(params, model.statics, x_w, h_w, c_w, batch.input, batch.mask, k, live=True)[0]
    loss = vd.reconstruction_loss(out, batch.target)
    expected = [g.numpy() for g in torch.autograd.grad(loss, list(params.values()))]
    _, grads = vd.loss_and_grads(model, batch, adjoint=vd.KStepAdjoint(k))
    assert max_rel(list(grads.values()), expected) < 1e-13
    # Had the carry NOT been cut (state cut only), the gradient would differ.
    live_warm = solver.run_steps(params, model.statics, x0, h0, c0, batch.input, batch.mask, n_steps - k, live=True)
    out_c = solver.run_steps(params, model.statics, x_w, live_warm[1], live_warm[2], batch.input, batch.mask, k,
                             live=True)[0]
    loss_c = vd.reconstruction_loss(out_c, batch.target)
    carried = [g.numpy() for g in torch.autograd.grad(loss_c, list(params.values()))]
    assert max_rel(carried, expected) > 1e-4


def test_kstep_graph_does_not_grow_with_steps():
    batch = make_problem()
    sizes = [len(graph_nodes(make_model(n_steps=n)(batch, adjoint=vd.OneStepAdjoint()))) for n in (2, 8)]
    assert sizes[0] == sizes[1]


# ----------------------------------------------------------------------------- implicit


def contractive_model(state_shape, **kwargs):
    model = make_model(state_shape, **kwargs)
    with torch.no_grad():
        for p in model.prior.parameters():
            p.mul_(0.5)
    return model


@pytest.mark.parametrize("state_shape", [(8,), (3, 4)])
@pytest.mark.parametrize("linear_solver", ["auto", "gmres", "neumann", "dense"])
def test_implicit_matches_long_unrolled_iteration(state_shape, linear_solver):
    model, batch = contractive_model(state_shape), make_problem(state_shape)
    y = batch.input.clone().requires_grad_()
    batch_y = type(batch)(y, batch.mask, batch.target)
    params = list(model.parameters())
    adjoint = vd.ImplicitAdjoint(linear_solver, rtol=1e-12, atol=1e-12)
    fixed = vd.solve_4dvarnet_1d_fixedpoint if len(state_shape) == 1 else vd.solve_4dvarnet_2d_fixedpoint
    loss = vd.reconstruction_loss(fixed(model, batch_y, adjoint), batch.target)
    grads = torch.autograd.grad(loss, [*params, y], allow_unused=True)
    ref_loss = vd.reconstruction_loss(vd.fixedpoint_unrolled(model, batch_y, 200), batch.target)
    ref = torch.autograd.grad(ref_loss, [*params, y], allow_unused=True)
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-10)
    for g, r in zip(grads, ref, strict=True):
        if r is None:  # the ConvLSTM takes no part in the fixed point
            assert g is None
            continue
        assert (g - r).abs().max() <= 1e-6 * r.abs().max()
    # the model's own __call__ with an Implicit spec is the same fixed point
    assert torch.allclose(model(batch, adjoint=pk.ImplicitAdjoint(linear_solver, 1e-12, 1e-12)),
                          fixed(model, batch, adjoint), rtol=0, atol=1e-14)


def test_implicit_nonconvergence_warns_with_residual():
    model, batch = contractive_model((8,)), make_problem()
    with pytest.warns(ConvergenceWarning) as record:
        _loss, _ = vd.loss_and_grads(model, batch, adjoint=vd.ImplicitAdjoint("neumann", 1e-14, 1e-14, max_steps=2))
    messages = [str(w.message) for w in record]
    assert any("fixed-point iteration did not converge in 2 steps: residual" in m for m in messages)
    assert any("neumann solve" in m and "residual" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        vd.loss_and_grads(model, batch, adjoint=vd.ImplicitAdjoint(rtol=1e-10, atol=1e-10))


def test_implicit_graph_is_one_node_whatever_the_iteration_count():
    model, batch = contractive_model((8,)), make_problem()
    sizes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for steps in (3, 60):
            out = model(batch, adjoint=vd.ImplicitAdjoint(rtol=0.0, atol=0.0, max_steps=steps))
            sizes.append(len(graph_nodes(out)))
    assert sizes[0] == sizes[1] < 20


def test_linear_solvers_on_a_matrix():
    gen = torch.Generator().manual_seed(0)
    j = 0.3 * torch.randn(12, 12, generator=gen, dtype=F64) / 12**0.5
    b = torch.randn(12, generator=gen, dtype=F64)
    exact = torch.linalg.solve(torch.eye(12, dtype=F64) - j.T, b)
    x, residual, _ = solver.gmres(lambda v: v - j.T @ v, b, rtol=1e-13, atol=0.0, max_steps=100, restart=5)
    assert torch.allclose(x, exact, rtol=0, atol=1e-11) and residual < 1e-11
    x, _, _ = solver.neumann(lambda v: j.T @ v, b, rtol=1e-14, atol=0.0, max_steps=500)
    assert torch.allclose(x, exact, rtol=0, atol=1e-11)
    assert torch.allclose(solver.dense_solve(lambda v: v - j.T @ v, b), exact, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- calibration


def test_assert_adjoint_calibrated():
    model, batch = make_model(n_steps=4), make_problem()
    params = {name: p.detach() for name, p in model.named_parameters()}

    def solve_with(adjoint):
        return lambda p: torch.func.functional_call(model, p, (batch,), {"adjoint": adjoint})

    exact = solve_with(vd.KStepAdjoint(100))
    error = vd.assert_adjoint_calibrated(solve_with(vd.RecursiveCheckpointAdjoint(2)), exact, params, n_probes=2)
    assert error < 1e-12
    with pytest.raises(AssertionError, match=r"max relative JVP error \d\.\d+e[-+]\d+ over 2 probes"):
        vd.assert_adjoint_calibrated(solve_with(vd.OneStepAdjoint()), exact, params, n_probes=2, threshold=1e-3)
    biased = vd.assert_adjoint_calibrated(solve_with(vd.OneStepAdjoint()), exact, params, n_probes=2, threshold=10.0)
    assert 1e-3 < biased < 10.0
