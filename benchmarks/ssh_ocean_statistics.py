"""``python -m benchmarks.ssh_ocean_statistics``: the simulated ocean's statistics, as reported.

Runs `pipekit_cycle.ssh.simulate` on its whole doubly periodic model box (``--box`` points each
way, the default settings, ``--seed``) for ``--days`` days after the spin-up, with the cache
off so that the generation time is the cold one, and prints what `pipekit_cycle.ssh.simulation`'s
docstring, the README and the SSH guide report:

- the SSH's standard deviation, skewness and kurtosis over the driver's map (the box's first
  ``--map`` points each way: where the jet is), and those of its anomaly from the time mean;
- the skewness and kurtosis of its Laplacian (:math:`f_0 / g` times the relative vorticity);
- the slope of the time-mean isotropic wavenumber spectrum between 70 and 250 km (the periodic
  box, each map's mean removed; one point per shell of width :math:`2\\pi / L_y`) and of the
  zonal one;
- the e-folding time of the map's anomaly autocorrelation (days);
- the jet's SSH step: the range of the time- and zonal-mean SSH across the box;
- the generation time of ``--days`` days plus the spin-up on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from pipekit_cycle.ssh import simulate


def _moments(values: np.ndarray) -> tuple[float, float]:
    anomaly = values - values.mean()
    variance = float((anomaly**2).mean())
    return float((anomaly**3).mean()) / variance**1.5, float((anomaly**4).mean()) / variance**2


def _slope(wavenumbers: np.ndarray, spectrum: np.ndarray, shortest_km: float, longest_km: float) -> float:
    band = (wavenumbers >= 2 * np.pi / longest_km) & (wavenumbers <= 2 * np.pi / shortest_km)
    return float(np.polyfit(np.log(wavenumbers[band]), np.log(spectrum[band]), 1)[0])


def statistics(ssh: np.ndarray, *, dx_km: float, dy_km: float, map_points: int) -> dict[str, float]:
    """The reported statistics of daily periodic SSH maps ``(time, ny, nx)`` (m)."""
    n_days, ny, nx = ssh.shape
    kx = 2 * np.pi * np.fft.fftfreq(nx, dx_km)
    ky = 2 * np.pi * np.fft.fftfreq(ny, dy_km)
    kappa = np.sqrt(kx[None, :] ** 2 + ky[:, None] ** 2)
    laplacian = np.fft.ifft2(-(kappa**2) * np.fft.fft2(ssh)).real
    centred = ssh - ssh.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(centred)) ** 2).mean(axis=0)
    shell_width = 2 * np.pi / (ny * dy_km)
    shells = np.rint(kappa / shell_width).astype(int)
    isotropic = np.bincount(shells.ravel(), power.ravel())[1 : ny // 2]
    zonal = power[:, 1 : nx // 2].sum(axis=0)
    view = ssh[:, :map_points, :map_points]
    anomaly = view - view.mean(axis=0)
    correlation = np.array([(anomaly[lag:] * anomaly[: n_days - lag]).mean() for lag in range(min(90, n_days))])
    below = np.flatnonzero(correlation / correlation[0] < 1 / math.e)
    skew, kurtosis = _moments(view)
    anomaly_skew, anomaly_kurtosis = _moments(anomaly)
    laplacian_skew, laplacian_kurtosis = _moments(laplacian[:, :map_points, :map_points])
    profile = ssh.mean(axis=(0, 2))
    return {
        "ssh_std_m": float(view.std()),
        "ssh_skewness": skew,
        "ssh_kurtosis": kurtosis,
        "anomaly_std_m": float(anomaly.std()),
        "anomaly_skewness": anomaly_skew,
        "anomaly_kurtosis": anomaly_kurtosis,
        "laplacian_skewness": laplacian_skew,
        "laplacian_kurtosis": laplacian_kurtosis,
        "isotropic_slope_70_250km": _slope(shell_width * np.arange(1, ny // 2), isotropic, 70.0, 250.0),
        "zonal_slope_70_250km": _slope(kx[1 : nx // 2], zonal, 70.0, 250.0),
        "efolding_days": float(below[0]) if below.size else float("nan"),
        "jet_step_m": float(profile.max() - profile.min()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssh_ocean_statistics",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=730, help="days after the spin-up (default 730)")
    parser.add_argument("--box", type=int, default=128, help="the periodic model box, points each way (default 128)")
    parser.add_argument("--map", type=int, default=64, help="the driver's map, points each way (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="a JSON file for the numbers")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run = simulate(args.days, shape=(args.box, args.box), seed=args.seed, cache=False)
    seconds = time.perf_counter() - start
    if (run.parameters["box_lat"], run.parameters["box_lon"]) != (args.box, args.box):
        parser.error(f"--box must be the model's own box (the default settings run {run.parameters['box_lat']})")
    numbers = {**statistics(run.truth, dx_km=run.dx_km, dy_km=run.dy_km, map_points=args.map),
               "generation_seconds": seconds, "days": args.days, "spinup_days": run.parameters["spinup_days"]}
    for name, value in numbers.items():
        print(f"{name:28s} {value:.4g}")
    if args.out is not None:
        args.out.write_text(json.dumps(numbers, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
