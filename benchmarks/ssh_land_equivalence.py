"""``python -m benchmarks.ssh_land_equivalence --run runs/ssh``: does land leak into the ocean's map?

A trained SSH run's model maps the held-out period of the driver's default simulation twice: (a)
the whole box with its east made land (no observation there, as the driver does with a land
mask), and (b) the ocean part alone, a smaller box. Both from the same observations of the
ocean, the same standardisation and the whole-domain map (`whole_domain_map`). Land never enters
as data, so what differs is what a convolutional model cannot avoid: at the coast its
activations on land cells (from biases and neighbours) stand where (b) has zero padding. The
script prints the RMS difference of the two ocean maps by distance from the coast, for the
learned map and for OI, against the maps' RMS error.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

import pipekit_cycle as pk
from pipekit_cycle import load_backend, ssh
from pipekit_cycle.experiment.ssh import SSHTask
from pipekit_cycle.ssh import whole_domain_map


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ssh_land_equivalence",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run directory of train --system ssh (the defaults)")
    parser.add_argument("--step", type=int, default=2000)
    parser.add_argument("--backend", default="vardax_torch")
    parser.add_argument("--ocean-columns", type=int, default=40, help="columns kept as ocean (the west)")
    args = parser.parse_args(argv)
    backend = load_backend(args.backend)
    params, config = pk.load_params(f"{args.run}/checkpoints/step-{args.step:06d}/checkpoint.safetensors")
    model = backend.import_params(backend.build_model(config, seed=0), params)
    data = ssh.simulated(n_days=1020, grid=64, seed=0)
    test = data.period(960, 1020)
    ocean = args.ocean_columns
    defaults = SSHTask().defaults  # the OI the run was trained on, at the driver's defaults
    oi = {"space_km": defaults["oi_space_km"], "time_days": defaults["oi_time_days"], "noise_std": data.noise_std}

    def predict(x: np.ndarray) -> np.ndarray:
        return backend.to_numpy(backend.predict(model, backend.make_batch(x)))

    coast_obs = test.obs.copy()
    coast_obs[:, :, ocean:] = np.nan  # land: no observation
    with_land = dataclasses.replace(test, obs=coast_obs)
    alone = dataclasses.replace(test, obs=test.obs[:, :, :ocean], truth=test.truth[:, :, :ocean], lon=test.lon[:ocean],
                                land=test.land[:, :ocean])
    background_land, background_alone = ssh.oi_background(with_land, **oi), ssh.oi_background(alone, **oi)
    scale = ssh.Standardiser.fit(test.truth[:, :, :ocean] - background_alone)  # the same for both maps
    length = config.n_time
    mapped_land = whole_domain_map(predict, coast_obs, background=background_land, scale=scale, length=length,
                                   batch_size=2)[:, :, :ocean]
    mapped_alone = whole_domain_map(predict, alone.obs, background=background_alone, scale=scale, length=length,
                                    batch_size=2)
    truth = test.truth[:, :, :ocean]
    error_learned, error_oi = (np.sqrt(np.mean((field - truth) ** 2)) for field in (mapped_alone, background_alone))
    print(f"{args.backend}, step {args.step}: RMS error of the ocean map {error_learned:.4f} m (learned), "
          f"{error_oi:.4f} m (OI)")
    print("columns from the coast | RMS(learned with land - learned alone) | RMS(OI with land - OI alone)  (m)")
    oi_land = background_land[:, :, :ocean]
    for first, last in ((0, 1), (1, 2), (2, 4), (4, 8), (8, 16), (16, 24), (24, ocean)):
        columns = slice(ocean - last, ocean - first)
        learned = np.sqrt(np.mean((mapped_land[:, :, columns] - mapped_alone[:, :, columns]) ** 2))
        oi_diff = np.sqrt(np.mean((oi_land[:, :, columns] - background_alone[:, :, columns]) ** 2))
        print(f"{first:>3}-{last:<3} | {learned:.2e} | {oi_diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
