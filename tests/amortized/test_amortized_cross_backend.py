"""Same parameters, same numbers: vardax_jax.amortized vs vardax_torch.amortized in float64.

Parameters are drawn once in numpy, imported into both backends, and log_prob, the MAP, the
flow's forward map on a shared base draw, the NLL and its gradients (by canonical name) are
compared to 1e-10 relative (DESIGN 4's float64 tolerance on forward values; tighter than its
1e-8 on gradients).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import vardax_jax.amortized as aj
import vardax_torch.amortized as at

RTOL = 1e-10


class JaxBatch(NamedTuple):
    input: jax.Array
    mask: jax.Array
    target: jax.Array | None = None


class TorchBatch(NamedTuple):
    input: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor | None = None


def rel_err(a: object, b: object) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def pair(kind: str, state_shape: tuple[int, ...], n_time: int, seed: int, **sizes: int):
    """The same model in both backends, parameters drawn in numpy far from the initialisation."""
    jax_model = aj.build_amortized(kind, state_shape, n_time, seed=0, **sizes)
    torch_model = at.build_amortized(kind, state_shape, n_time, seed=0, dtype=torch.float64, **sizes)
    rng = np.random.default_rng(seed)
    schema = aj.amortized_schema(kind, state_shape, n_time, **sizes)
    assert schema == at.amortized_schema(kind, state_shape, n_time, **sizes)
    params = {name: 0.5 * rng.standard_normal(shape) for name, shape in schema.items()}
    return aj.import_amortized_params(jax_model, params), at.import_amortized_params(torch_model, params), params


def batches(rng: np.random.Generator, size: int, shape: tuple[int, ...], with_target: bool = True):
    mask = (rng.random((size, *shape)) < 0.4).astype(np.float64)
    truth = rng.standard_normal((size, *shape))
    obs = mask * (truth + 0.2 * rng.standard_normal(truth.shape))
    target = truth if with_target else None
    jb = JaxBatch(jnp.asarray(obs), jnp.asarray(mask), None if target is None else jnp.asarray(target))
    tb = TorchBatch(torch.from_numpy(obs), torch.from_numpy(mask), None if target is None else torch.from_numpy(target))
    return jb, tb


CASES = [
    ("regression", (3,), 6, {"hidden": 8, "n_layers": 2}),
    ("flow", (3,), 6, {"hidden": 8, "n_layers": 2, "n_coupling": 4}),
    ("flow", (3,), 5, {"hidden": 7, "n_layers": 1, "n_coupling": 3}),  # D = 15: odd split
    ("flow", (2, 3), 2, {"hidden": 6, "n_layers": 3, "n_coupling": 2}),  # 2-D state
]


@pytest.mark.parametrize("kind,state_shape,n_time,sizes", CASES)
def test_same_params_same_numbers(kind: str, state_shape: tuple[int, ...], n_time: int, sizes: dict) -> None:
    jax_model, torch_model, params = pair(kind, state_shape, n_time, 1, **sizes)
    rng = np.random.default_rng(2)
    jb, tb = batches(rng, 4, (n_time, *state_shape))
    errors = {}
    x = rng.standard_normal((4, n_time, *state_shape))
    flat = int(np.prod(state_shape)) * n_time
    z = rng.standard_normal((3, 4, flat))

    @eqx.filter_jit  # one compile for the lot; eager JAX compiles op by op and dominates run time
    def jax_side(model, x, z, batch):
        context = model.encode(batch)
        forward = model.head.forward(z, jnp.broadcast_to(context, (z.shape[0], *context.shape)))
        return model.log_prob(x, batch), model(batch), context, *forward

    log_prob_j, map_j, context_j, xj, ldj = jax_side(jax_model, jnp.asarray(x), jnp.asarray(z), jb)
    with torch.no_grad():
        errors["log_prob"] = rel_err(torch_model.log_prob(torch.from_numpy(x), tb), log_prob_j)
        errors["map"] = rel_err(torch_model(tb), map_j)
        context_t = torch_model.encode(tb)
        errors["encode"] = rel_err(context_t, context_j)
        xt, ldt = torch_model.head(torch.from_numpy(z), context_t.expand(3, *context_t.shape))
        errors["forward"] = rel_err(xt, xj)
        errors["forward_logdet"] = rel_err(ldt, ldj)
    loss_t, grads_t = at.amortized_loss_and_grads(torch_model, tb)
    loss_j, grads_j = aj.amortized_loss_and_grads(jax_model, jb)
    errors["nll"] = rel_err(loss_t, loss_j)
    assert set(grads_t) == set(grads_j) == set(params)
    errors["grad"] = max(rel_err(grads_t[name], grads_j[name]) for name in params)
    # Export returns what was imported, in both.
    errors["export_jax"] = max(rel_err(aj.export_amortized_params(jax_model)[k], v) for k, v in params.items())
    errors["export_torch"] = max(rel_err(at.export_amortized_params(torch_model)[k], v) for k, v in params.items())
    print(f"{kind} {state_shape} T={n_time}: " + ", ".join(f"{k}={v:.2e}" for k, v in errors.items()))
    assert max(errors.values()) < RTOL, errors


@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_one_adam_trajectory_matches(clip_norm: float | None) -> None:
    """Three Adam steps (optionally after global-norm clipping, the way make_optimizer sets it
    up in each backend) from the same parameters land on the same parameters (1e-10)."""
    import optax

    jax_model, torch_model, _ = pair("flow", (3,), 4, 5, hidden=8, n_layers=1, n_coupling=2)
    jb, tb = batches(np.random.default_rng(3), 6, (4, 3))
    links = [] if clip_norm is None else [optax.clip_by_global_norm(clip_norm)]
    optimizer_j = optax.chain(*links, optax.adam(1e-2))
    state_j = optimizer_j.init(eqx.filter(jax_model, eqx.is_inexact_array))
    optimizer_t = torch.optim.Adam(torch_model.parameters(), lr=1e-2, foreach=False)
    optimizer_t.param_groups[0]["clip_norm"] = clip_norm
    state_t = optimizer_t.state_dict()
    start = at.export_amortized_params(torch_model)
    for _ in range(3):
        jax_model, state_j, loss_j = aj.amortized_train_step(jax_model, jb, optimizer_j, state_j)
        torch_model, state_t, loss_t = at.amortized_train_step(torch_model, tb, optimizer_t, state_t)
        assert rel_err(loss_t, loss_j) < RTOL
    pj, pt = aj.export_amortized_params(jax_model), at.export_amortized_params(torch_model)
    assert max(rel_err(pt[k], pj[k]) for k in pj) < RTOL
    moved = max(float(np.max(np.abs(pt[k] - start[k]))) for k in pt)
    # Adam moves each entry by about lr per step, clipped or not: the trajectory is not trivial.
    assert moved > 1e-2, moved


def test_same_errors_same_words() -> None:
    jax_model, torch_model, params = pair("flow", (3,), 4, 5, hidden=8, n_layers=1, n_coupling=2)
    jb, tb = batches(np.random.default_rng(3), 2, (4, 3), with_target=False)
    messages = []
    for module, model, batch in ((aj, jax_model, jb), (at, torch_model, tb)):
        with pytest.raises(ValueError) as missing_target:
            module.amortized_nll_loss_fn(model, batch)
        bad = dict(params)
        bad["head.affine.bias"] = np.zeros(3)
        with pytest.raises(ValueError) as bad_shape:
            module.import_amortized_params(model, bad)
        with pytest.raises(ValueError) as bad_kind:
            module.amortized_schema("gaussian", (3,), 4)
        messages.append((str(missing_target.value), str(bad_shape.value), str(bad_kind.value)))
    assert messages[0] == messages[1]
    assert "amortized_nll_loss_fn needs batch.target" in messages[0][0]


def test_permutations_are_shared() -> None:
    for dim in (2, 9, 48):
        for layer in range(6):
            perm = aj.coupling_permutation(dim, layer)
            np.testing.assert_array_equal(perm, at.coupling_permutation(dim, layer))
            np.testing.assert_array_equal(np.sort(perm), np.arange(dim))
        # Odd layers transform what the previous layer conditioned on (and vice versa).
        even, odd = aj.coupling_permutation(dim, 0), aj.coupling_permutation(dim, 1)
        assert set(even[: dim // 2]) <= set(odd[dim // 2 :])
