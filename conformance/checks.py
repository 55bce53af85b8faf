"""Checks of the learned inner solve: specs, forward, costs, gradients under every adjoint,
training, parameters, batch independence and errors, on identical inputs in two backends."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from pipekit_cycle import (
    DYNAMICS,
    INNER_SOLVE,
    FourDVarNetConfig,
    OptimizerConfig,
    TruncatedAdjoint,
    WarmupCosineSchedule,
    applicable_layers,
    schema,
)
from pipekit_cycle.adjoints import SPEC_TYPES

from .backends import precision
from .cases import (
    CASES,
    FINITE_DIFFERENCE_TOLERANCE,
    FIXED_POINT_TOLERANCE,
    adjoint_for,
    adjoints_for,
    batch_coupled,
    config,
    contractive,
    cost_depth,
    gradient_depth,
    loss_depth,
    observations,
    reference_adjoint,
    solve_depth,
    tolerance,
    trajectory_depth,
)
from .registry import Measurement, Pair, register, relative_error

__all__ = ["BAD_INPUTS", "SOLVER_ADJOINTS"]


# --- building identical models in both backends -------------------------------------------


def _reference_params(pair: Pair, case: str) -> dict[str, np.ndarray]:
    """The reference's initial parameters; a fixed-point case's prior is made contractive, so
    the fixed point exists and the iteration converges."""
    reference = pair.reference
    model = reference.build_model(config(case, pair.dtype), seed=0)
    params = {name: np.asarray(value, dtype=pair.dtype) for name, value in reference.export_params(model).items()}
    return contractive(params) if CASES[case].config.solver == "fixed_point" else params


def _model(backend: ModuleType, config: FourDVarNetConfig, params: dict[str, np.ndarray]) -> Any:
    return backend.import_params(backend.build_model(config, seed=0), params)


def _batch(backend: ModuleType, case: str, dtype: str, *, target: bool = True) -> Any:
    obs, truth = observations(case)
    return backend.make_batch(obs, target=truth if target else None, dtype=dtype)


def _models(pair: Pair, case: str) -> tuple[Any, Any]:
    params = _reference_params(pair, case)
    case_config = config(case, pair.dtype)
    return _model(pair.candidate, case_config, params), _model(pair.reference, case_config, params)


def _split(case_id: str) -> tuple[str, str]:
    case, _, variant = case_id.partition("/")
    return case, variant


def _grid(variants: tuple[str, ...]) -> tuple[str, ...]:
    """``case/variant`` for every case; adjoint variants only where they apply to the solver."""
    return tuple(f"{case}/{variant}" for case in CASES for variant in adjoints_for(case, variants))


SOLVER_ADJOINTS = ("checkpoint", "checkpoint:2", "truncated:1", "truncated:2", "implicit")


# --- the checks -------------------------------------------------------------------------


@register("spec_mapping", tuple(f"{layer}/{cls.tag}" for layer in (INNER_SOLVE, DYNAMICS) for cls in SPEC_TYPES))
def _spec_mapping(pair: Pair, case_id: str) -> Measurement:
    """``to_native_adjoint`` accepts the inner-solve specs and rejects the others with a
    ``ValueError`` naming the layer they belong to."""
    layer, text = _split(case_id)
    spec = adjoint_for(text, pair.dtype)
    should_map = layer in applicable_layers(spec)
    try:
        pair.candidate.to_native_adjoint(spec, layer=layer)
        outcome = "mapped"
        correct = should_map
    except ValueError as error:
        outcome = f"ValueError: {error}"
        other = DYNAMICS if layer == INNER_SOLVE else INNER_SOLVE
        correct = not should_map and other in str(error)
    except Exception as error:
        outcome, correct = f"{type(error).__name__}: {error}", False
    expected = "mapped" if should_map else "ValueError naming the other layer"
    return Measurement(0.0 if correct else 1.0, 0.0, f"expected {expected}; got {outcome}")


@register("forward", _grid(SOLVER_ADJOINTS))
def _forward(pair: Pair, case_id: str) -> Measurement:
    """The candidate's output under each adjoint agrees with the reference's solve (under its
    default adjoint: `reference_adjoint`)."""
    case, text = _split(case_id)
    spec = adjoint_for(text, pair.dtype)
    candidate, reference = _models(pair, case)
    got = pair.candidate.to_numpy(candidate(_batch(pair.candidate, case, pair.dtype), adjoint=spec))
    reference_spec = adjoint_for(reference_adjoint(text, "forward"), pair.dtype)
    want = pair.reference.to_numpy(reference(_batch(pair.reference, case, pair.dtype), adjoint=reference_spec))
    return Measurement(relative_error(got, want), tolerance(pair.dtype, "forward", solve_depth(case)), "solver output")


@register("forward_invariance", _grid(SOLVER_ADJOINTS), quick="1d/truncated:2")
def _forward_invariance(pair: Pair, case_id: str) -> Measurement:
    """An adjoint says how to differentiate, never what is computed: within the candidate, the
    output and the loss under each adjoint are bit-identical to those under the default
    ``checkpoint``, with and without a gradient being taken."""
    case, text = _split(case_id)
    backend = pair.candidate
    model, _ = _models(pair, case)
    batch = _batch(backend, case, pair.dtype)
    default = adjoint_for("checkpoint", pair.dtype)
    spec = adjoint_for(text, pair.dtype)
    outputs = [backend.to_numpy(model(batch, adjoint=a)) for a in (default, spec)]
    losses = [float(backend.loss_and_grads(model, batch, adjoint=a)[0]) for a in (default, spec)]
    exact = np.array_equal(*outputs) and losses[0] == losses[1]
    error = 0.0 if exact else max(relative_error(*outputs), relative_error(*losses), np.finfo(float).tiny)
    return Measurement(error, 0.0, f"vs checkpoint, bit for bit (loss {losses[1]!r} vs {losses[0]!r})")


@register("variational_cost", tuple(CASES))
def _variational_cost(pair: Pair, case: str) -> Measurement:
    candidate, reference = _models(pair, case)
    results = []
    for backend, model in ((pair.candidate, candidate), (pair.reference, reference)):
        batch = _batch(backend, case, pair.dtype)
        results.append(backend.to_numpy(backend.variational_cost(model, batch.target, batch)))
    return Measurement(relative_error(*results), tolerance(pair.dtype, "forward", cost_depth(case)),
                       "U(target) per sample")


@register("losses", tuple(CASES))
def _losses(pair: Pair, case: str) -> Measurement:
    candidate, reference = _models(pair, case)
    results = []
    for backend, model in ((pair.candidate, candidate), (pair.reference, reference)):
        batch = _batch(backend, case, pair.dtype)
        losses = (
            backend.reconstruction_loss(batch.input, batch.target),
            backend.train_loss_fn(model, batch),
            backend.eval_step(model, batch),
        )
        results.append([float(backend.to_numpy(loss)) for loss in losses])
    return Measurement(relative_error(*results), tolerance(pair.dtype, "forward", loss_depth(case)),
                       "reconstruction, train, eval")


@register("gradients", _grid(SOLVER_ADJOINTS), quick="1d/truncated:2")
def _gradients(pair: Pair, case_id: str) -> Measurement:
    """The candidate's loss and gradients under each adjoint agree with the reference's under the
    same adjoint (a checkpoint schedule: its ``checkpoint``, `reference_adjoint`)."""
    case, text = _split(case_id)
    spec = adjoint_for(text, pair.dtype)
    reference_spec = adjoint_for(reference_adjoint(text, "gradient"), pair.dtype)
    candidate, reference = _models(pair, case)
    loss_c, grads_c = pair.candidate.loss_and_grads(candidate, _batch(pair.candidate, case, pair.dtype), adjoint=spec)
    loss_r, grads_r = pair.reference.loss_and_grads(reference, _batch(pair.reference, case, pair.dtype),
                                                    adjoint=reference_spec)
    error = max(relative_error(loss_c, loss_r), relative_error(grads_c, grads_r))
    return Measurement(error, tolerance(pair.dtype, "gradient", gradient_depth(case)), "loss and parameter gradients")


def _k_values(case: str) -> tuple[int, int]:
    steps = CASES[case].config.n_solver_steps  # fixed point: the bound; it may stop earlier
    return steps, steps + 3


@register("truncation_exact", tuple(f"{case}/k={k}" for case in CASES for k in _k_values(case)))
def _truncation_exact(pair: Pair, case_id: str) -> Measurement:
    """Truncated(k >= K) is the exact gradient (the candidate against itself)."""
    case, variant = _split(case_id)
    k = int(variant.removeprefix("k="))
    model, _ = _models(pair, case)
    batch = _batch(pair.candidate, case, pair.dtype)
    exact = pair.candidate.loss_and_grads(model, batch, adjoint=adjoint_for("checkpoint", pair.dtype))[1]
    truncated = pair.candidate.loss_and_grads(model, batch, adjoint=TruncatedAdjoint(k))[1]
    return Measurement(relative_error(truncated, exact), tolerance(pair.dtype, "gradient", gradient_depth(case)),
                       "vs checkpointed")


@register("truncation_biased", tuple(f"{case}/k=1" for case in CASES))
def _truncation_biased(pair: Pair, case_id: str) -> Measurement:
    """Truncated(1) must differ from the exact gradient when K > 1: a backend that ignores the
    truncation fails here."""
    case, _ = _split(case_id)
    model, _ = _models(pair, case)
    batch = _batch(pair.candidate, case, pair.dtype)
    exact = pair.candidate.loss_and_grads(model, batch, adjoint=adjoint_for("checkpoint", pair.dtype))[1]
    truncated = pair.candidate.loss_and_grads(model, batch, adjoint=TruncatedAdjoint(1))[1]
    difference = relative_error(truncated, exact)
    # The bias must exceed what rounding alone could make of two equal gradients (the gradient
    # check's tolerance). Measured: 6e-4 (float64) and 3e-3 (float32) on the strongly
    # contractive fixed-point cases, 0.7 on the learned ones; float32 bounds 1e-4 to 8e-4.
    rounding = tolerance(pair.dtype, "gradient", gradient_depth(case))
    return Measurement(0.0 if difference > rounding else 1.0, 0.0,
                       f"relative difference from exact {difference:.3g} (rounding alone: {rounding:.1e})")


_FIXED_POINT_CASES = tuple(case for case in CASES if CASES[case].config.solver == "fixed_point")


def _stopped_early(dtype: str, case: str, unrolled: np.ndarray) -> float:
    """How far the solve, stopped by its tolerance, may be from 200 iterations: the rounding of
    the solve, plus (float32) the distance the stopping test leaves. It stops once a step is
    below ``tol (1 + |x|)``; a map contracting by rho <= 1/2 is then within
    ``rho / (1 - rho) <= 1`` such step of its fixed point. float64: DESIGN's 1e-10 (the
    tolerance there is 1e-12)."""
    rounding = tolerance(dtype, "forward", solve_depth(case))
    if dtype == "float64":
        return rounding
    scale = float(np.abs(unrolled).max())
    return rounding + FIXED_POINT_TOLERANCE[dtype] * (1.0 + scale) / scale


@register("implicit_vs_unrolled", tuple(f"{c}/{v}" for c in _FIXED_POINT_CASES
                                        for v in ("forward", "gradient", "directional_derivative")),
          quick="1d-fp/gradient")
def _implicit_vs_unrolled(pair: Pair, case_id: str) -> Measurement:
    """The fixed-point solve equals 200 unrolled iterations; its implicit gradient equals the
    checkpointed gradient of those 200 iterations, and the derivative of the unrolled iteration
    (central finite difference along a random direction, float64 only; in float32 the
    difference quotient is noise, so only the forward is checked)."""
    case, what = _split(case_id)
    backend = pair.candidate
    spec = adjoint_for("implicit", pair.dtype)
    params = _reference_params(pair, case)
    case_config = config(case, pair.dtype)
    model = _model(backend, case_config, params)
    batch = _batch(backend, case, pair.dtype)
    if what == "forward" or pair.dtype != "float64":
        implicit = backend.to_numpy(model(batch, adjoint=spec))
        unrolled = backend.to_numpy(backend.fixedpoint_unrolled(model, batch, 200))
        return Measurement(relative_error(implicit, unrolled), _stopped_early(pair.dtype, case, unrolled),
                           "x* vs 200 iterations")
    _, grads = backend.loss_and_grads(model, batch, adjoint=spec)
    if what == "gradient":
        long = _model(backend, case_config.replace(n_solver_steps=200, fixed_point_rtol=0.0, fixed_point_atol=0.0),
                      params)
        _, unrolled = backend.loss_and_grads(long, batch, adjoint=adjoint_for("checkpoint", pair.dtype))
        return Measurement(relative_error(grads, unrolled), tolerance(pair.dtype, "gradient", gradient_depth(case)),
                           "vs checkpointed through 200 iterations")
    rng = np.random.default_rng(7)
    direction = {
        name: rng.standard_normal(value.shape) if name.startswith("prior.") else np.zeros(value.shape)
        for name, value in params.items()
    }
    predicted = sum(float(np.vdot(grads[name], direction[name])) for name in params)
    epsilon = 1e-5

    def loss_at(step: float) -> float:
        moved = _model(backend, case_config, {name: params[name] + step * direction[name] for name in params})
        prediction = backend.fixedpoint_unrolled(moved, batch, 200)
        return float(backend.to_numpy(backend.reconstruction_loss(prediction, batch.target)))

    finite_difference = (loss_at(epsilon) - loss_at(-epsilon)) / (2 * epsilon)
    error = abs(predicted - finite_difference) / max(abs(finite_difference), 1e-300)
    return Measurement(error, FINITE_DIFFERENCE_TOLERANCE, f"grad.v {predicted:.10g} vs FD {finite_difference:.10g}")


TRAJECTORY_STEPS = 5
# Warm-up over 2 steps from a quarter of the rate, then a cosine to a tenth at step 5: every
# branch of `pipekit_cycle.WarmupCosineSchedule` within the trajectory.
TRAJECTORY_SCHEDULE = WarmupCosineSchedule(warmup_steps=2, decay_steps=TRAJECTORY_STEPS - 1, init_fraction=0.25,
                                           end_fraction=0.1)
# The schedule's factor: a handful of elementwise operations per step.
SCHEDULE_DEPTH = 8


def _trajectories(pair: Pair, case: str, optimizer_config: OptimizerConfig) -> float:
    """The largest relative difference, over ``TRAJECTORY_STEPS`` steps from the same
    parameters, between the two backends' losses and parameters after every step."""
    params = _reference_params(pair, case)
    trajectories = []
    for backend in (pair.candidate, pair.reference):
        model = _model(backend, config(case, pair.dtype), params)
        optimizer, opt_state = backend.make_optimizer(optimizer_config, model)
        batch = _batch(backend, case, pair.dtype)
        steps = []
        for _ in range(TRAJECTORY_STEPS):
            model, opt_state, loss = backend.train_step(model, batch, optimizer, opt_state)
            steps.append({"loss": np.asarray(float(loss)), **backend.export_params(model)})
        trajectories.append(steps)
    return max(relative_error(c, r) for c, r in zip(*trajectories, strict=True))


@register("train_trajectory", tuple(CASES))
def _train_trajectory(pair: Pair, case: str) -> Measurement:
    """Five Adam steps from the same parameters: parameters after every step agree."""
    error = _trajectories(pair, case, OptimizerConfig(name="adam", lr=1e-2))
    limit = tolerance(pair.dtype, "gradient", trajectory_depth(case, TRAJECTORY_STEPS))
    return Measurement(error, limit, f"{TRAJECTORY_STEPS} Adam steps")


@register("scheduled_trajectory", ("1d", "2d"))
def _scheduled_trajectory(pair: Pair, case: str) -> Measurement:
    """Five Adam steps under `TRAJECTORY_SCHEDULE` (warm-up, then cosine decay): the rate of
    every step, so the parameters after it, agree."""
    error = _trajectories(pair, case, OptimizerConfig(name="adam", lr=1e-2, schedule=TRAJECTORY_SCHEDULE))
    limit = tolerance(pair.dtype, "gradient", trajectory_depth(case, TRAJECTORY_STEPS) + SCHEDULE_DEPTH)
    return Measurement(error, limit, f"{TRAJECTORY_STEPS} Adam steps, warm-up then cosine")


@register("functional_step", tuple(CASES))
def _functional_step(pair: Pair, case: str) -> Measurement:
    """The candidate's step is a function of ``(params, opt_state)``: three Adam steps, then
    the second again from the parameters and optimizer state the first returned (kept while
    the later steps ran) gives the same parameters and state, bit for bit; under
    `TRAJECTORY_SCHEDULE`, so the state carries the schedule's position too."""
    backend = pair.candidate
    optimizer_config = OptimizerConfig(name="adam", lr=1e-2, schedule=TRAJECTORY_SCHEDULE)
    model = _model(backend, config(case, pair.dtype), _reference_params(pair, case))
    optimizer, opt_state = backend.make_optimizer(optimizer_config, model)
    batch = _batch(backend, case, pair.dtype)
    after: list[tuple[dict[str, np.ndarray], Any]] = []
    for _ in range(3):
        model, opt_state, _ = backend.train_step(model, batch, optimizer, opt_state)
        after.append((backend.export_params(model), opt_state))
    (first_params, first_state), (second_params, second_state) = after[0], after[1]
    model = backend.import_params(model, first_params)
    model, replayed_state, _ = backend.train_step(model, batch, optimizer, first_state)
    replayed = {**backend.export_params(model), **backend.export_optimizer_state(replayed_state)}
    expected = {**second_params, **backend.export_optimizer_state(second_state)}
    return Measurement(relative_error(replayed, expected), 0.0, "step 2 replayed from step 1's (params, opt_state)")


@register("param_round_trip", tuple(CASES))
def _param_round_trip(pair: Pair, case: str) -> Measurement:
    """Reference parameters imported into the candidate export unchanged, under schema names."""
    params = _reference_params(pair, case)
    exported = pair.candidate.export_params(_model(pair.candidate, config(case, pair.dtype), params))
    shapes = {name: np.shape(value) for name, value in exported.items()}
    if shapes != schema(config(case, pair.dtype)):
        return Measurement(float("inf"), 0.0, f"exported shapes {shapes} differ from the schema")
    dtypes = {str(np.asarray(value).dtype) for value in exported.values()}
    if dtypes != {pair.dtype}:
        return Measurement(float("inf"), 0.0, f"exported dtypes {sorted(dtypes)}, expected {pair.dtype}")
    return Measurement(relative_error(exported, params), 0.0, "export(import(p)) == p")


@register(
    "batch_independence",
    tuple(case_id for case_id in _grid(("checkpoint", "truncated:2")) if not batch_coupled(_split(case_id)[0])),
)
def _batch_independence(pair: Pair, case_id: str) -> Measurement:
    """Solving a batch equals solving each sample alone (costs are sums per sample); not run on
    the batch-coupled ocean4dvarnet architecture (`batch_coupled`)."""
    case, text = _split(case_id)
    spec = adjoint_for(text, pair.dtype)
    backend = pair.candidate
    model, _ = _models(pair, case)
    obs, _ = observations(case)
    together = backend.to_numpy(model(backend.make_batch(obs, dtype=pair.dtype), adjoint=spec))
    alone = np.concatenate(
        [
            backend.to_numpy(model(backend.make_batch(obs[i : i + 1], dtype=pair.dtype), adjoint=spec))
            for i in range(obs.shape[0])
        ]
    )
    return Measurement(relative_error(together, alone), tolerance(pair.dtype, "forward", solve_depth(case)),
                       "batch vs one by one")


def _bad_inputs() -> dict[str, Callable[[ModuleType, str], Any]]:
    obs, truth = observations("1d")
    config = CASES["1d"].config
    foreign_truncated = type("TruncatedAdjoint", (), {"k": 0})()  # spec-shaped, invalid k

    def solve(backend: ModuleType, dtype: str, batch: Any) -> Any:
        return backend.build_model(config, seed=0)(batch)

    def float64_for_float32(backend: ModuleType, dtype: str) -> Any:
        """A float32 model (built under float32 switches) given a float64 batch asked for under
        the run's switches: the same input whatever they are, though JAX without x64 cannot
        even make the batch."""
        with precision("float32"):
            model = backend.build_model(config, seed=0)
        return model(backend.make_batch(obs, dtype="float64"))

    return {
        "integer_obs": lambda b, d: b.make_batch(np.zeros(obs.shape, dtype=np.int64)),
        "obs_rank_2": lambda b, d: b.make_batch(obs[0], dtype=d),
        "target_shape": lambda b, d: b.make_batch(obs, target=truth[:, :2], dtype=d),
        # A grid the model's rule refuses (N below the kernel): any other grid it maps (issue 37).
        "batch_shape": lambda b, d: solve(b, d, b.make_batch(obs[:, :, :2], dtype=d)),
        "batch_time_axis": lambda b, d: solve(b, d, b.make_batch(obs[:, :2], dtype=d)),
        "dtype_mismatch": lambda b, d: solve(b, d, b.make_batch(obs, dtype="float32" if d == "float64" else "float64")),
        "float64_batch_float32_model": float64_for_float32,
        "missing_target": lambda b, d: b.train_loss_fn(b.build_model(config, seed=0), b.make_batch(obs, dtype=d)),
        "direct_at_inner_solve": lambda b, d: b.to_native_adjoint(adjoint_for("direct", d)),
        "implicit_with_learned_solver": lambda b, d: b.build_model(config, seed=0)(
            b.make_batch(obs, dtype=d), adjoint=adjoint_for("implicit", d)
        ),
        "foreign_truncated_k0": lambda b, d: b.to_native_adjoint(foreign_truncated),
        "import_wrong_shape": lambda b, d: b.import_params(
            b.build_model(config, seed=0),
            {**b.export_params(b.build_model(config, seed=0)), "grad_mod.gates.bias": np.zeros(3, dtype=d)},
        ),
    }


BAD_INPUTS = tuple(_bad_inputs())


@register("exceptions", BAD_INPUTS, quick="float64_batch_float32_model")
def _exceptions(pair: Pair, case: str) -> Measurement:
    """The same bad input raises the same exception, with the same message, in both backends."""
    outcomes = []
    for backend in (pair.candidate, pair.reference):
        try:
            _bad_inputs()[case](backend, pair.dtype)
            outcomes.append("no exception")
        except Exception as error:
            outcomes.append(f"{type(error).__name__}: {error}")
    same = outcomes[0] == outcomes[1] and outcomes[1] != "no exception"
    return Measurement(0.0 if same else 1.0, 0.0, f"candidate {outcomes[0]!r}, reference {outcomes[1]!r}")
