"""The two backends mirror each other: the same public names, except the backend-named ones."""

import vardax_jax
import vardax_torch

BACKEND_NAMED = {
    "vardax_jax": {
        "DiffraxForwardModel",
        "FixedPointNeumann",
        "MatchedBacksolveAdjoint",
        "ScheduledCheckpointAdjoint",
        "ThreeEighthsRK4",
        "to_optimistix_adjoint",
    },
    "vardax_torch": {
        "AbstractOdeintAdjoint",
        "BacksolveOdeint",
        "CheckpointedOdeint",
        "DirectOdeint",
        "TorchDiffEqForwardModel",
        "from_ocean4dvarnet",
        "to_torch_adjoint",
    },
}
MODULES = (
    "adjoints", "grad_mod", "priors", "solver", "model", "training", "amortized", "dynamics", "params", "resample",
    "devices",
)


def test_same_public_names():
    jax_names = set(vardax_jax.__all__) - BACKEND_NAMED["vardax_jax"]
    torch_names = set(vardax_torch.__all__) - BACKEND_NAMED["vardax_torch"]
    assert jax_names == torch_names
    assert len(jax_names) > 60
    for name in vardax_jax.__all__:
        assert hasattr(vardax_jax, name), name
    for name in vardax_torch.__all__:
        assert hasattr(vardax_torch, name), name


def test_same_module_names():
    for module in MODULES:
        assert hasattr(vardax_jax, module) and hasattr(vardax_torch, module), module
