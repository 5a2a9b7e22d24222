"""Durable growth is bounded per principal (SPEC 5): a mailbox holds at most
`messages.mailbox_max_bytes` (UTF-8 bytes of the texts, or of a persisted
push's JSON payload); a send that would go over is answered `rate_limited`
and nothing is stored. Only messages that go to the mailbox count, and the
count is derived from the stored messages, so it survives a restart.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from tests.conftest import make_config, make_server, token, ws_connect
from tests.fakes import Journal
from tests.test_api import API_KEY, call
from tests.test_direct import (
    ALICE,
    BOB,
    data_of,
    dm,
    expect_error,
    login,
    make,
    online,
)
from tests.test_hub import send
from wsserver.net.server import Server

QUOTA = {"messages.mailbox_max_bytes": 10}


def test_a_send_that_would_overfill_an_offline_mailbox_is_rate_limited_and_not_stored():
    journal = Journal(hold=0)
    hub = make(storage=journal, **QUOTA)
    a, a_out = online(hub, ALICE)
    dm(hub, a, "bob", "hello")  # 5 bytes
    dm(hub, a, "bob", "ééé", rid="r2")  # 6 bytes in UTF-8: 11 > 10
    frame = expect_error(a_out, "rate_limited", "to_user_id")
    assert frame["id"] == "r2" and frame["data"]["ref"] == "send_message"
    assert [r["text"] for r in journal.records] == ["hello"]
    assert hub.direct.store.next_id == 2
    dm(hub, a, "bob", "12345")  # exactly 10: fits
    assert [r["text"] for r in journal.records] == ["hello", "12345"]


def test_messages_to_an_online_recipient_do_not_count():
    hub = make(**QUOTA)
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "far more than ten bytes")
    assert [d["text"] for d in data_of(b_out, "new_message")] == ["far more than ten bytes"]
    assert a_out.of_type("error") == []


def test_a_receipt_makes_room_again():
    hub = make(**QUOTA)
    a, a_out = online(hub, ALICE)
    dm(hub, a, "bob", "0123456789")
    dm(hub, a, "bob", "x")
    expect_error(a_out, "rate_limited")
    b, _, pushed = login(hub, BOB)
    send(hub, b, "message_delivered", {"message_id": pushed[0]["data"]["message_id"]})
    hub.close(b)
    dm(hub, a, "bob", "x")
    assert a_out.last["type"] == "message_sent"


def test_seed_004_user_message_names_its_to_field():
    hub = make(**QUOTA)
    a, a_out = online(hub, ALICE)
    send(hub, a, "user_message", {"to": "bob", "text": "eleven byte"})
    expect_error(a_out, "rate_limited", "to")


def test_a_persisted_push_over_the_quota_is_not_queued():
    hub = make(**QUOTA)
    assert hub.direct.persist_push(1, None, "bob", "notice", {"n": 1})  # {"n":1}: 7 bytes
    assert not hub.direct.persist_push(1, None, "bob", "notice", {"n": 2})
    _, _, pushed = login(hub, BOB)
    assert [f["data"] for f in pushed] == [{"n": 1}]


# -- on a real server ------------------------------------------------------------------


async def _recv(ws: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def _send(server: Server, text: str) -> dict[str, Any]:
    """alice sends `text` to the offline bob; the answer."""
    host, port = server.addresses[0]
    t = token(server.config, user_id="alice")
    async with ws_connect(f"ws://{host}:{port}/ws?token={t}") as ws:
        assert (await _recv(ws))["type"] == "connected"
        await ws.send_message(json.dumps({"type": "send_message", "data": {"to_user_id": "bob", "message": text}}))
        return await _recv(ws)


async def test_over_the_quota_a_send_is_rate_limited_and_it_stays_so_after_a_restart(tmp_path: Any) -> None:
    config = make_config(tmp_path, **{**QUOTA, "api.keys": [API_KEY]})
    for run in range(2):
        server = make_server(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            if run == 0:
                assert (await _send(server, "fits: 10 b"))["type"] == "message_sent"
            refused = await _send(server, "!")
            assert (refused["type"], refused["data"]["code"], refused["data"]["field"]) == (
                "error", "rate_limited", "to_user_id"
            )
            assert refused["error"] == "对方的离线消息已满，消息未保存"
            body = {"type": "notice", "data": {}, "user_id": "bob", "persist": True}
            status, reply, _ = await call(server, "POST", "/api/publish", body)
            assert status == 200 and reply["data"] == {"delivered": 0, "queued": 1}  # its own box: any group
            too_big = {**body, "data": {"text": "over ten bytes"}}
            status, reply, _ = await call(server, "POST", "/api/publish", too_big)
            assert status == 200 and reply["data"] == {"delivered": 0, "queued": 0}
            stats = (await call(server, "GET", "/api/stats"))[1]["data"]
            assert stats["mailboxes"]["messages"] == 1 + run + 1
            server.stop()
