"""Modules, batches, validation errors (same words as vardax_torch via pipekit_cycle.validation)."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import pipekit_cycle as pk
import vardax_jax as vd
from pipekit_cycle import validation

B, T, N = 2, 4, 8


def _obs(shape, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal(shape)
    obs[rng.random(shape) < 0.5] = np.nan
    return obs, rng.standard_normal(shape)


@pytest.fixture(scope="module")
def model():
    return vd.FourDVarNet1D(N, T, hidden_dim=4, prior_hidden_dim=4, n_solver_steps=3, key=jr.PRNGKey(0))


@pytest.fixture(scope="module")
def batch():
    obs, target = _obs((B, T, N))
    return vd.make_batch(obs, target=target)


def test_modules_satisfy_protocols(model):
    assert isinstance(model, eqx.Module)
    assert isinstance(model.grad_mod, vd.ConvLSTMGradMod1D) and isinstance(model.grad_mod, pk.GradModulator)
    assert isinstance(model.prior, vd.BilinAEPrior1D) and isinstance(model.prior, pk.Prior)
    assert isinstance(model, pk.InnerSolver)
    model2d = vd.FourDVarNet2D(T, 4, 5, hidden_dim=3, prior_hidden_dim=3, key=jr.PRNGKey(1))
    assert isinstance(model2d.grad_mod, vd.ConvLSTMGradMod2D) and isinstance(model2d.prior, vd.BilinAEPrior2D)
    carry = model2d.grad_mod.init_carry(jnp.zeros((B, T, 4, 5)))
    assert isinstance(carry, vd.LSTMState2D) and carry.hidden.shape == (B, 3, 4, 5)
    assert float(jnp.abs(carry.cell).sum()) == 0.0


def test_grad_mod_step_and_shape_errors(model):
    x = jnp.ones((B, T, N))
    carry = model.grad_mod.init_carry(x)
    assert isinstance(carry, vd.LSTMState1D) and carry.hidden.shape == (B, 4, N)
    update, new_carry = model.grad_mod(x, x, carry)
    assert update.shape == x.shape and new_carry.cell.shape == (B, 4, N)
    assert float(jnp.abs(new_carry.cell).sum()) > 0
    with pytest.raises(ValueError, match="same shape"):
        model.grad_mod(x[:, :, :4], x, carry)


@pytest.mark.parametrize("ndim", [1, 2])
def test_circular_padding_is_periodic(ndim):
    space = (8,) if ndim == 1 else (6, 5)
    cls = vd.BilinAEPrior1D if ndim == 1 else vd.BilinAEPrior2D
    x = jr.normal(jr.PRNGKey(3), (B, T, *space))
    axes = tuple(range(2, 2 + ndim))
    shifts = (3,) * ndim
    for padding, equivariant in (("circular", True), ("zeros", False)):
        prior = cls(T, 4, 3, padding, key=jr.PRNGKey(2))
        call = eqx.filter_jit(lambda p, z: p(z))
        rolled_out = call(prior, jnp.roll(x, shifts, axes))
        out_rolled = jnp.roll(call(prior, x), shifts, axes)
        assert bool(jnp.allclose(rolled_out, out_rolled, rtol=1e-12, atol=1e-12)) is equivariant


def test_model_forward_config_and_build(model, batch):
    x = model(batch)
    assert x.shape == (B, T, N) and x.dtype == jnp.float64 and model.dtype == jnp.float64
    cfg = model.config
    assert cfg.state_shape == (N,) and cfg.n_solver_steps == 3 and cfg.solver_adjoint == pk.RecursiveCheckpointAdjoint()
    built = vd.build_model(cfg, seed=0)
    assert isinstance(built, vd.FourDVarNet1D) and built.config == cfg
    again = vd.build_model(cfg, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(built), jax.tree.leaves(again), strict=True))
    cfg2d = pk.FourDVarNetConfig(state_shape=(4, 5), n_time=3, hidden_dim=2, prior_hidden_dim=2,
                                 solver_adjoint=pk.TruncatedAdjoint(2))
    model2d = vd.build_model(cfg2d, seed=1)
    assert isinstance(model2d, vd.FourDVarNet2D) and model2d.config == cfg2d
    assert model2d.solver_adjoint == vd.KStepAdjoint(2)
    swapped = model.with_adjoint("truncated:2")
    assert swapped.solver_adjoint == vd.KStepAdjoint(2) and model.solver_adjoint == vd.RecursiveCheckpointAdjoint()


def test_batch_independence(model, batch):
    x = model(batch)
    other = vd.Batch1D(batch.input.at[1].multiply(-3.0), batch.mask, batch.target)
    y = model(other)
    assert np.array_equal(x[0], y[0]) and not np.allclose(x[1], y[1])


def test_make_batch():
    obs, target = _obs((B, T, N))
    batch = vd.make_batch(obs, target=target)
    assert isinstance(batch, vd.Batch1D)
    np.testing.assert_array_equal(vd.to_numpy(batch.mask), np.isfinite(obs).astype(float))
    np.testing.assert_array_equal(vd.to_numpy(batch.input), np.nan_to_num(obs))
    assert batch.input.dtype == jnp.float64
    assert vd.make_batch(obs, dtype="float32").input.dtype == jnp.float32
    assert vd.make_batch(obs, dtype=np.float32).target is None
    obs2d, _ = _obs((B, T, 4, 5))
    assert isinstance(vd.make_batch(obs2d), vd.Batch2D)


def _message(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except (TypeError, ValueError) as error:
        return type(error), str(error)
    raise AssertionError("expected an error")


def test_bad_inputs_raise_the_shared_errors(model, batch):
    obs, _ = _obs((B, T, N))
    # make_batch: integer obs, wrong rank
    with pytest.raises(TypeError, match="obs must be float32 or float64, got dtype int64"):
        vd.make_batch(np.ones((B, T, N), dtype=np.int64))
    kind, text = _message(validation.as_observations, obs[0])
    with pytest.raises(kind, match=re.escape(text)):
        vd.make_batch(obs[0])
    # a grid the architecture cannot take (smaller than the kernel); any other size is mapped
    wrong = vd.make_batch(_obs((B, T, 2))[0])
    kind, text = _message(validation.check_batch_grid, (B, T, 2), (B, T, 2), None, ndim=1, n_time=T, kernel_size=3)
    with pytest.raises(ValueError, match=re.escape(text)):
        model(wrong)
    assert model(vd.make_batch(_obs((B, T, N + 1))[0])).shape == (B, T, N + 1)
    # wrong rank (a 2D batch to a 1D model)
    with pytest.raises(ValueError, match=re.escape("batch.input must have shape (B, T=4, N) with N at least 3 (the "
                                                   "kernel), got (2, 4, 8, 1)")):
        model(vd.Batch2D(batch.input[..., None], batch.mask[..., None]))
    # mask of another shape
    with pytest.raises(ValueError, match=re.escape("batch.mask must have the shape of batch.input (2, 4, 8)")):
        model(vd.Batch1D(batch.input, batch.mask[:, :, :4]))
    # dtype mismatch between batch and model
    kind, text = _message(validation.check_same_dtype, "float32", "float64")
    with pytest.raises(TypeError, match=re.escape(text)):
        model(vd.make_batch(obs, dtype="float32"))
    # integer arrays put into a batch by hand
    with pytest.raises(TypeError, match="batch dtype int64 differs"):
        model(vd.Batch1D(jnp.ones((B, T, N), jnp.int64), jnp.ones((B, T, N), jnp.int64)))
    # target=None in train_loss_fn
    kind, text = _message(validation.require_target, None, "train_loss_fn")
    with pytest.raises(ValueError, match=re.escape(text)):
        vd.train_loss_fn(model, vd.make_batch(obs))


def test_float64_without_x64_is_a_clear_type_error():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(TypeError, match="needs jax_enable_x64"):
            vd.make_batch(np.zeros((1, 2, 3)), dtype="float64")
        assert vd.make_batch(np.zeros((1, 2, 3))).input.dtype == np.float32
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("space", [(9,), (7, 6)])
def test_both_convolution_lowerings_match_a_direct_sum(space):
    """``correlate_valid`` lowers to im2col on CPU and to ``lax.conv`` elsewhere: both equal the
    defining sum, and so do their first and second derivatives (the training step needs both)."""
    from vardax_jax.grad_mod import _correlate_im2col, _correlate_xla

    x = np.random.default_rng(0).standard_normal((2, 3, *space))
    w = np.random.default_rng(1).standard_normal((4, 3, *(3,) * len(space)))
    out_space = tuple(n - 2 for n in space)
    expected = np.zeros((2, 4, *out_space))
    for tap in np.ndindex(*w.shape[2:]):
        window = x[(slice(None), slice(None), *(slice(t, t + n) for t, n in zip(tap, out_space, strict=True)))]
        expected += np.einsum("bi...,oi->bo...", window, w[(slice(None), slice(None), *tap)])
    for lowering in (_correlate_im2col, _correlate_xla):
        np.testing.assert_allclose(lowering(jnp.asarray(x), jnp.asarray(w)), expected, rtol=1e-12, atol=1e-12)

    def second_order(lowering):
        def inner(x, w):  # d/dx of a nonlinear function of the correlation, as dU/dx is
            return jax.grad(lambda z: jnp.sum(jnp.tanh(lowering(z, w)) ** 2))(x)

        return jax.grad(lambda x, w: jnp.sum(jnp.sin(inner(x, w))), argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w))

    for a, b in zip(second_order(_correlate_im2col), second_order(_correlate_xla), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        assert float(jnp.max(jnp.abs(a))) > 1e-3


# ------------------------------------------------------------------ components (DESIGN 7)

OCEAN = pk.ocean4dvarnet_config((4, 4), T, n_step=3, hidden_dim=2, prior_hidden_dim=2, dropout=0.0, lbd=2.0)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (pk.FourDVarNetConfig(state_shape=(N,), n_time=T, alpha=0.3, obs_weight=0.5),
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


def test_predict_applies_the_output_component(batch):
    for output in ("state", "prior"):
        model = vd.build_model(pk.FourDVarNetConfig(state_shape=(N,), n_time=T, hidden_dim=3, prior_hidden_dim=3,
                                                    n_solver_steps=2, output=output), seed=0)
        x = model(batch)
        expected = model.prior(x) if output == "prior" else x
        np.testing.assert_array_equal(np.asarray(vd.predict(model, batch)), np.asarray(expected))


def test_with_adjoint_keeps_the_arrays_and_updates_the_config(model, batch):
    swapped = model.with_adjoint(pk.TruncatedAdjoint(2))
    assert swapped.config == model.config.replace(solver_adjoint=pk.TruncatedAdjoint(2))
    assert model.config.solver_adjoint == pk.RecursiveCheckpointAdjoint()  # a new model; this one unchanged
    assert all(a is b for a, b in zip(jax.tree.leaves((model.prior, model.grad_mod)),
                                      jax.tree.leaves((swapped.prior, swapped.grad_mod)), strict=True))
    assert (swapped.cost, swapped.step_rule, swapped.output) == (model.cost, model.step_rule, model.output)
    np.testing.assert_array_equal(np.asarray(swapped(batch)), np.asarray(model(batch)))
