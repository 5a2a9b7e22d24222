"""The seeds' own clients on a real server (SPEC 13, "Wire compatibility"):
`?compat=003|004` outbound forms, encoded once per form in use."""

from __future__ import annotations

import json
import re
import time
from contextlib import AsyncExitStack
from typing import Any

import wsserver.protocol.compat as compat
from tests.conftest import http_request, token, ws_connect
from tests.test_api import call
from tests.test_integration import UPGRADE, recv
from wsserver.protocol.coalesce import KeyedFrame, keyed
from wsserver.protocol.envelope import encode

API_KEY = "test-api-key-0123456789"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def recv_key(ws: Any, key: str, value: str) -> dict[str, Any]:
    """The next message whose `key` (`type` or `event`) is `value`."""
    while True:
        msg = await recv(ws)
        if msg.get(key) == value:
            return msg


async def test_seed003_form_names_event_sender_receiver_and_iso_time(live_server: Any) -> None:
    server = await live_server()
    alice = token(server.config, user_id=1, user_type=1, username="alice")
    bob = token(server.config, user_id=2, user_type=2, username="bob")
    async with ws_connect(f"{server.url}/ws?token={alice}") as a, ws_connect(
        f"{server.url}/ws?compat=003&token={bob}"
    ) as b:
        hello = await recv(b)
        assert hello["event"] == "connect" and "type" not in hello
        assert ISO.match(hello["timestamp"])
        await recv_key(a, "type", "connected")
        await a.send_message(json.dumps({
            "type": "send_message", "id": "r1",
            "data": {"to_user_id": 2, "to_user_type": 2, "message": "hi"},
        }))  # fmt: skip
        msg = await recv_key(b, "event", "message")
        assert msg["sender"] == {"id": 1, "type": 1, "name": "alice"}
        assert msg["receiver"] == {"id": 2, "type": 2, "name": None}
        assert msg["data"]["text"] == "hi"
        assert ISO.match(msg["timestamp"])
        # the native sender is unchanged
        sent = await recv_key(a, "type", "message_sent")
        assert isinstance(sent["timestamp"], int) and sent["id"] == "r1"
        # an error is in the form too
        await b.send_message(json.dumps({"event": "no_such_thing", "id": 7}))
        err = await recv_key(b, "event", "error")
        assert err["id"] == 7 and err["data"]["ref"] == "no_such_thing" and ISO.match(err["timestamp"])


async def test_seed004_form_has_content_and_seconds(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    tok = token(server.config, user_id="u1")
    async with ws_connect(f"{server.url}/ws?compat=004&token={tok}") as ws:
        hello = await recv(ws)
        assert hello["type"] == "connected" and "data" not in hello
        assert hello["content"]["user_id"] == "u1"
        assert abs(hello["timestamp"] - time.time()) < 5
        status, _, _ = await call(server, "POST", "/api/publish", {
            "type": "notification", "user_id": "u1", "data": {"title": "t", "body": "b"},
        })  # fmt: skip
        assert status == 200
        note = await recv_key(ws, "type", "notification")
        assert note["content"] == {"title": "t", "body": "b"}
        assert isinstance(note["timestamp"], int) and note["timestamp"] < 10**11


async def test_unknown_compat_is_refused_400_naming_compat(live_server: Any) -> None:
    server = await live_server()
    tok = token(server.config)
    status, _, body = await http_request(
        server.addresses[0], "GET", f"/ws?compat=005&token={tok}", headers=UPGRADE
    )
    assert status == 400
    assert "compat" in json.loads(body)["message"]


async def test_room_fan_out_with_mixed_forms_encodes_once_per_form(live_server: Any, monkeypatch: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    forms = ["", "", "", "003", "003", "003", "004", "004"]
    calls: list[object] = []
    real = compat.dumps

    def counting(value: Any) -> bytes:
        calls.append(value)
        return real(value)

    async with AsyncExitStack() as stack:
        clients = []
        for n, form in enumerate(forms):
            tok = token(server.config, user_id=n)
            query = f"compat={form}&" if form else ""
            ws = await stack.enter_async_context(ws_connect(f"{server.url}/ws?{query}token={tok}"))
            await recv(ws)  # connected
            await ws.send_message(json.dumps({"type": "join_room", "data": "lobby"}))
            key = "event" if form == "003" else "type"
            await recv_key(ws, key, "room_joined")
            clients.append(ws)
        monkeypatch.setattr(compat, "dumps", counting)
        status, reply, _ = await call(server, "POST", "/api/publish", {
            "type": "news", "room": "lobby", "data": {"n": 1},
        })  # fmt: skip
        assert status == 200 and reply["data"]["delivered"] == len(forms)
        for ws, form in zip(clients, forms, strict=True):
            key = "event" if form == "003" else "type"
            got = await recv_key(ws, key, "news")
            body = got["content"] if form == "004" else got["data"]
            assert body == {"n": 1}
        assert len(calls) == 2  # one per form in use, not one per receiver


def test_a_form_is_made_once_per_encoded_message() -> None:
    wire = encode("news", {"n": 1}, 1_700_000_000_123)
    first = compat.form_of(wire, "003")
    assert compat.form_of(wire, "003") is first
    assert json.loads(first) == {"event": "news", "timestamp": "2023-11-14T22:13:20.123Z", "data": {"n": 1}}
    assert json.loads(compat.form_of(wire, "004")) == {"type": "news", "content": {"n": 1}, "timestamp": 1_700_000_000}


def test_a_form_keeps_the_coalescing_key_of_a_task_progress_frame() -> None:
    wire = keyed(encode("batchgo_progress", {"task_id": "t", "progress": 5}, 1), ("u", "t"), replaces=True)
    for form in compat.FORMS:
        frame = compat.form_of(wire, form).frame  # type: ignore[union-attr]
        assert isinstance(frame, KeyedFrame) and frame.key == ("u", "t") and frame.replaces is True
    assert compat.form_of(b"\x00binary", "003") == b"\x00binary"
