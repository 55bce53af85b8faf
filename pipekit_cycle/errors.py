"""Warnings and errors shared by the backends."""

__all__ = ["ConvergenceWarning", "fixed_point_not_converged"]


class ConvergenceWarning(RuntimeWarning):
    """An iterative solve stopped before reaching its tolerance; the message carries the
    residual and the number of steps taken. Promote it with
    ``warnings.simplefilter("error", ConvergenceWarning)`` to make it fatal.

    Examples
    --------
    ```python
    import warnings

    import pipekit_cycle as pk

    assert issubclass(pk.ConvergenceWarning, RuntimeWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pk.ConvergenceWarning)  # fatal from here on
        try:
            warnings.warn("fixed point not reached after 3 steps", pk.ConvergenceWarning)
        except pk.ConvergenceWarning as warning:
            assert "3 steps" in str(warning)
        else:
            raise AssertionError("the promoted warning did not raise")
    ```
    """


def fixed_point_not_converged(n_solver_steps: int, residual: float, rtol: float, atol: float) -> ConvergenceWarning:
    """The warning of a ``solver="fixed_point"`` solve that used all its iterations (the same
    words in both backends)."""
    return ConvergenceWarning(
        f"fixed-point iteration did not converge in n_solver_steps={n_solver_steps} steps: "
        f"residual max|x_(n+1) - x_n| = {residual:.3e}, rtol={rtol}, atol={atol}"
    )


def check_no_dropout_in_training(model: object, where: str) -> None:
    """``ValueError`` when a model's config asks for modulator dropout (``grad_mod_dropout >
    0``, e.g. imported from ocean4dvarnet): neither backend applies dropout, so training such a
    model here would silently train another model than the config says. A model without a
    4DVarNet config (any model a custom loss trains) passes."""
    rate = float(getattr(getattr(model, "config", None), "grad_mod_dropout", 0.0))
    if rate > 0:
        raise ValueError(
            f"{where}: the model's grad_mod_dropout={rate} is not applied by vardax (outputs are dropout-free, "
            "as ocean4dvarnet's eval mode); to train it without dropout, build it from "
            "config.replace(grad_mod_dropout=0.0)"
        )
