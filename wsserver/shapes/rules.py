"""The scalar rules and constraints of shapes, each one Python expression, and
the fault (`ShapeError`) that breaking one raises."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import attrs

__all__ = [
    "ARRAY",
    "BOOL",
    "FINITE",
    "ID",
    "INT",
    "NUMBER",
    "OBJECT",
    "STR",
    "Constraint",
    "Finite",
    "Id",
    "Length",
    "NonEmpty",
    "OneOf",
    "Pattern",
    "Range",
    "Rule",
    "ShapeError",
    "Trimmed",
]


# -- faults -----------------------------------------------------------------------------


class ShapeError(ValueError):
    """A value that breaks a rule of its shape.

    `kind` is `missing`, `type` (not a value of `rule`) or `invalid` (a value
    of the right type that breaks `constraint`). `path` leads from the
    structured value to the fault: field names and list indexes. `key` is
    the catalogue key the field declared for it (`wire(key=...)`), if any.
    """

    def __init__(
        self,
        kind: str,
        value: object = None,
        *,
        rule: Rule | None = None,
        constraint: Constraint | None = None,
        key: str | None = None,
        path: tuple[str | int, ...] = (),
    ) -> None:
        super().__init__(kind, path)
        self.kind = kind
        self.value = value
        self.rule = rule
        self.constraint = constraint
        self.key = key
        self.path = path

    def at(self, *prefix: str | int) -> ShapeError:
        """This fault, seen from `prefix` further out."""
        self.path = prefix + self.path
        return self

    def dotted(self, root: str = "") -> str:
        """The path as a dotted name (`a.b[2].c`), starting with `root`."""
        out = root
        for part in self.path:
            if isinstance(part, int):
                out += f"[{part}]"
            else:
                out = f"{out}.{part}" if out else part
        return out

    def __str__(self) -> str:
        what = self.rule.name if self.rule is not None else self.constraint
        return f"{self.kind} {self.dotted() or '(value)'}" + (f" ({what})" if what else "")


# -- the scalar rules -------------------------------------------------------------------


@attrs.frozen
class Rule:
    """What a JSON value of one kind must be. `test` is a Python expression over
    `{v}`; `json` names the JSON types it admits (JSON Schema, HTTP errors);
    `holds(value)` is the test as a function (for the few places that ask
    outside a shape, e.g. whether a bare value is an id)."""

    name: str
    test: str
    json: tuple[str, ...]
    holds: Callable[[object], bool] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        namespace: dict[str, Any] = {}
        exec(f"def holds(v):\n    return bool({self.test.format(v='v')})", namespace)  # our own text
        object.__setattr__(self, "holds", namespace["holds"])

    def __str__(self) -> str:
        return self.name


STR = Rule("str", "{v}.__class__ is str or isinstance({v}, str)", ("string",))
INT = Rule(
    "int", "{v}.__class__ is int or (isinstance({v}, int) and not isinstance({v}, bool))", ("integer",)
)
NUMBER = Rule(
    "number",
    "{v}.__class__ is float or {v}.__class__ is int"
    " or (isinstance({v}, (int, float)) and not isinstance({v}, bool))",
    ("number",),
)
BOOL = Rule("bool", "{v} is True or {v} is False", ("boolean",))
ID = Rule(
    "id",
    "{v}.__class__ is str or {v}.__class__ is int"
    " or (isinstance({v}, (str, int)) and not isinstance({v}, bool))",
    ("string", "integer"),
)
OBJECT = Rule("object", "{v}.__class__ is dict or isinstance({v}, dict)", ("object",))
ARRAY = Rule("array", "{v}.__class__ is list or isinstance({v}, list)", ("array",))


# -- constraints --------------------------------------------------------------------------


@attrs.frozen
class Constraint:
    """A rule on a value of the right type. `test` is a Python expression over
    `{v}` and `{arg}` (this constraint's argument)."""

    test: ClassVar[str] = "True"

    @property
    def arg(self) -> object:
        """What `{arg}` stands for in `test`."""
        return None

    def schema(self, rule: Rule | None) -> dict[str, Any]:
        """What this constraint adds to the field's JSON Schema."""
        return {}


@attrs.frozen
class NonEmpty(Constraint):
    """Not the empty string (an id or a text)."""

    test: ClassVar[str] = "{v} != ''"

    def schema(self, rule: Rule | None) -> dict[str, Any]:
        return {"minLength": 1} if rule is STR else {}


@attrs.frozen
class Length(Constraint):
    """A length between `low` and `high` (None: no bound): of a text, a list, or
    the text form of an id (`str(value)`)."""

    low: int = 0
    high: int | None = None
    test: ClassVar[str] = (
        "{arg}[0] <= len({v} if {v}.__class__ is not int else str({v}))"
        " and ({arg}[1] is None or len({v} if {v}.__class__ is not int else str({v})) <= {arg}[1])"
    )

    @property
    def arg(self) -> object:
        return (self.low, self.high)

    def schema(self, rule: Rule | None) -> dict[str, Any]:
        names = ("minItems", "maxItems") if rule is ARRAY else ("minLength", "maxLength")
        out: dict[str, Any] = {names[0]: self.low} if self.low else {}
        if self.high is not None:
            out[names[1]] = self.high
        return out


@attrs.frozen
class Pattern(Constraint):
    """The whole text matches `regex`."""

    regex: re.Pattern[str]
    test: ClassVar[str] = "{arg}.fullmatch({v}) is not None"

    @property
    def arg(self) -> object:
        return self.regex

    def schema(self, rule: Rule | None) -> dict[str, Any]:
        return {"pattern": self.regex.pattern}


@attrs.frozen
class OneOf(Constraint):
    """One of `values`."""

    values: tuple[object, ...]
    test: ClassVar[str] = "{v} in {arg}"

    @property
    def arg(self) -> object:
        return self.values

    def schema(self, rule: Rule | None) -> dict[str, Any]:
        return {"enum": list(self.values)}


@attrs.frozen
class Range(Constraint):
    """A number between `minimum` and `maximum` (None: no bound)."""

    minimum: int | None = None
    maximum: int | None = None
    test: ClassVar[str] = (
        "({arg}[0] is None or {v} >= {arg}[0]) and ({arg}[1] is None or {v} <= {arg}[1])"
    )

    @property
    def arg(self) -> object:
        return (self.minimum, self.maximum)

    def schema(self, rule: Rule | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        return out


@attrs.frozen
class Trimmed(Constraint):
    """A text without leading or trailing white space."""

    test: ClassVar[str] = "{v} == {v}.strip()"


@attrs.frozen
class Finite(Constraint):
    """Not NaN nor an infinity (part of the `number` rule)."""

    test: ClassVar[str] = "{v}.__class__ is not float or {arg}({v})"

    @property
    def arg(self) -> object:
        return math.isfinite


FINITE = Finite()

Id = Annotated[int | str, NonEmpty()]
"""A user, group or message id as clients send it: a non-empty string or an integer."""
