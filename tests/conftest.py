"""Test-wide settings: JAX in float64 (backend comparisons need it), deterministic torch, and
JAX's compiled code bounded (one pytest process compiles thousands of programs)."""

import importlib.util

import pytest

from conformance.backends import bound_compiled_code

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)

if importlib.util.find_spec("torch") is not None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _bounded_compiled_code():
    yield
    bound_compiled_code()
