"""Tests for the sans-IO wire format: decoding client frames, encoding server
messages and errors, the `field()` helper and the zh-CN/en text catalogue.

Plain functions: no sockets, no event loop. What a client sees is the JSON text
the encoder returns, so every assertion parses that text back.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import wsserver
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.encoding import dumps
from wsserver.protocol.envelope import Wire, decode, encode, encode_error, id_key
from wsserver.protocol.i18n import CATALOGUE, LOCALES, text
from wsserver.protocol.messages import read
from wsserver.shapes import Shape

PACKAGE_DIR = Path(wsserver.__file__).resolve().parent


def decode_error(frame: str, max_depth: int = 32) -> ProtocolError:
    """The ProtocolError `decode(frame)` raises (the test fails if it raises none)."""
    with pytest.raises(ProtocolError) as info:
        decode(frame, max_depth)
    return info.value


# --- decode -------------------------------------------------------------------------


def test_client_message_type_and_data_are_read():
    msg = decode('{"type":"join_room","data":{"room":"chat:1"}}')
    assert msg.type == "join_room"
    assert msg.data == {"room": "chat:1"}
    assert msg.id is None


def test_message_without_data_has_none_data():
    assert decode('{"type":"ping"}').data is None


def test_seed_003_event_field_is_read_as_type():
    msg = decode('{"event":"typing","data":{"to":"u2"}}')
    assert msg.type == "typing"
    assert msg.data == {"to": "u2"}


def test_type_wins_over_event_when_both_are_sent():
    assert decode('{"type":"ping","event":"typing"}').type == "ping"


def test_seed_004_content_field_is_read_as_data():
    msg = decode('{"type":"room_message","content":{"room":"r","text":"hi"}}')
    assert msg.data == {"room": "r", "text": "hi"}


def test_data_wins_over_content_when_both_are_sent():
    msg = decode('{"type":"x","data":{"a":1},"content":{"b":2}}')
    assert msg.data == {"a": 1}


def test_explicit_null_data_is_not_replaced_by_content():
    msg = decode('{"type":"x","data":null,"content":"fallback"}')
    assert msg.data is None


@pytest.mark.parametrize("request_id", ["req-1", 42, 0, ""])
def test_string_and_integer_request_ids_are_kept_as_sent(request_id: Any):
    msg = decode(json.dumps({"type": "ping", "id": request_id}))
    assert msg.id == request_id
    assert type(msg.id) is type(request_id)


@pytest.mark.parametrize("request_id", [True, False, {"a": 1}, [1], 1.5])
def test_request_id_that_is_not_string_or_integer_is_invalid_message_naming_id(
    request_id: Any,
):
    err = decode_error(json.dumps({"type": "ping", "id": request_id}))
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert err.field == "id"


def test_top_level_activation_code_of_seed_000_is_available():
    msg = decode('{"type":"heartbeat","activation_code":"ABC123"}')
    assert msg.activation_code == "ABC123"
    assert decode('{"type":"heartbeat"}').activation_code is None


def test_raw_keeps_the_whole_object_as_sent():
    msg = decode('{"type":"heartbeat","timestamp":123,"extra":[1]}')
    assert msg.raw == {"type": "heartbeat", "timestamp": 123, "extra": [1]}


@pytest.mark.parametrize("frame", ["", "not json", "{", '{"type":"ping"', "{'type':'ping'}"])
def test_text_that_is_not_json_is_invalid_json(frame: str):
    err = decode_error(frame)
    assert err.code == ErrorCode.INVALID_JSON
    assert err.key == "invalid_json"


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"x","data":NaN}',
        '{"type":"x","data":Infinity}',
        '{"type":"x","data":[-Infinity]}',
        '{"type":"x","data":{"n":1e400}}',
    ],
)
def test_nan_and_infinity_are_invalid_json_so_they_never_reach_other_clients(frame: str):
    # JSON.parse in a browser rejects NaN/Infinity: forwarding them would break
    # every other member of a room, not just the sender.
    assert decode_error(frame).code == ErrorCode.INVALID_JSON


def test_ordinary_floats_and_big_integers_are_kept():
    msg = decode('{"type":"x","data":[1.5,-2e10,123456789012345678901234567890]}')
    assert msg.data == [1.5, -2e10, 123456789012345678901234567890]
    assert json.loads(encode("x", msg.data, 1))["data"] == msg.data


@pytest.mark.parametrize("depth", [5_000, 60_000])
def test_deeply_nested_json_is_invalid_message_not_a_crash(depth: int):
    frame = '{"type":"x","data":' + "[" * depth + "]" * depth + "}"
    err = decode_error(frame)
    assert (err.code, err.key) == (ErrorCode.INVALID_MESSAGE, "too_deep")


def _nested_message(depth: int, **top: Any) -> str:
    """A message `depth` levels deep: the envelope, then `data`'s lists."""
    return json.dumps({"type": "x", "data": json.loads("[" * (depth - 1) + "]" * (depth - 1)), **top})


@pytest.mark.parametrize("limit", [32, 5])
def test_a_message_as_deep_as_the_limit_decodes_and_one_level_more_is_refused(limit: int):
    assert decode(_nested_message(limit), limit).type == "x"
    err = decode_error(_nested_message(limit + 1, id="r1"), limit)
    assert (err.code, err.key, err.field, err.params) == (
        ErrorCode.INVALID_MESSAGE, "too_deep", None, {"limit": limit, "id": "r1"}
    )
    wire = json.loads(encode_error(err, None, 1, locale="en"))
    assert wire["error"] == f"JSON nested too deep (at most {limit} levels)"
    assert wire["id"] == "r1" and wire["data"] == {"code": "invalid_message", "ref": None}


def test_brackets_inside_strings_never_refuse_a_shallow_message():
    frame = json.dumps({"type": "x", "data": {"text": "[{" * 500}})
    assert decode(frame).data == {"text": "[{" * 500}


def test_the_envelope_counts_wherever_the_nesting_is():
    deep = json.loads("[" * 32 + "]" * 32)  # 33 with the envelope
    err = decode_error(json.dumps({"type": "x", "extra": deep, "data": None}))
    assert err.key == "too_deep"


@pytest.mark.parametrize("frame", ["[]", '"ping"', "42", "null", "true", '[{"type":"ping"}]'])
def test_json_that_is_not_an_object_is_invalid_message(frame: str):
    err = decode_error(frame)
    assert err.code == ErrorCode.INVALID_MESSAGE


@pytest.mark.parametrize("frame", ["{}", '{"data":{}}', '{"type":null}', '{"id":"r1"}'])
def test_message_without_type_is_invalid_message_naming_type(frame: str):
    err = decode_error(frame)
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert err.field == "type"


@pytest.mark.parametrize("frame", ['{"type":1}', '{"type":["ping"]}', '{"event":true}'])
def test_message_with_non_string_type_is_invalid_message_naming_type(frame: str):
    err = decode_error(frame)
    assert err.code == ErrorCode.INVALID_MESSAGE
    assert err.field == "type"


def test_error_for_missing_type_still_echoes_the_request_id():
    err = decode_error('{"id":"r9","data":{}}')
    frame = json.loads(encode_error(err, None, 5))
    assert frame["id"] == "r9"
    assert frame["data"]["field"] == "type"


# --- encode -------------------------------------------------------------------------


def test_server_message_has_type_data_and_integer_millisecond_timestamp():
    msg = json.loads(encode("pong", {"a": 1}, 1_700_000_000_123))
    assert msg == {"type": "pong", "data": {"a": 1}, "timestamp": 1_700_000_000_123}
    assert isinstance(msg["timestamp"], int)


def test_server_message_has_no_id_unless_replying_to_one():
    assert "id" not in json.loads(encode("pong", None, 1))
    assert json.loads(encode("pong", None, 1, request_id="r1"))["id"] == "r1"
    assert json.loads(encode("pong", None, 1, request_id=7))["id"] == 7
    assert json.loads(encode("pong", None, 1, request_id=0))["id"] == 0


def test_extra_top_level_fields_are_added_as_given():
    msg = json.loads(
        encode(
            "heartbeat_ack", {"status": "ok"}, 5, extra={"activation_code": "C1", "timestamp": 9}
        )
    )
    assert msg["activation_code"] == "C1"
    # seed 000 echoes the client's timestamp as sent
    assert msg["timestamp"] == 9


def test_encoded_text_keeps_chinese_readable_and_is_compact():
    frame = encode("x", {"message": "认证成功"}, 1)
    assert "认证成功" in frame
    assert ", " not in frame and ": " not in frame


# --- encode_error -------------------------------------------------------------------


def test_error_message_shape_in_chinese_by_default():
    err = ProtocolError(ErrorCode.UNKNOWN_TYPE, "unknown_type", type="dance")
    msg = json.loads(encode_error(err, "dance", 1000, request_id="r1"))
    assert msg == {
        "type": "error",
        "error": "未知的消息类型: dance",
        "data": {"code": "unknown_type", "ref": "dance"},
        "id": "r1",
        "timestamp": 1000,
    }


def test_error_message_in_english_names_the_field():
    err = ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="room")
    msg = json.loads(encode_error(err, "join_room", 1000, locale="en"))
    assert msg == {
        "type": "error",
        "error": "missing field: room",
        "data": {"code": "invalid_message", "ref": "join_room", "field": "room"},
        "timestamp": 1000,
    }


def test_error_message_in_chinese_names_the_field():
    err = ProtocolError(ErrorCode.INVALID_MESSAGE, "field_type", field="text")
    msg = json.loads(encode_error(err, "room_message", 1, locale="zh-CN"))
    assert msg["error"] == "字段类型错误: text"
    assert msg["data"]["field"] == "text"


def test_error_without_field_has_no_field_key():
    err = ProtocolError(ErrorCode.INVALID_JSON, "invalid_json")
    msg = json.loads(encode_error(err, None, 1))
    assert msg["data"] == {"code": "invalid_json", "ref": None}
    assert msg["error"] == "无效的JSON"
    assert "id" not in msg


def test_error_request_id_argument_wins_over_the_one_in_the_error():
    err = ProtocolError(ErrorCode.INVALID_MESSAGE, "missing_type", field="type", id="from-err")
    msg = json.loads(encode_error(err, None, 1, request_id="from-caller"))
    assert msg["id"] == "from-caller"


# --- read(): a message's data by its shape ---------------------------------------------


@attrs.define
class Probe(Shape):
    room: str
    n: int | str | None = None
    ok: bool | None = None
    device_info: dict[str, Any] | None = None
    count: int | None = None
    number: float | None = None


def test_read_returns_the_values_of_the_right_type():
    probe = read({"room": "r1", "n": 3, "ok": True, "number": 2}, Probe)
    assert (probe.room, probe.n, probe.ok, probe.number) == ("r1", 3, True, 2)


def test_missing_required_field_is_invalid_message_naming_it():
    with pytest.raises(ProtocolError) as info:
        read({"other": 1}, Probe)
    assert info.value.code == ErrorCode.INVALID_MESSAGE
    assert info.value.key == "field_missing"
    assert info.value.field == "room"


def test_null_required_field_counts_as_missing():
    with pytest.raises(ProtocolError) as info:
        read({"room": None}, Probe)
    assert info.value.key == "field_missing"


def test_missing_optional_field_is_none():
    assert read({"room": "r"}, Probe).device_info is None


def test_wrong_type_field_is_invalid_message_naming_it():
    with pytest.raises(ProtocolError) as info:
        read({"room": 5}, Probe)
    assert info.value.code == ErrorCode.INVALID_MESSAGE
    assert info.value.key == "field_type"
    assert info.value.field == "room"


def test_wrong_type_optional_field_is_still_refused():
    with pytest.raises(ProtocolError) as info:
        read({"room": "r", "device_info": "x"}, Probe)
    assert info.value.field == "device_info"


@pytest.mark.parametrize("name", ["n", "count", "number"])
def test_json_true_is_not_accepted_as_an_integer(name: str):
    with pytest.raises(ProtocolError) as info:
        read({"room": "r", name: True}, Probe)
    assert info.value.field == name


def test_data_that_is_not_an_object_is_invalid_message_naming_data():
    with pytest.raises(ProtocolError) as info:
        read(["room"], Probe)
    assert info.value.code == ErrorCode.INVALID_MESSAGE
    assert (info.value.key, info.value.field) == ("field_type", "data")


def test_ids_compare_by_their_string_form():
    assert id_key(1) == id_key("1") == "1"
    assert id_key(None) == ""
    assert id_key(1) != id_key(2)


# --- the catalogue ------------------------------------------------------------------


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_catalogue_offers_exactly_zh_cn_and_en():
    assert LOCALES == ("zh-CN", "en")


@pytest.mark.parametrize("key", sorted(CATALOGUE))
def test_every_text_exists_in_both_locales_with_the_same_placeholders(key: str):
    zh, en = CATALOGUE[key]
    assert zh.strip() and en.strip()
    assert _placeholders(zh) == _placeholders(en)
    params = {name: "VALUE" for name in _placeholders(zh)}
    for locale in LOCALES:
        rendered = text(key, locale, **params)
        assert "{" not in rendered and "}" not in rendered
        if params:
            assert "VALUE" in rendered


def test_texts_differ_by_locale():
    assert text("connected", "zh-CN") == "WebSocket连接成功"
    assert text("connected", "en") == "WebSocket connected"
    assert text("auth_success") == "认证成功，请同步Line账号列表"


def test_unknown_catalogue_key_shows_the_key_instead_of_crashing():
    assert text("no_such_key_xyz", "en") == "no_such_key_xyz"


def _catalogue_uses() -> list[tuple[str, int, str, set[str]]]:
    """Every literal catalogue key the package passes to ProtocolError, AuthError,
    HttpError, text(), Refusal() or a close(code, reason), with the params given
    alongside."""
    uses: list[tuple[str, int, str, set[str]]] = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else (func.attr if isinstance(func, ast.Attribute) else None)
            )
            position = {
                "ProtocolError": 1,
                "HttpError": 1,
                "AuthError": 0,
                "text": 0,
                "Refusal": 2,
                "close": 1,
                "close_after_queued": 1,
            }.get(name or "")
            if position is None or len(node.args) <= position:
                continue
            arg = node.args[position]
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                continue
            if any(kw.arg is None for kw in node.keywords):
                continue  # **params: cannot check statically
            given = {kw.arg for kw in node.keywords if kw.arg is not None}
            rel = str(path.relative_to(PACKAGE_DIR.parent))
            if name == "ProtocolError" and "field" in given:
                given.add("field")
            if name == "HttpError" and len(node.args) > 2:
                given.add("field")  # the field to blame, passed by position
            if name == "Refusal":
                given = set()  # a refusal's text is shown with no params
            uses.append((rel, node.lineno, arg.value, given))
    return uses


def test_every_catalogue_key_the_code_uses_exists_and_gets_its_params():
    uses = _catalogue_uses()
    assert any(key == "unknown_type" for _, _, key, _ in uses)  # the scan finds real uses
    problems = []
    for rel, line, key, passed in uses:
        if key not in CATALOGUE:
            problems.append(f"{rel}:{line}: unknown catalogue key {key!r}")
            continue
        missing = _placeholders(CATALOGUE[key][0]) - passed
        if missing:
            problems.append(f"{rel}:{line}: {key!r} needs {sorted(missing)}")
    assert problems == []


def test_auth_failure_keys_need_no_params():
    # AuthError keys are re-sent as ProtocolError(UNAUTHORIZED, err.key) with no params.
    for key in CATALOGUE:
        if key.startswith(("token_", "activation_code_", "jwt_")):
            assert _placeholders(CATALOGUE[key][0]) == set(), key


# --- sans-IO ------------------------------------------------------------------------


def _pure_modules() -> list[str]:
    names = ["wsserver.tokens", "wsserver.errors", "wsserver.protocol", "wsserver.core"]
    for package in ("protocol", "core"):
        for info in pkgutil.iter_modules([str(PACKAGE_DIR / package)]):
            names.append(f"wsserver.{package}.{info.name}")
    return names


def test_protocol_core_and_auth_do_not_import_trio():
    modules = _pure_modules()
    assert "wsserver.core.hub" in modules and "wsserver.protocol.envelope" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('trio', 'trio_websocket'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout) == []


def test_protocol_core_and_auth_sources_name_no_trio_import():
    files = [
        PACKAGE_DIR / "tokens.py",
        *sorted((PACKAGE_DIR / "protocol").glob("*.py")),
        *sorted((PACKAGE_DIR / "core").glob("*.py")),
    ]
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in ("trio", "trio_websocket"):
                    offenders.append(f"{path.name}:{node.lineno}: {name}")
    assert offenders == []


def test_server_frames_match_wsproto_for_every_length_form():
    from wsproto.frame_protocol import FrameProtocol

    from wsserver.protocol.envelope import binary_frame, text_frame

    for n in (0, 125, 126, 65535, 65536, 70000):
        text = "é" * (n // 2) + "x" * (n % 2)
        reference = FrameProtocol(client=False, extensions=[])
        assert text_frame(text.encode()) == reference.send_data(text, fin=True)
        payload = bytes(range(256)) * (n // 256) + bytes(n % 256)
        assert binary_frame(payload) == FrameProtocol(client=False, extensions=[]).send_data(payload, fin=True)


# -- outbound JSON (orjson, with the stdlib deciding what orjson refuses) ------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(_json_values)
def test_outbound_json_means_what_the_stdlib_would_write(value: Any) -> None:
    assert json.loads(dumps(value)) == json.loads(json.dumps(value))


def test_outbound_json_edge_cases() -> None:
    assert json.loads(dumps({1: "int key"})) == {"1": "int key"}
    assert dumps({"a": {2: float("nan")}, "b": [{3: 4}]}) == b'{"a":{"2":null},"b":[{"3":4}]}'  # keys deep down too
    assert json.loads(dumps({"big": 2**70})) == {"big": 2**70}  # beyond orjson: the stdlib
    assert dumps({"x": float("nan"), "y": float("inf")}) == b'{"x":null,"y":null}'
    # the same rule when orjson refuses the value for another reason (the stdlib writes it)
    assert dumps({"big": 2**70, "x": [float("-inf")]}) == b'{"big":1180591620717411303424,"x":[null]}'
    lone = dumps({"s": "a\ud800b"})  # a lone surrogate cannot be UTF-8: escaped
    assert lone == b'{"s":"a\\ud800b"}'
    with pytest.raises(TypeError):
        dumps({"set": {1, 2}})


def test_wire_frame_is_built_from_the_same_bytes() -> None:
    wire = Wire.from_json(dumps({"type": "x", "data": "汉字"}))
    assert wire == '{"type":"x","data":"汉字"}'
    assert wire.frame == bytes((0x81, len(wire.encode()))) + wire.encode()
