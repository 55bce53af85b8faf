"""One benchmark configuration in its own process: ``python -m benchmarks.worker --backend B
--adjoint A --k K [--repeats R --device cpu|cuda --threads N]`` prints one JSON line.

Measured (all in float32, batch 4, T=15, 64x64, LSTM 48 channels, prior 32 channels):

1. warm-up: one full training step (JAX: this compiles it; torch: lazy initialisation);
2. peak RSS of one step: ``malloc_trim`` + ``VmHWM`` reset right before it, ``VmHWM`` after
   (``rss_mib``: above the RSS before the step; ``rss_abs_mib``: the process's absolute peak);
3. the backend's allocator figure (``alloc_mib``, ``alloc_kind`` says which):
   torch on CPU: peak of ``torch.profiler(profile_memory=True)`` over one step; torch on CUDA:
   ``torch.cuda.max_memory_allocated`` minus the allocation before the step; JAX on CPU: the
   compiled step's ``memory_analysis().temp_size_in_bytes``, on GPU too (the GPU allocator's
   ``peak_bytes_in_use``, a process peak that cannot be reset, is kept as ``jax_gpu_peak_mib``);
4. time: ``repeats`` further steps, each synchronised (JAX: the host reads the finiteness flag;
   CUDA: ``torch.cuda.synchronize``); the median is reported, min and all values are kept.

A training step is forward through the inner solve + MSE to the target + backward + Adam
(lr 1e-3) update. Backends ``vardax_jax``/``vardax_torch``: the public ``train_step`` with the
model's ``solver_adjoint`` set to the spec; ``unrolled`` is the same step with the loss through
``solve_4dvarnet_unrolled`` (plain backprop through the K steps). Backend ``reference``:
``ocean4dvarnet.models.GradSolver`` (PyPI 1.0.6) with ``n_step=K`` in training mode.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks._measure import profiler_peak_bytes, reset_peak_rss, status_kib, time_steps

BATCH, N_TIME, HEIGHT, WIDTH = 4, 15, 64, 64
HIDDEN, PRIOR_HIDDEN = 48, 32
PRIOR_SCALE = 0.3  # implicit: prior weights scaled so T(x) = m y + (1 - m) phi(x) contracts
LR = 1e-3
LR_GRAD = 0.2  # ocean4dvarnet's default


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(obs, truth)`` shaped ``(4, 15, 64, 64)``, float32: a smooth travelling field plus noise;
    obs is truth with 70% of the pixels NaN (unobserved)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_TIME)[None, :, None, None]
    yy = np.linspace(0, 2 * np.pi, HEIGHT)[None, None, :, None]
    xx = np.linspace(0, 2 * np.pi, WIDTH)[None, None, None, :]
    phase = rng.uniform(0, 2 * np.pi, size=(BATCH, 1, 1, 1))
    truth = np.sin(xx + 0.2 * t + phase) * np.cos(yy - 0.1 * t) + 0.1 * rng.standard_normal((BATCH, N_TIME, HEIGHT,
                                                                                              WIDTH))
    obs = np.where(rng.random(truth.shape) < 0.3, truth, np.nan)
    return obs.astype(np.float32), truth.astype(np.float32)


def adjoint_spec(name: str, k: int) -> Any:
    """The ``pipekit_cycle`` spec for ``name`` at K (``None`` for ``unrolled``);
    ``checkpoint:all`` is ``RecursiveCheckpointAdjoint(checkpoints=K)``; ``implicit`` is
    ``ImplicitAdjoint(max_steps=K, rtol=0, atol=0)`` on the fixed-point solver (see `_config`):
    at most K GMRES products in the backward solve."""
    from pipekit_cycle import ImplicitAdjoint, RecursiveCheckpointAdjoint, parse_adjoint

    if name == "unrolled":
        return None
    if name == "checkpoint:all":
        return RecursiveCheckpointAdjoint(checkpoints=k)
    if name == "implicit":
        return ImplicitAdjoint(max_steps=k, rtol=0.0, atol=0.0)
    return parse_adjoint(name)


def _config(k: int, spec: Any) -> Any:
    """The benchmark model at K steps: ocean4dvarnet's architecture (`ocean4dvarnet_config`,
    dropout 0), the maths the reference row runs. The ``implicit`` rows time a different
    computation, the ``solver="fixed_point"`` solve of the same prior (an implicit adjoint needs a
    fixed point), with tolerances 0: exactly K iterations ``x <- m y + (1 - m) phi(x)``."""
    from pipekit_cycle import ImplicitAdjoint, RecursiveCheckpointAdjoint, ocean4dvarnet_config

    fixed_point = isinstance(spec, ImplicitAdjoint)
    return ocean4dvarnet_config(
        (HEIGHT, WIDTH), N_TIME, n_step=k, hidden_dim=HIDDEN, prior_hidden_dim=PRIOR_HIDDEN, lr_grad=LR_GRAD,
        dropout=0.0, solver="fixed_point" if fixed_point else "learned", fixed_point_rtol=0.0,
        fixed_point_atol=0.0, solver_adjoint=spec if spec is not None else RecursiveCheckpointAdjoint(),
    )


def _contractive(vd: Any, model: Any) -> Any:
    params = vd.export_params(model)
    scaled = {name: value * PRIOR_SCALE if name.startswith("prior.") else value for name, value in params.items()}
    return vd.import_params(model, scaled)


def log(message: str) -> None:
    """A timestamped progress line on stderr (the parent keeps stdout for the JSON)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _peak_rss(step: Callable[[], None]) -> tuple[float, float]:
    before = status_kib("VmRSS")
    if reset_peak_rss():
        step()
        peak = status_kib("VmHWM")
    else:  # pragma: no cover - no clear_refs: the process-lifetime peak
        import resource

        step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(peak - before, 0) / 1024, peak / 1024


def run_jax(adjoint: str, k: int, repeats: int, device: str, compile_only: bool = False) -> dict[str, Any]:
    """A ``vardax_jax`` configuration (default JAX backend; ``device`` only checked).
    ``compile_only``: lower and compile the step, report XLA's temp memory, run nothing."""
    import jax

    import vardax_jax as vd
    from pipekit_cycle import OptimizerConfig

    platform = jax.default_backend()
    if device == "cuda" and platform != "gpu":
        raise RuntimeError(f"--device cuda: JAX's default backend is {platform!r}, not gpu ({jax.devices()})")
    spec = adjoint_spec(adjoint, k)
    model = vd.build_model(_config(k, spec), seed=0)
    if adjoint == "implicit":
        model = _contractive(vd, model)
    obs, truth = make_data()
    batch = vd.make_batch(obs, target=truth, dtype="float32")
    optimizer, opt_state = vd.make_optimizer(OptimizerConfig(name="adam", lr=LR), model)

    if adjoint == "unrolled":
        def loss_fn(m: Any, b: Any) -> Any:
            return vd.reconstruction_loss(vd.solve_4dvarnet_unrolled(m, b), b.target)
    else:
        loss_fn = vd.train_loss_fn

    # One public step for every configuration, so `unrolled` and the adjoint specs run the
    # same compiled computation (only the loss differs).
    train_step = vd.make_train_step(loss_fn)

    log(f"vardax_jax {adjoint} K={k}: compiling on {jax.devices()[0]}")
    compile_start = time.perf_counter()
    compiled = train_step.compile(model, batch, optimizer, opt_state)
    compile_s = time.perf_counter() - compile_start
    analysis = compiled.memory_analysis()
    temp_bytes = int(analysis.temp_size_in_bytes) if analysis is not None else None
    state = {"model": model, "opt": opt_state, "loss": math.nan}
    if compile_only:
        return {"rss_mib": None, "rss_abs_mib": None, "alloc_mib": None if temp_bytes is None else temp_bytes / 2**20,
                "alloc_kind": "xla_temp_size", "xla_temp_mib": None if temp_bytes is None else temp_bytes / 2**20,
                "times_s": [], "compile_s": compile_s, "loss": math.nan, "device": str(jax.devices()[0]),
                "platform": platform, "compile_only": True}

    def step() -> None:
        new_model, new_opt, loss = compiled(state["model"], batch, optimizer, state["opt"])
        state.update(model=new_model, opt=new_opt, loss=float(loss))

    log(f"compiled in {compile_s:.1f} s; xla temp {temp_bytes}")
    warm_start = time.perf_counter()
    step()  # warm-up: the first run of the compiled executable
    warm_s = time.perf_counter() - warm_start
    log(f"warm-up step {warm_s:.1f} s")
    rss, rss_abs = _peak_rss(step)
    times = time_steps(step, repeats)
    # The compiled step's temp memory on every platform: the GPU allocator's peak cannot be
    # reset and holds the autotuner's scratch from compilation (2.2 GiB whatever K, measured).
    alloc_mib, alloc_kind = (None if temp_bytes is None else temp_bytes / 2**20), "xla_temp_size"
    stats = (jax.devices()[0].memory_stats() or {}) if platform == "gpu" else {}
    return {"rss_mib": rss, "rss_abs_mib": rss_abs, "alloc_mib": alloc_mib, "alloc_kind": alloc_kind,
            "jax_gpu_peak_mib": stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None,
            "xla_temp_mib": None if temp_bytes is None else temp_bytes / 2**20, "times_s": times,
            "compile_s": compile_s, "warmup_s": warm_s, "loss": state["loss"],
            "device": str(jax.devices()[0]), "platform": platform}


def _torch_device(device: str) -> Any:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: torch.cuda.is_available() is False (a CPU build or no GPU)")
    return torch.device(device)


def _torch_measure(step: Callable[[], None], dev: Any, repeats: int) -> dict[str, Any]:
    """Warm-up, RSS, allocator and time of a torch step (shared by vardax_torch and the reference)."""
    import torch

    def synced() -> None:
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    warm_start = time.perf_counter()
    synced()
    warm_s = time.perf_counter() - warm_start
    log(f"warm-up step {warm_s:.1f} s")
    rss, rss_abs = _peak_rss(synced)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        synced()
        alloc, kind = (torch.cuda.max_memory_allocated(dev) - base) / 2**20, "torch_cuda_max_memory_allocated"
    else:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            synced()
        alloc, kind = profiler_peak_bytes(prof) / 2**20, "torch_profiler_peak"
    times = time_steps(synced, repeats)
    return {"rss_mib": rss, "rss_abs_mib": rss_abs, "alloc_mib": alloc, "alloc_kind": kind, "times_s": times,
            "warmup_s": warm_s, "device": str(dev), "threads": torch.get_num_threads()}


def run_torch(adjoint: str, k: int, repeats: int, device: str) -> dict[str, Any]:
    """A ``vardax_torch`` configuration, built on ``device`` through the public API
    (``build_model(..., device=)``, ``make_batch(..., device=)``)."""
    import vardax_torch as vd
    from pipekit_cycle import OptimizerConfig

    dev = _torch_device(device)
    spec = adjoint_spec(adjoint, k)
    model = vd.build_model(_config(k, spec), seed=0, dtype="float32", device=dev)
    if adjoint == "implicit":
        model = _contractive(vd, model)
    obs, truth = make_data()
    batch = vd.make_batch(obs, target=truth, dtype="float32", device=dev)
    optimizer, opt_state = vd.make_optimizer(OptimizerConfig(name="adam", lr=LR), model)
    state: dict[str, Any] = {"loss": math.nan}

    def unrolled_loss(m: Any, b: Any) -> Any:
        return vd.reconstruction_loss(vd.solve_4dvarnet_unrolled(m, b), b.target)

    train_step = vd.make_train_step(unrolled_loss) if adjoint == "unrolled" else vd.train_step
    state["opt"] = opt_state

    def step() -> None:
        # Each step returns a snapshot of the optimizer state, passed back as it is (free).
        _, state["opt"], loss = train_step(model, batch, optimizer, state["opt"])
        state["loss"] = float(loss)

    out = _torch_measure(step, dev, repeats)
    out["loss"] = state["loss"]
    return out


def load_reference_models() -> Any:
    """``ocean4dvarnet/models.py`` loaded on its own (the package ``__init__`` imports xarray and
    more); needs torch, kornia, pandas, pytorch-lightning (``python -m benchmarks --install-reference``)."""
    import importlib.util
    import os

    found = importlib.util.find_spec("ocean4dvarnet")
    if found is None or not found.submodule_search_locations:
        raise RuntimeError("ocean4dvarnet is not installed: run `python -m benchmarks --install-reference`")
    path = os.path.join(next(iter(found.submodule_search_locations)), "models.py")
    spec = importlib.util.spec_from_file_location("ocean4dvarnet_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_reference(k: int, repeats: int, device: str, lr_grad: float = LR_GRAD) -> dict[str, Any]:
    """``ocean4dvarnet.models.GradSolver(BilinAEPriorCost(15, 32), BaseObsCost(),
    ConvLstmGradModel(15, 48, dropout=0), n_step=K, lr_grad=0.2)`` in training mode (as its
    Lightning module trains it; dropout 0, as on our side, where a training step refuses dropout);
    step = solver forward + MSE to the target + backward + ``torch.optim.Adam``."""
    import types

    import torch

    models = load_reference_models()
    dev = _torch_device(device)
    torch.manual_seed(0)
    solver = models.GradSolver(
        prior_cost=models.BilinAEPriorCost(dim_in=N_TIME, dim_hidden=PRIOR_HIDDEN),
        obs_cost=models.BaseObsCost(),
        grad_mod=models.ConvLstmGradModel(dim_in=N_TIME, dim_hidden=HIDDEN, dropout=0.0),
        n_step=k, lr_grad=lr_grad,
    ).to(dev)
    solver.train()
    obs, truth = make_data()
    batch = types.SimpleNamespace(input=torch.as_tensor(obs, device=dev), tgt=torch.as_tensor(truth, device=dev))
    optimizer = torch.optim.Adam(solver.parameters(), lr=LR, foreach=False)
    state: dict[str, Any] = {"loss": math.nan}

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = solver(batch)
        loss = torch.nn.functional.mse_loss(out, batch.tgt)
        loss.backward()
        optimizer.step()
        state["loss"] = float(loss.detach())

    out = _torch_measure(step, dev, repeats)
    out["loss"] = state["loss"]
    out["lr_grad"] = lr_grad
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run one configuration, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, choices=["vardax_jax", "vardax_torch", "reference"])
    parser.add_argument("--adjoint", default="unrolled")
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--compile-only", action="store_true", help="vardax_jax: XLA temp memory only, no run")
    args = parser.parse_args(argv)
    if args.backend != "vardax_jax":
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*did not converge.*")  # implicit: K iterations by design
    try:
        from pipekit_cycle import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
    except ImportError:  # pragma: no cover
        pass
    warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning")
    start = time.perf_counter()
    if args.backend == "vardax_jax":
        row = run_jax(args.adjoint, args.k, args.repeats, args.device, compile_only=args.compile_only)
    elif args.backend == "vardax_torch":
        row = run_torch(args.adjoint, args.k, args.repeats, args.device)
    else:
        row = run_reference(args.k, args.repeats, args.device)
    row.update(backend=args.backend, adjoint=args.adjoint if args.backend != "reference" else "unrolled",
               K=args.k, repeats=args.repeats, wall_s=time.perf_counter() - start,
               time_s=statistics.median(row["times_s"]) if row["times_s"] else None,
               time_min_s=min(row["times_s"]) if row["times_s"] else None)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
