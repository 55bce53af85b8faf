"""Warnings and errors shared by the backends."""

__all__ = ["ConvergenceWarning", "fixed_point_not_converged"]


class ConvergenceWarning(RuntimeWarning):
    """An iterative solve stopped before reaching its tolerance; the message carries the
    residual and the number of steps taken. Promote it with
    ``warnings.simplefilter("error", ConvergenceWarning)`` to make it fatal."""


def fixed_point_not_converged(n_solver_steps: int, residual: float, rtol: float, atol: float) -> ConvergenceWarning:
    """The warning of a ``solver="fixed_point"`` solve that used all its iterations (the same
    words in both backends)."""
    return ConvergenceWarning(
        f"fixed-point iteration did not converge in n_solver_steps={n_solver_steps} steps: "
        f"residual max|x_(n+1) - x_n| = {residual:.3e}, rtol={rtol}, atol={atol}"
    )
