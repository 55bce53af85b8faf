import json

import pytest

from pipekit_cycle import (
    DirectAdjoint,
    FourDVarNetConfig,
    ImplicitAdjoint,
    OptimizerConfig,
    RecursiveCheckpointAdjoint,
    TruncatedAdjoint,
)


def test_fourdvarnet_config_json_round_trip():
    config = FourDVarNetConfig(
        state_shape=(8, 6),
        n_time=5,
        hidden_dim=4,
        padding="circular",
        solver="fixed_point",
        fixed_point_rtol=1e-8,
        fixed_point_atol=0.0,
        solver_adjoint=ImplicitAdjoint("neumann", rtol=1e-9, max_steps=30),
    )
    again = FourDVarNetConfig.from_json(config.to_json())
    assert again == config
    assert again.ndim == 2
    assert json.loads(config.to_json())["solver_adjoint"]["type"] == "ImplicitAdjoint"
    assert json.loads(config.to_json())["solver"] == "fixed_point"


@pytest.mark.parametrize(("changes", "words"), [
    ({"solver": "newton"}, "solver must be one of learned, fixed_point"),
    ({"solver_adjoint": ImplicitAdjoint()}, 'ImplicitAdjoint needs solver="fixed_point"'),
    ({"fixed_point_rtol": -1.0}, "fixed_point_rtol must be a finite float >= 0"),
])
def test_solver_is_validated(changes, words):
    with pytest.raises(ValueError, match=words):
        FourDVarNetConfig(state_shape=(8,), n_time=3, **changes)


def test_fourdvarnet_config_defaults_and_replace():
    config = FourDVarNetConfig(state_shape=(40,), n_time=10)
    assert config.solver_adjoint == RecursiveCheckpointAdjoint()
    assert config.ndim == 1
    truncated = config.replace(solver_adjoint="truncated:2")
    assert truncated.solver_adjoint == TruncatedAdjoint(2)
    assert FourDVarNetConfig(state_shape=[40], n_time=10).state_shape == (40,)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"state_shape": (0,)}, ["state_shape", ">= 1"]),
        ({"state_shape": (2, 3, 4)}, ["state_shape", "(N,) or (H, W)"]),
        ({"n_time": 0}, ["n_time", ">= 1"]),
        ({"hidden_dim": -1}, ["hidden_dim"]),
        ({"kernel_size": 4}, ["kernel_size", "odd"]),
        ({"alpha": 0.0}, ["alpha", "> 0"]),
        ({"obs_weight": -1.0}, ["obs_weight", ">= 0"]),
        ({"padding": "reflect"}, ["padding", "zeros, circular"]),
        ({"solver_adjoint": DirectAdjoint()}, ["DirectAdjoint", "'dynamics' layer"]),
        ({"solver_adjoint": 3}, ["solver_adjoint", "adjoint spec"]),
    ],
)
def test_fourdvarnet_config_validation(changes, words):
    kwargs = {"state_shape": (8,), "n_time": 4, **changes}
    with pytest.raises(ValueError) as info:
        FourDVarNetConfig(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown fields"):
        FourDVarNetConfig.from_dict({"state_shape": [4], "n_time": 2, "depth": 3})


def test_optimizer_config_round_trip_and_validation():
    config = OptimizerConfig(name="sgd", lr=0.5, betas=(0.8, 0.9), weight_decay=1e-4, clip_norm=1.0)
    assert OptimizerConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="adam, sgd"):
        OptimizerConfig(name="rmsprop")
    with pytest.raises(ValueError, match="lr"):
        OptimizerConfig(lr=0)
    with pytest.raises(ValueError, match="betas"):
        OptimizerConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="clip_norm"):
        OptimizerConfig(clip_norm=-1.0)


def test_a_learning_rate_schedule_round_trips_and_is_checked():
    from pipekit_cycle import ConstantSchedule, WarmupCosineSchedule

    config = OptimizerConfig(lr=1e-2, schedule=WarmupCosineSchedule(5, 50, init_fraction=0.1, end_fraction=0.01))
    assert OptimizerConfig.from_json(config.to_json()) == config
    assert OptimizerConfig.from_dict({"lr": 1e-2}).schedule == ConstantSchedule()  # saved before schedules
    for bad, words in (({"kind": "linear"}, "constant, warmup_cosine"), ({"kind": "warmup_cosine", "warm": 3},
                                                                         "unknown fields"),
                       ({"kind": "warmup_cosine", "warmup_steps": 9, "decay_steps": 9}, "counts the warm-up"),
                       ({"kind": "warmup_cosine", "warmup_steps": 1, "decay_steps": 9, "end_fraction": 2.0},
                        "end_fraction")):
        with pytest.raises(ValueError, match=words):
            OptimizerConfig.from_dict({"schedule": bad})
    with pytest.raises(ValueError, match="learning-rate schedule"):
        OptimizerConfig(schedule="cosine")
