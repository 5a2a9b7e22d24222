"""Chat semantics seeds 002 and 003 rely on, on a real server (SPEC 13):
`from` with the token's avatar and chat_role, a small `extra`, read-up-to,
`expired` for undelivered messages a mailbox dropped."""

from __future__ import annotations

import json
from typing import Any

import trio

from tests.conftest import token, ws_connect
from tests.test_api import API_KEY, call
from tests.test_integration import recv, recv_type
from tests.test_seed_replies import until_closed
from wsserver.core.sessions import ChatSessions


async def send(ws: Any, msg: dict[str, Any]) -> None:
    await ws.send_message(json.dumps(msg))


async def test_from_has_avatar_and_chat_role_and_extra_passes_through(live_server: Any) -> None:
    server = await live_server()
    agent = token(server.config, user_id=456, username="kf", avatar="data:image/png;base64,AAA=", chat_role="agent")
    user = token(server.config, user_id=123)
    async with ws_connect(f"{server.url}/ws?token={agent}") as a, ws_connect(f"{server.url}/ws?token={user}") as u:
        await recv_type(a, "connected")
        await recv_type(u, "connected")
        extra = {"order_id": "A-1", "tags": ["vip"]}
        await send(a, {"type": "send_message", "data": {"to_user_id": 123, "message": "Hello", "extra": extra}})
        got = (await recv_type(u, "new_message"))["data"]
        assert got["from"] == {
            "user_id": 456, "user_type": None, "username": "kf",
            "avatar": "data:image/png;base64,AAA=", "chat_role": "agent",
        }  # fmt: skip
        assert got["extra"] == extra
        await send(u, {"type": "typing", "data": {"to_user_id": 456}})
        assert (await recv_type(a, "typing"))["data"]["from"] == {"user_id": 123, "user_type": None, "username": None}
        await send(a, {"type": "send_message", "id": 1, "data": {"to_user_id": 123, "message": "x", "extra": {"b": "x" * 1024}}})
        err = await recv_type(a, "error")
        assert err["data"] == {"code": "too_large", "ref": "send_message", "field": "extra"}
        await send(u, {"type": "history", "id": 2, "data": {"with_user_id": 456}})
        assert (await recv_type(u, "history"))["data"]["messages"][0]["extra"] == extra


async def test_message_read_up_to_marks_the_whole_conversation(live_server: Any) -> None:
    server = await live_server()
    ta, tb = token(server.config, user_id=1), token(server.config, user_id=2)
    async with ws_connect(f"{server.url}/ws?token={ta}") as a, ws_connect(f"{server.url}/ws?token={tb}") as b:
        await recv_type(a, "connected")
        await recv_type(b, "connected")
        ids = []
        for text in ("one", "two", "three"):
            await send(a, {"type": "send_message", "data": {"to_user_id": 2, "message": text}})
            ids.append((await recv_type(b, "new_message"))["data"]["message_id"])
        await send(b, {"type": "message_delivered", "data": {"message_id": ids[0]}})
        assert (await recv_type(a, "message_status"))["data"]["status"] == "delivered"
        await send(b, {"type": "message_read", "id": "r", "data": {"up_to_message_id": ids[1]}})
        status = (await recv_type(a, "message_status"))["data"]
        assert status["status"] == "read" and status["up_to_message_id"] == ids[1]
        assert status["message_ids"] == ids[:2]
        assert (await recv_type(b, "ack"))["id"] == "r"
        await send(b, {"type": "history", "data": {"with_user_id": 1}})
        page = (await recv_type(b, "history"))["data"]["messages"]
        assert [m["status"] for m in page] == ["read", "read", "sent"]
        await send(b, {"type": "message_read", "id": "x", "data": {"up_to_message_id": 10**6}})
        err = await recv_type(b, "error")
        assert err["data"]["code"] == "not_found" and err["data"]["field"] == "up_to_message_id"


async def test_sender_hears_expired_when_the_mailbox_limit_drops_its_message(live_server: Any) -> None:
    server = await live_server(messages__mailbox_limit=2)
    ta = token(server.config, user_id=1)
    async with ws_connect(f"{server.url}/ws?token={ta}") as a:
        await recv_type(a, "connected")
        seen = []
        for text in ("one", "two", "three"):
            await send(a, {"type": "send_message", "data": {"to_user_id": 2, "message": text}})
            seen.append(await recv(a))
        seen.append(await recv(a))
        sent = [m["data"]["message_id"] for m in seen if m["type"] == "message_sent"]
        # the drop is announced with the message that caused it, ahead of its message_sent
        assert [m["type"] for m in seen] == ["message_sent", "message_sent", "message_status", "message_sent"]
        assert seen[2]["data"] == {**seen[2]["data"], "message_id": sent[0], "status": "expired"}


async def test_sender_hears_expired_when_the_mailbox_ttl_passed(live_server: Any) -> None:
    server = await live_server(messages__mailbox_ttl=0.001)
    ta, tb = token(server.config, user_id=1), token(server.config, user_id=2)
    async with ws_connect(f"{server.url}/ws?token={ta}") as a:
        await recv_type(a, "connected")
        await send(a, {"type": "send_message", "data": {"to_user_id": 2, "message": "late"}})
        mid = (await recv_type(a, "message_sent"))["data"]["message_id"]
        await trio.sleep(0.01)  # the TTL is wall-clock time: let it pass
        async with ws_connect(f"{server.url}/ws?token={tb}") as b:
            assert (await recv(b))["type"] == "connected"
            status = await recv_type(a, "message_status")
            assert status["data"] == {**status["data"], "message_id": mid, "status": "expired"}


async def test_kick_device_closes_the_users_own_other_device(live_server: Any) -> None:
    server = await live_server()
    tok = token(server.config, user_id=7)
    async with (
        ws_connect(f"{server.url}/ws?device_id=phone&token={tok}") as phone,
        ws_connect(f"{server.url}/ws?device_id=pc&token={tok}") as pc,
        ws_connect(f"{server.url}/ws?device_id=phone&token={token(server.config, user_id=8)}") as other,
    ):
        for ws in (phone, pc, other):
            await recv_type(ws, "connected")
        await send(pc, {"type": "kick_device", "id": "k", "data": {"device_id": "phone"}})
        reply = await recv_type(pc, "device_kicked")
        assert reply["id"] == "k" and reply["data"] == {"device_id": "phone", "kicked": 1}
        seen, code = await until_closed(phone)
        assert code == 4003 and [m["type"] for m in seen] == ["kicked", "disconnected"]
        await send(pc, {"type": "kick_device", "id": "self", "data": {"device_id": "pc"}})
        assert (await recv_type(pc, "device_kicked"))["data"]["kicked"] == 0  # never itself
        await send(other, {"type": "ping", "id": "alive"})
        assert (await recv_type(other, "pong"))["id"] == "alive"  # another user's phone stays


async def test_watch_presence_reports_now_and_every_change_in_the_group(live_server: Any) -> None:
    server = await live_server()
    watcher = token(server.config, user_id=1, user_type=2, group_id="g")
    async with ws_connect(f"{server.url}/ws?token={watcher}") as w:
        await recv_type(w, "connected")
        await send(w, {"type": "watch_presence", "id": 1, "data": {"user_ids": [5], "user_type": 1, "users": [{"user_id": 6, "user_type": 1}]}})
        now = await recv_type(w, "watching")
        assert now["id"] == 1 and now["data"]["users"] == [
            {"user_id": 5, "user_type": 1, "online": False, "devices": 0},
            {"user_id": 6, "user_type": 1, "online": False, "devices": 0},
        ]
        five = token(server.config, user_id=5, user_type=1, group_id="g")
        elsewhere = token(server.config, user_id=5, user_type=1, group_id="other")
        async with ws_connect(f"{server.url}/ws?token={elsewhere}") as e:  # another group: not watched
            await recv_type(e, "connected")
            async with ws_connect(f"{server.url}/ws?token={five}") as a:
                await recv_type(a, "connected")
                change = await recv_type(w, "presence")
                assert change["data"] == {"user_id": 5, "user_type": 1, "online": True, "devices": 1}
        change = await recv_type(w, "presence")
        assert change["data"] == {"user_id": 5, "user_type": 1, "online": False, "devices": 0}
        await send(w, {"type": "watch_presence", "id": 2, "data": {"user_ids": list(range(1001))}})
        err = await recv_type(w, "error")
        assert err["id"] == 2 and err["data"]["field"] == "user_ids"


async def test_a_session_message_reaches_every_other_participant(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    status, reply, _ = await call(server, "POST", "/api/sessions", {
        "session_id": "s-1", "group_id": "g",
        "participants": [{"user_id": 123, "user_type": "user"}, {"user_id": 456, "user_type": "agent"}, {"user_id": 789, "user_type": "agent"}],
    })  # fmt: skip
    assert status == 200 and reply["data"]["session_id"] == "s-1"
    user = token(server.config, user_id=123, user_type="user", group_id="g")
    agent = token(server.config, user_id=456, user_type="agent", group_id="g")
    async with ws_connect(f"{server.url}/ws?token={user}") as u, ws_connect(f"{server.url}/ws?token={agent}") as a:
        await recv_type(u, "connected")
        await recv_type(a, "connected")
        await send(u, {"type": "send_message", "id": "m1", "data": {"session_id": "s-1", "message": "Hello"}})
        got = (await recv_type(a, "new_message"))["data"]
        assert got["session_id"] == "s-1" and got["text"] == "Hello" and got["from"]["user_id"] == 123
        sent = [await recv_type(u, "message_sent") for _ in range(2)]  # one per recipient (789 is offline)
        assert [m.get("id") for m in sent] == ["m1", None]
        await send(a, {"type": "history", "id": "h", "data": {"session_id": "s-1"}})
        assert [m["text"] for m in (await recv_type(a, "history"))["data"]["messages"]] == ["Hello"]
        status, _, _ = await call(server, "DELETE", "/api/sessions/s-1?group_id=g")
        assert status == 200
        await send(u, {"type": "send_message", "id": "m2", "data": {"session_id": "s-1", "message": "again"}})
        err = await recv_type(u, "error")
        assert err["id"] == "m2" and err["data"]["code"] == "not_found" and err["data"]["field"] == "session_id"
    status, _, _ = await call(server, "DELETE", "/api/sessions/s-1?group_id=g")
    assert status == 404


def test_sessions_are_rebuilt_from_their_records_and_from_a_snapshot() -> None:
    records: list[dict[str, Any]] = []

    class Journal:
        def record(self, rec: dict[str, Any]) -> None:
            records.append(rec)
            live.apply(rec)

    live = ChatSessions(Journal())  # type: ignore[arg-type]
    live.open("s|1", 7, [{"user_id": 1, "user_type": None}], 1000)
    live.open("s2", 7, [{"user_id": 2, "user_type": None}], 1001)
    assert live.close("s2", 7) and not live.close("s2", 7)
    replayed = ChatSessions(None)  # type: ignore[arg-type]
    for rec in json.loads(json.dumps(records)):
        replayed.apply(rec)
    loaded = ChatSessions(None)  # type: ignore[arg-type]
    loaded.load_state(json.loads(json.dumps(live.to_state())))
    for state in (replayed, loaded):
        assert state.sessions == live.sessions
        assert state.get("7", "s|1") is not None and state.get("7", "s2") is None


async def test_a_room_keeps_its_last_messages_for_room_history(live_server: Any) -> None:
    server = await live_server(rooms__history_limit=3)
    ta, tb = token(server.config, user_id=1), token(server.config, user_id=2)
    async with ws_connect(f"{server.url}/ws?token={ta}") as a:
        await recv_type(a, "connected")
        await send(a, {"type": "join_room", "data": "lobby"})
        await recv_type(a, "room_joined")
        for n in range(5):
            await send(a, {"type": "room_message", "id": n, "data": {"room": "lobby", "text": f"m{n}"}})
            await recv_type(a, "room_message_ack")
        async with ws_connect(f"{server.url}/ws?token={tb}") as b:  # not a member yet: may join, so may read
            await recv_type(b, "connected")
            await send(b, {"type": "room_history", "id": "h", "data": {"room": "lobby", "limit": 2}})
            page = (await recv_type(b, "room_history"))["data"]
            assert [m["text"] for m in page["messages"]] == ["m3", "m4"] and page["has_more"] is True
            assert page["messages"][0]["from"]["user_id"] == 1
            before = page["messages"][0]["room_seq"]
            await send(b, {"type": "room_history", "data": {"room": "lobby", "before": before}})
            page = (await recv_type(b, "room_history"))["data"]
            assert [m["text"] for m in page["messages"]] == ["m2"] and page["has_more"] is False
        await send(a, {"type": "leave_room", "data": "lobby"})  # the room empties: its history goes
        await recv_type(a, "room_left")
        await send(a, {"type": "room_history", "data": {"room": "lobby"}})
        assert (await recv_type(a, "room_history"))["data"]["messages"] == []


async def test_room_history_is_off_by_default(live_server: Any) -> None:
    server = await live_server()
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as a:
        await recv_type(a, "connected")
        await send(a, {"type": "join_room", "data": "lobby"})
        await recv_type(a, "room_joined")
        await send(a, {"type": "room_message", "data": {"room": "lobby", "text": "x"}})
        await recv_type(a, "room_message_ack")
        await send(a, {"type": "room_history", "data": {"room": "lobby"}})
        assert (await recv_type(a, "room_history"))["data"] == {"room": "lobby", "messages": [], "has_more": False}


async def test_a_session_message_with_a_client_msg_id_reaches_every_other_participant_once(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    status, _, _ = await call(server, "POST", "/api/sessions", {
        "session_id": "s-2", "group_id": "g",
        "participants": [{"user_id": 1, "user_type": "user"}, {"user_id": 2, "user_type": "agent"}, {"user_id": 3, "user_type": "agent"}],
    })  # fmt: skip
    assert status == 200
    tokens = [token(server.config, user_id=n, user_type=t, group_id="g") for n, t in ((1, "user"), (2, "agent"), (3, "agent"))]
    async with (
        ws_connect(f"{server.url}/ws?token={tokens[0]}") as u,
        ws_connect(f"{server.url}/ws?token={tokens[1]}") as a,
        ws_connect(f"{server.url}/ws?token={tokens[2]}") as b,
    ):
        for ws in (u, a, b):
            await recv_type(ws, "connected")
        request = {"type": "send_message", "id": "m1", "data": {"session_id": "s-2", "message": "Hi", "client_msg_id": "c-1"}}
        await send(u, request)
        got = [(await recv_type(ws, "new_message"))["data"] for ws in (a, b)]
        assert [m["text"] for m in got] == ["Hi", "Hi"] and got[0]["message_id"] != got[1]["message_id"]
        sent = [await recv_type(u, "message_sent") for _ in range(2)]
        assert sent[0]["data"]["client_msg_id"] == "c-1" and "duplicate" not in sent[0]["data"]
        await send(u, request)  # a resend: the first message again, nothing new
        again = await recv_type(u, "message_sent")
        assert again["id"] == "m1" and again["data"]["duplicate"] is True
        assert again["data"]["message_id"] == sent[0]["data"]["message_id"]
        for ws in (a, b):
            await send(ws, {"type": "ping", "id": "p"})
            before_pong = []
            while (frame := await recv(ws))["type"] != "pong":
                before_pong.append(frame["type"])
            assert "new_message" not in before_pong
