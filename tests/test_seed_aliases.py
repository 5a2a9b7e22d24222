"""Seed clients' inbound names on a real server (SPEC 13): a recipient named by
seed 003's `receiver` or seed 004's `to` wherever one is named; seed 003's
identity in the URL checked against the token; `auth.require_user_type`."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import http_request, token, ws_connect
from tests.test_integration import UPGRADE, recv, recv_type


async def send(ws: Any, msg: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(msg))


async def pair(server: Any) -> tuple[str, str]:
    a = token(server.config, user_id=1, user_type=1, username="alice")
    b = token(server.config, user_id=2, user_type=2, username="bob")
    return a, b


async def test_typing_names_its_recipient_by_receiver_or_to(live_server: Any) -> None:
    server = await live_server()
    ta, tb = await pair(server)
    async with ws_connect(f"{server.url}/ws?token={ta}") as a, ws_connect(f"{server.url}/ws?token={tb}") as b:
        await recv_type(a, "connected")
        await recv_type(b, "connected")
        await send(a, {"event": "typing", "receiver": {"id": 2, "type": 2}, "data": {"typing": True}})
        got = await recv_type(b, "typing")
        assert got["data"] == {"from": {"user_id": 1, "user_type": 1, "username": "alice"}, "typing": True}
        await send(a, {"type": "typing", "data": {"to": 2, "to_user_type": 2, "typing": False}})
        assert (await recv_type(b, "typing"))["data"]["typing"] is False
        await send(a, {"event": "typing", "id": "t", "receiver": {"type": 2}})
        err = await recv_type(a, "error")
        assert err["data"]["field"] == "receiver.id" and err["id"] == "t"


async def test_read_receipt_and_history_in_seed003_names(live_server: Any) -> None:
    server = await live_server()
    ta, tb = await pair(server)
    async with ws_connect(f"{server.url}/ws?token={ta}") as a, ws_connect(f"{server.url}/ws?token={tb}") as b:
        await recv_type(a, "connected")
        await recv_type(b, "connected")
        await send(a, {"event": "message", "receiver": {"id": 2, "type": 2}, "data": {"text": "hello"}})
        mid = (await recv_type(b, "new_message"))["data"]["message_id"]
        await send(b, {"event": "read", "receiver": {"id": 1, "type": 1}, "data": {"message_id": mid}})
        status = await recv_type(a, "message_status")
        assert status["data"]["message_id"] == mid and status["data"]["status"] == "read"
        await send(b, {"event": "history", "id": 1, "receiver": {"id": 1, "type": 1}, "data": {"limit": 10}})
        page = await recv_type(b, "history")
        assert [m["text"] for m in page["data"]["messages"]] == ["hello"]
        await send(a, {"type": "history", "id": 2, "data": {"to": 2, "to_user_type": 2}})
        page = await recv_type(a, "history")
        assert [m["text"] for m in page["data"]["messages"]] == ["hello"]


async def test_seed003_url_identity_must_agree_with_the_token(live_server: Any) -> None:
    server = await live_server()
    tok = token(server.config, user_id=5, user_type=2, username="shop")
    async with ws_connect(f"{server.url}/ws?user_id=5&user_type=2&user_name=shop&token={tok}") as ws:
        assert (await recv(ws))["type"] == "connected"
    for query in ("user_id=6", "user_type=1", "user_name=other"):
        status, _, body = await http_request(
            server.addresses[0], "GET", f"/ws?{query}&token={tok}", headers=UPGRADE
        )
        assert status == 401, query
        assert "user_id / user_type / user_name" in json.loads(body)["message"]


async def test_require_user_type_refuses_a_token_without_one(live_server: Any) -> None:
    server = await live_server(auth__require_user_type=True)
    untyped = token(server.config, user_id=5)
    status, _, body = await http_request(server.addresses[0], "GET", f"/ws?token={untyped}", headers=UPGRADE)
    assert status == 401 and json.loads(body)["message"] == "令牌缺少 user_type"
    typed = token(server.config, user_id=5, user_type=3)
    async with ws_connect(f"{server.url}/ws?token={typed}") as ws:
        assert (await recv(ws))["data"]["user_type"] == 3
    # a first-message auth too
    async with ws_connect(f"{server.url}/ws") as ws:
        await send(ws, {"type": "auth", "data": {"token": untyped}})
        assert (await recv(ws))["error"] == "令牌缺少 user_type"
