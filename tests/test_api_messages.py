"""`POST /api/messages` over real HTTP and real sockets (SPEC 13, seed 003's
"the backend saves, then pushes"): a backend's message has a client's
semantics (SPEC 4.3): id and seq, delivery to the recipient and the sender's
tabs, receipts back, the mailbox, history, and de-duplication."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import http_request, token, ws_connect
from tests.test_crm_backend import recv
from tests.test_webhooks_business import until

KEY = "backend-key-0123456789abcdef"


async def post(server: Any, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, data = await http_request(
        server.addresses[0], "POST", "/api/messages", headers=[("X-API-Key", KEY)], body=json.dumps(body).encode()
    )
    return status, json.loads(data)


async def test_a_backend_sent_message_gets_receipts_history_and_the_mailbox_like_a_clients(live_server: Any) -> None:
    server = await live_server(api__keys=[KEY])
    cfg = server.config
    sender_tab = f"{server.url}/ws?token={token(cfg, user_id=1, group_id=5, user_type=1)}"
    reader = f"{server.url}/ws?token={token(cfg, user_id=3, group_id=5, user_type=1)}"
    async with ws_connect(sender_tab) as tab, ws_connect(reader) as browser:
        await until(tab, "connected")
        await until(browser, "connected")
        body = {"from_user_id": 1, "from_user_type": 1, "from_username": "客服小王", "group_id": 5,
                "to_user_id": 3, "to_user_type": 1, "text": "您的订单已发货", "client_msg_id": "b-1",
                "session_id": "order-77"}  # fmt: skip
        status, reply = await post(server, body)
        assert status == 200, reply
        sent = reply["data"]
        assert sent["status"] == "sent" and sent["seq"] == 1 and sent["client_msg_id"] == "b-1"
        got = await until(browser, "new_message")
        assert got["data"]["message_id"] == sent["message_id"] and got["data"]["text"] == "您的订单已发货"
        assert got["data"]["from"] == {"user_id": 1, "user_type": 1, "username": "客服小王"}
        assert got["data"]["session_id"] == "order-77" and got["data"]["offline"] is False
        assert (await until(tab, "new_message"))["data"]["message_id"] == sent["message_id"]  # the sender's own tab
        # the browser reads it: the sender's connections hear of it
        await browser.send_message(json.dumps({"type": "message_read", "data": {"message_id": sent["message_id"]}}))
        status_msg = await until(tab, "message_status")
        assert status_msg["data"]["message_id"] == sent["message_id"] and status_msg["data"]["status"] == "read"
        # a retry of the backend's request: the first message, nothing delivered again
        status, again = await post(server, body)
        assert status == 200 and again["data"]["message_id"] == sent["message_id"] and again["data"]["duplicate"] is True
        await browser.send_message(json.dumps({"type": "history", "id": "h", "data": {"with_user_id": 1, "with_user_type": 1}}))
        answer = await recv(browser)  # the next frame: no second new_message came before it
        assert (answer["type"], answer["id"]) == ("history", "h")
        history = answer["data"]["messages"]
        assert [(m["message_id"], m["status"]) for m in history] == [(sent["message_id"], "read")]
    # an offline recipient finds it in its mailbox
    status, reply = await post(server, {"from_user_id": 1, "from_user_type": 1, "group_id": 5, "to_user_id": 4, "to_user_type": 1, "text": "later"})
    assert status == 200 and reply["data"]["seq"] == 1
    async with ws_connect(f"{server.url}/ws?token={token(cfg, user_id=4, group_id=5, user_type=1)}") as late:
        await until(late, "connected")
        boxed = await until(late, "new_message")
        assert boxed["data"]["text"] == "later" and boxed["data"]["offline"] is True


async def test_a_bad_backend_message_is_answered_with_the_field_to_blame(live_server: Any) -> None:
    server = await live_server(api__keys=[KEY])
    for body, status, field in (
        ({"from_user_id": 1, "text": "hi"}, 400, "to_user_id"),
        ({"to_user_id": 1, "text": "hi"}, 400, "from_user_id"),
        ({"from_user_id": 1, "to_user_id": 2}, 400, "text"),
        ({"from_user_id": 1, "to_user_id": 2, "text": "x" * 70000}, 413, "text"),
        ({"from_user_id": 1, "to_user_id": 2, "text": "hi", "reply_to_message_id": "x"}, 400, "reply_to_message_id"),
    ):
        got, reply = await post(server, body)
        assert (got, reply["field"]) == (status, field), (body, reply)


async def open_session(server: Any, body: dict[str, Any]) -> None:
    status, _, data = await http_request(
        server.addresses[0], "POST", "/api/sessions", headers=[("X-API-Key", KEY)], body=json.dumps(body).encode()
    )
    assert status == 200, data


async def test_a_backend_message_by_session_id_alone_reaches_every_other_participant(live_server: Any) -> None:
    server = await live_server(api__keys=[KEY])
    cfg = server.config
    await open_session(server, {"session_id": "s-9", "group_id": 5, "participants": [
        {"user_id": 1, "user_type": 1}, {"user_id": 2, "user_type": 1}, {"user_id": 3, "user_type": 1}]})  # fmt: skip
    async with (
        ws_connect(f"{server.url}/ws?token={token(cfg, user_id=1, group_id=5, user_type=1)}") as tab,
        ws_connect(f"{server.url}/ws?token={token(cfg, user_id=2, group_id=5, user_type=1)}") as two,
        ws_connect(f"{server.url}/ws?token={token(cfg, user_id=3, group_id=5, user_type=1)}") as three,
    ):
        for ws in (tab, two, three):
            await until(ws, "connected")
        body = {"from_user_id": 1, "from_user_type": 1, "group_id": 5, "session_id": "s-9",
                "text": "大家好", "client_msg_id": "s-9-1"}  # fmt: skip
        status, reply = await post(server, body)
        assert status == 200, reply
        sent = reply["data"]
        assert [m["status"] for m in sent["messages"]] == ["sent", "sent"]
        ids = [m["message_id"] for m in sent["messages"]]
        assert sent["message_id"] == ids[0] and len(set(ids)) == 2  # one stored message per recipient
        for ws, message_id in ((two, ids[0]), (three, ids[1])):
            got = (await until(ws, "new_message"))["data"]
            assert (got["message_id"], got["session_id"], got["text"]) == (message_id, "s-9", "大家好")
            assert got["from_user_id"] == 1
        # a retry of the backend's request sends nothing again
        status, again = await post(server, body)
        assert status == 200 and again["data"]["duplicate"] is True, again
        for ws in (two, three):
            await ws.send_message(json.dumps({"type": "ping", "id": "p"}))
            assert (await recv(ws))["type"] == "pong"  # no second new_message came before it


async def test_a_backend_message_to_an_unknown_session_or_from_an_outsider_is_refused_naming_session_id(
    live_server: Any,
) -> None:
    server = await live_server(api__keys=[KEY])
    await open_session(server, {"session_id": "s-1", "group_id": 5, "participants": [
        {"user_id": 1, "user_type": 1}, {"user_id": 2, "user_type": 1}]})  # fmt: skip
    for body, status in (
        ({"from_user_id": 1, "from_user_type": 1, "group_id": 5, "session_id": "nope", "text": "hi"}, 404),
        ({"from_user_id": 1, "from_user_type": 1, "group_id": 6, "session_id": "s-1", "text": "hi"}, 404),
        ({"from_user_id": 9, "from_user_type": 1, "group_id": 5, "session_id": "s-1", "text": "hi"}, 403),
    ):
        got, reply = await post(server, body)
        assert (got, reply["field"]) == (status, "session_id"), (body, reply)
    got, reply = await post(server, {"from_user_id": 1, "group_id": 5, "text": "to nobody"})
    assert (got, reply["field"]) == (400, "to_user_id"), reply  # neither a recipient nor a session
