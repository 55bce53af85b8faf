"""The field's job, numpy only: mapping sea-surface height (SSH) from satellite altimetry.

One module per idea, the public names re-exported here:

* `pipekit_cycle.ssh.simulation`: the OSSE, a spun-up two-layer ocean seen by altimeters (`simulate`);
* `pipekit_cycle.ssh.qg`: the two-layer quasi-geostrophic model (`TwoLayerQG`, `JetRelaxation`);
* `pipekit_cycle.ssh.observations`: nadir altimeters and a SWOT-like swath (`observe`);
* `pipekit_cycle.ssh.osse`: the earlier 1.5-layer simulated ocean (`ssh_osse`);
* `pipekit_cycle.ssh.gridded`: `GriddedData`, the daily maps a mapping job reads (`simulated`);
* `pipekit_cycle.ssh.files`: gridded netCDF in, CF-1.8 maps out (`read_netcdf`, `write_netcdf`);
* `pipekit_cycle.ssh.alongtrack`: along-track altimetry files and their binning onto a map grid
  (`read_along_track`, `grid_box`, `bin_along_track`);
* `pipekit_cycle.ssh.land`: a land mask on a map grid (`read_land_mask`);
* `pipekit_cycle.ssh.patches`: space patches cut out and stitched back (`extract`, `stitch`);
* `pipekit_cycle.ssh.metrics`: the 2020a data challenge's scores of a map (`rmse_score`, `psd_score`);
* `pipekit_cycle.ssh.track_metrics`: the 2021a challenge's scores of a map against a withheld
  satellite (`track_scores`, `effective_resolution`);
* `pipekit_cycle.ssh.baselines`: optimal interpolation and linear interpolation in time;
* `pipekit_cycle.ssh.augment`: training samples the equations' symmetries give for free
  (`MeridionalFlip`);
* `pipekit_cycle.ssh.mapping`: windows, samples, the stitched reconstruction, scores, the
  preprocessing the learned solver uses (standardisation, the OI background) and its maps of a
  period, patch by patch or the whole domain at once (`learned_map`, `whole_domain_map`).

Nothing here imports a deep-learning framework: a backend's ``predict`` is passed in.
"""

from . import (
    alongtrack,
    augment,
    baselines,
    files,
    gridded,
    land,
    mapping,
    metrics,
    observations,
    osse,
    patches,
    qg,
    simulation,
    track_metrics,
)
from .alongtrack import MapGrid, bin_along_track, grid_box, read_along_track
from .augment import AUGMENTATIONS, AbstractAugmentation, MeridionalFlip, NoAugmentation
from .baselines import linear_interpolation_time, optimal_interpolation
from .files import NETCDF_HINT, read_netcdf, write_netcdf
from .gridded import SEA_LEVEL_ANOMALY, GriddedData, simulated
from .land import read_land_mask
from .mapping import (
    Standardiser,
    learned_map,
    oi_background,
    reconstruct,
    samples,
    score,
    time_tent,
    whole_domain_map,
    window_starts,
    zero_land,
)
from .metrics import psd_score, rmse, rmse_score, spectral_score
from .observations import (
    DEFAULT_CONSTELLATION,
    DEFAULT_INSTRUMENTS,
    INSTRUMENTS,
    AlongTrack,
    Satellite,
    coverage,
    observe,
)
from .osse import DEFAULT_DX_DEG, SSHOSSE, ssh_osse
from .patches import extract, patch_origins, stitch, tent
from .qg import JetRelaxation, TwoLayerQG
from .simulation import MODELS, START_DATE, SSHSimulation, TwoLayerSettings, cache_directory, simulate
from .track_metrics import (
    AlongTrackSpectrum,
    along_track_rmse_score,
    along_track_spectrum,
    effective_resolution,
    interpolate_map_to_track,
    track_scores,
)

__all__ = [
    "AUGMENTATIONS",
    "DEFAULT_CONSTELLATION",
    "DEFAULT_DX_DEG",
    "DEFAULT_INSTRUMENTS",
    "INSTRUMENTS",
    "MODELS",
    "NETCDF_HINT",
    "SEA_LEVEL_ANOMALY",
    "SSHOSSE",
    "START_DATE",
    "AbstractAugmentation",
    "AlongTrack",
    "AlongTrackSpectrum",
    "GriddedData",
    "JetRelaxation",
    "MapGrid",
    "MeridionalFlip",
    "NoAugmentation",
    "SSHSimulation",
    "Satellite",
    "Standardiser",
    "TwoLayerQG",
    "TwoLayerSettings",
    "along_track_rmse_score",
    "along_track_spectrum",
    "alongtrack",
    "augment",
    "baselines",
    "bin_along_track",
    "cache_directory",
    "coverage",
    "effective_resolution",
    "extract",
    "files",
    "grid_box",
    "gridded",
    "interpolate_map_to_track",
    "land",
    "learned_map",
    "linear_interpolation_time",
    "mapping",
    "metrics",
    "observations",
    "observe",
    "oi_background",
    "optimal_interpolation",
    "osse",
    "patch_origins",
    "patches",
    "psd_score",
    "qg",
    "read_along_track",
    "read_land_mask",
    "read_netcdf",
    "reconstruct",
    "rmse",
    "rmse_score",
    "samples",
    "score",
    "simulate",
    "simulated",
    "simulation",
    "spectral_score",
    "ssh_osse",
    "stitch",
    "tent",
    "time_tent",
    "track_metrics",
    "track_scores",
    "whole_domain_map",
    "window_starts",
    "write_netcdf",
    "zero_land",
]
