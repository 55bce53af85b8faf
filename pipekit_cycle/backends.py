"""Finding backends: the entry-point group ``pipekit_cycle.backends`` and plain module names."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

__all__ = ["ENTRY_POINT_GROUP", "BackendNotInstalledError", "available_backends", "load_backend"]

ENTRY_POINT_GROUP = "pipekit_cycle.backends"
# The framework each of our backends needs, and the extra that installs it.
_REQUIREMENTS = {"vardax_jax": ("jax", "jax"), "vardax_torch": ("torch", "torch")}


class BackendNotInstalledError(ImportError):
    """A backend, or the framework it needs, is not installed.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    assert issubclass(pk.BackendNotInstalledError, ImportError)  # `except ImportError` catches it
    try:
        pk.load_backend("no_such_backend")
    except pk.BackendNotInstalledError as error:
        assert "no backend 'no_such_backend'" in str(error)
    else:
        raise AssertionError("load_backend found a backend that does not exist")
    ```
    """


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Names of the registered backends whose module and framework are importable, sorted.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    names = pk.available_backends()  # e.g. ['vardax_jax', 'vardax_torch'] with both frameworks installed
    assert names == sorted(names) and all(isinstance(pk.load_backend(name), type(pk)) for name in names)
    ```
    """
    names = []
    for name, target in _entry_points().items():
        module = target.partition(":")[0]
        framework = _REQUIREMENTS.get(name, (module, ""))[0]
        if _is_installed(module) and _is_installed(framework):
            names.append(name)
    return sorted(names)


def load_backend(name: str) -> ModuleType:
    """The backend module registered as ``name`` (or importable under that module name).

    Raises `BackendNotInstalledError` naming the extra to install when the backend or its
    framework is missing, ``ValueError`` for a name that is neither registered nor a module.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    for name in ("vardax_jax", "vardax_torch"):
        try:
            backend = pk.load_backend(name)  # the module, as `import vardax_jax` gives it
        except pk.BackendNotInstalledError as error:
            print(error)  # names the extra to install, e.g. pip install 'pipekit-cycle[jax]'
        else:
            assert backend.__name__ == name and hasattr(backend, "build_model")
    ```
    """
    if isinstance(name, ModuleType):
        return name
    target = _entry_points().get(name, name).partition(":")[0]
    framework, extra = _REQUIREMENTS.get(name, (None, None))
    if framework is not None and not _is_installed(framework):
        raise BackendNotInstalledError(
            f"backend {name!r} needs {framework}, which is not installed: pip install 'pipekit-cycle[{extra}]'"
        )
    if not _is_installed(target):
        known = ", ".join(sorted(_entry_points())) or "none"
        raise BackendNotInstalledError(
            f"no backend {name!r}: it is neither registered in the entry-point group "
            f"{ENTRY_POINT_GROUP!r} (registered: {known}) nor an importable module"
        )
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as error:
        # Only a missing third-party module means "not installed"; any other ImportError is a
        # defect in the backend itself and propagates unchanged.
        if error.name is None or error.name.split(".")[0] == target.split(".")[0]:
            raise
        hint = f": pip install 'pipekit-cycle[{extra}]'" if extra else ""
        raise BackendNotInstalledError(f"backend {name!r} needs {error.name!r}, which is missing{hint}") from error
