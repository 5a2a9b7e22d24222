"""Declaring a shape: the `Shape` base, `wire(...)` for what a field's type
cannot say, and reading a field's type into its rule (`kind`)."""

from __future__ import annotations

import functools
import operator
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import attrs

from wsserver.shapes.rules import (
    ARRAY,
    BOOL,
    FINITE,
    ID,
    INT,
    NUMBER,
    OBJECT,
    STR,
    Constraint,
    Rule,
)

__all__ = ["NULL_IS_ABSENT", "NULL_IS_WRONG", "Kind", "Shape", "fields", "hints", "kind", "wire"]


# -- declaring shapes ---------------------------------------------------------------------


class Shape:
    """Base of every shape (an `attrs.define` class)."""

    __slots__ = ()

    @staticmethod
    def bare(value: object) -> Mapping[str, object] | None:
        """How a value that is not a JSON object reads (a message's `data` given as
        a bare room name, a bare message id): the object to structure instead,
        or None for a `type` fault (the default)."""
        return None


NULL_IS_ABSENT = "absent"
NULL_IS_WRONG = "wrong"


def wire(
    *names: str,
    default: object = attrs.NOTHING,
    key: str | None = None,
    key_for_type: bool = False,
    null: str = NULL_IS_ABSENT,
    rest: Sequence[str] | None = None,
    doc: str | None = None,
) -> Any:
    """A shape field with more than its type says.

    `names`: its names on the wire, tried in order (the first present one is
    read; a missing field is reported by the first). `key`: the catalogue key
    of its `invalid` faults and of faults inside its items (reported at the
    field itself), and with `key_for_type` of its `type` faults too. `null`:
    `"wrong"` makes a `null` a wrong type instead of an absent field. `rest`:
    the field is the object's other keys, all but those listed (a pass-through
    payload). `doc`: its description in the JSON Schema.
    """
    metadata = {
        "names": names,
        "key": key,
        "key_for_type": key_for_type,
        "null": null,
        "rest": None if rest is None else tuple(rest),
        "doc": doc,
    }
    if rest is not None and default is attrs.NOTHING:
        default = attrs.Factory(dict)
    return attrs.field(default=default, metadata=metadata)


@attrs.frozen
class Kind:
    """What a field's type annotation says: its rule, constraints, items, shape."""

    rule: Rule | None  # None: any value
    constraints: tuple[Constraint, ...] = ()
    optional: bool = False
    items: Kind | None = None  # of a list
    shape: type[Shape] | None = None  # a nested shape


_SCALARS: dict[object, Rule] = {str: STR, int: INT, float: NUMBER, bool: BOOL, dict: OBJECT}


def kind(tp: object) -> Kind:
    """Read a field's type: `Annotated[T, *constraints]`, `T | None`, `list[T]`,
    a shape, a scalar, `int | str` (an id), `dict[...]`, `Any`."""
    constraints: tuple[Constraint, ...] = ()
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        constraints = tuple(c for c in extras if isinstance(c, Constraint))
        inner = kind(tp)
        return attrs.evolve(inner, constraints=inner.constraints + constraints)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            rest = [a for a in args if a is not type(None)]
            inner = kind(rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest))
            return attrs.evolve(inner, optional=True)
        if set(args) == {int, str}:
            return Kind(ID)
        raise TypeError(f"no rule for {tp!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        return Kind(ARRAY, items=kind(item))
    if origin is dict:
        return Kind(OBJECT)
    if tp is Any or tp is object:
        return Kind(None)
    if isinstance(tp, type) and issubclass(tp, Shape):
        return Kind(OBJECT, shape=tp)
    rule = _SCALARS.get(tp)
    if rule is None:
        raise TypeError(f"no rule for {tp!r}")
    return Kind(rule, (FINITE,) if rule is NUMBER else ())


def hints(cls: type) -> dict[str, Any]:
    """A shape's field types, `Annotated` kept."""
    return typing.get_type_hints(cls, include_extras=True)


def fields(cls: type[Shape]) -> tuple[attrs.Attribute[Any], ...]:
    """A shape's attrs fields."""
    return attrs.fields(typing.cast(Any, cls))  # type: ignore[no-any-return]
