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

This module is a leaf: it imports nothing of wsserver, so the configuration,
the wire format and the HTTP API can all use it.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, TypeVar

import attrs
import cattrs

__all__ = [
    "ARRAY",
    "BOOL",
    "ID",
    "INT",
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
    "structurer",
    "wire",
]

S = TypeVar("S", bound="Shape")


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
class _Kind:
    """What a field's type annotation says: its rule, constraints, items, shape."""

    rule: Rule | None  # None: any value
    constraints: tuple[Constraint, ...] = ()
    optional: bool = False
    items: _Kind | None = None  # of a list
    shape: type[Shape] | None = None  # a nested shape


_SCALARS: dict[object, Rule] = {str: STR, int: INT, float: NUMBER, bool: BOOL, dict: OBJECT}


def _kind(tp: object) -> _Kind:
    """Read a field's type: `Annotated[T, *constraints]`, `T | None`, `list[T]`,
    a shape, a scalar, `int | str` (an id), `dict[...]`, `Any`."""
    constraints: tuple[Constraint, ...] = ()
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        constraints = tuple(c for c in extras if isinstance(c, Constraint))
        inner = _kind(tp)
        return attrs.evolve(inner, constraints=inner.constraints + constraints)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args:
            rest = [a for a in args if a is not type(None)]
            inner = _kind(rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest))
            return attrs.evolve(inner, optional=True)
        if set(args) == {int, str}:
            return _Kind(ID)
        raise TypeError(f"no rule for {tp!r}")
    if origin is list:
        (item,) = typing.get_args(tp)
        return _Kind(ARRAY, items=_kind(item))
    if origin is dict:
        return _Kind(OBJECT)
    if tp is Any or tp is object:
        return _Kind(None)
    if isinstance(tp, type) and issubclass(tp, Shape):
        return _Kind(OBJECT, shape=tp)
    rule = _SCALARS.get(tp)
    if rule is None:
        raise TypeError(f"no rule for {tp!r}")
    return _Kind(rule, (FINITE,) if rule is NUMBER else ())


# -- generated structure functions ------------------------------------------------------------


class _Source:
    """The text of one generated function and the names it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, object] = {"ShapeError": ShapeError}
        self.locals = 0

    def name(self, value: object, hint: str) -> str:
        """A global of the generated function bound to `value`."""
        for existing, bound in self.namespace.items():
            if bound is value and existing.startswith("_"):
                return existing
        name = f"_{hint}{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def local(self, hint: str) -> str:
        """A fresh local variable name."""
        self.locals += 1
        return f"{hint}{self.locals}"

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def compile(self, fn: str) -> Callable[..., Any]:
        exec("\n".join(self.lines), self.namespace)  # our own text, from the rules above
        return self.namespace[fn]  # type: ignore[return-value]


def _checks(
    src: _Source, indent: int, v: str, kind: _Kind, path: str, key: str | None, key_for_type: bool
) -> None:
    """Emit the checks of `kind` on the local `v` (a nested shape or a list of
    them is rebuilt in `v`); faults are raised at `path`, an expression giving
    a tuple, with `key`."""
    key_name = src.name(key, "key")
    if kind.rule is not None:
        rule = src.name(kind.rule, "rule")
        type_key = key_name if key_for_type else "None"
        src.add(indent, f"if not ({kind.rule.test.format(v=v)}):")
        src.add(indent + 1, f"raise ShapeError('type', {v}, rule={rule}, key={type_key}, path={path})")
    for constraint in kind.constraints:
        c = src.name(constraint, "c")
        test = constraint.test.format(v=v, arg=src.name(constraint.arg, "a"))
        src.add(indent, f"if not ({test}):")
        src.add(indent + 1, f"raise ShapeError('invalid', {v}, constraint={c}, key={key_name}, path={path})")
    if kind.shape is not None:
        src.add(indent, "try:")
        src.add(indent + 1, f"{v} = {src.name(structurer(kind.shape), 's')}({v})")
        src.add(indent, "except ShapeError as e:")
        src.add(indent + 1, f"raise e.at(*{path}) from None")
    if kind.items is not None:
        items, i, x = kind.items, src.local("i"), src.local("x")
        rebuilt = items.shape is not None or items.items is not None
        if rebuilt:
            out = src.local("items")
            src.add(indent, f"{out} = []")
        src.add(indent, f"for {i}, {x} in enumerate({v}):")
        if key is not None:  # faults inside are reported as the field's own
            _checks(src, indent + 1, x, attrs.evolve(items, optional=False), path, key, True)
        else:
            _checks(src, indent + 1, x, items, f"{path} + ({i},)", None, False)
        if rebuilt:
            src.add(indent + 1, f"{out}.append({x})")
            src.add(indent, f"{v} = {out}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _fields(cls: type[Shape]) -> tuple[attrs.Attribute[Any], ...]:
    return attrs.fields(typing.cast(Any, cls))  # type: ignore[no-any-return]


def _compile(tp: Any) -> Callable[[object], Any]:
    """The structure function of a shape, or of any other type a field may have."""
    src = _Source()
    if not (isinstance(tp, type) and issubclass(tp, Shape)):
        src.add(0, "def structure(o):")
        _checks(src, 1, "o", _kind(tp), "()", None, False)
        src.add(1, "return o")
        return src.compile("structure")
    cls = tp
    object_rule = src.name(OBJECT, "rule")
    src.add(0, "def structure(o):")
    src.add(1, "if o.__class__ is not dict and not isinstance(o, dict):")
    src.add(2, f"r = {src.name(cls.bare, 'bare')}(o)")
    src.add(2, "if r is None:")
    src.add(3, f"raise ShapeError('type', o, rule={object_rule})")
    src.add(2, "o = r")
    if any(a.validator or a.converter for a in _fields(cls)) or hasattr(cls, "__attrs_post_init__"):
        raise TypeError(f"{cls.__name__}: a shape declares its rules in its types, not in validators")
    hints = _hints(cls)
    args = []
    for a in _fields(cls):
        meta = a.metadata
        local = f"f_{a.name}"
        args.append(local)
        if meta.get("rest") is not None:
            skip = src.name(frozenset(meta["rest"]), "skip")
            src.add(1, f"{local} = {{k: x for k, x in o.items() if k not in {skip}}}")
            continue
        kind = _kind(hints[a.name])
        names: tuple[str, ...] = meta.get("names") or (a.name,)
        key = meta.get("key")
        key_for_type = bool(meta.get("key_for_type"))
        null_wrong = meta.get("null") == NULL_IS_WRONG
        if len(names) == 1:
            path = src.name((names[0],), "p")
            src.add(1, f"v = o.get({names[0]!r}, o)" if null_wrong else f"v = o.get({names[0]!r})")
        else:
            path = "path"
            for i, n in enumerate(names):
                src.add(1, f"{'if' if i == 0 else 'elif'} {n!r} in o:")
                src.add(2, f"v = o[{n!r}]")
                src.add(2, f"path = {src.name((n,), 'p')}")
            src.add(1, "else:")
            src.add(2, "v = o" if null_wrong else "v = None")
            src.add(2, f"path = {src.name((names[0],), 'p')}")
        absent = "v is o" if null_wrong else "v is None"
        if kind == _Kind(None) and a.default is None and not null_wrong:
            src.add(1, f"{local} = v")  # any value, absent or null: None
            continue
        if a.default is not attrs.NOTHING or kind.optional:
            default: Any = a.default if a.default is not attrs.NOTHING else None
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                value = f"{src.name(default.factory, 'factory')}()"
            else:
                value = src.name(default, "d")
            src.add(1, f"if {absent}:")
            src.add(2, f"{local} = {value}")
            src.add(1, "else:")
            _checks(src, 2, "v", kind, path, key, key_for_type)
            src.add(2, f"{local} = v")
        else:
            src.add(1, f"if {absent}:")
            src.add(2, f"raise ShapeError('missing', path={path})")
            _checks(src, 1, "v", kind, path, key, key_for_type)
            src.add(1, f"{local} = v")
    # Built without __init__ (an attrs class's __init__ only assigns here, and
    # a call costs more per message than the stores).
    src.add(1, f"s = {src.name(object.__new__, 'new')}({src.name(cls, 'cls')})")
    for a, local in zip(_fields(cls), args, strict=True):
        src.add(1, f"s.{a.name} = {local}")
    src.add(1, "return s")
    return src.compile("structure")


_structurers: dict[Any, Callable[[object], Any]] = {}


@typing.overload
def structurer(tp: type[S]) -> Callable[[object], S]: ...
@typing.overload
def structurer(tp: Any) -> Callable[[object], Any]: ...
def structurer(tp: Any) -> Callable[[object], Any]:
    """The structure function of shape `tp` (generated once): the value as a
    `tp`, or `ShapeError`. Call it directly on a per-message path. Any other
    type a shape field may have works too (`list[Account]`)."""
    fn = _structurers.get(tp)
    if fn is None:
        fn = _structurers[tp] = _compile(tp)
    return fn


@typing.overload
def structure(value: object, tp: type[S]) -> S: ...
@typing.overload
def structure(value: object, tp: Any) -> Any: ...
def structure(value: object, tp: Any) -> Any:
    """`value` as a `tp` (a shape), or `ShapeError` naming the first fault."""
    return structurer(tp)(value)


# -- the converter ----------------------------------------------------------------------------


def _hook(rule: Rule, constraints: tuple[Constraint, ...] = ()) -> Callable[[object, object], Any]:
    """A cattrs structure hook for `rule`, compiled from the same text as the
    generated shape functions use."""
    src = _Source()
    src.add(0, "def hook(v, _):")
    _checks(src, 1, "v", _Kind(rule, constraints), "()", None, False)
    src.add(1, "return v")
    return src.compile("hook")


structure_str = _hook(STR)
structure_int = _hook(INT)
structure_number = _hook(NUMBER, (FINITE,))
structure_bool = _hook(BOOL)
structure_id = _hook(ID)


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    conv.register_structure_hook(str, structure_str)
    conv.register_structure_hook(int, structure_int)
    conv.register_structure_hook(float, structure_number)
    conv.register_structure_hook(bool, structure_bool)
    conv.register_structure_hook_func(lambda t: t == (int | str), structure_id)

    def is_shape(t: Any) -> bool:
        return isinstance(t, type) and issubclass(t, Shape)

    def shape_hook(t: type[Shape]) -> Callable[[object, object], Any]:
        fn = structurer(t)
        return lambda value, _: fn(value)

    conv.register_structure_hook_factory(is_shape, shape_hook)
    return conv


converter: cattrs.Converter = _make_converter()
"""The one converter of inbound values: the scalar rules as hooks, and each
shape structured by its generated function. `config` copies it."""


# -- JSON Schema -------------------------------------------------------------------------------

_ID_DOC = "an id: a string or an integer, compared as a string"


def _schema_of(kind: _Kind) -> dict[str, Any]:
    if kind.shape is not None:
        return json_schema(kind.shape)
    out: dict[str, Any] = {}
    if kind.rule is not None:
        names = kind.rule.json
        out["type"] = names[0] if len(names) == 1 else list(names)
        if kind.rule is ID:
            out["description"] = _ID_DOC
    if kind.items is not None:
        out["items"] = _schema_of(kind.items)
    for constraint in kind.constraints:
        out.update(constraint.schema(kind.rule))
    return out


def json_schema(cls: type[Shape]) -> dict[str, Any]:
    """The JSON Schema (OpenAPI 3.1) of shape `cls`, from its declaration:
    types, constraints, defaults, required fields; a field's `doc` and the
    class's first docstring line are the descriptions."""
    props: dict[str, Any] = {}
    required: list[str] = []
    hints = _hints(cls)
    for a in _fields(cls):
        if a.metadata.get("rest") is not None:
            continue
        schema = _schema_of(_kind(hints[a.name]))
        doc = a.metadata.get("doc")
        if doc:
            schema["description"] = doc
        if a.default is not attrs.NOTHING and a.default is not None and not isinstance(a.default, attrs.Factory):  # type: ignore[arg-type]
            schema["default"] = a.default
        names = a.metadata.get("names") or (a.name,)
        props[names[0]] = schema
        if a.default is attrs.NOTHING:
            required.append(names[0])
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out
