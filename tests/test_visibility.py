"""Only durable records are ever visible (SPEC 4.3): a message whose journal
write is not durable yet is in memory (records are applied when appended), but
`sync`, `history`, receipts and the mailbox push act as if it were not there,
because a crash could still take it back.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import trio

from tests.conftest import make_config, token, ws_connect
from tests.fakes import Journal
from tests.test_direct import ALICE, BOB, data_of, dm, login, make, online
from tests.test_hub import send
from wsserver.net.server import Server


def never_durable() -> tuple[Any, Journal]:
    """A hub whose journal takes records and never makes any durable."""
    journal = Journal(hold=0)
    return make(storage=journal), journal


def test_sync_does_not_return_a_message_that_is_not_durable():
    hub, journal = never_durable()
    a, _ = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    dm(hub, a, "bob", "not yet")
    assert journal.records and journal.durable_upto == 0
    send(hub, b, "sync", {"last_seq": 0})
    assert b_out.of_type("new_message") == []
    # and its seq is not promised either: a crash would give it to the next message
    assert data_of(b_out, "sync_done") == [{"last_seq": 0, "has_more": False}]


def test_history_does_not_return_a_message_that_is_not_durable():
    hub, _ = never_durable()
    a, _ = online(hub, ALICE)
    a2, a2_out = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    dm(hub, a, "bob", "not yet", session_id="s-1")
    send(hub, b, "history", {"with_user_id": "alice"})
    assert data_of(b_out, "history") == [{"messages": [], "has_more": False}]
    send(hub, a2, "history", {"session_id": "s-1"})
    assert data_of(a2_out, "history") == [{"messages": [], "has_more": False}]


def test_a_receipt_for_a_message_that_is_not_durable_is_not_found():
    hub, journal = never_durable()
    a, _ = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    dm(hub, a, "bob", "not yet")
    send(hub, b, "message_delivered", {"message_id": 1})
    assert b_out.last["data"]["code"] == "not_found"
    assert [r["t"] for r in journal.records] == ["msg"]  # no status record either


def test_a_mailbox_push_leaves_out_what_is_not_durable():
    hub, _ = never_durable()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "not yet")
    _, _, pushed = login(hub, BOB)
    assert pushed == []


def test_once_durable_the_message_is_visible_everywhere():
    hub, journal = never_durable()
    a, _ = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    dm(hub, a, "bob", "now")
    journal.durable_upto = 1
    hub.release()
    b_out.take()
    send(hub, b, "sync", {"last_seq": 0})
    assert [d["text"] for d in data_of(b_out, "new_message")] == ["now"]
    assert data_of(b_out, "sync_done") == [{"last_seq": 1, "has_more": False}]
    send(hub, b, "history", {"with_user_id": "alice"})
    assert [m["text"] for m in data_of(b_out, "history")[0]["messages"]] == ["now"]


# -- on a real server, whose fsync does not return ----------------------------------


async def _recv(ws: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def _ask(ws: Any, mtype: str, data: Any, answer: str) -> list[dict[str, Any]]:
    """Send one request; the frames received up to its answer, the answer last."""
    await ws.send_message(json.dumps({"type": mtype, "data": data}))
    got = []
    while True:
        frame = await _recv(ws)
        if frame["type"] == "group_stats_update":
            continue
        got.append(frame)
        if frame["type"] in (answer, "error"):
            return got


async def test_while_the_journal_cannot_fsync_nobody_sees_the_message(tmp_path: Any) -> None:
    server = Server(make_config(tmp_path, **{"storage.fsync": "always"}))
    disk_stuck = threading.Event()
    disk_free = threading.Event()

    def fsync(fd: int) -> None:
        if disk_stuck.is_set():
            disk_free.wait(30)

    server.storage._fsync_fd = fsync
    cfg = server.config
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        host, port = server.addresses[0]
        url = f"ws://{host}:{port}/ws"
        try:
            async with (
                ws_connect(f"{url}?token={token(cfg, user_id='alice')}") as alice,
                ws_connect(f"{url}?token={token(cfg, user_id='bob')}") as bob,
            ):
                for ws in (alice, bob):
                    assert (await _recv(ws))["type"] == "connected"
                disk_stuck.set()
                await alice.send_message(
                    json.dumps({"type": "send_message", "data": {"to_user_id": "bob", "message": "stuck"}})
                )
                # the hub handles a connection's messages in order: once this is
                # answered, the message is in memory, its journal write pending
                mine = await _ask(alice, "history", {"with_user_id": "bob"}, "history")
                assert mine[-1]["data"]["messages"] == []
                sync = await _ask(bob, "sync", {"last_seq": 0}, "sync_done")
                assert [f["type"] for f in sync] == ["sync_done"] and sync[0]["data"]["last_seq"] == 0
                history = await _ask(bob, "history", {"with_user_id": "alice"}, "history")
                assert history[-1]["data"]["messages"] == []
                receipt = await _ask(bob, "message_delivered", {"message_id": 1}, "error")
                assert receipt[-1]["data"]["code"] == "not_found"
                disk_free.set()
                assert (await _recv(alice))["type"] == "message_sent"
                assert (await _recv(bob))["data"]["text"] == "stuck"
        finally:
            disk_free.set()
            server.stop()
