"""Shapes: the product's rules for inbound values, said once.

A *shape* is an attrs class (a subclass of `Shape`) that declares one JSON
object the server is sent: a client message's `data`, an HTTP body. Its
fields' types are the rules, written with the scalar rules below and, in
`Annotated`, constraints (`NonEmpty`, `Length`, `Pattern`, `OneOf`,
`Range`, `Trimmed`); `wire(...)` adds what a field needs beyond its type
(other names on the wire, the catalogue key its faults are reported with,
the other keys of the object passed through). `structure(value, Shape)`
checks a value against it and returns the instance, or raises `ShapeError`
naming the dotted path of the first fault (`receiver.id`,
`[2].line_account_id`); each boundary turns that into its own answer (an
`error` message, an HTTP 400, a `ConfigError`).

The scalar rules, the product's own (SPEC 2 and 3):

    str      a string
    int      an integer, never a bool (JSON `true` is not 1)
    number   an integer or a finite float, never a bool (`float` in a shape)
    bool     `true` or `false`
    id       a string or an integer, never a bool (`int | str` in a shape)
    object   a JSON object (`dict` in a shape); `array`: a list (`list[T]`)

Each rule is written once, as a Python expression (`Rule.test`), and used
twice from that text: inlined in the structure function generated for each
shape (per-message paths pay no call per field), and compiled into the
cattrs hooks of `converter` (which the configuration's converter copies).

Invariants:

- A field that is absent or `null` is missing: the default if it has one,
  else a `missing` fault (unless `wire(null=...)` says a `null` is a wrong
  type, as a few message fields have always read it).
- Fields are checked in declaration order; the first fault is raised.
- A shape instance is a value: built by `structure`, never changed. Shapes
  are `attrs.define` slotted classes, not frozen ones, because a frozen
  class costs clearly more to build per message.

This package is a leaf: it imports nothing else of wsserver, so the
configuration, the wire format and the HTTP API can all use it. Its modules:
`rules` (the scalar rules, constraints, `ShapeError`), `declare` (`Shape`,
`wire`, reading a field's type), `structure` (the generated functions and
the converter), `schema` (`json_schema`).
"""

from wsserver.shapes.declare import NULL_IS_ABSENT, NULL_IS_WRONG, Shape, wire
from wsserver.shapes.rules import (
    ARRAY,
    BOOL,
    ID,
    INT,
    NUMBER,
    OBJECT,
    STR,
    Constraint,
    Id,
    Length,
    NonEmpty,
    OneOf,
    Pattern,
    Range,
    Rule,
    ShapeError,
    Trimmed,
)
from wsserver.shapes.schema import json_schema
from wsserver.shapes.structure import (
    converter,
    structure,
    structure_bool,
    structure_id,
    structure_int,
    structure_number,
    structure_str,
    structurer,
)

__all__ = [
    "ARRAY",
    "BOOL",
    "ID",
    "INT",
    "NULL_IS_ABSENT",
    "NULL_IS_WRONG",
    "NUMBER",
    "OBJECT",
    "STR",
    "Constraint",
    "Id",
    "Length",
    "NonEmpty",
    "OneOf",
    "Pattern",
    "Range",
    "Rule",
    "Shape",
    "ShapeError",
    "Trimmed",
    "converter",
    "json_schema",
    "structure",
    "structure_bool",
    "structure_id",
    "structure_int",
    "structure_number",
    "structure_str",
    "structurer",
    "wire",
]
