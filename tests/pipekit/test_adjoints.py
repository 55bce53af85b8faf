import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipekit_cycle import (
    DYNAMICS,
    INNER_SOLVE,
    BacksolveAdjoint,
    DirectAdjoint,
    ImplicitAdjoint,
    RecursiveCheckpointAdjoint,
    TruncatedAdjoint,
    adjoint_from_dict,
    applicable_layers,
    as_adjoint_spec,
    check_layer,
    parse_adjoint,
)

tolerances = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)
specs = st.one_of(
    st.builds(DirectAdjoint),
    st.builds(RecursiveCheckpointAdjoint, checkpoints=st.one_of(st.none(), st.integers(1, 10_000))),
    st.builds(TruncatedAdjoint, k=st.integers(1, 10_000)),
    st.builds(
        ImplicitAdjoint,
        linear_solver=st.sampled_from(["auto", "gmres", "neumann", "dense"]),
        rtol=tolerances,
        atol=tolerances,
        max_steps=st.one_of(st.none(), st.integers(1, 10_000)),
    ),
    st.builds(BacksolveAdjoint, rtol=st.one_of(st.none(), tolerances), atol=st.one_of(st.none(), tolerances)),
)


@given(specs)
def test_str_and_parse_are_inverses(spec):
    text = str(spec)
    assert parse_adjoint(text) == spec
    assert str(parse_adjoint(text)) == text


@given(specs)
def test_dict_round_trip_through_json(spec):
    data = json.loads(json.dumps(spec.to_dict()))
    assert adjoint_from_dict(data) == spec
    assert data["type"] == type(spec).__name__


@given(specs)
def test_specs_are_frozen_hashable_and_equal_by_value(spec):
    copy = adjoint_from_dict(spec.to_dict())
    assert copy == spec and hash(copy) == hash(spec) and copy is not spec
    assert len({spec, copy}) == 1
    fields = dataclasses.fields(spec)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(spec, fields[0].name, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("direct", DirectAdjoint()),
        ("checkpoint", RecursiveCheckpointAdjoint()),
        ("checkpoint:8", RecursiveCheckpointAdjoint(8)),
        ("truncated:3", TruncatedAdjoint(3)),
        ("truncated", TruncatedAdjoint(1)),
        ("implicit", ImplicitAdjoint()),
        ("implicit:gmres", ImplicitAdjoint(linear_solver="gmres")),
        ("implicit:dense:rtol=1e-08:max_steps=50", ImplicitAdjoint("dense", rtol=1e-8, max_steps=50)),
        ("backsolve", BacksolveAdjoint()),
        ("  Truncated : k=2 ", TruncatedAdjoint(2)),
    ],
)
def test_design_text_forms(text, expected):
    assert parse_adjoint(text) == expected


def test_canonical_text_forms():
    assert str(RecursiveCheckpointAdjoint(8)) == "checkpoint:8"
    assert str(TruncatedAdjoint(3)) == "truncated:3"
    assert str(ImplicitAdjoint(linear_solver="gmres")) == "implicit:gmres"
    assert str(BacksolveAdjoint()) == "backsolve"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: TruncatedAdjoint(k=0), ["TruncatedAdjoint.k", ">= 1"]),
        (lambda: TruncatedAdjoint(k=2.5), ["TruncatedAdjoint.k", ">= 1"]),
        (lambda: RecursiveCheckpointAdjoint(checkpoints=0), ["checkpoints", ">= 1", "None"]),
        (lambda: ImplicitAdjoint(linear_solver="cg"), ["linear_solver", "auto, gmres, neumann, dense", "'cg'"]),
        (lambda: ImplicitAdjoint(rtol=-1.0), ["ImplicitAdjoint.rtol", ">= 0"]),
        (lambda: ImplicitAdjoint(atol=float("nan")), ["ImplicitAdjoint.atol", ">= 0"]),
        (lambda: ImplicitAdjoint(max_steps=0), ["max_steps", ">= 1"]),
        (lambda: BacksolveAdjoint(atol=-1e-6), ["BacksolveAdjoint.atol", ">= 0"]),
    ],
)
def test_invalid_values_name_the_field_and_the_allowed_values(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("adjoint", ["unknown adjoint", "direct, checkpoint, truncated, implicit, backsolve"]),
        ("truncated:x", ["k must be an int"]),
        ("direct:3", ["cannot read option"]),
        ("checkpoint:foo=1", ["no option 'foo'", "checkpoints"]),
    ],
)
def test_parse_errors(text, words):
    with pytest.raises(ValueError) as info:
        parse_adjoint(text)
    for word in words:
        assert word in str(info.value)


def test_applicable_layers_match_the_design_table():
    assert applicable_layers(DirectAdjoint()) == {DYNAMICS}
    assert applicable_layers(RecursiveCheckpointAdjoint()) == {INNER_SOLVE, DYNAMICS}
    assert applicable_layers(TruncatedAdjoint(2)) == {INNER_SOLVE}
    assert applicable_layers(ImplicitAdjoint()) == {INNER_SOLVE}
    assert applicable_layers(BacksolveAdjoint()) == {DYNAMICS}


def test_check_layer_names_the_layer_a_spec_belongs_to():
    with pytest.raises(ValueError, match="belongs to the 'dynamics' layer"):
        check_layer(DirectAdjoint(), INNER_SOLVE)
    with pytest.raises(ValueError, match="belongs to the 'dynamics' layer"):
        check_layer(BacksolveAdjoint(), INNER_SOLVE)
    with pytest.raises(ValueError, match="belongs to the 'inner_solve' layer"):
        check_layer(TruncatedAdjoint(2), DYNAMICS)
    assert check_layer("checkpoint:4", DYNAMICS) == RecursiveCheckpointAdjoint(4)
    with pytest.raises(TypeError, match="expected an adjoint spec"):
        check_layer(object(), INNER_SOLVE)


def test_identically_shaped_foreign_spec_is_recognised():
    @dataclasses.dataclass(frozen=True)
    class TruncatedAdjoint:  # another library's spec with the same name and fields
        k: int

    assert as_adjoint_spec(TruncatedAdjoint(k=4)) == parse_adjoint("truncated:4")
    assert as_adjoint_spec(object()) is None
