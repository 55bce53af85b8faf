"""Adjoint mapping, RecursiveCheckpoint, KStep (truncated), Implicit, and calibration."""

from __future__ import annotations

import functools
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
from vardax_torch.adjoints import dense_solve, gmres, iterate, neumann

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
    return max(np.abs(g - r).max() / max(np.abs(r).max(), 1e-300) for g, r in zip(grads, ref, strict=True))


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


@pytest.mark.parametrize(("n_steps", "checkpoints"), [(20, None), (20, 2), (9, 1)])
def test_checkpoint_is_binomial_with_the_shared_schedule(n_steps, checkpoints):
    """Revolve with pipekit_cycle.checkpoint_schedule's count: along the forward chain, one
    stored segment per snapshot, then one live step; the gradient is exact."""
    model, batch = make_model(n_steps=n_steps), make_problem()
    _ref_loss, ref = unrolled_grads(model, batch)
    adjoint = vd.RecursiveCheckpointAdjoint(checkpoints)
    _loss, grads = vd.loss_and_grads(model, batch, adjoint=adjoint)
    assert max_rel(list(grads.values()), ref) < 1e-10
    snapshots = pk.checkpoint_schedule(n_steps, checkpoints)
    names = [type(node).__name__ for node in graph_nodes(model(batch, adjoint=adjoint))]
    assert names.count("_SegmentBackward") == min(snapshots, n_steps - 1)
    one_step = len(graph_nodes(vd.solve_4dvarnet_unrolled(make_model(n_steps=1), batch)))
    assert len(names) < one_step + 2 * snapshots + 2  # one live step, whatever n_steps


def test_checkpoint_schedule_is_shared():
    assert [pk.checkpoint_schedule(n, None) for n in (1, 2, 8, 9, 64)] == [1, 1, 3, 4, 6]
    assert pk.checkpoint_schedule(5, 99) == 5


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
    args = {**dict(model.named_parameters()), "y": batch.input, "m": batch.mask}
    step = functools.partial(solver._learned_step, model)
    x0 = batch.mask * batch.input
    carry0 = (x0, torch.zeros((), dtype=x0.dtype), *model.grad_mod.init_carry(x0))  # (x, step count, h, c)
    warm = iterate(step, carry0, args, n_steps - k, graph=False)[0]
    constants = tuple(torch.tensor(t.numpy()) for t in warm)
    out = iterate(step, constants, args, k, graph=True)[0][0]
    params = [args[name] for name, _ in model.named_parameters()]
    expected = [g.numpy() for g in torch.autograd.grad(vd.reconstruction_loss(out, batch.target), params)]
    _, grads = vd.loss_and_grads(model, batch, adjoint=vd.KStepAdjoint(k))
    assert max_rel(list(grads.values()), expected) < 1e-13
    # Had the carry NOT been cut (state cut only), the gradient would differ.
    live_warm = iterate(step, carry0, args, n_steps - k, graph=True)[0]
    out_c = iterate(step, (constants[0], *live_warm[1:]), args, k, graph=True)[0][0]
    carried = [g.numpy() for g in torch.autograd.grad(vd.reconstruction_loss(out_c, batch.target), params)]
    assert max_rel(carried, expected) > 1e-4


def test_kstep_graph_does_not_grow_with_steps():
    batch = make_problem()
    sizes = [len(graph_nodes(make_model(n_steps=n)(batch, adjoint=vd.OneStepAdjoint()))) for n in (2, 8)]
    assert sizes[0] == sizes[1]


# ----------------------------------------------------------------------------- implicit


def contractive_model(state_shape, n_steps=60, tol=1e-12, **kwargs):
    model = make_model(state_shape, n_steps=n_steps, solver="fixed_point", fixed_point_rtol=tol, fixed_point_atol=tol,
                       **kwargs)
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
    loss = vd.reconstruction_loss(model(batch_y, adjoint=adjoint), batch.target)
    grads = torch.autograd.grad(loss, [*params, y], allow_unused=True)
    ref_loss = vd.reconstruction_loss(vd.fixedpoint_unrolled(model, batch_y, 200), batch.target)
    ref = torch.autograd.grad(ref_loss, [*params, y], allow_unused=True)
    assert float(loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-10)
    for g, r in zip(grads, ref, strict=True):
        if r is None:  # the ConvLSTM takes no part in the fixed point
            assert g is None
            continue
        assert (g - r).abs().max() <= 1e-8 * r.abs().max()  # DESIGN 4: float64 gradients


@pytest.mark.parametrize("state_shape", [(8,), (3, 4)])
def test_fixed_point_adjoints_share_the_forward_and_agree(state_shape):
    model, batch = contractive_model(state_shape), make_problem(state_shape)
    outputs = [model(batch, adjoint=a) for a in ("checkpoint", "checkpoint:2", "truncated:1", "implicit")]
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
    _, exact = vd.loss_and_grads(model, batch, adjoint="checkpoint")
    _, truncated = vd.loss_and_grads(model, batch, adjoint=pk.TruncatedAdjoint(60))
    _, implicit = vd.loss_and_grads(model, batch, adjoint=pk.ImplicitAdjoint(rtol=1e-13, atol=1e-13))
    assert max_rel(list(truncated.values()), list(exact.values())) < 1e-13
    assert max_rel(list(implicit.values()), list(exact.values())) < 1e-9
    # float64 central finite difference of the loss along a random direction of the prior
    direction = {name: torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
                 for name, p in model.named_parameters() if name.startswith("prior.")}

    def loss_at(eps):
        moved = {name: p.detach() + eps * direction.get(name, 0.0) for name, p in model.named_parameters()}
        with torch.no_grad():
            out = torch.func.functional_call(model, moved, (batch,))
        return float(vd.reconstruction_loss(out, batch.target))

    fd = (loss_at(1e-6) - loss_at(-1e-6)) / 2e-6
    predicted = sum(float((implicit[name] * direction[name].numpy()).sum()) for name in direction)
    assert abs(predicted - fd) <= 1e-7 * abs(fd)


def test_implicit_needs_the_fixed_point_solver():
    model, batch = make_model(), make_problem()
    for call in (lambda: model(batch, adjoint="implicit"), lambda: model.with_adjoint(pk.ImplicitAdjoint())):
        with pytest.raises(ValueError, match='solver="fixed_point"'):
            call()


def test_nonconvergence_warns_with_residual():
    model, batch = contractive_model((8,), n_steps=2, tol=1e-14), make_problem()
    with pytest.warns(ConvergenceWarning) as record:
        _loss, _ = vd.loss_and_grads(model, batch, adjoint=vd.ImplicitAdjoint("neumann", 1e-14, 1e-14, max_steps=2))
    messages = [str(w.message) for w in record]
    assert any("fixed-point iteration did not converge in n_solver_steps=2 steps: residual" in m for m in messages)
    assert any("neumann solve" in m and "residual" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        vd.loss_and_grads(contractive_model((8,), tol=1e-10), batch, adjoint=vd.ImplicitAdjoint(rtol=1e-10, atol=1e-10))


def test_implicit_graph_is_one_node_whatever_the_iteration_count():
    batch = make_problem()
    sizes = []
    for steps in (3, 60):
        out = contractive_model((8,), n_steps=steps, tol=0.0)(batch, adjoint=vd.ImplicitAdjoint())
        sizes.append(len(graph_nodes(out)))
    assert sizes[0] == sizes[1] < 20


class UnrolledAdjoint(vd.AbstractAdjoint):
    """A user's own adjoint, defined outside the package: plain backprop through the loop."""

    def loop(self, step, carry, args, max_steps, *, converged=None):
        for _ in range(max_steps):
            new = step(args, carry)
            if converged is not None and converged(carry, new):
                return new
            carry = new
        return carry


@pytest.mark.parametrize("solver_name", ["learned", "fixed_point"])
def test_an_adjoint_from_outside_the_package_plugs_in(solver_name):
    model = make_model(n_steps=5, solver=solver_name).with_adjoint(UnrolledAdjoint())
    batch = make_problem()
    assert isinstance(model.solver_adjoint, UnrolledAdjoint)
    loss, grads = vd.loss_and_grads(model, batch)
    ref_loss, ref = vd.loss_and_grads(model, batch, adjoint=pk.RecursiveCheckpointAdjoint())
    assert float(loss) == float(ref_loss)
    assert max_rel(list(grads.values()), list(ref.values())) < 1e-12


def test_linear_solvers_on_a_matrix():
    gen = torch.Generator().manual_seed(0)
    j = 0.3 * torch.randn(12, 12, generator=gen, dtype=F64) / 12**0.5
    b = torch.randn(12, generator=gen, dtype=F64)
    exact = torch.linalg.solve(torch.eye(12, dtype=F64) - j.T, b)
    x, residual, _ = gmres(lambda v: v - j.T @ v, b, rtol=1e-13, atol=0.0, max_steps=100, restart=5)
    assert torch.allclose(x, exact, rtol=0, atol=1e-11) and residual < 1e-11
    x, _, _ = neumann(lambda v: j.T @ v, b, rtol=1e-14, atol=0.0, max_steps=500)
    assert torch.allclose(x, exact, rtol=0, atol=1e-11)
    assert torch.allclose(dense_solve(lambda v: v - j.T @ v, b), exact, rtol=0, atol=1e-12)


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
