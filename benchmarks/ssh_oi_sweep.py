"""``python -m benchmarks.ssh_oi_sweep``: choose the OI's scales on training days only.

The driver's SSH job compares the learned map with optimal interpolation; a fair OI has its
Gaussian scales tuned, and tuned where the learned solver is tuned: on training days, never on
the held-out ones. This sweep maps the last ``--days`` days of the training period of the
driver's default simulation (the days before the held-out ``--test-days``) with every pair of
scales and prints the data challenge's scores of each, best mu first; `--out` writes them as
JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from pipekit_cycle.ssh import oi_background, score, simulated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssh_oi_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=64, help="the simulated box (default 64, the driver's)")
    parser.add_argument("--train-days", type=int, default=960, help="the driver's training days (default 960)")
    parser.add_argument("--test-days", type=int, default=60, help="the driver's held-out days (default 60)")
    parser.add_argument("--days", type=int, default=120, help="training days scored, the last ones (default 120)")
    parser.add_argument("--space-km", type=float, nargs="+", default=[50.0, 70.0, 90.0, 110.0])
    parser.add_argument("--time-days", type=float, nargs="+", default=[5.0, 7.0, 10.0, 14.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="a JSON file for the table")
    args = parser.parse_args(argv)
    if not 0 < args.days <= args.train_days:
        parser.error(f"--days must be in 1..--train-days ({args.train_days}), got {args.days}")
    data = simulated(n_days=args.train_days + args.test_days, grid=args.grid, seed=args.seed)
    period = data.period(args.train_days - args.days, args.train_days)  # training days only
    rows = []
    for space_km, time_days in itertools.product(args.space_km, args.time_days):
        start = time.perf_counter()
        oi = oi_background(period, space_km=space_km, time_days=time_days, noise_std=data.noise_std)
        rows.append({"space_km": space_km, "time_days": time_days, **score(oi, period.truth, dx_deg=period.dx_deg),
                     "seconds": time.perf_counter() - start})
    rows.sort(key=lambda row: -row["mu"])
    for row in rows:
        print(f"{row['space_km']:6.0f} km {row['time_days']:5.1f} d  mu {row['mu']:.4f}  "
              f"lambda_x {row['lambda_x_deg']}  lambda_t {row['lambda_t_days']}  rmse {row['rmse']:.4f} m")
    if args.out is not None:
        args.out.write_text(json.dumps({"source": data.source, "days": args.days, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
