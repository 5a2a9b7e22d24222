"""A shape's JSON Schema (OpenAPI 3.1), from its declaration."""

from __future__ import annotations

from typing import Any

import attrs

from wsserver.shapes.declare import Kind, Shape, fields, hints, kind
from wsserver.shapes.rules import ID

__all__ = ["json_schema"]


# -- JSON Schema -------------------------------------------------------------------------------

_ID_DOC = "an id: a string or an integer, compared as a string"


def _schema_of(kind: Kind) -> dict[str, Any]:
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
    field_types = hints(cls)
    for a in fields(cls):
        if a.metadata.get("rest") is not None:
            continue
        schema = _schema_of(kind(field_types[a.name]))
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
