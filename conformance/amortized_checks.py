"""Checks of the amortized posteriors (DESIGN section 6): the same parameters give the same
log-probabilities, MAP estimates and NLL gradients in both backends."""

from __future__ import annotations

import numpy as np

from pipekit_cycle.amortized import amortized_schema

from .cases import POINTWISE, layer_depth, observations, tolerance
from .registry import Measurement, Pair, register, relative_error

__all__ = ["AMORTIZED_SIZES"]

AMORTIZED_SIZES = {"hidden": 8, "n_layers": 2, "n_coupling": 2}
_CASES = tuple(f"{case}/{kind}" for case in ("1d", "2d") for kind in ("regression", "flow"))


def _depth(case: str, kind: str) -> int:
    """float32 depth (`conformance.cases`): every layer of the encoder and the head chained, with
    their activations, and the sums over the window's entries of the log-density."""
    obs, _ = observations(case)
    shapes = amortized_schema(kind, obs.shape[2:], obs.shape[1], **AMORTIZED_SIZES)
    n_layers = sum(name.endswith("weight") for name in shapes)
    return layer_depth(shapes) + POINTWISE * n_layers + int(np.prod(obs.shape[1:]))


def _models(pair: Pair, case: str, kind: str) -> list[tuple[object, object, object]]:
    obs, truth = observations(case)
    state_shape, n_time = obs.shape[2:], obs.shape[1]
    # Random (not initial) parameters: a fresh flow is the identity, which would test little.
    rng = np.random.default_rng(11)
    shapes = amortized_schema(kind, state_shape, n_time, **AMORTIZED_SIZES)
    params = {name: (0.3 * rng.standard_normal(shape)).astype(pair.dtype) for name, shape in shapes.items()}
    built = []
    for backend in (pair.candidate, pair.reference):
        model = backend.build_amortized(kind, state_shape, n_time, seed=0, **AMORTIZED_SIZES)
        model = backend.import_amortized_params(model, params)
        built.append((backend, model, backend.make_batch(obs, target=truth, dtype=pair.dtype)))
    return built


@register("amortized_log_prob", _CASES)
def _log_prob(pair: Pair, case_id: str) -> Measurement:
    case, kind = case_id.split("/")
    outputs = []
    for backend, model, batch in _models(pair, case, kind):
        outputs.append(
            {
                "log_prob": backend.to_numpy(model.log_prob(batch.target, batch)),
                "map": backend.to_numpy(model(batch)),
            }
        )
    return Measurement(relative_error(*outputs), tolerance(pair.dtype, "forward", _depth(case, kind)),
                       "log q(target), MAP")


@register("amortized_gradients", _CASES)
def _gradients(pair: Pair, case_id: str) -> Measurement:
    case, kind = case_id.split("/")
    (loss_c, grads_c), (loss_r, grads_r) = [
        backend.amortized_loss_and_grads(model, batch) for backend, model, batch in _models(pair, case, kind)
    ]
    error = max(relative_error(loss_c, loss_r), relative_error(grads_c, grads_r))
    return Measurement(error, tolerance(pair.dtype, "gradient", 3 * _depth(case, kind)),
                       "NLL and its parameter gradients")
