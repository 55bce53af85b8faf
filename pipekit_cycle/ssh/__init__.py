"""The field's job, numpy only: mapping sea-surface height (SSH) from satellite altimetry.

One module per idea, the public names re-exported here:

* `pipekit_cycle.ssh.osse`: the simulated ocean observed by altimeters (`ssh_osse`);
* `pipekit_cycle.ssh.gridded`: `GriddedData`, the daily maps a mapping job reads (`simulated`);
* `pipekit_cycle.ssh.files`: netCDF in and out (`read_netcdf`, `write_netcdf`);
* `pipekit_cycle.ssh.patches`: space patches cut out and stitched back (`extract`, `stitch`);
* `pipekit_cycle.ssh.metrics`: the data challenges' scores (`rmse_score`, `psd_score`);
* `pipekit_cycle.ssh.baselines`: optimal interpolation and linear interpolation in time;
* `pipekit_cycle.ssh.mapping`: windows, samples, the stitched reconstruction, scores, and the
  preprocessing the learned solver uses (standardisation, the OI background).

Nothing here imports a deep-learning framework: a backend's ``predict`` is passed in.
"""

from . import baselines, files, gridded, mapping, metrics, osse, patches
from .baselines import linear_interpolation_time, optimal_interpolation
from .files import NETCDF_HINT, read_netcdf, write_netcdf
from .gridded import GriddedData, simulated
from .mapping import Standardiser, learned_map, oi_background, reconstruct, samples, score, time_tent, window_starts
from .metrics import psd_score, rmse, rmse_score, spectral_score
from .osse import DEFAULT_CONSTELLATION, DEFAULT_DX_DEG, SSHOSSE, Satellite, ssh_osse
from .patches import extract, patch_origins, stitch, tent

__all__ = [
    "DEFAULT_CONSTELLATION",
    "DEFAULT_DX_DEG",
    "NETCDF_HINT",
    "SSHOSSE",
    "GriddedData",
    "Satellite",
    "Standardiser",
    "baselines",
    "extract",
    "files",
    "gridded",
    "learned_map",
    "linear_interpolation_time",
    "mapping",
    "metrics",
    "oi_background",
    "optimal_interpolation",
    "osse",
    "patch_origins",
    "patches",
    "psd_score",
    "read_netcdf",
    "reconstruct",
    "rmse",
    "rmse_score",
    "samples",
    "score",
    "simulated",
    "spectral_score",
    "ssh_osse",
    "stitch",
    "tent",
    "time_tent",
    "window_starts",
    "write_netcdf",
]
