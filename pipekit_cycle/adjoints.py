"""Backend-neutral adjoint specifications.

An adjoint spec says *how* a backend differentiates through an iterative computation: the
learned inner solve of a 4DVarNet (layer ``"inner_solve"``) or the time integration of an ODE
forward model (layer ``"dynamics"``). Specs are frozen, hashable, equal by value and carry no
behaviour; each backend maps them onto its own native adjoint (``to_native_adjoint``).

| spec                         | gradient     | memory in the number of steps K |
|------------------------------|--------------|---------------------------------|
| ``DirectAdjoint``            | exact        | O(K): every step is stored       |
| ``RecursiveCheckpointAdjoint``| exact       | sublinear: recompute from checkpoints |
| ``TruncatedAdjoint(k)``      | biased       | O(k): only the last ``k`` steps carry the gradient |
| ``ImplicitAdjoint``          | exact at a fixed point | O(1): solve (I - dT/dx)^T lambda = dL/dx* |
| ``BacksolveAdjoint``         | approximate  | O(1): integrate the continuous adjoint ODE backwards |

Text form (``str(spec)`` and ``parse_adjoint`` are inverses)::

    direct
    checkpoint            checkpoint:8
    truncated:3
    implicit              implicit:gmres         implicit:dense:rtol=1e-08:max_steps=500
    backsolve             backsolve:rtol=1e-06:atol=1e-08
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Final, Literal, TypeAlias

from .validation import check_field_float, check_field_int

__all__ = [
    "DYNAMICS",
    "INNER_SOLVE",
    "LAYERS",
    "LINEAR_SOLVERS",
    "SPEC_TYPES",
    "AbstractAdjointSpec",
    "AdjointSpec",
    "BacksolveAdjoint",
    "DirectAdjoint",
    "ImplicitAdjoint",
    "RecursiveCheckpointAdjoint",
    "TruncatedAdjoint",
    "adjoint_from_dict",
    "applicable_layers",
    "as_adjoint_spec",
    "binomial_split",
    "check_layer",
    "check_solver_adjoint",
    "checkpoint_schedule",
    "parse_adjoint",
]

INNER_SOLVE: Final = "inner_solve"
"""The layer of the learned inner solve (`check_layer`, `applicable_layers`).

Examples
--------
```python
import pipekit_cycle as pk

assert pk.INNER_SOLVE in pk.applicable_layers(pk.TruncatedAdjoint(k=2))
assert pk.check_layer("checkpoint", pk.INNER_SOLVE) == pk.RecursiveCheckpointAdjoint()
```
"""
DYNAMICS: Final = "dynamics"
"""The layer of an ODE forward model's time stepping (`check_layer`, `applicable_layers`).

Examples
--------
```python
import pipekit_cycle as pk

assert pk.applicable_layers(pk.BacksolveAdjoint()) == frozenset({pk.DYNAMICS})
try:
    pk.check_layer(pk.BacksolveAdjoint(), pk.INNER_SOLVE)  # a dynamics-only spec at the other layer
except ValueError as error:
    assert "dynamics" in str(error)
else:
    raise AssertionError("check_layer accepted a spec of another layer")
```
"""
LAYERS: Final = (INNER_SOLVE, DYNAMICS)
LINEAR_SOLVERS: Final = ("auto", "gmres", "neumann", "dense")
LEARNED: Final = "learned"
FIXED_POINT: Final = "fixed_point"
SOLVERS: Final = (LEARNED, FIXED_POINT)

LinearSolverName: TypeAlias = Literal["auto", "gmres", "neumann", "dense"]


class AbstractAdjointSpec:
    """Base of the adjoint specs: text form, dict form and the layers a spec applies to.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.TruncatedAdjoint(k=2)
    assert isinstance(spec, pk.AbstractAdjointSpec)
    assert str(spec) == "truncated:2" and pk.parse_adjoint(str(spec)) == spec  # the text form round-trips
    assert pk.adjoint_from_dict(spec.to_dict()) == spec  # and so does the dict form
    assert pk.INNER_SOLVE in spec.layers and pk.DYNAMICS not in spec.layers
    ```
    """

    tag: ClassVar[str]
    layers: ClassVar[frozenset[str]]

    def to_dict(self) -> dict[str, Any]:
        """``{"type": class name, **fields}``: JSON-serialisable, inverse of `adjoint_from_dict`."""
        return {"type": type(self).__name__, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def _options(self) -> list[str]:
        return []

    def __str__(self) -> str:
        return ":".join([self.tag, *self._options()])


@dataclasses.dataclass(frozen=True)
class DirectAdjoint(AbstractAdjointSpec):
    """Exact gradient by storing every step; memory linear in the number of steps.

    Dynamics layer only: at the inner solve, plain unrolled backprop is
    `RecursiveCheckpointAdjoint`'s exact gradient.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.DirectAdjoint()  # backprop through every ODE step
    assert str(spec) == "direct" and pk.parse_adjoint("direct") == spec
    assert pk.applicable_layers(spec) == {pk.DYNAMICS}
    ```
    """

    tag: ClassVar[str] = "direct"
    layers: ClassVar[frozenset[str]] = frozenset({DYNAMICS})


@dataclasses.dataclass(frozen=True)
class RecursiveCheckpointAdjoint(AbstractAdjointSpec):
    """Exact gradient; the backward recomputes steps from stored checkpoints.

    ``checkpoints`` (>= 1) is the number of stored states; ``None`` lets the backend pick
    (e.g. about sqrt(K) segments, or a binomial schedule). Memory grows sublinearly in K.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.RecursiveCheckpointAdjoint(checkpoints=8)
    assert str(spec) == "checkpoint:8" and pk.parse_adjoint("checkpoint:8") == spec
    assert pk.applicable_layers(spec) == {pk.INNER_SOLVE, pk.DYNAMICS}  # both layers
    ```
    """

    checkpoints: int | None = None

    tag: ClassVar[str] = "checkpoint"
    layers: ClassVar[frozenset[str]] = frozenset({INNER_SOLVE, DYNAMICS})

    def __post_init__(self) -> None:
        check_field_int(type(self).__name__, "checkpoints", self.checkpoints, allow_none=True)

    def _options(self) -> list[str]:
        return [] if self.checkpoints is None else [str(self.checkpoints)]


@dataclasses.dataclass(frozen=True)
class TruncatedAdjoint(AbstractAdjointSpec):
    """Biased gradient through the last ``k`` steps only.

    The first ``K - k`` steps run without gradient (state AND recurrent carry are cut from
    the graph), the last ``k`` propagate it. The forward value is that of the full solve;
    ``k >= K`` is the exact gradient.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.TruncatedAdjoint(k=3)  # gradient through the last 3 solver steps only
    assert str(spec) == "truncated:3" and pk.parse_adjoint("truncated:3") == spec
    assert spec == pk.TruncatedAdjoint(3) and hash(spec) == hash(pk.TruncatedAdjoint(3))  # equal by value
    ```
    """

    k: int = 1

    tag: ClassVar[str] = "truncated"
    layers: ClassVar[frozenset[str]] = frozenset({INNER_SOLVE})

    def __post_init__(self) -> None:
        check_field_int(type(self).__name__, "k", self.k)

    def _options(self) -> list[str]:
        return [str(self.k)]


@dataclasses.dataclass(frozen=True)
class ImplicitAdjoint(AbstractAdjointSpec):
    r"""Implicit function theorem at a converged fixed point ``x* = T(x*, theta)``.

    The backward solves ``(I - \partial T/\partial x)^T \lambda = \partial L/\partial x^*``
    matrix-free with ``linear_solver`` (one of ``auto, gmres, neumann, dense``) and returns
    ``\lambda^T \partial T/\partial \theta``. ``rtol``/``atol``/``max_steps`` are the
    tolerances of that backward linear solve only (``max_steps`` ``None``: 1000); the forward
    iteration stops by the solver's own rule (``FourDVarNetConfig.fixed_point_rtol/atol`` and
    ``n_solver_steps``), as in optimistix. At the inner solve it needs
    ``solver="fixed_point"``, whose output is a fixed point; the learned ConvLSTM solve's is
    not. Memory is independent of the iteration count.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.parse_adjoint("implicit:gmres")
    assert spec == pk.ImplicitAdjoint(linear_solver="gmres") and spec.rtol == 1e-6  # the defaults
    pk.check_solver_adjoint("fixed_point", spec)  # needs solver="fixed_point"
    ```
    """

    linear_solver: LinearSolverName = "auto"
    rtol: float = 1e-6
    atol: float = 1e-6
    max_steps: int | None = None

    tag: ClassVar[str] = "implicit"
    layers: ClassVar[frozenset[str]] = frozenset({INNER_SOLVE})

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(
                f"{name}.linear_solver must be one of {', '.join(LINEAR_SOLVERS)}; got {self.linear_solver!r}"
            )
        check_field_float(name, "rtol", self.rtol)
        check_field_float(name, "atol", self.atol)
        check_field_int(name, "max_steps", self.max_steps, allow_none=True)

    def _options(self) -> list[str]:
        options = [] if self.linear_solver == "auto" else [self.linear_solver]
        defaults = ImplicitAdjoint()
        for field in ("rtol", "atol", "max_steps"):
            value = getattr(self, field)
            if value != getattr(defaults, field):
                options.append(f"{field}={value!r}")
        return options


@dataclasses.dataclass(frozen=True)
class BacksolveAdjoint(AbstractAdjointSpec):
    """Continuous adjoint of an ODE, integrated backwards in time; approximate.

    ``rtol``/``atol`` are the tolerances of the backward solve (``None``: those of the
    forward solve). Dynamics layer only.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.BacksolveAdjoint(rtol=1e-6, atol=1e-8)
    assert str(spec) == "backsolve:rtol=1e-06:atol=1e-08"
    assert pk.parse_adjoint(str(spec)) == spec and pk.applicable_layers(spec) == {pk.DYNAMICS}
    ```
    """

    rtol: float | None = None
    atol: float | None = None

    tag: ClassVar[str] = "backsolve"
    layers: ClassVar[frozenset[str]] = frozenset({DYNAMICS})

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_field_float(name, "rtol", self.rtol, allow_none=True)
        check_field_float(name, "atol", self.atol, allow_none=True)

    def _options(self) -> list[str]:
        return [f"{f}={getattr(self, f)!r}" for f in ("rtol", "atol") if getattr(self, f) is not None]


AdjointSpec: TypeAlias = (
    DirectAdjoint | RecursiveCheckpointAdjoint | TruncatedAdjoint | ImplicitAdjoint | BacksolveAdjoint
)
"""Any of the five specs (a type for annotations and ``isinstance``).

Examples
--------
```python
import pipekit_cycle as pk

assert isinstance(pk.parse_adjoint("implicit:neumann"), pk.AdjointSpec)
assert not isinstance("checkpoint", pk.AdjointSpec)  # text is parsed first, by parse_adjoint
```
"""
SPEC_TYPES: Final[tuple[type[AbstractAdjointSpec], ...]] = (
    DirectAdjoint,
    RecursiveCheckpointAdjoint,
    TruncatedAdjoint,
    ImplicitAdjoint,
    BacksolveAdjoint,
)
_BY_TAG: Final = {cls.tag: cls for cls in SPEC_TYPES}
_BY_NAME: Final = {cls.__name__: cls for cls in SPEC_TYPES}
# The positional (unnamed) option of each text form, e.g. "truncated:3" -> k=3.
_POSITIONAL: Final = {"checkpoint": "checkpoints", "truncated": "k", "implicit": "linear_solver"}
_INT_FIELDS: Final = frozenset({"checkpoints", "k", "max_steps"})
_FLOAT_FIELDS: Final = frozenset({"rtol", "atol"})


def _convert_field(tag: str, field: str, text: str) -> object:
    try:
        if field in _INT_FIELDS:
            return None if text == "None" else int(text)
        if field in _FLOAT_FIELDS:
            return None if text == "None" else float(text)
    except ValueError:
        kind = "an int" if field in _INT_FIELDS else "a float"
        raise ValueError(f"adjoint {tag!r}: {field} must be {kind}, got {text!r}") from None
    return text


def parse_adjoint(text: str) -> AdjointSpec:
    """Parse the text form of a spec (the inverse of ``str(spec)``).

    ``name[:positional][:field=value]...`` with ``name`` one of ``direct, checkpoint,
    truncated, implicit, backsolve``; e.g. ``"truncated:3"``, ``"implicit:gmres:rtol=1e-08"``.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.parse_adjoint("truncated:3")
    assert spec == pk.TruncatedAdjoint(k=3) and str(spec) == "truncated:3"  # str is the inverse
    assert pk.parse_adjoint("checkpoint") == pk.RecursiveCheckpointAdjoint()
    ```
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_adjoint expects a str, got {type(text).__name__}")
    tag, *options = [part.strip() for part in text.strip().split(":")]
    tag = tag.lower()
    if tag not in _BY_TAG:
        raise ValueError(f"unknown adjoint {text!r}; expected one of {', '.join(_BY_TAG)}")
    cls = _BY_TAG[tag]
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, object] = {}
    for option in options:
        if "=" in option:
            field, _, value = option.partition("=")
            field = field.strip()
        elif tag in _POSITIONAL and not kwargs:
            field, value = _POSITIONAL[tag], option
        else:
            raise ValueError(f"adjoint {text!r}: cannot read option {option!r}")
        if field not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            raise ValueError(f"adjoint {tag!r} has no option {field!r}; options: {allowed}")
        kwargs[field] = _convert_field(tag, field, value.strip())
    return cls(**kwargs)  # type: ignore[return-value]


def adjoint_from_dict(data: dict[str, Any]) -> AdjointSpec:
    """Inverse of ``spec.to_dict()``: ``{"type": "TruncatedAdjoint", "k": 3}`` -> spec.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.adjoint_from_dict({"type": "TruncatedAdjoint", "k": 3})
    assert spec == pk.TruncatedAdjoint(k=3)
    assert pk.adjoint_from_dict(spec.to_dict()) == spec  # to_dict is the inverse
    ```
    """
    if not isinstance(data, dict) or "type" not in data:
        raise ValueError(f"an adjoint dict needs a 'type' key, got {data!r}")
    fields = dict(data)
    name = fields.pop("type")
    if name not in _BY_NAME:
        raise ValueError(f"unknown adjoint type {name!r}; expected one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name](**fields)  # type: ignore[return-value]


def as_adjoint_spec(obj: object) -> AdjointSpec | None:
    """Duck-typed view of ``obj`` as one of our specs, or ``None`` if it is not spec-shaped.

    Backends map specs by class NAME and fields, so an identically shaped spec from another
    library maps too. Strings are parsed.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    assert pk.as_adjoint_spec(pk.TruncatedAdjoint(k=2)) == pk.TruncatedAdjoint(k=2)
    assert pk.as_adjoint_spec(42) is None  # not spec-shaped
    ```
    """
    if isinstance(obj, SPEC_TYPES):
        return obj  # type: ignore[return-value]
    if isinstance(obj, str):
        return parse_adjoint(obj)
    cls = _BY_NAME.get(type(obj).__name__)
    if cls is None:
        return None
    names = [f.name for f in dataclasses.fields(cls)]
    if not all(hasattr(obj, name) for name in names):
        return None
    return cls(**{name: getattr(obj, name) for name in names})  # type: ignore[return-value]


def applicable_layers(spec: object) -> frozenset[str]:
    """The layers (``"inner_solve"``, ``"dynamics"``) at which ``spec`` may be used.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    assert pk.applicable_layers(pk.TruncatedAdjoint(k=1)) == {pk.INNER_SOLVE}
    assert pk.applicable_layers(pk.BacksolveAdjoint()) == {pk.DYNAMICS}
    ```
    """
    coerced = as_adjoint_spec(spec)
    if coerced is None:
        raise TypeError(f"not an adjoint spec: {spec!r}")
    return type(coerced).layers


def check_layer(spec: object, layer: str) -> AdjointSpec:
    """Return ``spec`` as one of our specs, or raise ``ValueError`` if it is used at the wrong layer.

    The message names the layer(s) the spec belongs to.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    spec = pk.check_layer(pk.RecursiveCheckpointAdjoint(), pk.DYNAMICS)  # fine at either layer
    assert spec == pk.RecursiveCheckpointAdjoint()
    try:
        pk.check_layer(pk.TruncatedAdjoint(k=1), pk.DYNAMICS)  # an inner-solve spec on an ODE
    except ValueError as error:
        assert "dynamics" in str(error)
    else:
        raise AssertionError("a spec at the wrong layer must be refused")
    ```
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    coerced = as_adjoint_spec(spec)
    if coerced is None:
        raise TypeError(f"expected an adjoint spec ({', '.join(_BY_NAME)}) or a native adjoint, got {spec!r}")
    if layer not in type(coerced).layers:
        belongs = " and ".join(repr(name) for name in LAYERS if name in type(coerced).layers)
        hint = (
            " (plain unrolled backprop is RecursiveCheckpointAdjoint's exact gradient)"
            if isinstance(coerced, DirectAdjoint)
            else ""
        )
        raise ValueError(
            f"{type(coerced).__name__} does not apply at the {layer!r} layer; it belongs to the {belongs} layer{hint}"
        )
    return coerced


def check_solver_adjoint(solver: str, spec: object) -> None:
    """``ValueError`` when ``spec`` cannot differentiate the inner ``solver`` (DESIGN 3.2).

    Only ``ImplicitAdjoint`` is restricted: the implicit function theorem needs an output that
    is a fixed point, which only ``solver="fixed_point"`` computes. ``spec`` may be any object;
    one that is not spec-shaped (a backend-native or user adjoint) is not checked here.

    Examples
    --------
    ```python
    import pipekit_cycle as pk

    pk.check_solver_adjoint("learned", pk.TruncatedAdjoint(k=1))  # fine: returns None
    try:
        pk.check_solver_adjoint("learned", pk.ImplicitAdjoint())  # implicit needs a fixed point
    except ValueError as error:
        assert "fixed_point" in str(error)
    else:
        raise AssertionError("ImplicitAdjoint on the learned solve must be refused")
    ```
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    coerced = as_adjoint_spec(spec)
    if isinstance(coerced, ImplicitAdjoint) and solver != FIXED_POINT:
        raise ValueError(
            f"ImplicitAdjoint needs solver=\"fixed_point\" (the implicit function theorem holds at a fixed point); "
            f"the {solver!r} solver's output is not one: use RecursiveCheckpointAdjoint or TruncatedAdjoint with it"
        )


def checkpoint_schedule(n_steps: int, checkpoints: int | None) -> int:
    """The number of states ``RecursiveCheckpointAdjoint(checkpoints)`` stores for ``n_steps``.

    The one rule both backends and both layers use: ``None`` is ``ceil(log2 n_steps)`` (at
    least 1), the count for which binomial checkpointing (Griewank 1992; online: Stumm &
    Walther 2010, equinox's checkpointed loop) costs ``O(n log n)`` step evaluations for
    ``O(log n)`` stored states; an explicit count is clipped to ``[1, n_steps]``.

    Examples
    --------
    >>> [checkpoint_schedule(n, None) for n in (1, 2, 8, 9, 64)]
    [1, 1, 3, 4, 6]
    """
    check_field_int("checkpoint_schedule", "n_steps", n_steps)
    check_field_int("checkpoint_schedule", "checkpoints", checkpoints, allow_none=True)
    if checkpoints is None:
        checkpoints = (n_steps - 1).bit_length()
    return max(1, min(checkpoints, n_steps))


def binomial_split(n_steps: int, checkpoints: int) -> int:
    r"""Steps to advance before storing the next state, in offline binomial checkpointing.

    With ``s`` stored states and ``r`` the least integer with ``\binom{s + r}{s} >= n``, an
    ``n``-step reversal takes ``r`` sweeps at most (Griewank & Walther 2000, "revolve"). The
    first ``m`` steps are reversed later with ``s`` states and ``r - 1`` sweeps
    (``m <= \binom{s + r - 1}{s}``), the remaining ``n - m`` now with ``s - 1`` states and ``r``
    sweeps. Returns ``m`` in ``[1, n - 1]`` (``n >= 2``); ``checkpoints = 1`` gives ``n - 1``.

    >>> binomial_split(64, 6), binomial_split(10, 1), binomial_split(2, 3)
    (28, 9, 1)
    """
    check_field_int("binomial_split", "checkpoints", checkpoints)
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"binomial_split.n_steps must be an int >= 2, got {n_steps!r}")
    sweeps = 1
    while math.comb(checkpoints + sweeps, checkpoints) < n_steps:
        sweeps += 1
    return max(1, min(math.comb(checkpoints + sweeps - 1, checkpoints), n_steps - 1))
