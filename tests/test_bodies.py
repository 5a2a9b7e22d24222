"""The HTTP API's bodies (wsserver/api/bodies.py): a fault is a 400 naming the
field with the texts the API has always given, and the OpenAPI document
describes each body by the class that checks it."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from wsserver.api.bodies import CodeRequest, OpenUrlRequest, PublishRequest, structure
from wsserver.api.openapi import document
from wsserver.api.routes import json_reply
from wsserver.api.table import ROUTES
from wsserver.net.http import HttpError
from wsserver.shapes import Id, Shape, json_schema


@attrs.define
class Probe(Shape):
    n: int
    ratio: float
    id: Id
    s: str | None = None
    flag: bool = False


def refused(body: dict[str, Any], shape: type[Shape] = Probe) -> HttpError:
    with pytest.raises(HttpError) as info:
        structure(body, shape)
    assert info.value.status == 400
    return info.value


def test_json_types_are_checked_and_a_bool_is_no_integer() -> None:
    probe = structure({"n": 1, "ratio": 1, "id": 5}, Probe)
    assert (probe.n, probe.ratio, probe.id, probe.s, probe.flag) == (1, 1, 5, None, False)
    err = refused({"n": True, "ratio": 1, "id": 5})
    assert (err.field, err.message) == ("n", "invalid field: n (expected integer)")
    err = refused({"n": 1, "ratio": 1, "id": 1.5})
    assert err.message == "invalid field: id (expected string or integer)"
    assert err.render("zh-CN") == "字段类型错误: id（应为 string 或 integer）"


def test_a_missing_or_null_field_is_named() -> None:
    assert refused({"n": 1, "ratio": 1}).message == "missing field: id"
    assert refused({"n": None, "ratio": 1, "id": 1}).message == "missing field: n"


@pytest.mark.parametrize(
    ("shape", "body", "field", "message"),
    [
        (CodeRequest, {"code": " x", "group_id": 1}, "code", "invalid field: code (1-128 characters, no surrounding spaces)"),
        (CodeRequest, {"code": "x", "group_id": ""}, "group_id", "invalid field: group_id (must not be empty)"),
        (OpenUrlRequest, {"task_id": 1, "urls": [], "user_id": 1}, "urls", "invalid field: urls (expected a non-empty array of strings)"),
        (OpenUrlRequest, {"task_id": 1, "urls": ["a", ""], "user_id": 1}, "urls", "invalid field: urls (expected a non-empty array of strings)"),
        (OpenUrlRequest, {"task_id": 1, "urls": "a", "user_id": 1}, "urls", "invalid field: urls (expected array)"),
        (OpenUrlRequest, {"task_id": 1, "urls": ["a"], "user_id": 1, "delay": -1}, "delay", "invalid field: delay (must be >= 0)"),
        (PublishRequest, {"type": "Bad"}, "type", "invalid field: type (must match ^[a-z][a-z0-9_.:-]{0,63}$)"),
        (PublishRequest, {"type": "t", "user_ids": [True]}, "user_ids", "invalid field: user_ids (expected a non-empty array of ids)"),
        (PublishRequest, {"type": "t", "room": "no room"}, "room", "invalid value for field: room"),
    ],
)
def test_each_rule_answers_with_its_own_text(shape: type[Shape], body: dict[str, Any], field: str, message: str) -> None:
    err = refused(body, shape)
    assert (err.field, err.message) == (field, message)


def test_the_openapi_document_takes_each_body_schema_from_its_class() -> None:
    schemas = document(ROUTES)["components"]["schemas"]
    shapes = {s for r in ROUTES for s in (r.body if isinstance(r.body, tuple) else (r.body,)) if s}
    assert len(shapes) >= 10
    for shape in shapes:
        described = dict(schemas[shape.__name__])
        assert described.pop("description")
        assert described == json_schema(shape), shape


def test_a_reply_carrying_nan_writes_null() -> None:
    """One rule for every outbound path: NaN and infinities are written as null."""
    assert json_reply({"x": float("nan"), "y": [float("inf")]}).body == (
        b'{"code":0,"message":"success","data":{"x":null,"y":[null]}}'
    )
