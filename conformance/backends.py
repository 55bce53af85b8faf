"""Which backends are under test, and the precision switch of each framework."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from pipekit_cycle import available_backends, load_backend

__all__ = ["DEFAULT_REFERENCE", "backends_under_test", "bound_compiled_code", "one_thread", "precision", "resolve"]

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


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch's intra-op threads set to one for the block, restored after.

    The suite's tensors hold a few hundred numbers: splitting an operation across threads costs
    more than it saves, and on a busy machine the threads wait for each other (the truncation
    checks took 2.0 s with two threads and 0.1 s with one on a loaded 2-core machine). JAX's
    threads are left alone: its time here is compilation, and XLA's runtime threads could only
    change the reference's numbers, not the time.
    """
    if "torch" not in sys.modules:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Each XLA:CPU executable holds a few memory mappings of its own; a process that compiles
# thousands of programs (the whole suite, both dtypes) reaches Linux's vm.max_map_count (65530)
# and LLVM fails with "Cannot allocate memory", then segfaults. Past this many mappings,
# JAX's caches are dropped (later checks recompile what they need). One full run of one dtype
# ends near 20 000 (measured: 18 000 before the grid checks), so the line sits above it, with
# 25 000 to spare below the limit (a check adds a few hundred).
MAX_MAPPINGS = 40_000


def bound_compiled_code(max_mappings: int = MAX_MAPPINGS) -> bool:
    """``jax.clear_caches()`` when this process holds more than ``max_mappings`` memory
    mappings (Linux ``/proc/self/maps``; elsewhere nothing); whether it cleared."""
    if "jax" not in sys.modules or not os.path.exists("/proc/self/maps"):
        return False
    with open("/proc/self/maps", "rb") as handle:
        mappings = sum(1 for _ in handle)
    if mappings <= max_mappings:
        return False
    import gc

    import jax

    jax.clear_caches()
    gc.collect()
    return True
