"""The business events of SPEC 13 on the real server, over real HTTP to a real
receiver (tests/webhook_receiver.py): every direct message and its receipts
(an archive rebuilt from the events equals `history`), expiry by TTL and by a
mailbox's limit, and each CRM
write, without the activation code and without a second event for a retry."""

from __future__ import annotations

import json
from typing import Any

import trio

from tests.conftest import token, ws_connect
from tests.test_crm_backend import recv, reply_to
from tests.test_webhooks import of, receiver

MESSAGE_EVENTS = ["message", "message_status"]
CRM_EVENTS = ["crm_incoming", "crm_customer", "crm_follow_up", "crm_account_status"]


async def until(ws: Any, mtype: str) -> dict[str, Any]:
    while (msg := await recv(ws))["type"] != mtype:
        pass
    return msg


async def test_an_archive_rebuilt_from_message_events_equals_history(live_server: Any) -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        server = await live_server(webhooks__url=rec.url, webhooks__events=MESSAGE_EVENTS, messages__mailbox_ttl=0.5)
        cfg = server.config
        alice = f"{server.url}/ws?token={token(cfg, user_id=1, group_id=5, user_type=1)}"
        bob = f"{server.url}/ws?token={token(cfg, user_id=3, group_id=5, user_type=1)}"
        async with ws_connect(alice) as a, ws_connect(bob) as b:
            await until(a, "connected")
            await until(b, "connected")
            ids = []
            for i, text in enumerate(["hello", "你好", "bye"]):
                await a.send_message(json.dumps({"type": "send_message", "id": f"m{i}", "data": {
                    "to_user_id": 3, "to_user_type": 1, "text": text, "client_msg_id": f"c{i}"}}))  # fmt: skip
                ids.append((await reply_to(a, f"m{i}"))["data"]["message_id"])
            for mid in ids:
                assert (await until(b, "new_message"))["data"]["message_id"] == mid
            await b.send_message(json.dumps({"type": "message_delivered", "data": {"message_id": ids[0]}}))
            assert (await until(a, "message_status"))["data"]["status"] == "delivered"
            await b.send_message(json.dumps({"type": "message_read", "data": {"message_id": ids[1]}}))
            assert (await until(a, "message_status"))["data"]["status"] == "read"
            # a resend with the same client_msg_id is no new message: no event
            await a.send_message(json.dumps({"type": "send_message", "id": "again", "data": {
                "to_user_id": 3, "to_user_type": 1, "text": "hello", "client_msg_id": "c0"}}))  # fmt: skip
            assert (await reply_to(a, "again"))["data"]["duplicate"] is True
            # one to user 2, who stays offline past the mailbox TTL
            await a.send_message(json.dumps({"type": "send_message", "id": "x", "data": {"to_user_id": 2, "to_user_type": 1, "text": "late"}}))
            expiring = (await reply_to(a, "x"))["data"]["message_id"]
            await a.send_message(json.dumps({"type": "history", "id": "h", "data": {"with_user_id": 3, "with_user_type": 1, "limit": 100}}))
            history = (await reply_to(a, "h"))["data"]["messages"]
        await trio.sleep(0.6)  # the TTL is a time: it must pass
        carol = f"{server.url}/ws?token={token(cfg, user_id=2, group_id=5, user_type=1)}"
        async with ws_connect(carol) as c:
            await until(c, "connected")
        await rec.wait_for(lambda: len(of(rec, "message")) == 4 and len(of(rec, "message_status")) == 3)
        # the backend's archive: messages by id, statuses applied in order
        archive: dict[int, dict[str, Any]] = {}
        for event in rec.events:
            data = event["data"]
            if event["event"] == "message":
                archive[data["message_id"]] = {k: data[k] for k in ("text", "from_user_id", "to_user_id", "seq", "status", "time")}
            elif event["event"] == "message_status":
                archive[data["message_id"]]["status"] = data["status"]
        from_history = {
            m["message_id"]: {k: m[k] for k in ("text", "from_user_id", "to_user_id", "seq", "status", "time")}
            for m in history
        }
        assert sorted(from_history) == ids and {mid: archive[mid] for mid in from_history} == from_history
        assert [archive[mid]["status"] for mid in ids] == ["delivered", "read", "sent"]
        first = of(rec, "message")[0]["data"]
        assert first["from"] == {"user_id": 1, "user_type": 1, "username": None} and first["client_msg_id"] == "c0"
        assert first["group_id"] == 5 and first["to_user_type"] == 1 and first["message_type"] == "text"
        [expired] = [e["data"] for e in of(rec, "message_status") if e["data"]["status"] == "expired"]
        assert expired["message_id"] == expiring and expired["to_user_id"] == 2
        nursery.cancel_scope.cancel()


async def test_a_message_a_full_mailbox_pushes_out_is_reported_expired_to_its_sender_and_the_backend(
    live_server: Any,
) -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        server = await live_server(webhooks__url=rec.url, webhooks__events=MESSAGE_EVENTS, messages__mailbox_limit=2)
        alice = f"{server.url}/ws?token={token(server.config, user_id=1, group_id=5, user_type=1)}"
        async with ws_connect(alice) as a:
            await until(a, "connected")
            seen = []
            for i in range(3):  # user 2 is offline: the third pushes the first out of the mailbox
                await a.send_message(json.dumps({"type": "send_message", "id": f"m{i}", "data": {
                    "to_user_id": 2, "to_user_type": 1, "text": f"t{i}"}}))  # fmt: skip
                while (frame := await recv(a)).get("id") != f"m{i}":
                    seen.append(frame)
                seen.append(frame)
            ids = [f["data"]["message_id"] for f in seen if f["type"] == "message_sent"]
            [status] = [f["data"] for f in seen if f["type"] == "message_status"]
            assert (status["message_id"], status["status"]) == (ids[0], "expired")
        await rec.wait_for(lambda: len(of(rec, "message")) == 3 and len(of(rec, "message_status")) == 1)
        [expired] = [e["data"] for e in of(rec, "message_status")]
        assert (expired["message_id"], expired["status"], expired["reason"]) == (ids[0], "expired", "limit")
        assert expired["from_user_id"] == 1 and expired["to_user_id"] == 2 and isinstance(expired["time"], int)
        # the backend hears of it after the message itself (the recipient's lane)
        order = [(e["event"], e["data"]["message_id"]) for e in rec.events]
        assert order.index(("message", ids[0])) < order.index(("message_status", ids[0]))
        nursery.cancel_scope.cancel()


async def test_each_crm_write_is_an_event_once_without_the_activation_code(live_server: Any) -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        server = await live_server(
            webhooks__url=rec.url, webhooks__events=CRM_EVENTS,
            activation_codes=[{"code": "HG66OP88", "group_id": 1}],
        )  # fmt: skip
        async with ws_connect(f"{server.url}/ws?activation_code=HG66OP88") as desk:
            await recv(desk)
            for rid, mtype, data in [
                ("s", "sync_line_accounts", [{"line_account_id": "a", "online_status": "online"}]),
                ("i", "incoming", {"line_account_id": "a", "incoming_line_id": "u1", "nickname": "Li"}),
                ("c", "customer_sync", {"customer_id": "k1", "phone": "138"}),
                ("f", "follow_up_sync", {"customer_id": "k1", "note": "called"}),
                ("st", "account_status_change", {"line_account_id": "a", "online_status": "busy"}),
                ("i", "incoming", {"line_account_id": "a", "incoming_line_id": "u1", "nickname": "Li"}),  # a retry
            ]:
                await desk.send_message(json.dumps({"type": mtype, "id": rid, "data": data}))
                await reply_to(desk, rid)
        # the desktop went away: its account goes offline
        await rec.wait_for(lambda: len(of(rec, "crm_account_status")) == 2)
        names = [e["event"] for e in rec.events]
        assert names == ["crm_incoming", "crm_customer", "crm_follow_up", "crm_account_status", "crm_account_status"]
        incoming, customer, follow_up, busy, offline = (e["data"] for e in rec.events)
        assert incoming == {"group_id": 1, "incoming_id": 1, "line_account_id": "a", "incoming_line_id": "u1",
                            "duplicate": False, "time": incoming["time"], "nickname": "Li"}  # fmt: skip
        assert customer == {"group_id": 1, "customer_id": "k1", "customer_db_id": 1, "phone": "138"}
        assert follow_up == {"group_id": 1, "customer_id": "k1", "follow_up_id": 1, "note": "called"}
        assert (busy["line_account_id"], busy["online_status"]) == ("a", "busy")
        assert (offline["online_status"], offline["reason"]) == ("offline", "disconnect")
        assert all(b"HG66OP88" not in r.body for r in rec.requests)
        nursery.cancel_scope.cancel()
