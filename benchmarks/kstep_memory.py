"""Compiled temporary memory of a gradient through an optimistix solve under KStepAdjoint(k), against k.

The question (issue 32): does what KStepAdjoint keeps to restart its last k steps grow with k, with a step
bound and without one (``max_steps=None``, as ``optx.compat.minimize`` passes)? The solve is gradient
descent on a diagonal quadratic in ``--dim`` float64 unknowns, ``0.5 y^T D y - theta^T y``, and the number is
``jax.jit(jax.grad(loss)).lower(theta).compile().memory_analysis().temp_size_in_bytes`` (compile only,
nothing runs), also in units of one float64 vector of the problem (``8 * dim`` bytes; the solver's loop carry
is a few of them). RecursiveCheckpointAdjoint (the project's ``checkpoints=None``: ceil(log2 max_steps)
stored carries) is the reference where there is a step bound.

    python -m benchmarks.kstep_memory [--dim 4096 --max-steps 1024 --ks 1 4 16 64 256 1024 --out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import optimistix as optx  # noqa: E402

import vardax_jax as vd  # noqa: E402


def temp_bytes(adjoint: optx.AbstractAdjoint, dim: int, max_steps: int | None) -> int:
    """XLA temporary bytes of one compiled gradient of ``sum(y*)`` with respect to ``theta``."""
    diagonal = jnp.linspace(1.0, 2.0, dim)
    solver = optx.GradientDescent(learning_rate=0.4, rtol=1e-10, atol=1e-10)

    def loss(theta):
        solution = optx.minimise(lambda y, th: 0.5 * jnp.sum(diagonal * y**2) - jnp.sum(th * y), solver,
                                 jnp.zeros(dim), theta, adjoint=adjoint, max_steps=max_steps, throw=False)
        return jnp.sum(solution.value)

    compiled = jax.jit(jax.grad(loss)).lower(jnp.ones(dim)).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--max-steps", type=int, default=1024)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 16, 64, 256, 1024])
    parser.add_argument("--out", help="also write the measurements as JSON to this file")
    args = parser.parse_args()
    vector = 8 * args.dim
    rows = []
    adjoints = [("RecursiveCheckpointAdjoint()", None, vd.RecursiveCheckpointAdjoint())]
    adjoints += [(f"KStepAdjoint({k})", k, vd.KStepAdjoint(k)) for k in args.ks]
    print(f"gradient descent, {args.dim} float64 unknowns (a vector: {vector:,d} bytes); XLA temp bytes of grad(loss)")
    print(f"{'adjoint':28s} {'max_steps=' + str(args.max_steps):>26s} {'max_steps=None':>26s}")
    for name, k, adjoint in adjoints:
        row = {"adjoint": name, "k": k}
        cells = []
        for key, max_steps in (("bounded", args.max_steps), ("unbounded", None)):
            if k is None and max_steps is None:  # the checkpointed loop needs a bound or a count
                row[key] = None
                cells.append(f"{'-':>26s}")
                continue
            row[key] = temp_bytes(adjoint, args.dim, max_steps)
            cells.append(f"{row[key]:>14,d} ({row[key] / vector:5.1f} vec)")
        rows.append(row)
        print(f"{name:28s} {' '.join(cells)}", flush=True)
    if args.out:
        record = {
            "benchmark": "kstep_memory",
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "problem": {"solver": "optx.GradientDescent(0.4)", "dim": args.dim, "dtype": "float64",
                        "max_steps": args.max_steps, "vector_bytes": vector},
            "quantity": "jax.jit(jax.grad(loss)).lower(theta).compile().memory_analysis().temp_size_in_bytes",
            "environment": {"python": sys.version.split()[0], "jax": jax.__version__,
                            "optimistix": optx.__version__, "platform": platform.platform(),
                            "device": str(jax.devices()[0].device_kind)},
            "rows": rows,
        }
        with open(args.out, "w") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()
