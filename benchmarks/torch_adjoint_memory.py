"""Peak memory and time of one vardax_torch train step per inner-solve adjoint, K = 8 vs K = 64.

1D sizes, float64, one thread: the quick per-backend check; ``python -m benchmarks`` is the
full side-by-side benchmark (2D, both backends and the reference). The measurement helpers
live in `benchmarks._measure`.

Every configuration runs in its own subprocess (``--worker``), so peak RSS is not polluted by
earlier runs. Two memory figures per configuration:

* ``rss_mib``: peak RSS of the train step above the RSS just before it (the kernel's peak mark
  ``VmHWM`` is reset through ``/proc/self/clear_refs`` right before the step and read after
  it; the model, batch and optimizer are already built, and a warm-up step at K=1 has run so
  torch's lazy initialisation is not counted);
* ``prof_mib``: the peak of torch's own allocator trace, from ``torch.profiler`` with
  ``profile_memory=True`` (a second run of the step): the running sum of the
  ``[memory]`` allocation/free events in time order.

The k = 1 vs unrolled time ratio at ``--time-steps`` K (16) is also measured in one process
with the two train steps interleaved (``--worker timing K``), so both see the same load.

Time: the minimum wall time of ``--repeats`` train steps (after the profiled one); the minimum,
not the mean, because the machine may be shared and contention only ever adds time.

``rss_abs_mib`` is the absolute peak RSS of the step (the process's baseline included).
Deltas of a few MiB are at the resolution of RSS (page caching by the allocator); ratios are
printed with each delta floored at 1 MiB, and the profiler figure is the sharper one.

Configurations: ``unrolled`` (plain backprop through K steps, the reference),
``checkpoint`` (RecursiveCheckpointAdjoint(None): binomial with ceil(log2 K) stored carries),
``kstep1`` (KStepAdjoint(1)), all on the learned solve; ``implicit`` is another computation,
the ``solver="fixed_point"`` solve with tolerances 0 (exactly K iterations) under
ImplicitAdjoint (GMRES, at most K products).

Usage (from the repository root):
``python -m benchmarks.torch_adjoint_memory [--n 256] [--batch 4] [--time 8] [--hidden 16]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

from benchmarks._measure import profiler_peak_bytes as _profiler_peak_bytes
from benchmarks._measure import reset_peak_rss as _reset_peak_rss
from benchmarks._measure import status_kib as _status_kib

_SELF = (sys.executable, "-m", "benchmarks.torch_adjoint_memory")
CONFIGS = ("unrolled", "checkpoint", "kstep1", "implicit")


def worker(config: str, n_steps: int, args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    import vardax_torch as vd
    from pipekit_cycle import OptimizerConfig

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    shape = (args.batch, args.time, args.n)
    truth = rng.normal(size=shape)
    obs = np.where(rng.random(shape) < 0.5, truth, np.nan)
    batch = vd.make_batch(obs, target=truth, dtype="float64")
    adjoint = {
        "unrolled": None,
        "checkpoint": vd.RecursiveCheckpointAdjoint(),
        "kstep1": vd.KStepAdjoint(1),
        "implicit": vd.ImplicitAdjoint("gmres", rtol=0.0, atol=0.0, max_steps=n_steps),
    }[config]

    def build(k: int):
        fixed_point = config == "implicit"  # the fixed-point solver, exactly k iterations
        model = vd.FourDVarNet1D(args.n, args.time, hidden_dim=args.hidden, prior_hidden_dim=args.hidden,
                                 n_solver_steps=k, dtype=torch.float64,
                                 solver="fixed_point" if fixed_point else "learned",
                                 fixed_point_rtol=0.0, fixed_point_atol=0.0,
                                 solver_adjoint=adjoint if adjoint is not None else vd.RecursiveCheckpointAdjoint())
        if config == "implicit":  # a contractive prior, so the fixed point exists
            with torch.no_grad():
                for p in model.prior.parameters():
                    p.mul_(0.3)
        return model

    def loss_fn(model, b):
        if config == "unrolled":
            return vd.reconstruction_loss(vd.solve_4dvarnet_unrolled(model, b), b.target)
        return vd.train_loss_fn(model, b)

    train_step = vd.make_train_step(loss_fn)

    def step(model, optimizer, state):
        return train_step(model, batch, optimizer, state)

    warm = build(1)
    opt, state = vd.make_optimizer(OptimizerConfig(), warm)
    step(warm, opt, state)
    model = build(n_steps)
    optimizer, state = vd.make_optimizer(OptimizerConfig(), model)
    before = _status_kib("VmRSS")
    if _reset_peak_rss():
        _, state, loss = step(model, optimizer, state)
        rss_peak = _status_kib("VmHWM")
    else:  # no clear_refs: the process-lifetime peak (may include the set-up)
        _, state, loss = step(model, optimizer, state)
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        _, state, _ = step(model, optimizer, state)
    prof_peak = _profiler_peak_bytes(prof)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        _, state, _ = step(model, optimizer, state)
        times.append(time.perf_counter() - start)
    return {"config": config, "K": n_steps, "rss_mib": max(rss_peak - before, 0) / 1024,
            "rss_abs_mib": rss_peak / 1024,
            "prof_mib": prof_peak / 2**20, "time_s": min(times), "loss": float(loss)}


def timing_worker(n_steps: int, args: argparse.Namespace) -> dict:
    """KStepAdjoint(1) vs unrolled train steps on one model in one process, interleaved (so
    both see the same machine load); the minimum of ``repeats`` each."""
    import numpy as np
    import torch

    import vardax_torch as vd
    from pipekit_cycle import OptimizerConfig

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shape = (args.batch, args.time, args.n)
    truth = rng.normal(size=shape)
    batch = vd.make_batch(np.where(rng.random(shape) < 0.5, truth, np.nan), target=truth, dtype="float64")
    model = vd.FourDVarNet1D(args.n, args.time, hidden_dim=args.hidden, prior_hidden_dim=args.hidden,
                             n_solver_steps=n_steps, dtype=torch.float64, solver_adjoint=vd.KStepAdjoint(1))
    optimizer, state = vd.make_optimizer(OptimizerConfig(), model)

    def unrolled_loss(m, b):
        return vd.reconstruction_loss(vd.solve_4dvarnet_unrolled(m, b), b.target)

    unrolled_step = vd.make_train_step(unrolled_loss)

    times: dict[str, list[float]] = {"kstep1": [], "unrolled": []}
    for i in range(2 * args.repeats + 2):
        name = "kstep1" if i % 2 == 0 else "unrolled"
        start = time.perf_counter()
        if name == "kstep1":
            _, state, _ = vd.train_step(model, batch, optimizer, state)
        else:
            _, state, _ = unrolled_step(model, batch, optimizer, state)
        if i >= 2:  # the first of each is a warm-up
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--time", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="*", default=[8, 64])
    parser.add_argument("--time-steps", type=int, default=16, help="K of the k=1 vs unrolled timing")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS))
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "K"))
    args = parser.parse_args()
    if args.worker:
        config, k = args.worker[0], int(args.worker[1])
        print(json.dumps(timing_worker(k, args) if config == "timing" else worker(config, k, args)))
        return
    passthrough = ["--n", str(args.n), "--batch", str(args.batch), "--time", str(args.time),
                   "--hidden", str(args.hidden), "--repeats", str(args.repeats)]
    jobs = [(c, k) for c in args.configs for k in args.steps]
    jobs += [(c, args.time_steps) for c in ("unrolled", "kstep1") if args.time_steps not in args.steps]
    results = {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for config, k in jobs:
        out = subprocess.run([*_SELF, "--worker", config, str(k), *passthrough],
                             capture_output=True, text=True, check=True, env=env)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        results[(config, k)] = row
        print(f"{config:>10} K={k:<3} peak RSS +{row['rss_mib']:7.1f} MiB (abs {row['rss_abs_mib']:6.1f})  "
              f"profiler peak {row['prof_mib']:8.1f} MiB  "
              f"step {row['time_s'] * 1e3:8.1f} ms", flush=True)
    lo, hi = min(args.steps), max(args.steps)
    print(f"\nsizes: B={args.batch}, T={args.time}, N={args.n}, hidden={args.hidden}, float64, 1 thread")
    for config in args.configs:
        if (config, lo) in results and (config, hi) in results:
            a, b = results[(config, lo)], results[(config, hi)]
            print(f"{config:>10}: K={hi}/K={lo} peak RSS ratio {max(b['rss_mib'], 1.0) / max(a['rss_mib'], 1.0):5.2f}, "
                  f"absolute peak RSS ratio {b['rss_abs_mib'] / a['rss_abs_mib']:5.2f}, "
                  f"profiler ratio {b['prof_mib'] / max(a['prof_mib'], 1e-9):5.2f}")
    k = args.time_steps
    if ("unrolled", k) in results and ("kstep1", k) in results:
        ratio = results[("kstep1", k)]["time_s"] / results[("unrolled", k)]["time_s"]
        print(f"train step time at K={k}: KStepAdjoint(1) / unrolled = {ratio:.3f} (separate processes)")
    out = subprocess.run([*_SELF, "--worker", "timing", str(k), *passthrough],
                         capture_output=True, text=True, check=True, env=env)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"train step time at K={k}: KStepAdjoint(1) {row['kstep1'] * 1e3:.1f} ms / unrolled "
          f"{row['unrolled'] * 1e3:.1f} ms = {row['kstep1'] / row['unrolled']:.3f} (one process, interleaved)")


if __name__ == "__main__":
    main()
