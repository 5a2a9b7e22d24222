"""The shapes (wsserver/shapes.py): the scalar rules said once, structuring by a
declaration, the dotted path of a fault, and the JSON Schema of a shape."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsserver.shapes import (
    ID,
    NULL_IS_WRONG,
    Id,
    Length,
    NonEmpty,
    OneOf,
    Pattern,
    Range,
    Shape,
    ShapeError,
    Trimmed,
    converter,
    json_schema,
    structure,
    structure_bool,
    structure_id,
    structure_int,
    structure_number,
    structure_str,
    wire,
)


@attrs.define
class Item(Shape):
    """One item."""

    line_account_id: Annotated[int | str, Length(1, 8)]
    name: str | None = None


@attrs.define
class Order(Shape):
    """An order, as a backend sends it."""

    text: str = wire("message", "text")
    to: Id = wire()
    count: int = 1
    ratio: float | None = None
    flag: bool = wire(default=True, null=NULL_IS_WRONG)
    level: Annotated[str, OneOf(("info", "error"))] = "info"
    code: Annotated[str, Trimmed(), Length(1, 4)] | None = wire(default=None, key="bad_code")
    tags: Annotated[list[Annotated[str, NonEmpty()]], Length(1)] | None = wire(
        default=None, key="bad_tags"
    )
    items: list[Item] | None = None
    room: Annotated[str, Pattern(re.compile(r"[a-z]+"))] | None = None
    delay: Annotated[int, Range(0, 9)] = 0
    extra: Any = None
    rest: dict[str, Any] = wire(rest=("message", "text", "to"))


def fault(value: object, shape: type[Shape] = Order) -> ShapeError:
    with pytest.raises(ShapeError) as info:
        structure(value, shape)
    return info.value


def test_a_valid_value_becomes_the_shape_with_its_defaults() -> None:
    order = structure({"text": "hi", "to": 7, "other": [1]}, Order)
    assert (order.text, order.to, order.count, order.flag, order.level) == ("hi", 7, 1, True, "info")
    assert order.rest == {"other": [1]}
    assert converter.structure({"text": "hi", "to": 7}, Order) == structure({"text": "hi", "to": 7}, Order)


@pytest.mark.parametrize(
    ("name", "value"),
    [("to", True), ("count", True), ("count", 1.0), ("ratio", False), ("flag", 1), ("text", 5), ("to", 1.5)],
)
def test_a_bool_is_never_a_number_or_an_id_and_nothing_is_coerced(name: str, value: object) -> None:
    err = fault({"text": "hi", "to": 1, name: value})
    assert (err.kind, err.dotted()) == ("type", name)


def test_an_integer_is_a_number_and_kept_as_it_came() -> None:
    assert structure({"text": "t", "to": 1, "ratio": 2}, Order).ratio == 2


def test_absent_and_null_are_missing_or_the_default() -> None:
    assert fault({"text": "hi"}).kind == "missing"
    assert fault({"text": "hi", "to": None}).dotted() == "to"
    assert structure({"text": "hi", "to": 1, "count": None}, Order).count == 1


def test_a_null_that_the_declaration_calls_wrong_is_a_type_fault() -> None:
    assert (fault({"text": "hi", "to": 1, "flag": None}).kind) == "type"


def test_other_names_are_tried_in_order_and_a_missing_field_is_named_by_the_first() -> None:
    assert structure({"message": "a", "text": "b", "to": 1}, Order).text == "a"
    assert structure({"text": "b", "to": 1}, Order).text == "b"
    assert fault({"text": 5, "to": 1}).dotted() == "text"
    assert fault({"message": None, "text": "b", "to": 1}).dotted() == "message"
    assert fault({"to": 1}).dotted() == "message"


def test_constraints_are_invalid_faults_with_the_declared_key() -> None:
    base = {"text": "t", "to": 1}
    assert fault({**base, "to": ""}).constraint == NonEmpty()
    assert fault({**base, "level": "debug"}).constraint == OneOf(("info", "error"))
    assert fault({**base, "room": "A"}).kind == "invalid"
    assert fault({**base, "delay": 10}).constraint == Range(0, 9)
    err = fault({**base, "code": " ab"})
    assert (err.kind, err.key) == ("invalid", "bad_code")
    assert fault({**base, "code": 5}).key is None  # a type fault keeps its own key


def test_faults_inside_a_list_with_a_key_are_the_lists_own() -> None:
    base = {"text": "t", "to": 1}
    for tags in ([], [""], [1], [None]):
        err = fault({**base, "tags": tags})
        assert (err.dotted(), err.key) == ("tags", "bad_tags"), tags
    assert fault({**base, "tags": "a"}).kind == "type"


def test_a_fault_deep_inside_is_named_by_its_dotted_path() -> None:
    base = {"text": "t", "to": 1}
    assert fault({**base, "items": [{"line_account_id": "a"}, 7]}).dotted() == "items[1]"
    err = fault({**base, "items": [{"line_account_id": "a"}, {"line_account_id": "x" * 9}]})
    assert err.dotted() == "items[1].line_account_id"
    assert err.dotted("data") == "data.items[1].line_account_id"
    assert fault([{"name": 1}], list[Item]).dotted("data") == "data[0].line_account_id"


def test_an_id_length_counts_its_text_form() -> None:
    assert structure({"line_account_id": 12345678}, Item).line_account_id == 12345678
    assert fault({"line_account_id": 123456789}, Item).kind == "invalid"


def test_structuring_leaves_the_value_as_it_was() -> None:
    value = {"text": "t", "to": 1, "items": [{"line_account_id": "a"}]}
    before = json.dumps(value)
    order = structure(value, Order)
    assert order.items == [Item("a")]
    assert json.dumps(value) == before


def test_a_value_that_is_no_object_is_a_fault_at_the_root_unless_the_shape_reads_it() -> None:
    assert (fault("x").kind, fault("x").path) == ("type", ())

    @attrs.define
    class Bare(Shape):
        message_id: int | str
        bare = staticmethod(lambda v: {"message_id": v} if ID.holds(v) else None)

    assert structure(7, Bare).message_id == 7
    assert fault(True, Bare).path == ()


def test_a_shape_with_validators_is_refused() -> None:
    @attrs.define
    class Validated(Shape):
        n: int = attrs.field(validator=attrs.validators.gt(0))

    with pytest.raises(TypeError):
        structure({"n": 1}, Validated)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner, max_size=2),
    max_leaves=4,
)


@attrs.define
class Scalars(Shape):
    s: str | None = None
    i: int | None = None
    n: float | None = None
    b: bool | None = None
    d: int | str | None = None


@given(_json)
def test_the_hooks_and_the_generated_checks_are_the_same_rules(value: object) -> None:
    """Each rule is one text, inlined in a shape's function and compiled into
    the converter's hook: both take and refuse the same values (but null, which
    a shape reads as an absent field)."""
    if value is None:
        return
    for name, hook in (
        ("s", structure_str),
        ("i", structure_int),
        ("n", structure_number),
        ("b", structure_bool),
        ("d", structure_id),
    ):
        try:
            hook(value, None)
            hook_ok = True
        except ShapeError:
            hook_ok = False
        try:
            structure({name: value}, Scalars)
            shape_ok = True
        except ShapeError:
            shape_ok = False
        assert hook_ok == shape_ok, (name, value)


def test_the_json_schema_comes_from_the_declaration() -> None:
    schema = json_schema(Order)
    assert schema["required"] == ["message", "to"]
    props = schema["properties"]
    assert props["to"]["type"] == ["string", "integer"]
    assert props["count"] == {"type": "integer", "default": 1}
    assert props["level"] == {"type": "string", "enum": ["info", "error"], "default": "info"}
    assert props["tags"] == {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
    assert props["delay"] == {"type": "integer", "minimum": 0, "maximum": 9, "default": 0}
    assert props["room"]["pattern"] == "[a-z]+"
    assert props["items"]["items"]["required"] == ["line_account_id"]
    assert "rest" not in props and "text" not in props
