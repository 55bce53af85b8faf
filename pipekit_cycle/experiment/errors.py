"""What the driver refuses and warns about: one-line messages that name the flag to fix.

A `ConfigError` or a `RunDirectoryError` is a usage error on the command line (exit status
`EXIT_USAGE`), raised before anything is written; a `CheckpointError` is a run that cannot be
read (`EXIT_FAILURE`); Ctrl-C exits with `EXIT_INTERRUPTED`.
"""

from __future__ import annotations

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CheckpointError",
    "CheckpointFallbackWarning",
    "ConfigError",
    "FiguresSkippedWarning",
    "NetcdfSkippedWarning",
    "RunDirectoryError",
    "SparseObservationsWarning",
]

EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


class ConfigError(ValueError):
    """An invalid `ExperimentConfig` value: ``field`` names it, ``problem`` says what is allowed.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import ConfigError, ExperimentConfig

    try:
        ExperimentConfig(system="l96", steps=0)
    except ConfigError as error:
        assert (error.field, error.flag) == ("steps", "--steps") and ">= 1" in error.problem
    else:
        raise AssertionError("steps=0 was accepted")
    ```
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


class RunDirectoryError(ValueError):
    """The run directory does not allow what was asked (it holds a run and neither resume nor
    overwrite was asked, or a resume asks other settings); the message names the flag.

    Examples
    --------
    ```python
    import tempfile
    import types

    from pipekit_cycle.experiment import ExperimentConfig, RunDirectoryError, run_experiment

    try:  # refused before the backend is used or anything is written
        run_experiment(types.ModuleType("any_backend"), ExperimentConfig(), tempfile.mkdtemp(), resume=True,
                       overwrite=True)
    except RunDirectoryError as error:
        assert "--resume and --overwrite exclude each other" in str(error)
    else:
        raise AssertionError("resume and overwrite were both accepted")
    ```
    """


class CheckpointError(ValueError):
    """No readable checkpoint; the message names each damaged file and what is wrong with it.

    Examples
    --------
    ```python
    from pipekit_cycle.experiment import CheckpointError

    assert issubclass(CheckpointError, ValueError)  # the command line reports it in one line, exit status 1
    ```
    """


class CheckpointFallbackWarning(UserWarning):
    """The newest checkpoint was damaged; the run resumed from an earlier one.

    Examples
    --------
    ```python
    import warnings

    from pipekit_cycle.experiment import CheckpointFallbackWarning

    warnings.simplefilter("error", CheckpointFallbackWarning)  # a resume that falls back then stops instead
    assert issubclass(CheckpointFallbackWarning, UserWarning)
    ```
    """


class FiguresSkippedWarning(UserWarning):
    """matplotlib is not installed: the run's figures were not drawn.

    Examples
    --------
    ```python
    import warnings

    from pipekit_cycle.experiment import FiguresSkippedWarning

    warnings.simplefilter("ignore", FiguresSkippedWarning)  # a run without matplotlib, quietly
    assert issubclass(FiguresSkippedWarning, UserWarning)
    ```
    """


class NetcdfSkippedWarning(UserWarning):
    """xarray or h5netcdf is not installed: the reconstruction was not written as netCDF.

    Examples
    --------
    ```python
    import warnings

    from pipekit_cycle.experiment import NetcdfSkippedWarning

    warnings.simplefilter("error", NetcdfSkippedWarning)  # make a run without xarray fail instead
    assert issubclass(NetcdfSkippedWarning, UserWarning)
    ```
    """


class SparseObservationsWarning(UserWarning):
    """Few observations: less than half of the days, or a small fraction of the ocean cell-days,
    hold one; the run goes on and the message names both fractions.

    Examples
    --------
    ```python
    import warnings

    from pipekit_cycle.experiment import SparseObservationsWarning

    warnings.simplefilter("error", SparseObservationsWarning)  # refuse to map from too few observations
    assert issubclass(SparseObservationsWarning, UserWarning)
    ```
    """
