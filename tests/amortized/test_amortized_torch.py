"""vardax_torch.amortized: exact flow densities, sampling moments, training, parameters.

Everything here runs in float64 (``dtype=torch.float64`` on models and batches).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipekit_cycle.problems import lorenz63
from vardax_torch.amortized import (
    AmortizedPosterior,
    FlowHead,
    RegressionHead,
    amortized_loss_and_grads,
    amortized_nll_loss_fn,
    amortized_schema,
    amortized_train_step,
    build_amortized,
    coverage,
    export_amortized_params,
    import_amortized_params,
)

F64 = torch.float64


@dataclasses.dataclass(frozen=True)
class Batch:
    """A minimal duck-typed batch."""

    input: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor | None = None


def random_batch(rng: np.random.Generator, size: int, n_time: int, n: int, with_target: bool = True) -> Batch:
    mask = (rng.random((size, n_time, n)) < 0.5).astype(np.float64)
    truth = rng.standard_normal((size, n_time, n))
    obs = mask * (truth + 0.1 * rng.standard_normal(truth.shape))
    return Batch(torch.from_numpy(obs), torch.from_numpy(mask), torch.from_numpy(truth) if with_target else None)


def build(kind: str, state_shape: tuple[int, ...], n_time: int, **kwargs: int) -> AmortizedPosterior:
    return build_amortized(kind, state_shape, n_time, dtype=F64, **kwargs)


def randomized(model: AmortizedPosterior, seed: int, scale: float = 0.4) -> AmortizedPosterior:
    """The model with every parameter redrawn N(0, scale^2): couplings far from the identity."""
    rng = np.random.default_rng(seed)
    params = {k: scale * rng.standard_normal(v.shape) for k, v in export_amortized_params(model).items()}
    return import_amortized_params(model, params)


@pytest.mark.parametrize("kind", ["regression", "flow"])
def test_shapes_schema_and_round_trip(kind: str) -> None:
    model = build(kind, (3,), 4, hidden=8, n_layers=2, n_coupling=3, seed=0)
    batch = random_batch(np.random.default_rng(0), 5, 4, 3)
    assert model.kind == kind and model.dtype == F64
    assert isinstance(model.head, RegressionHead if kind == "regression" else FlowHead)
    assert model.log_prob(batch.target, batch).shape == (5,)
    assert model(batch).shape == (5, 4, 3)
    assert model.sample(batch, 7, seed=1).shape == (7, 5, 4, 3)
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(model.sample(batch, 2, generator=generator), model.sample(batch, 2, seed=3))
    params = export_amortized_params(model)
    schema = amortized_schema(kind, (3,), 4, hidden=8, n_layers=2, n_coupling=3)
    assert {k: v.shape for k, v in params.items()} == schema
    assert all(v.dtype == np.float64 for v in params.values())
    moved = randomized(build(kind, (3,), 4, hidden=8, n_layers=2, n_coupling=3, seed=0), 1)
    back = import_amortized_params(model, export_amortized_params(moved))
    with torch.no_grad():
        torch.testing.assert_close(
            back.log_prob(batch.target, batch), moved.log_prob(batch.target, batch), rtol=0, atol=0
        )
        fresh = build(kind, (3,), 4, hidden=8, n_layers=2, n_coupling=3, seed=0)
        assert not torch.allclose(moved.log_prob(batch.target, batch), fresh.log_prob(batch.target, batch))


def test_import_rejects_bad_params_and_changes_nothing() -> None:
    model = build("flow", (3,), 4, hidden=8, n_layers=1, n_coupling=2, seed=0)
    params = export_amortized_params(model)
    bad = {k: v + 1.0 for k, v in params.items()}
    bad["head.affine.weight"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="head.affine.weight"):
        import_amortized_params(model, bad)
    after = export_amortized_params(model)
    assert all(np.array_equal(params[k], after[k]) for k in params)
    missing = dict(params)
    del missing["encoder.layers.0.bias"]
    with pytest.raises(ValueError, match="missing \\['encoder.layers.0.bias'\\]"):
        import_amortized_params(model, missing)


def test_batch_checks() -> None:
    model = build("flow", (3,), 4, hidden=8, n_layers=1, n_coupling=2, seed=0)
    batch = random_batch(np.random.default_rng(0), 2, 4, 3)
    with pytest.raises(ValueError, match="batch.input must have shape"):
        model(Batch(batch.input[:, :3], batch.mask[:, :3]))
    with pytest.raises(ValueError, match="x must have the shape of batch.input"):
        model.log_prob(batch.target[:1], batch)
    with pytest.raises(TypeError, match="differs from the model's dtype"):
        model(Batch(batch.input.float(), batch.mask.float()))


@pytest.mark.parametrize("kind,n_time,n", [("flow", 3, 3), ("flow", 2, 3), ("regression", 3, 3)])
def test_log_prob_equals_full_jacobian_change_of_variables(kind: str, n_time: int, n: int) -> None:
    """log q(x) = log N(z(x); 0, I) + log|det dz/dx| with the full Jacobian of the inverse map
    from torch.autograd.functional.jacobian and a dense slogdet: no use of the coupling structure."""
    model = randomized(build(kind, (n,), n_time, hidden=6, n_layers=2, n_coupling=4, seed=0), 3)
    rng = np.random.default_rng(4)
    batch = random_batch(rng, 3, n_time, n)
    x = torch.from_numpy(rng.standard_normal((3, n_time * n)))
    with torch.no_grad():
        context = model.encode(batch)
        log_prob = model.log_prob(x.reshape(3, n_time, n), batch)
    worst = 0.0
    for b in range(3):
        jacobian = torch.autograd.functional.jacobian(lambda v, b=b: model.head.inverse(v, context[b])[0], x[b])
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        with torch.no_grad():
            z = model.head.inverse(x[b], context[b])[0]
            reference = -0.5 * torch.sum(z**2) - 0.5 * z.numel() * np.log(2 * np.pi) + logabsdet
            worst = max(worst, abs(float(log_prob[b] - reference)) / abs(float(reference)))
            assert float(sign) != 0.0
            # The forward map is the exact inverse, and its log-det is the negative.
            forward_x, forward_logdet = model.head(z, context[b])
        torch.testing.assert_close(forward_x, x[b], rtol=0, atol=1e-12)
        torch.testing.assert_close(forward_logdet, -logabsdet, rtol=1e-12, atol=1e-12)
    print(f"torch {kind} D={n_time * n}: max relative |log_prob - full-Jacobian reference| = {worst:.3e}")
    assert worst < 1e-12, worst


@torch.no_grad()
def test_regression_samples_have_the_density_moments() -> None:
    model = randomized(build("regression", (3,), 4, hidden=6, n_layers=1, seed=0), 5, scale=0.3)
    batch = random_batch(np.random.default_rng(1), 2, 4, 3)
    n_draws = 40_000
    samples = model.sample(batch, n_draws, seed=7).reshape(n_draws, 2, -1).numpy()
    mean, logvar = np.split(model.head.linear(model.encode(batch)).numpy(), 2, axis=-1)
    std = np.exp(0.5 * logvar)
    z_mean = (samples.mean(0) - mean) / (std / np.sqrt(n_draws))
    var_ratio = samples.var(0, ddof=1) / std**2
    # 24 entries: |z| < 4.5 fails with probability < 2e-4; var ratio sd is sqrt(2 / n) = 0.007.
    assert np.abs(z_mean).max() < 4.5, np.abs(z_mean).max()
    assert np.abs(var_ratio - 1).max() < 4.5 * np.sqrt(2 / n_draws), np.abs(var_ratio - 1).max()
    # Off-diagonal correlations vanish (diagonal Gaussian).
    corr = np.corrcoef(samples[:, 0].T)
    assert np.abs(corr - np.eye(12)).max() < 4.5 / np.sqrt(n_draws)


@torch.no_grad()
def test_flow_samples_match_the_density_by_quadrature() -> None:
    """D = 2: the density integrates to 1 on a grid, and the sample mean and covariance equal
    the density's mean and covariance computed by quadrature of exp(log_prob)."""
    model = randomized(build("flow", (2,), 1, hidden=8, n_layers=2, n_coupling=4, seed=0), 11, 0.8)
    batch = random_batch(np.random.default_rng(2), 1, 1, 2)
    context = model.encode(batch)[0]
    n_draws = 200_000
    samples = model.sample(batch, n_draws, seed=3).reshape(n_draws, 2).numpy()
    centre, spread = samples.mean(0), samples.std(0)
    axes = [np.linspace(c - 9 * s, c + 9 * s, 700) for c, s in zip(centre, spread, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    density = np.exp(model.head.log_prob(torch.from_numpy(grid), context.expand(len(grid), 8)).numpy())
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    mass = density.sum() * cell
    assert abs(mass - 1.0) < 2e-3, mass
    q_mean = (density[:, None] * grid).sum(0) * cell / mass
    centred = grid - q_mean
    q_cov = (density[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0) * cell / mass
    s_cov = np.cov(samples.T)
    se_mean = np.sqrt(np.diag(q_cov) / n_draws)
    assert np.all(np.abs(samples.mean(0) - q_mean) < 4.5 * se_mean), (samples.mean(0), q_mean)
    scale = np.sqrt(np.outer(np.diag(q_cov), np.diag(q_cov)))
    # Sampling sd of a covariance entry is at most ~sqrt(2 / n) * scale (Gaussian); 6 of them leave
    # room for the flow's heavier-than-Gaussian fourth moments.
    assert np.abs(s_cov - q_cov).max() / scale.max() < 6 * np.sqrt(2 / n_draws), (s_cov, q_cov)
    # Not a Gaussian: the flow is genuinely non-linear here (checks the test is not trivial).
    skew = ((samples - centre) ** 3).mean(0) / spread**3
    assert np.abs(skew).max() > 0.05, skew


@torch.no_grad()
def test_flow_samples_pulled_back_are_standard_normal() -> None:
    model = randomized(build("flow", (3,), 2, hidden=8, n_layers=2, n_coupling=4, seed=0), 2, 0.6)
    batch = random_batch(np.random.default_rng(3), 2, 2, 3)
    n_draws = 50_000
    samples = model.sample(batch, n_draws, seed=9).reshape(n_draws, 2, 6)
    context = model.encode(batch)
    z = model.head.inverse(samples, context.expand(n_draws, *context.shape))[0].numpy()
    for b in range(2):
        assert np.abs(z[:, b].mean(0)).max() < 4.5 / np.sqrt(n_draws)
        assert np.abs(np.cov(z[:, b].T) - np.eye(6)).max() < 4.5 * np.sqrt(2 / n_draws)


@torch.no_grad()
def test_map_is_mean_or_image_of_base_mode() -> None:
    batch = random_batch(np.random.default_rng(0), 3, 2, 3)
    regression = randomized(build("regression", (3,), 2, hidden=6, n_layers=1, seed=0), 1)
    mean = regression.head.linear(regression.encode(batch))[:, :6]
    torch.testing.assert_close(regression(batch), mean.reshape(3, 2, 3), rtol=0, atol=0)
    flow = randomized(build("flow", (3,), 2, hidden=6, n_layers=1, n_coupling=3, seed=0), 1)
    image = flow.head(torch.zeros((3, 6), dtype=F64), flow.encode(batch))[0]
    torch.testing.assert_close(flow(batch), image.reshape(3, 2, 3), rtol=0, atol=0)


def test_nll_needs_target() -> None:
    model = build("flow", (3,), 2, hidden=6, n_layers=1, n_coupling=2, seed=0)
    batch = random_batch(np.random.default_rng(0), 2, 2, 3, with_target=False)
    with pytest.raises(ValueError, match="amortized_nll_loss_fn needs batch.target"):
        amortized_nll_loss_fn(model, batch)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="amortized_nll_loss_fn needs batch.target"):
        amortized_train_step(model, batch, optimizer, optimizer.state_dict())


def test_nll_is_mean_negative_log_prob_and_grads_are_named() -> None:
    model = randomized(build("flow", (3,), 2, hidden=6, n_layers=1, n_coupling=2, seed=0), 1)
    batch = random_batch(np.random.default_rng(0), 4, 2, 3)
    loss = amortized_nll_loss_fn(model, batch)
    torch.testing.assert_close(loss, -model.log_prob(batch.target, batch).mean(), rtol=1e-14, atol=0)
    value, grads = amortized_loss_and_grads(model, batch)
    assert value == pytest.approx(float(loss.detach()), rel=1e-12)
    assert set(grads) == set(export_amortized_params(model))
    assert all(p.grad is None for p in model.parameters())
    # Finite-difference check of one gradient entry.
    name, eps = "head.couplings.1.layers.0.weight", 1e-6
    bumped = export_amortized_params(model)
    bumped[name][0, 1] += eps
    probe = import_amortized_params(build("flow", (3,), 2, hidden=6, n_layers=1, n_coupling=2, seed=0), bumped)
    numeric = (float(amortized_nll_loss_fn(probe, batch).detach()) - value) / eps
    assert numeric == pytest.approx(grads[name][0, 1], rel=1e-4, abs=1e-7)


def test_train_step_rejects_non_finite_and_changes_nothing() -> None:
    model = build("flow", (3,), 2, hidden=6, n_layers=1, n_coupling=2, seed=0)
    batch = random_batch(np.random.default_rng(0), 4, 2, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model, opt_state, _ = amortized_train_step(model, batch, optimizer, optimizer.state_dict())
    before = export_amortized_params(model)
    state_before = {k: {n: v.clone() for n, v in s.items()} for k, s in optimizer.state_dict()["state"].items()}
    target = batch.target.clone()
    target[0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        amortized_train_step(model, dataclasses.replace(batch, target=target), optimizer, opt_state)
    after = export_amortized_params(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    for k, s in optimizer.state_dict()["state"].items():
        for n, v in s.items():
            torch.testing.assert_close(v, state_before[k][n], rtol=0, atol=0)


def _lorenz_batches() -> tuple[Batch, Batch]:
    problem = lorenz63(n_windows=384, window_length=8, obs_every=4, spinup_steps=300, seed=0)
    mean, std = problem.truth.mean((0, 1)), problem.truth.std((0, 1))
    truth = (problem.truth - mean) / std
    obs = np.where(problem.mask > 0, (np.nan_to_num(problem.obs) - mean) / std, 0.0)
    tensors = [torch.from_numpy(a) for a in (obs, problem.mask, truth)]
    return Batch(*(t[:256] for t in tensors)), Batch(*(t[256:] for t in tensors))


def test_training_reduces_nll_and_flow_beats_regression_on_lorenz63() -> None:
    """300 full-batch Adam steps on 256 standardized 8-step windows: the held-out NLL drops for
    both heads, and the flow's ends lower (it models the strong correlation along the window,
    which a diagonal Gaussian cannot). Measured: flow -33 to -37, regression -12 to -13 nats,
    coverage 0.77-0.80, init seeds 0-2, both backends."""
    train, test = _lorenz_batches()
    held_out = {}
    for kind in ("regression", "flow"):
        model = build(kind, (3,), 8, hidden=32, n_layers=2, n_coupling=2, seed=0)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        opt_state = optimizer.state_dict()
        with torch.no_grad():
            start = float(amortized_nll_loss_fn(model, test))
        for _ in range(300):
            model, opt_state, loss = amortized_train_step(model, train, optimizer, opt_state)
        with torch.no_grad():
            held_out[kind] = float(amortized_nll_loss_fn(model, test))
        assert np.isfinite(float(loss))
        assert held_out[kind] < start - 15.0, (kind, start, held_out[kind])
        cover = coverage(model, test, 0.9, 200, seed=0)
        assert 0.5 < cover <= 1.0, cover
    assert held_out["flow"] < held_out["regression"] - 5.0, held_out


def test_coverage_is_calibrated_when_truth_is_drawn_from_the_model() -> None:
    model = randomized(build("flow", (3,), 4, hidden=8, n_layers=1, n_coupling=3, seed=0), 6, 0.5)
    batch = random_batch(np.random.default_rng(5), 50, 4, 3)
    truth = model.sample(batch, 1, seed=100)[0]
    covered = coverage(model, dataclasses.replace(batch, target=truth), 0.9, 2000, seed=1)
    # 600 entries (correlated within a window): binomial sd 0.012; allow a generous 0.05.
    assert abs(covered - 0.9) < 0.05, covered
    off = coverage(model, dataclasses.replace(batch, target=truth + 100.0), 0.9, 200, seed=1)
    assert off == 0.0
    with pytest.raises(ValueError, match="level must be in"):
        coverage(model, batch, 1.5, 10, seed=1)
