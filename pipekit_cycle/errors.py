"""Warnings and errors shared by the backends."""

__all__ = ["ConvergenceWarning"]


class ConvergenceWarning(RuntimeWarning):
    """An iterative solve stopped before reaching its tolerance; the message carries the
    residual and the number of steps taken. Promote it with
    ``warnings.simplefilter("error", ConvergenceWarning)`` to make it fatal."""
