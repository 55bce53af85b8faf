"""Reference outputs shipped with the suite: a backend is checked without the reference installed.

`conformance.suite.write_golden` runs every check with the reference backend on both sides and, on the reference side,
logs each call the check makes and what it gave (``golden/<reference>-<dtype>.npz``, written by
``python -m conformance --write-golden``). `Golden` stands in for the reference afterwards: the
same check makes the same calls in the same order, and each is answered from the log, so the
candidate is held to the reference's numbers, and to its exceptions and messages, with one
framework installed.

What is logged, per check and case: every call on the reference module, on an object it
returned, or an attribute read from one, in order, each by its name. A result is kept as data
when it is data (arrays as numpy, numbers, strings, ``None``; plain dicts, lists and tuples of
them) and as an opaque handle otherwise (a model, a batch, an optimizer state), whose later
calls are logged the same way; an exception is kept as its type name and message. The
arguments are not logged: a check builds them from the case alone, so its calls repeat. A call
the log does not hold in that place (the suite's checks changed since the file was written) is
a `GoldenMismatch` naming the check, the call and the command that writes the files again.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GOLDEN_DIR", "GOLDEN_SUFFIX", "Golden", "GoldenMismatch", "Recorder", "golden_path"]

GOLDEN_DIR = Path(__file__).with_name("golden")
GOLDEN_SUFFIX = ":golden"  # "--reference vardax_jax:golden": the files, even where the backend is installed
_ARRAY, _HANDLE, _TUPLE = "__array__", "__handle__", "__tuple__"


class GoldenMismatch(RuntimeError):
    """The golden file does not hold the call a check made: it predates the checks."""


def golden_path(reference: str, dtype: str) -> Path:
    """``golden/<reference>-<dtype>.npz``."""
    return GOLDEN_DIR / f"{reference}-{dtype}.npz"


def _is_array(value: Any) -> bool:
    if isinstance(value, (np.ndarray, np.generic)):
        return True
    # A framework's array (jax.Array, torch.Tensor), not a module or a batch that holds some.
    return type(value).__module__.split(".")[0] in ("jax", "jaxlib", "torch") and hasattr(value, "__array__") and (
        not callable(value)
    )


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return np.array(value)


# --- recording ---------------------------------------------------------------------------------


class _Log:
    """The events of one check on one case, and the arrays they hold."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.events: list[list[Any]] = []
        self.arrays = arrays
        self.depth = 0
        self.handles = 0

    def encode(self, value: Any) -> tuple[Any, Any]:
        """``(what to log, what to give the check)``: data as data, anything else behind a
        recording handle."""
        if value is None or isinstance(value, (bool, int, float, str)):
            return value, value
        if _is_array(value):
            array = _as_numpy(value)
            # Stored once by content: every check exports the same initial parameters.
            digest = hashlib.sha1(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()[:20]
            self.arrays.setdefault(digest, array)
            return {_ARRAY: digest}, value
        if type(value) is dict and all(isinstance(key, str) for key in value):
            pairs = {key: self.encode(item) for key, item in value.items()}
            logged = {key: item for key, (item, _) in pairs.items()}
            return logged, {key: item for key, (_, item) in pairs.items()}
        if type(value) in (list, tuple):
            encoded = [self.encode(item) for item in value]
            logged = [item for item, _ in encoded]
            given = type(value)(item for _, item in encoded)
            return ({_TUPLE: logged} if type(value) is tuple else logged), given
        self.handles += 1
        return {_HANDLE: self.handles}, _Recording(value, self)

    def call(self, name: str, function: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        args, kwargs = _unwrap(args), _unwrap(kwargs)
        if self.depth:  # a call made from inside a logged one (a loss_fn the step calls)
            return function(*args, **kwargs)
        self.depth += 1
        try:
            result = function(*args, **kwargs)
        except Exception as error:
            self.events.append([f"call {name}", "raise", type(error).__name__, str(error)])
            raise
        finally:
            self.depth -= 1
        logged, given = self.encode(result)
        self.events.append([f"call {name}", "value", logged])
        return given

    def read(self, name: str, value: Any) -> Any:
        if self.depth:
            return value
        logged, given = self.encode(value)
        self.events.append([f"read {name}", "value", logged])
        return given


def _unwrap(value: Any) -> Any:
    if isinstance(value, _Recording):
        return object.__getattribute__(value, "_target")
    if type(value) is dict:
        return {key: _unwrap(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_unwrap(item) for item in value)
    return value


class _Recording:
    """A reference object (the module, or something it returned) whose uses are logged."""

    def __init__(self, target: Any, log: _Log) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_log", log)

    def __getattr__(self, name: str) -> Any:
        target, log = object.__getattribute__(self, "_target"), object.__getattribute__(self, "_log")
        value = getattr(target, name)
        if name == "__name__":
            return value
        if callable(value) and not _is_array(value):
            return lambda *args, **kwargs: log.call(name, value, args, kwargs)
        return log.read(name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        target, log = object.__getattribute__(self, "_target"), object.__getattribute__(self, "_log")
        return log.call("()", target, args, kwargs)


class Recorder:
    """Collects the logs of a recording run: ``wrap("check::case")`` gives a logging stand-in
    for ``reference`` for one check; `save` writes the file."""

    def __init__(self, reference: Any) -> None:
        self.reference = reference
        self.arrays: dict[str, np.ndarray] = {}
        self.logs: dict[str, list[list[Any]]] = {}

    def wrap(self, key: str) -> Any:
        log = _Log(self.arrays)
        self.logs[key] = log.events
        return _Recording(self.reference, log)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(name for name in dir(self.reference) if not name.startswith("_"))
        meta = {"reference": self.reference.__name__, "names": names, "logs": self.logs}
        temporary = path.with_suffix(".tmp.npz")
        np.savez_compressed(temporary, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **self.arrays)
        temporary.replace(path)


# --- replaying ---------------------------------------------------------------------------------


class Golden:
    """The golden file of one reference and dtype; `for_check` gives the stand-in for one
    check on one case."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            self.arrays = {key: data[key] for key in data.files if key != "__meta__"}
        self.path = path
        self.reference: str = meta["reference"]
        self.names = frozenset(meta["names"])
        self.logs: dict[str, list[list[Any]]] = meta["logs"]

    def for_check(self, key: str) -> Any:
        if key not in self.logs:
            raise GoldenMismatch(f"{self.path} holds nothing for {key}; {_REWRITE}")
        return _Replay(None, _Cursor(self, key))


_REWRITE = "write the golden files again with `python -m conformance --write-golden` (needs the reference installed)"


class _Cursor:
    def __init__(self, golden: Golden, key: str) -> None:
        self.golden, self.key = golden, key
        self.events: Iterator[list[Any]] = iter(golden.logs[key])
        self.pending: list[Any] | None = None

    def peek(self) -> list[Any] | None:
        if self.pending is None:
            self.pending = next(self.events, None)
        return self.pending

    def take(self, label: str) -> list[Any]:
        event = self.peek()
        if event is None or event[0] != label:
            found = "the end of the log" if event is None else repr(event[0])
            raise GoldenMismatch(f"{self.key}: the check made {label!r} where {self.golden.path.name} has {found}; "
                                 f"{_REWRITE}")
        self.pending = None
        return event

    def decode(self, logged: Any) -> Any:
        if isinstance(logged, dict):
            if _ARRAY in logged:
                return self.golden.arrays[logged[_ARRAY]]
            if _HANDLE in logged:
                return _Replay(logged[_HANDLE], self)
            if _TUPLE in logged:
                return tuple(self.decode(item) for item in logged[_TUPLE])
            return {key: self.decode(item) for key, item in logged.items()}
        if isinstance(logged, list):
            return [self.decode(item) for item in logged]
        return logged

    def outcome(self, event: list[Any]) -> Any:
        if event[1] == "raise":
            kind = getattr(builtins, event[2], None)
            if not (isinstance(kind, type) and issubclass(kind, Exception)):
                kind = type(event[2], (Exception,), {})  # the reference's own type, by name
            raise kind(event[3])
        return self.decode(event[2])


class _Replay:
    """The reference module (``handle`` ``None``) or an object it returned, answered from the log."""

    def __init__(self, handle: int | None, cursor: _Cursor) -> None:
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "_cursor", cursor)

    def __getattr__(self, name: str) -> Any:
        cursor: _Cursor = object.__getattribute__(self, "_cursor")
        if name == "__name__":
            return f"{cursor.golden.reference} (golden)"
        if object.__getattribute__(self, "_handle") is None and name not in cursor.golden.names:
            raise AttributeError(f"the reference {cursor.golden.reference} has no {name!r}")
        upcoming = cursor.peek()
        if upcoming is not None and upcoming[0] == f"read {name}":
            return cursor.outcome(cursor.take(f"read {name}"))
        return lambda *args, **kwargs: cursor.outcome(cursor.take(f"call {name}"))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        cursor: _Cursor = object.__getattribute__(self, "_cursor")
        return cursor.outcome(cursor.take("call ()"))
