"""Structuring: the function generated per shape, with the rules' text inlined,
and the one cattrs converter, whose hooks are compiled from the same text."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs

from wsserver.shapes.declare import NULL_IS_WRONG, Kind, Shape, fields, hints, kind
from wsserver.shapes.rules import (
    BOOL,
    FINITE,
    ID,
    INT,
    NUMBER,
    OBJECT,
    STR,
    Constraint,
    Rule,
    ShapeError,
)

__all__ = [
    "converter",
    "structure",
    "structure_bool",
    "structure_id",
    "structure_int",
    "structure_number",
    "structure_str",
    "structurer",
]

S = TypeVar("S", bound=Shape)


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
    src: _Source, indent: int, v: str, kind: Kind, path: str, key: str | None, key_for_type: bool
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


def _compile(tp: Any) -> Callable[[object], Any]:
    """The structure function of a shape, or of any other type a field may have."""
    src = _Source()
    if not (isinstance(tp, type) and issubclass(tp, Shape)):
        src.add(0, "def structure(o):")
        _checks(src, 1, "o", kind(tp), "()", None, False)
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
    if any(a.validator or a.converter for a in fields(cls)) or hasattr(cls, "__attrs_post_init__"):
        raise TypeError(f"{cls.__name__}: a shape declares its rules in its types, not in validators")
    field_types = hints(cls)
    args = []
    for a in fields(cls):
        meta = a.metadata
        local = f"f_{a.name}"
        args.append(local)
        if meta.get("rest") is not None:
            skip = src.name(frozenset(meta["rest"]), "skip")
            src.add(1, f"{local} = {{k: x for k, x in o.items() if k not in {skip}}}")
            continue
        field_kind = kind(field_types[a.name])
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
        if field_kind == Kind(None) and a.default is None and not null_wrong:
            src.add(1, f"{local} = v")  # any value, absent or null: None
            continue
        if a.default is not attrs.NOTHING or field_kind.optional:
            default: Any = a.default if a.default is not attrs.NOTHING else None
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                value = f"{src.name(default.factory, 'factory')}()"
            else:
                value = src.name(default, "d")
            src.add(1, f"if {absent}:")
            src.add(2, f"{local} = {value}")
            src.add(1, "else:")
            _checks(src, 2, "v", field_kind, path, key, key_for_type)
            src.add(2, f"{local} = v")
        else:
            src.add(1, f"if {absent}:")
            src.add(2, f"raise ShapeError('missing', path={path})")
            _checks(src, 1, "v", field_kind, path, key, key_for_type)
            src.add(1, f"{local} = v")
    # Built without __init__ (an attrs class's __init__ only assigns here, and
    # a call costs more per message than the stores).
    src.add(1, f"s = {src.name(object.__new__, 'new')}({src.name(cls, 'cls')})")
    for a, local in zip(fields(cls), args, strict=True):
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
    _checks(src, 1, "v", Kind(rule, constraints), "()", None, False)
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
