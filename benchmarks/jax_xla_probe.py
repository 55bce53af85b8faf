"""How XLA flags change the JAX training step on CPU: one configuration per process.

``python -m benchmarks.jax_xla_probe [--k 1] [--adjoint unrolled] [--steps 2] --flags=--xla_cpu_use_xnnpack=true ...``
runs, for the baseline (the inherited ``XLA_FLAGS``) and each ``--flags`` variant, a fresh
``python -m benchmarks.jax_xla_probe --child`` process with ``XLA_FLAGS`` set, which compiles the
same step `benchmarks.worker` times (2D, batch 4, T=15, 64x64, LSTM 48, prior 32, float32),
then runs ``--steps`` steps and reports the compile time, the first step and the fastest of the
rest (a flag XLA does not know aborts its process; that is reported as an error).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks._measure import machine_info


def child(args: argparse.Namespace) -> dict:
    """Compile and run the vardax_jax step (the worker's own code path) under the current XLA_FLAGS."""
    import warnings

    import jax

    from benchmarks import worker

    warnings.simplefilter("ignore")
    start = time.perf_counter()
    row = worker.run_jax(args.adjoint, args.k, max(args.steps - 1, 1), "cpu")
    return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "compile_s": row["compile_s"],
            "first_step_s": row["warmup_s"], "step_s": min(row["times_s"]), "xla_temp_mib": row["xla_temp_mib"],
            "total_s": time.perf_counter() - start, "jax": jax.__version__}


def main(argv: list[str] | None = None) -> int:
    """Run the baseline and every flag variant, print one line each and a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--adjoint", default="unrolled")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--flags", action="append", default=[],
                        help="one XLA_FLAGS variant, written --flags=--xla_...; repeat it (the baseline always runs)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return 0
    base = os.environ.get("XLA_FLAGS", "")
    results = []
    for flags in [base, *args.flags]:
        env = dict(os.environ, XLA_FLAGS=flags)
        command = [sys.executable, "-m", "benchmarks.jax_xla_probe", "--child", "--k", str(args.k),
                   "--adjoint", args.adjoint, "--steps", str(args.steps)]
        load = os.getloadavg()[0]
        try:
            out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            row = json.loads(lines[-1]) if lines else {"xla_flags": flags, "error": out.stderr.strip()[-300:]}
        except subprocess.TimeoutExpired:
            row = {"xla_flags": flags, "error": f"timed out after {args.timeout} s"}
        row["load_before"] = load
        results.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"machine": machine_info(), "k": args.k, "adjoint": args.adjoint, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
