"""pipekit_cycle: backend-neutral specs, protocols, configs and data for learned variational DA.

No import of jax or torch happens here, ever: backends (``vardax_jax``, ``vardax_torch``)
map these specs onto their own native machinery.
"""

from . import adjoints, amortized, backends, config, errors, params, problems, protocols, schedules, validation
from .adjoints import (
    DYNAMICS,
    INNER_SOLVE,
    AbstractAdjointSpec,
    AdjointSpec,
    BacksolveAdjoint,
    DirectAdjoint,
    ImplicitAdjoint,
    RecursiveCheckpointAdjoint,
    TruncatedAdjoint,
    adjoint_from_dict,
    applicable_layers,
    as_adjoint_spec,
    check_layer,
    check_solver_adjoint,
    checkpoint_schedule,
    parse_adjoint,
)
from .backends import BackendNotInstalledError, available_backends, load_backend
from .config import COMPONENT_FIELDS, FourDVarNetConfig, OptimizerConfig
from .errors import ConvergenceWarning
from .ocean4dvarnet import ocean4dvarnet_config
from .params import load_params, save_params, schema
from .problems import Problem, lorenz63, lorenz96
from .protocols import Backend, EvalStep, ForwardModel, GradModulator, InnerSolver, Prior, TrainStep
from .schedules import AbstractSchedule, ConstantSchedule, WarmupCosineSchedule

__all__ = [
    "COMPONENT_FIELDS",
    "DYNAMICS",
    "INNER_SOLVE",
    "AbstractAdjointSpec",
    "AbstractSchedule",
    "AdjointSpec",
    "Backend",
    "BackendNotInstalledError",
    "BacksolveAdjoint",
    "ConstantSchedule",
    "ConvergenceWarning",
    "DirectAdjoint",
    "EvalStep",
    "ForwardModel",
    "FourDVarNetConfig",
    "GradModulator",
    "ImplicitAdjoint",
    "InnerSolver",
    "OptimizerConfig",
    "Prior",
    "Problem",
    "RecursiveCheckpointAdjoint",
    "TrainStep",
    "TruncatedAdjoint",
    "WarmupCosineSchedule",
    "adjoint_from_dict",
    "adjoints",
    "amortized",
    "applicable_layers",
    "as_adjoint_spec",
    "available_backends",
    "backends",
    "check_layer",
    "check_solver_adjoint",
    "checkpoint_schedule",
    "config",
    "errors",
    "load_backend",
    "load_params",
    "lorenz63",
    "lorenz96",
    "ocean4dvarnet_config",
    "params",
    "parse_adjoint",
    "problems",
    "protocols",
    "save_params",
    "schedules",
    "schema",
    "validation",
]
