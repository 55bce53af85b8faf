"""Models of ocean4dvarnet (its own code, PyPI 1.0.6) reproduced by both backends: the
training-mode output, the eval-mode output and one SGD step, after `from_ocean4dvarnet`, which
takes no grid: one conversion reproduces GradSolver on every grid."""

from __future__ import annotations

import re
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import pipekit_cycle as pk
import vardax_jax as vj
import vardax_torch as vt
from pipekit_cycle.validation import smallest_grid

B, T, H, W = 2, 3, 8, 8
# Two grids for one conversion: square, and one neither square nor the first's size (both
# legal for the "options" variant's 2x pooling and 3x3 kernel: even, at least 6).
GRIDS = ((H, W), (6, 12))
VARIANTS = {
    # GradSolver(...) keyword sets: ocean4dvarnet's defaults but dropout, then the options.
    "plain": dict(prior=dict(bilin_quad=True), grad_mod=dict(), solver=dict(n_step=3, lr_grad=0.2, lbd=1.0), w=1.0),
    "options": dict(prior=dict(bilin_quad=False, downsamp=2), grad_mod=dict(downsamp=2),
                    solver=dict(n_step=4, lr_grad=0.3, lbd=1.4), w=0.6),
}


def _solver(o4d: types.ModuleType, variant: str, dtype: torch.dtype) -> torch.nn.Module:
    spec = VARIANTS[variant]
    torch.manual_seed(0)
    solver = o4d.GradSolver(
        prior_cost=o4d.BilinAEPriorCost(T, 4, **spec["prior"]),
        obs_cost=o4d.BaseObsCost(spec["w"]),
        grad_mod=o4d.ConvLstmGradModel(T, 5, dropout=0.0, **spec["grad_mod"]),
        **spec["solver"],
    )
    return solver.to(dtype)


def _data(seed: int = 0, grid: tuple[int, int] = (H, W)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(B, T, *grid))
    obs = np.where(rng.random(truth.shape) < 0.3, truth + 0.1 * rng.normal(size=truth.shape), np.nan)
    return obs, truth


def _reference_batch(obs: np.ndarray, truth: np.ndarray, dtype: torch.dtype) -> types.SimpleNamespace:
    return types.SimpleNamespace(input=torch.as_tensor(obs).to(dtype), tgt=torch.as_tensor(truth).to(dtype))


def _reference_output(solver: torch.nn.Module, batch: types.SimpleNamespace, training: bool) -> np.ndarray:
    solver.train(training)
    # ocean4dvarnet creates its LSTM state with torch.zeros: the default dtype must be the model's.
    default = torch.get_default_dtype()
    torch.set_default_dtype(batch.input.dtype)
    try:
        return solver(batch).detach().numpy()
    finally:
        torch.set_default_dtype(default)


def _ours(backend: types.ModuleType, params: dict, config: pk.FourDVarNetConfig, dtype: str):
    return backend.import_params(backend.build_model(config, seed=1, dtype=dtype), params)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-10), ("float32", 1e-5)])
def test_outputs_match_grad_solver_on_two_grids_from_one_conversion(o4d, variant, dtype, tolerance):
    torch_dtype = getattr(torch, dtype)
    solver = _solver(o4d, variant, torch_dtype)
    params, config = vt.from_ocean4dvarnet(solver)  # no grid: GradSolver holds none, the maths needs none
    assert config.n_solver_steps == VARIANTS[variant]["solver"]["n_step"] and config.grad_mod_dropout == 0.0
    assert {str(v.dtype) for v in params.values()} == {dtype}
    assert config.state_shape not in GRIDS  # the placeholder is no gate
    models = {backend: _ours(backend, params, config, dtype) for backend in (vt, vj)}
    for grid in GRIDS:
        obs, truth = _data(grid=grid)
        batch = _reference_batch(obs, truth, torch_dtype)
        training, evaluation = _reference_output(solver, batch, True), _reference_output(solver, batch, False)
        assert _relative(evaluation, training) > 1e-3  # phi(x_K) is not x_K: the two checks differ
        for backend, model in models.items():
            ours = backend.make_batch(obs, target=truth, dtype=dtype)
            where = f"{backend.__name__} on {grid}"
            assert _relative(backend.to_numpy(model(ours)), training) < tolerance, where
            assert _relative(backend.to_numpy(backend.predict(model, ours)), evaluation) < tolerance, where


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_sgd_step_gives_ocean4dvarnets_parameters(o4d, variant):
    solver = _solver(o4d, variant, torch.float64)
    params, config = vt.from_ocean4dvarnet(solver)
    obs, truth = _data(1)
    lr = 0.05
    optimizer = torch.optim.SGD(solver.parameters(), lr=lr)
    solver.train()
    torch.set_default_dtype(torch.float64)
    try:
        loss = torch.nn.functional.mse_loss(solver(_reference_batch(obs, truth, torch.float64)),
                                            torch.as_tensor(truth))
        loss.backward()
    finally:
        torch.set_default_dtype(torch.float32)
    optimizer.step()
    expected, _ = vt.from_ocean4dvarnet(solver)
    moved = max(_relative(expected[name], params[name]) for name in params)
    assert moved > 1e-6  # the step changed the parameters
    for backend in (vt, vj):
        model = _ours(backend, params, config, "float64")
        step_optimizer, state = backend.make_optimizer(pk.OptimizerConfig(name="sgd", lr=lr), model)
        model, _, our_loss = backend.train_step(model, backend.make_batch(obs, target=truth, dtype="float64"),
                                                step_optimizer, state)
        assert float(our_loss) == pytest.approx(float(loss.detach()), rel=1e-12)
        after = backend.export_params(model)
        for name in params:
            assert np.abs(after[name] - expected[name]).max() <= 1e-8 * max(np.abs(expected[name]).max(), 1.0), name


def test_state_dict_checkpoint_and_command_line(o4d, tmp_path):
    solver = _solver(o4d, "options", torch.float64)
    params, config = vt.from_ocean4dvarnet(solver)
    # A bare GradSolver records no training patch: the smallest grid 2x pooling and a 3x3 kernel allow.
    assert config.state_shape == smallest_grid(2, 3, (2, 2)) == (6, 6)
    settings = dict(n_step=4, lr_grad=0.3, lbd=1.4, obs_weight=0.6, prior_downsample=2, grad_mod_downsample=2,
                    bilin_quad=False, dropout=0.0)
    from_dict, dict_config = vt.from_ocean4dvarnet(solver.state_dict(), **settings)
    assert dict_config == config and all(np.array_equal(from_dict[k], v) for k, v in params.items())
    # The older call, with a grid, still works: the grid is recorded as the training patch, nothing else.
    given, given_config = vt.from_ocean4dvarnet(solver, state_shape=(12, 10))
    assert given_config == config.replace(state_shape=(12, 10)) and all(np.array_equal(given[k], v)
                                                                         for k, v in params.items())
    # A Lightning module or checkpoint knows its training patch: rec_weight's (T, H, W).
    patch = (10, 12)
    lightning = o4d.Lit4dVarNet(solver, np.ones((T, *patch)), opt_fn=None)
    assert vt.from_ocean4dvarnet(lightning)[1] == config.replace(state_shape=patch)
    checkpoint = tmp_path / "run.ckpt"  # a Lightning checkpoint: Lit4dVarNet's state_dict under "state_dict"
    torch.save({"state_dict": lightning.state_dict(), "epoch": 3}, checkpoint)
    from_file, file_config = vt.from_ocean4dvarnet(checkpoint, **settings)
    assert file_config == config.replace(state_shape=patch)
    assert all(np.array_equal(from_file[k], v) for k, v in params.items())

    out = tmp_path / "imported.safetensors"
    command = [sys.executable, "-m", "vardax_torch", "import-ocean4dvarnet", str(checkpoint), "--out", str(out),
               "--n-step", "4", "--lr-grad", "0.3", "--lbd", "1.4",
               "--obs-weight", "0.6", "--prior-downsample", "2", "--grad-mod-downsample", "2", "--no-bilin-quad",
               "--dropout", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "training patch (state_shape) (10, 12); maps any grid with H and W multiples of 2" in done.stdout
    loaded, loaded_config = pk.load_params(out)
    assert loaded_config == file_config and all(np.array_equal(loaded[k], v) for k, v in params.items())
    # The same file serves any grid: both backends load it into a model and map a grid of another size.
    obs, _ = _data(grid=(8, 14))
    outputs = [backend.to_numpy(backend.predict(_ours(backend, loaded, loaded_config, "float64"),
                                                backend.make_batch(obs, dtype="float64"))) for backend in (vt, vj)]
    assert outputs[0].shape == obs.shape and _relative(outputs[1], outputs[0]) < 1e-10
    bad = subprocess.run([*command[:5], str(tmp_path / "missing.ckpt"), *command[5:]], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "missing.ckpt" in bad.stderr


def test_errors_name_what_was_expected(o4d):
    solver = _solver(o4d, "plain", torch.float64)
    with pytest.raises(ValueError, match="n_step is not stored in a state_dict"):
        vt.from_ocean4dvarnet(solver.state_dict())
    with pytest.raises(ValueError, match="not an ocean4dvarnet GradSolver state_dict"):
        vt.from_ocean4dvarnet({"weight": torch.zeros(2)}, n_step=2)
    with pytest.raises(ValueError, match=r"\['n_step'\] are read from the GradSolver"):
        vt.from_ocean4dvarnet(solver, n_step=2)
    with pytest.raises(ValueError, match="prior_downsample must divide every state_shape size"):
        vt.from_ocean4dvarnet(solver.state_dict(), state_shape=(7, 8), n_step=2, prior_downsample=2)
    # A grid the architecture cannot take: the shared rule's words, the same in both backends.
    params, config = vt.from_ocean4dvarnet(solver.state_dict(), n_step=2, prior_downsample=2, dropout=0.0)
    odd, _ = _data(grid=(8, 9))
    rule = "with H and W multiples of 2 (the down-sampling) and at least 6 (the kernel 3 on the grid pooled by 2)"
    for backend in (vt, vj):
        with pytest.raises(ValueError, match=re.escape(f"batch.input must have shape (B, T=3, H, W) {rule}, got")):
            _ours(backend, params, config, "float64")(backend.make_batch(odd, dtype="float64"))
    dropout_model = vt.build_model(vt.from_ocean4dvarnet(solver.state_dict(), n_step=2)[1])
    obs, truth = _data()
    optimizer, state = vt.make_optimizer(pk.OptimizerConfig(), dropout_model)
    with pytest.raises(ValueError, match=r"grad_mod_dropout=0.1 is not applied by vardax"):
        vt.train_step(dropout_model, vt.make_batch(obs, target=truth), optimizer, state)


def test_batch_mates_change_a_solution_but_not_in_our_default_architecture(o4d):
    """ocean4dvarnet's batch-wide means and gradient RMS couple the samples of a batch; the
    project's default architecture does not."""
    solver = _solver(o4d, "plain", torch.float64)
    params, config = vt.from_ocean4dvarnet(solver)
    obs, _ = _data()
    model = _ours(vt, params, config, "float64")
    together = vt.to_numpy(model(vt.make_batch(obs, dtype="float64")))[:1]
    alone = vt.to_numpy(model(vt.make_batch(obs[:1], dtype="float64")))
    assert _relative(together, alone) > 1e-6
    ours = vt.build_model(pk.FourDVarNetConfig(state_shape=(H, W), n_time=T, n_solver_steps=3), dtype="float64")
    together = vt.to_numpy(ours(vt.make_batch(obs, dtype="float64")))[:1]
    alone = vt.to_numpy(ours(vt.make_batch(obs[:1], dtype="float64")))
    assert _relative(together, alone) < 1e-12
