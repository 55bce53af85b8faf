"""Checks on a grid other than the config's (issue 37): a model is fully convolutional, so the
parameters of a config (its ``state_shape`` the training size) map every grid the rule of
`pipekit_cycle.validation.grid_rule` allows. Both backends build the model at the case's
training size, import the same parameters, and run forward, predict and the parameter
gradients on `GRIDS`' grid; the schema must not depend on the grid."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from pipekit_cycle import schema
from pipekit_cycle.validation import grid_allows

from .cases import CASES, config, contractive, gradient_depth, loss_depth, tolerance
from .registry import Measurement, Pair, register, relative_error

__all__ = ["GRIDS", "IMPOSSIBLE_GRIDS"]

# Per case, a grid the case's config does not name: other sizes, another aspect ratio, and for
# the ocean4dvarnet case a multiple of its 2x pooling.
GRIDS: dict[str, tuple[int, ...]] = {"1d": (11,), "2d": (7, 4), "1d-fp": (11,), "2d-fp": (7, 4), "2d-o4d": (10, 8)}
_WHAT = ("solve", "gradients")


@functools.cache
def _observations(case: str) -> tuple[np.ndarray, np.ndarray]:
    """``(obs, truth)`` on the case's other grid, float64, half observed (as `cases.observations`)."""
    spec = CASES[case]
    rng = np.random.default_rng(100 + spec.seed)
    shape = (spec.batch_size, spec.config.n_time, *GRIDS[case])
    truth = np.sin(np.linspace(0.0, 3.0, math.prod(shape))).reshape(shape) + 0.3 * rng.standard_normal(shape)
    obs = np.where(rng.random(shape) < 0.5, truth + 0.1 * rng.standard_normal(shape), np.nan)
    return obs, truth


def _scale(case: str) -> int:
    """How many times the case's own batch the other grid's batch holds (at least once): the
    float32 depths (`conformance.cases`) grow at most linearly with the entries summed."""
    spec = CASES[case]
    return max(1, math.ceil(math.prod(GRIDS[case]) / math.prod(spec.config.state_shape)))


def _models(pair: Pair, case: str) -> list[tuple[Any, Any, Any]]:
    """``(backend, model, batch)`` for the candidate and the reference: the reference's initial
    parameters (a fixed-point case's prior made contractive) in models built at the config's
    training size, and a batch on the other grid."""
    case_config = config(case, pair.dtype)
    exported = pair.reference.export_params(pair.reference.build_model(case_config, seed=0))
    params = {name: np.asarray(value, dtype=pair.dtype) for name, value in exported.items()}
    if case_config.solver == "fixed_point":
        params = contractive(params)
    obs, truth = _observations(case)
    return [
        (backend, backend.import_params(backend.build_model(case_config, seed=0), params),
         backend.make_batch(obs, target=truth, dtype=pair.dtype))
        for backend in (pair.candidate, pair.reference)
    ]


@register("other_grid", tuple(f"{case}/{what}" for case in CASES for what in _WHAT), quick="2d-o4d/gradients")
def _other_grid(pair: Pair, case_id: str) -> Measurement:
    """``solve``: the solver's output ``x_K`` and ``predict``; ``gradients``: the loss and its
    parameter gradients; on a grid other than the config's, candidate against reference."""
    case, what = case_id.split("/")
    case_config, grid = CASES[case].config, GRIDS[case]
    factors = (case_config.prior_downsample, case_config.grad_mod_downsample)
    if grid == case_config.state_shape or not grid_allows(grid, case_config.kernel_size, factors):
        return Measurement(float("inf"), 0.0, f"{grid} is the config's grid or one the rule refuses: fix GRIDS")
    if schema(case_config) != schema(case_config.replace(state_shape=grid)):
        return Measurement(float("inf"), 0.0, "the parameter schema depends on the grid")
    outputs = []
    for backend, model, batch in _models(pair, case):
        if what == "solve":
            outputs.append({"x_K": backend.to_numpy(model(batch)),
                            "predict": backend.to_numpy(backend.predict(model, batch))})
        else:
            loss, grads = backend.loss_and_grads(model, batch)
            outputs.append({"loss": np.asarray(float(loss)), **grads})
    detail = f"{'x_K, predict' if what == 'solve' else 'loss and parameter gradients'} on {grid} " \
             f"(config {case_config.state_shape})"
    if what == "solve":
        limit = tolerance(pair.dtype, "forward", _scale(case) * loss_depth(case))
    else:
        limit = tolerance(pair.dtype, "gradient", _scale(case) * gradient_depth(case))
    return Measurement(relative_error(*outputs), limit, detail)


# Grids the rule refuses, per case: smaller than the kernel, and (2x pooling) an odd size.
IMPOSSIBLE_GRIDS: dict[str, tuple[int, ...]] = {"1d/below_kernel": (2,), "2d/below_kernel": (5, 2),
                                                "2d-o4d/below_kernel": (4, 8), "2d-o4d/not_divisible": (8, 7)}


@register("impossible_grid", tuple(IMPOSSIBLE_GRIDS))
def _impossible_grid(pair: Pair, case_id: str) -> Measurement:
    """A grid the rule refuses raises the same ``ValueError``, word for word, in both backends."""
    case = case_id.split("/")[0]
    spec = CASES[case]
    obs = np.zeros((spec.batch_size, spec.config.n_time, *IMPOSSIBLE_GRIDS[case_id]))
    outcomes = []
    for backend in (pair.candidate, pair.reference):
        try:
            backend.build_model(config(case, pair.dtype), seed=0)(backend.make_batch(obs, dtype=pair.dtype))
            outcomes.append("no exception")
        except Exception as error:
            outcomes.append(f"{type(error).__name__}: {error}")
    same = outcomes[0] == outcomes[1] and outcomes[1].startswith("ValueError: batch.input must have shape")
    return Measurement(0.0 if same else 1.0, 0.0, f"candidate {outcomes[0]!r}, reference {outcomes[1]!r}")
