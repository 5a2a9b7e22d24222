"""What seed clients wait for, on a real server (SPEC 13): seed 002's `register`
after a handshake auth, one reply per request `id`, `disconnected` before every
close the server starts, seed 001's `persist`."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.conftest import token, ws_connect
from tests.test_api import API_KEY, call, ok
from tests.test_integration import recv, recv_type


async def send(ws: Any, msg: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(msg))


async def until_closed(ws: Any) -> tuple[list[dict[str, Any]], int]:
    """Every message until the server's close, and its code."""
    seen = []
    with trio.fail_after(10):
        try:
            while True:
                seen.append(json.loads(await ws.get_message()))
        except ConnectionClosed as exc:
            return seen, int(exc.reason.code)


async def test_seed002_register_after_handshake_auth_updates_the_device(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    tok = token(server.config, user_id=123)
    async with ws_connect(f"{server.url}/ws?token={tok}") as ws:
        await recv_type(ws, "connected")
        info = {"device_name": "iPhone 13", "device_type": "mobile", "platform": "iOS"}
        await send(ws, {"type": "register", "id": "r1", "data": {
            "user_id": 123, "token": tok, "connection_id": "uuid", "device_id": "device-uuid", "device_info": info,
        }})  # fmt: skip
        reply = await recv(ws)
        assert reply["type"] == "registered" and reply["id"] == "r1"
        assert reply["data"]["success"] is True and reply["data"]["device_id"] == "device-uuid"
        assert reply["data"]["message"] == "连接注册成功"
        conns = (await ok(server, "GET", "/api/users/123/connections"))["connections"]
        assert [(c["device_id"], c["device_info"]) for c in conns] == [("device-uuid", info)]
        # another user's token is still refused
        other = token(server.config, user_id=124)
        await send(ws, {"type": "register", "id": "r2", "data": {"token": other}})
        err = await recv(ws)
        assert err["type"] == "error" and err["id"] == "r2" and err["data"]["code"] == "conflict"


async def test_every_request_with_an_id_gets_exactly_one_reply(live_server: Any) -> None:
    server = await live_server()
    ta = token(server.config, user_id=1)
    tb = token(server.config, user_id=2)
    async with ws_connect(f"{server.url}/ws?token={ta}") as a, ws_connect(f"{server.url}/ws?token={tb}") as b:
        await recv_type(a, "connected")
        await recv_type(b, "connected")
        await send(a, {"type": "send_message", "id": "m", "data": {"to_user_id": 2, "message": "x"}})
        mid = (await recv_type(b, "new_message"))["data"]["message_id"]
        requests = [
            {"type": "message_delivered", "id": "d", "data": {"message_id": mid}},
            {"type": "message_read", "id": "r", "data": {"message_id": mid}},
            {"type": "message_read", "id": "r-again", "data": {"message_id": mid}},  # idempotent
            {"event": "read", "id": "r003", "data": mid},
            {"type": "typing", "id": "t", "data": {"to_user_id": 1}},
            {"type": "pong", "id": "p"},
            {"type": "client_ready", "id": "c"},
            {"type": "message_read", "id": "bad", "data": {"message_id": 999}},  # an error is the reply
        ]
        for req in requests:
            await send(b, req)
        replies: Counter[str] = Counter()
        acks = {}
        ended = False
        while not ended:
            msg = await recv(b)
            if "id" in msg:
                replies[msg["id"]] += 1
                acks[msg["id"]] = msg
            if msg.get("id") == "end":
                ended = True
            elif set(replies) == {r["id"] for r in requests}:
                # a last receipt: its ack is ordered behind every earlier announcement
                await send(b, {"type": "message_read", "id": "end", "data": {"message_id": mid}})
        assert replies == Counter({r["id"]: 1 for r in requests} | {"end": 1})
        assert acks["r"]["type"] == "ack" and acks["r"]["data"] == {"ok": True}
        assert acks["bad"]["type"] == "error"


async def test_disconnected_comes_before_every_close_the_server_starts(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    tok = token(server.config, user_id=5)
    async with ws_connect(f"{server.url}/ws?token={tok}") as ws:
        await recv_type(ws, "connected")
        status, _, _ = await call(server, "POST", "/api/users/5/kick", {"reason": "bye"})
        assert status == 200
        seen, code = await until_closed(ws)
        assert code == 4003
        assert [m["type"] for m in seen] == ["kicked", "disconnected"]
        assert seen[-1]["data"] == {"code": 4003, "reason": "bye"}
    async with ws_connect(f"{server.url}/ws") as ws:  # a failed first-message auth
        await send(ws, {"type": "auth", "data": {"token": "nope"}})
        seen, code = await until_closed(ws)
        assert code == 4001 and [m["type"] for m in seen] == ["error", "disconnected"]
        assert seen[-1]["data"]["code"] == 4001
    async with ws_connect(f"{server.url}/ws?compat=003&token={tok}") as ws:  # in the seed's form
        await recv(ws)
        await call(server, "POST", "/api/users/5/kick", {})
        seen, code = await until_closed(ws)
        assert seen[-1]["event"] == "disconnect" and seen[-1]["data"]["code"] == 4003


async def test_seed001_push_with_persist_waits_for_an_offline_user(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    status, reply, _ = await call(server, "POST", "/api/websocket/notification", {
        "user_id": "u9", "title": "t", "message": "您有新的消息", "persist": True,
    })  # fmt: skip
    assert status == 200 and reply["message"] == "发送成功"
    assert reply["data"] == {"user_id": "u9", "type": "system_notification", "delivered": 0, "queued": 1}
    async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id='u9')}") as ws:
        pushed = await recv_type(ws, "system_notification")
        assert pushed["data"]["message"] == "您有新的消息" and pushed["offline"] is True
