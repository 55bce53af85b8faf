"""Any grid (issue 37): a model maps every grid its convolutions allow, whatever its config's
``state_shape`` (the training size); parameters, the schema and a parameter file are the same
for every grid; an impossible grid is one ValueError in the shared words."""

from __future__ import annotations

import re

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import pipekit_cycle as pk
import vardax_jax as vd
from pipekit_cycle.validation import check_batch_grid, grid_rule

T = 3
SMALL = dict(hidden_dim=3, prior_hidden_dim=3, n_solver_steps=2)
EXACTLY_K = dict(solver="fixed_point", fixed_point_rtol=0.0, fixed_point_atol=0.0)  # no stopping test
CONFIGS = {
    # name: (config at its training size, another grid)
    "1d": (pk.FourDVarNetConfig(state_shape=(8,), n_time=T, **SMALL), (13,)),
    "2d": (pk.FourDVarNetConfig(state_shape=(8, 8), n_time=T, padding="circular", **SMALL), (5, 11)),
    "1d-fp": (pk.FourDVarNetConfig(state_shape=(8,), n_time=T, **EXACTLY_K, **SMALL), (3,)),
    "2d-fp": (pk.FourDVarNetConfig(state_shape=(8, 8), n_time=T, **EXACTLY_K, **SMALL), (6, 9)),
    "2d-o4d": (pk.ocean4dvarnet_config((8, 8), T, n_step=2, hidden_dim=3, prior_hidden_dim=3, prior_downsample=2,
                                       grad_mod_downsample=2, dropout=0.0), (12, 6)),
}


def _obs(shape, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(shape)
    return np.where(rng.random(shape) < 0.5, truth, np.nan), truth


@pytest.mark.parametrize("name", CONFIGS)
def test_a_model_maps_another_grid_as_a_model_built_for_it(name):
    """Forward, predict and gradients on a grid other than the config's equal, bit for bit, those
    of the same parameters in a model whose config names that grid: state_shape is no gate."""
    config, grid = CONFIGS[name]
    assert pk.schema(config) == pk.schema(config.replace(state_shape=grid))  # no grid in the parameters
    model = vd.build_model(config, seed=0)
    there = vd.import_params(vd.build_model(config.replace(state_shape=grid), seed=1), vd.export_params(model))
    obs, truth = _obs((2, T, *grid))
    batch = vd.make_batch(obs, target=truth)
    x = vd.to_numpy(model(batch))
    assert x.shape == obs.shape and np.isfinite(x).all()
    np.testing.assert_array_equal(x, vd.to_numpy(there(batch)))
    np.testing.assert_array_equal(vd.to_numpy(vd.predict(model, batch)), vd.to_numpy(vd.predict(there, batch)))
    loss, grads = vd.loss_and_grads(model, batch)
    loss_there, grads_there = vd.loss_and_grads(there, batch)
    assert loss == loss_there and all(np.array_equal(grads[k], grads_there[k]) for k in grads)


def test_one_parameter_file_loads_for_any_grid(tmp_path):
    config, grid = CONFIGS["2d-o4d"]
    model = vd.build_model(config, seed=0)
    pk.save_params(tmp_path / "p.safetensors", vd.export_params(model), config)
    params, saved = pk.load_params(tmp_path / "p.safetensors")
    for shape in (saved.state_shape, grid, (6, 20)):
        loaded = vd.import_params(vd.build_model(saved.replace(state_shape=shape), seed=3), params)
        obs, _ = _obs((1, T, *grid))
        np.testing.assert_array_equal(vd.to_numpy(loaded(vd.make_batch(obs))), vd.to_numpy(model(vd.make_batch(obs))))


@pytest.mark.parametrize(
    ("name", "shape"),
    [("1d", (2, T, 2)), ("2d", (2, T, 8, 2)), ("2d-o4d", (2, T, 12, 7)), ("2d-o4d", (2, T, 4, 12)),
     ("2d", (2, T + 1, 8, 8)), ("1d", (2, T, 8, 8))],
)
def test_an_impossible_grid_is_one_line_naming_the_rule(name, shape):
    config, _ = CONFIGS[name]
    model = vd.build_model(config, seed=0)
    factors = (config.prior_downsample, config.grad_mod_downsample)
    dims = "(B, T=3, N)" if config.ndim == 1 else "(B, T=3, H, W)"
    expected = f"batch.input must have shape {dims} with {grid_rule(config.ndim, 3, factors)}, got {shape}"
    with pytest.raises(ValueError, match=re.escape(expected)) as info:
        model(vd.make_batch(np.zeros(shape)))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=re.escape(expected)):  # the shared function, word for word
        check_batch_grid(shape, shape, None, ndim=config.ndim, n_time=T, kernel_size=3, downsample=factors)


def test_priors_and_modulators_alone_take_any_grid_and_name_the_rule():
    prior = vd.BilinAEPrior2D(T, 3, key=jr.PRNGKey(0), downsample=2)
    assert prior(jnp.ones((1, T, 6, 10))).shape == (1, T, 6, 10)
    with pytest.raises(ValueError, match=re.escape("the prior's input x must have shape (B, T=3, H, W) with H and W "
                                                   "multiples of 2")):
        prior(jnp.ones((1, T, 6, 9)))
    grad_mod = vd.grad_mod.NormalizedConvLSTMGradMod2D(T, 3, key=jr.PRNGKey(1), downsample=2)
    x = jnp.ones((1, T, 10, 6))
    update, _ = grad_mod(x, x, grad_mod.init_carry(x))
    assert update.shape == x.shape
    bad = jnp.ones((1, T, 10, 4))
    with pytest.raises(ValueError, match=re.escape("the modulator's input grad must have shape (B, T=3, H, W) with H "
                                                   "and W multiples of 2 (the down-sampling) and at least 6")):
        grad_mod(bad, bad, grad_mod.init_carry(bad))
    plain = vd.ConvLSTMGradMod1D(T, 3, key=jr.PRNGKey(2))
    with pytest.raises(ValueError, match=re.escape("N at least 3 (the kernel), got (1, 3, 2)")):
        z = jnp.ones((1, T, 2))
        plain(z, z, plain.init_carry(z))
    with pytest.raises(ValueError, match=re.escape("average pooling by 2 needs H and W multiples of 2")):
        vd.resample.average_pool(jnp.ones((1, T, 5, 4)), 2)
