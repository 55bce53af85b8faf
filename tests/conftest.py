"""Test-wide settings: JAX in float64 (backend comparisons need it), deterministic torch."""

import importlib.util

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)

if importlib.util.find_spec("torch") is not None:
    import torch

    torch.set_num_threads(1)
