"""Which backends are under test, and the precision switch of each framework."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from pipekit_cycle import available_backends, load_backend

__all__ = ["DEFAULT_REFERENCE", "backends_under_test", "precision", "resolve"]

DEFAULT_REFERENCE = "vardax_jax"
ENV_VARIABLE = "PIPEKIT_BACKENDS"


def backends_under_test(names: str | None = None) -> list[str]:
    """``names`` (comma-separated), else ``$PIPEKIT_BACKENDS``, else every installed backend."""
    text = names if names is not None else os.environ.get(ENV_VARIABLE, "")
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    return chosen or available_backends()


def resolve(backend: str | ModuleType) -> tuple[str, ModuleType]:
    """``(name, module)`` for a backend given by name or as a module."""
    if isinstance(backend, ModuleType):
        return backend.__name__, backend
    return backend, load_backend(backend)


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """Set every loaded framework's own precision switch to ``dtype`` for the block.

    DESIGN 3: models and batches follow ``jax_enable_x64`` and ``torch.get_default_dtype()``,
    so a backend built on either framework builds in ``dtype`` inside this block.
    """
    restore = []
    if "jax" in sys.modules:
        import jax

        previous = bool(jax.config.jax_enable_x64)
        jax.config.update("jax_enable_x64", dtype == "float64")
        restore.append(lambda: jax.config.update("jax_enable_x64", previous))
    if "torch" in sys.modules:
        import torch

        previous_dtype = torch.get_default_dtype()
        torch.set_default_dtype(getattr(torch, dtype))
        restore.append(lambda: torch.set_default_dtype(previous_dtype))
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()
