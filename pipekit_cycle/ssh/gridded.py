"""Gridded SSH data: the daily maps a mapping job reads, simulated or from a file."""

from __future__ import annotations

import dataclasses

import numpy as np

from .simulation import simulate

__all__ = ["GriddedData", "simulated"]


@dataclasses.dataclass(frozen=True)
class GriddedData:
    """Daily maps on a regular (lat, lon) grid: ``truth`` and ``obs`` (NaN where unobserved)
    ``(time, lat, lon)``; ``lat``, ``lon`` in degrees; ``time`` in days; ``dx_deg`` the grid
    spacing (degrees), ``dx_km`` the zonal spacing at the central latitude; ``noise_std`` the
    observation noise if known; ``source`` says where the data came from.

    Examples
    --------
    ```python
    from pipekit_cycle import ssh

    data = ssh.simulated(n_days=6, grid=32, seed=0)
    held_out = data.period(4, 6)  # the last two days
    assert held_out.truth.shape == (2, 32, 32) and held_out.time.tolist() == data.time[4:].tolist()
    ```
    """

    truth: np.ndarray
    obs: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    time: np.ndarray
    dx_deg: float
    dx_km: float
    noise_std: float | None
    source: str

    def period(self, start: int, stop: int) -> GriddedData:
        """The days ``start:stop``."""
        days = slice(start, stop)
        return dataclasses.replace(self, truth=self.truth[days], obs=self.obs[days], time=self.time[days])


def simulated(*, n_days: int, grid: int, seed: int) -> GriddedData:
    """The default `pipekit_cycle.ssh.simulate` (the two-layer model seen by the four nadirs) on
    a ``grid x grid`` box (``n_days`` days; ``time`` in days from its first map).

    Examples
    --------
    ```python
    from pipekit_cycle import ssh

    data = ssh.simulated(n_days=3, grid=32, seed=0)
    assert data.truth.shape == (3, 32, 32) and data.noise_std == 0.03 and data.source.startswith("simulate(")
    ```
    """
    run = simulate(n_days, shape=(grid, grid), seed=seed)
    noise = sorted({satellite.noise_std for satellite in run.instruments})
    # One noise level for OI: the instruments' own when they share it, else their rms.
    noise_std = float(np.sqrt(np.mean(np.square(noise)))) if len(noise) > 1 else (noise[0] if noise else None)
    return GriddedData(
        truth=run.truth, obs=run.obs, lat=run.lat, lon=run.lon, time=run.days, dx_deg=run.dx_deg, dx_km=run.dx_km,
        noise_std=noise_std,
        source=f"simulate({n_days}, shape=({grid}, {grid}), seed={seed})",
    )
