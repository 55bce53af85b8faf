"""Compiled temporary memory of one gradient of the 4DVarNet training loss, per inner-solve adjoint.

``jax.jit(grad).lower(...).compile().memory_analysis().temp_size_in_bytes`` (compile only; nothing
runs), 1D sizes in float64, at K = 8 and K = 64 solver steps for unrolled backprop, the checkpointed loop and
KStepAdjoint(k=1), and at 50 and 400 iterations of the fixed-point solver for ImplicitAdjoint.

    python -m benchmarks.jax_adjoint_memory [--batch 4 --n-time 8 --state-dim 64 --hidden 8]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

import vardax_jax as vd  # noqa: E402
from vardax_jax import solver  # noqa: E402


def temp_bytes(model, batch, solve) -> int:
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss(p, b):
        return jnp.mean((solve(eqx.combine(p, static), b) - b.target) ** 2)

    return jax.jit(jax.grad(loss)).lower(params, batch).compile().memory_analysis().temp_size_in_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--n-time", type=int, default=8)
    parser.add_argument("--state-dim", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.batch, args.n_time, args.state_dim)
    obs = np.where(rng.random(shape) < 0.5, rng.standard_normal(shape), np.nan)
    batch = vd.make_batch(obs, target=rng.standard_normal(shape))

    def model(k):
        return vd.FourDVarNet1D(args.state_dim, args.n_time, hidden_dim=args.hidden, prior_hidden_dim=args.hidden,
                                n_solver_steps=k, key=jr.PRNGKey(0))

    solves = {
        "unrolled": solver.solve_4dvarnet_unrolled,
        "checkpointed (None)": solver.solve_4dvarnet_checkpointed,
        "kstep k=1": lambda m, b: solver.solve_4dvarnet_kstep(m, b, 1),
    }
    print(f"state {shape}, hidden {args.hidden}; compiled temp bytes of grad(loss)")
    for name, solve in solves.items():
        small, large = temp_bytes(model(8), batch, solve), temp_bytes(model(64), batch, solve)
        print(f"{name:22s} K=8: {small:>12,d}  K=64: {large:>12,d}  ratio {large / small:5.2f}")
    def fixed_point(s):  # solver="fixed_point", exactly s iterations, a contractive prior
        m = vd.FourDVarNet1D(args.state_dim, args.n_time, hidden_dim=args.hidden, prior_hidden_dim=args.hidden,
                             n_solver_steps=s, solver="fixed_point", fixed_point_rtol=0.0, fixed_point_atol=0.0,
                             key=jr.PRNGKey(0))
        return eqx.tree_at(lambda m: m.prior.conv_out.weight, m, m.prior.conv_out.weight * 0.3)

    for name, adjoint in {
        "implicit (neumann)": vd.ImplicitAdjoint("neumann"),
        "implicit (gmres)": vd.ImplicitAdjoint("gmres"),
        "fixed point unrolled": None,
    }.items():
        solve = solver.solve_4dvarnet_unrolled if adjoint is None else (lambda m, b, a=adjoint: m(b, adjoint=a))
        small, large = temp_bytes(fixed_point(50), batch, solve), temp_bytes(fixed_point(400), batch, solve)
        print(f"{name:22s} n=50: {small:>11,d}  n=400: {large:>11,d}  ratio {large / small:5.2f}")

if __name__ == "__main__":
    main()
