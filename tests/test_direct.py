"""Tests for wsserver.core.direct: direct messages, receipts, offline mailboxes,
de-duplication, history, sync and typing (SPEC 4.3; seeds 002, 003, 004), and
that nothing is announced before its record is durable (SPEC 7). All without I/O:
a `Hub` with `FakeOutlet`s, on a clock the tests move.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import Clock, Journal
from tests.test_hub import NOW, NOW_MS, FakeOutlet, error_of, send, user
from wsserver.config import load_config
from wsserver.core.hub import Hub
from wsserver.core.identity import Identity
from wsserver.protocol.envelope import decode

_conns = itertools.count(1)


def make(clock: Clock | None = None, storage: Any = None, **overrides: Any) -> Hub:
    """A chat-only hub (no activation codes, so no CRM counters on connect)."""
    config = load_config(None, env={}, overrides=overrides)
    return Hub(config, clock=clock or Clock(NOW), storage=storage)


def login(hub: Hub, identity: Identity) -> tuple[str, FakeOutlet, list[dict[str, Any]]]:
    """Admit and authenticate a connection; returns what it got after `connected`."""
    outlet = FakeOutlet()
    conn_id = f"d{next(_conns)}"
    assert hub.admit(outlet, conn_id, "10.0.0.1") is None
    assert hub.authenticate(conn_id, identity) is None
    frames = outlet.take()
    assert frames and frames[0]["type"] == "connected", frames
    return conn_id, outlet, [f for f in frames[1:] if f["type"] != "group_stats_update"]


def online(hub: Hub, identity: Identity) -> tuple[str, FakeOutlet]:
    """A connection that found nothing waiting for it."""
    conn_id, outlet, pushed = login(hub, identity)
    assert pushed == []
    return conn_id, outlet


def dm(hub: Hub, conn_id: str, to: Any, text: str = "hi", rid: Any = None, **extra: Any) -> None:
    top = {} if rid is None else {"id": rid}
    send(hub, conn_id, "send_message", {"to_user_id": to, "message": text, **extra}, **top)


def data_of(outlet: FakeOutlet, mtype: str) -> list[dict[str, Any]]:
    return [f["data"] for f in outlet.of_type(mtype)]


def texts(outlet: FakeOutlet) -> list[str]:
    return [d["text"] for d in data_of(outlet, "new_message")]


def sent_ids(outlet: FakeOutlet) -> list[int]:
    return [d["message_id"] for d in data_of(outlet, "message_sent")]


def expect_error(outlet: FakeOutlet, code: str, field: str | None = None) -> dict[str, Any]:
    frame = error_of(outlet)
    assert frame["data"]["code"] == code, frame
    if field is not None:
        assert frame["data"].get("field") == field, frame
    return frame


ALICE = user("alice")
BOB = user("bob")
CAROL = user("carol")


# --- sending to an online user ----------------------------------------------------------


def test_sender_gets_message_sent_echoing_the_request_id():
    hub = make()
    a, a_out = online(hub, ALICE)
    online(hub, BOB)
    dm(hub, a, "bob", rid="req-1", client_msg_id="cm-1")
    assert a_out.frames == [
        {
            "type": "message_sent",
            "data": {
                "message_id": 1,
                "client_msg_id": "cm-1",
                "seq": 1,
                "status": "sent",
                "time": NOW_MS,
            },
            "id": "req-1",
            "timestamp": NOW_MS,
        }
    ]


def test_message_sent_without_client_msg_id_has_it_null():
    hub = make()
    a, a_out = online(hub, ALICE)
    dm(hub, a, "bob")
    assert data_of(a_out, "message_sent")[0]["client_msg_id"] is None


def test_every_tab_of_the_recipient_gets_new_message_with_seed_002_fields():
    hub = make()
    a, _ = online(hub, ALICE)
    _, tab1 = online(hub, BOB)
    _, tab2 = online(hub, BOB)
    dm(hub, a, "bob", "Hello", session_id="sess-1")
    expected = {
        "type": "new_message",
        "data": {
            "id": "1",
            "message_id": 1,
            "seq": 1,
            "session_id": "sess-1",
            "from": {"user_id": "alice", "user_type": None, "username": "name-alice"},
            "from_user_id": "alice",
            "to_user_id": "bob",
            "text": "Hello",
            "time": NOW_MS,
            "message_type": "text",
            "reply_to_message_id": None,
            "status": "sent",
            "offline": False,
        },
        "timestamp": NOW_MS,
    }
    assert tab1.frames == [expected]
    assert tab2.frames == [expected]


def test_message_type_and_reply_to_are_carried_to_the_recipient():
    hub = make()
    a, _ = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "first")
    dm(hub, a, "bob", "img.png", message_type="image", reply_to_message_id=1)
    second = data_of(b_out, "new_message")[1]
    assert second["message_type"] == "image"
    assert second["reply_to_message_id"] == 1


def test_senders_other_tabs_get_the_message_but_the_sending_tab_does_not():
    hub = make()
    a1, a1_out = online(hub, ALICE)
    _, a2_out = online(hub, ALICE)
    online(hub, BOB)
    dm(hub, a1, "bob", "from tab one")
    assert [f["type"] for f in a1_out.frames] == ["message_sent"]
    assert texts(a2_out) == ["from tab one"]
    assert data_of(a2_out, "new_message")[0]["to_user_id"] == "bob"


def test_sender_identity_comes_from_the_token_not_from_the_client():
    hub = make()
    a, _ = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(
        hub,
        a,
        "bob",
        "spoof?",
        **{
            "from": {"user_id": "admin", "username": "boss"},
            "from_user_id": "admin",
            "role": "agent",
        },
    )
    got = data_of(b_out, "new_message")[0]
    assert got["from"] == {"user_id": "alice", "user_type": None, "username": "name-alice"}
    assert got["from_user_id"] == "alice"


def test_ids_match_by_string_form_and_are_echoed_as_sent():
    hub = make()
    a, _ = online(hub, ALICE)
    _, b_out = online(hub, user(7))
    dm(hub, a, "7", "to seven")
    got = data_of(b_out, "new_message")
    assert [m["text"] for m in got] == ["to seven"]
    assert got[0]["to_user_id"] == "7"


def test_message_ids_increase_across_recipients_and_seq_is_per_recipient():
    hub = make()
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    _, c_out = online(hub, CAROL)
    dm(hub, a, "bob", "b1")
    dm(hub, a, "carol", "c1")
    dm(hub, a, "bob", "b2")
    dm(hub, a, "carol", "c2")
    dm(hub, a, "carol", "c3")
    assert sent_ids(a_out) == [1, 2, 3, 4, 5]
    assert [d["seq"] for d in data_of(a_out, "message_sent")] == [1, 1, 2, 2, 3]
    assert [(m["message_id"], m["seq"]) for m in data_of(b_out, "new_message")] == [(1, 1), (3, 2)]
    assert [(m["message_id"], m["seq"]) for m in data_of(c_out, "new_message")] == [
        (2, 1),
        (4, 2),
        (5, 3),
    ]


def test_seq_keeps_increasing_across_senders():
    hub = make()
    a, _ = online(hub, ALICE)
    c, _ = online(hub, CAROL)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob")
    dm(hub, c, "bob")
    dm(hub, a, "bob")
    assert [m["seq"] for m in data_of(b_out, "new_message")] == [1, 2, 3]


# --- offline delivery and receipts --------------------------------------------------------


def test_offline_recipient_gets_its_mailbox_after_connected_in_seq_order_marked_offline():
    hub = make()
    a, a_out = online(hub, ALICE)
    for t in ("one", "two", "three"):
        dm(hub, a, "bob", t)
    assert sent_ids(a_out) == [1, 2, 3]  # the sender is answered while bob is away
    _, _, pushed = login(hub, BOB)
    assert [f["type"] for f in pushed] == ["new_message"] * 3
    assert [f["data"]["text"] for f in pushed] == ["one", "two", "three"]
    assert [f["data"]["seq"] for f in pushed] == [1, 2, 3]
    assert all(f["data"]["offline"] is True for f in pushed)
    assert pushed[0]["data"]["from_user_id"] == "alice"


def test_every_tab_connecting_gets_the_undelivered_mailbox():
    hub = make()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "waiting")
    _, _, first = login(hub, BOB)
    _, _, second = login(hub, BOB)
    assert [f["data"]["text"] for f in first] == ["waiting"]
    assert [f["data"]["text"] for f in second] == ["waiting"]


def test_message_delivered_empties_the_mailbox_so_the_next_connect_gets_nothing():
    hub = make()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "one")
    dm(hub, a, "bob", "two")
    b, _, pushed = login(hub, BOB)
    for f in pushed:
        send(hub, b, "message_delivered", {"message_id": f["data"]["message_id"]})
    hub.close(b)
    _, _, again = login(hub, BOB)
    assert again == []


def test_message_delivered_tells_every_sender_connection_message_status():
    hub = make()
    a1, a1_out = online(hub, ALICE)
    _, a2_out = online(hub, ALICE)
    dm(hub, a1, "bob")
    a1_out.take()
    a2_out.take()
    b, b_out, _ = login(hub, BOB)
    send(hub, b, "message_delivered", {"message_id": 1})
    expected = {
        "type": "message_status",
        "data": {"message_id": 1, "status": "delivered", "timestamp": NOW_MS},
        "timestamp": NOW_MS,
    }
    assert a1_out.frames == [expected]
    assert a2_out.frames == [expected]
    assert b_out.frames == []


def test_delivered_receipt_is_not_echoed_to_the_recipients_other_tabs():
    hub = make()
    a, _ = online(hub, ALICE)
    b1, _ = online(hub, BOB)
    _, b2_out = online(hub, BOB)
    dm(hub, a, "bob")
    b2_out.take()
    send(hub, b1, "message_delivered", {"message_id": 1})
    assert b2_out.frames == []


@pytest.mark.parametrize("mtype", ["message_read", "read"])
def test_read_receipt_reaches_the_sender_and_the_readers_other_tabs(mtype: str):
    hub = make()
    a, a_out = online(hub, ALICE)
    b1, b1_out = online(hub, BOB)
    _, b2_out = online(hub, BOB)
    dm(hub, a, "bob")
    for out in (a_out, b1_out, b2_out):
        out.take()
    send(hub, b1, mtype, {"message_id": 1})
    status = {"message_id": 1, "status": "read", "timestamp": NOW_MS}
    assert data_of(a_out, "message_status") == [status]
    assert data_of(b2_out, "message_status") == [status]
    assert b1_out.frames == []
    assert hub.direct.store.messages[1]["status"] == "read"


def test_seed_003_read_event_with_a_bare_id_is_a_read_receipt():
    hub = make()
    a, a_out = online(hub, ALICE)
    b, _ = online(hub, BOB)
    dm(hub, a, "bob")
    a_out.take()
    hub.handle(b, decode('{"event":"read","data":"1"}'))
    assert data_of(a_out, "message_status") == [
        {"message_id": 1, "status": "read", "timestamp": NOW_MS}
    ]


def test_read_implies_delivered_and_empties_the_mailbox():
    hub = make()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob")
    b, _, pushed = login(hub, BOB)
    assert len(pushed) == 1
    send(hub, b, "message_read", {"message_id": 1})
    hub.close(b)
    _, _, again = login(hub, BOB)
    assert again == []


def test_receipts_are_idempotent():
    hub = make()
    a, a_out = online(hub, ALICE)
    b, _ = online(hub, BOB)
    dm(hub, a, "bob")
    a_out.take()
    send(hub, b, "message_delivered", {"message_id": 1})
    records = hub.last_n
    send(hub, b, "message_delivered", {"message_id": 1})
    assert [d["status"] for d in data_of(a_out, "message_status")] == ["delivered"]
    assert hub.last_n == records  # nothing journaled for a repeat


def test_status_never_goes_back_from_read_to_delivered():
    hub = make()
    a, a_out = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    dm(hub, a, "bob")
    a_out.take()
    b_out.take()
    send(hub, b, "message_read", {"message_id": 1})
    send(hub, b, "message_delivered", {"message_id": 1})
    assert [d["status"] for d in data_of(a_out, "message_status")] == ["read"]
    assert b_out.frames == []  # no error either: a late receipt is fine
    assert hub.direct.store.messages[1]["status"] == "read"


@pytest.mark.parametrize("who", ["sender", "third party"])
def test_only_the_recipient_may_send_a_receipt(who: str):
    hub = make()
    a, a_out = online(hub, ALICE)
    online(hub, BOB)
    c, c_out = online(hub, CAROL)
    dm(hub, a, "bob")
    a_out.take()
    conn, out = (a, a_out) if who == "sender" else (c, c_out)
    send(hub, conn, "message_read", {"message_id": 1}, id="r9")
    err = expect_error(out, "forbidden", "message_id")
    assert err["id"] == "r9"
    assert hub.direct.store.messages[1]["status"] == "sent"
    assert data_of(a_out, "message_status") == []


def test_a_user_of_another_group_with_the_same_id_cannot_acknowledge():
    hub = make()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob")
    b2, b2_out = online(hub, user("bob", group_id=2))
    send(hub, b2, "message_delivered", {"message_id": 1})
    expect_error(b2_out, "forbidden", "message_id")
    assert hub.direct.store.messages[1]["status"] == "sent"


def test_receipt_for_an_unknown_message_is_not_found():
    hub = make()
    b, b_out = online(hub, BOB)
    send(hub, b, "message_delivered", {"message_id": 404})
    expect_error(b_out, "not_found", "message_id")


@pytest.mark.parametrize("bad", ["abc", 1.5, True, [1], {"id": 1}])
def test_receipt_with_a_non_integer_id_is_invalid_naming_message_id(bad: Any):
    hub = make()
    b, b_out = online(hub, BOB)
    send(hub, b, "message_read", {"message_id": bad})
    expect_error(b_out, "invalid_message", "message_id")


def test_receipt_without_message_id_is_invalid_naming_message_id():
    hub = make()
    b, b_out = online(hub, BOB)
    send(hub, b, "message_read", {})
    expect_error(b_out, "invalid_message", "message_id")


# --- de-duplication ---------------------------------------------------------------------


def test_same_client_msg_id_returns_the_first_message_id_and_delivers_nothing_again():
    hub = make()
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "once", client_msg_id="cm-1")
    records = hub.last_n
    dm(hub, a, "bob", "once", rid="retry", client_msg_id="cm-1")
    first, again = a_out.of_type("message_sent")
    assert "duplicate" not in first["data"]
    assert again["data"] == {**first["data"], "duplicate": True}
    assert again["id"] == "retry"
    assert texts(b_out) == ["once"]
    assert hub.last_n == records


def test_duplicate_from_another_tab_of_the_same_sender_is_still_a_duplicate():
    hub = make()
    a1, a1_out = online(hub, ALICE)
    a2, a2_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a1, "bob", "x", client_msg_id="cm-1")
    dm(hub, a2, "bob", "x", client_msg_id="cm-1")
    assert data_of(a2_out, "message_sent")[0]["duplicate"] is True
    assert texts(b_out) == ["x"]
    assert sent_ids(a1_out) == [1]


def test_duplicate_of_an_offline_message_does_not_fill_the_mailbox_twice():
    hub = make()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "x", client_msg_id="cm-1")
    dm(hub, a, "bob", "x", client_msg_id="cm-1")
    _, _, pushed = login(hub, BOB)
    assert [f["data"]["text"] for f in pushed] == ["x"]


def test_same_client_msg_id_from_another_sender_is_a_new_message():
    hub = make()
    a, a_out = online(hub, ALICE)
    c, c_out = online(hub, CAROL)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "from alice", client_msg_id="cm-1")
    dm(hub, c, "bob", "from carol", client_msg_id="cm-1")
    assert sent_ids(a_out) == [1]
    assert data_of(c_out, "message_sent") == [
        {"message_id": 2, "client_msg_id": "cm-1", "seq": 2, "status": "sent", "time": NOW_MS}
    ]
    assert texts(b_out) == ["from alice", "from carol"]


def test_same_client_msg_id_after_the_dedup_window_is_a_new_message():
    clock = Clock(NOW)
    hub = make(clock, **{"messages.dedup_window": 10})
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "one", client_msg_id="cm-1")
    clock.advance(10)  # at the edge of the window: still a duplicate
    dm(hub, a, "bob", "one", client_msg_id="cm-1")
    clock.advance(0.5)
    dm(hub, a, "bob", "one again", client_msg_id="cm-1")
    sent = data_of(a_out, "message_sent")
    assert [(d["message_id"], d.get("duplicate", False)) for d in sent] == [
        (1, False),
        (1, True),
        (2, False),
    ]
    assert texts(b_out) == ["one", "one again"]


# --- seed 003 and 004 shapes, user types ------------------------------------------------


def test_seed_004_user_message_delivers_like_send_message():
    hub = make()
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    hub.handle(
        a,
        decode(
            '{"type":"user_message","id":"u1",'
            '"content":{"from":"user_123","to":"bob","text":"Hello!"}}'
        ),
    )
    assert a_out.last["type"] == "message_sent" and a_out.last["id"] == "u1"
    got = data_of(b_out, "new_message")
    assert [m["text"] for m in got] == ["Hello!"]
    assert got[0]["from_user_id"] == "alice"
    assert got[0]["to_user_id"] == "bob"


@pytest.mark.parametrize("key", ["content", "text"])
def test_seed_003_message_event_with_receiver_delivers_like_send_message(key: str):
    hub = make()
    a, a_out = online(hub, user(1, user_type=1))
    _, m_out = online(hub, user(2, user_type=2))
    frame = {
        "event": "message",
        "sender": {"id": 99, "type": 3, "name": "spoof"},
        "receiver": {"id": 2, "type": 2, "name": "merchant"},
        "data": {key: "about my feedback"},
    }
    hub.handle(a, decode(json.dumps(frame)))
    assert a_out.last["type"] == "message_sent"
    got = data_of(m_out, "new_message")
    assert [m["text"] for m in got] == ["about my feedback"]
    assert got[0]["from"] == {"user_id": 1, "user_type": 1, "username": "name-1"}
    assert got[0]["from_user_type"] == 1
    assert got[0]["to_user_type"] == 2


def test_seed_003_message_without_receiver_is_invalid_naming_receiver():
    hub = make()
    a, a_out = online(hub, ALICE)
    hub.handle(a, decode('{"event":"message","data":{"content":"to nobody"}}'))
    expect_error(a_out, "invalid_message", "receiver")


def test_seed_003_faults_inside_data_are_named_by_their_dotted_path():
    hub = make()
    a, a_out = online(hub, ALICE)
    for data, field in (({"content": 5}, "data.content"), ({"text": "hi", "client_msg_id": []}, "data.client_msg_id")):
        hub.handle(a, decode(json.dumps({"event": "message", "receiver": {"id": "bob"}, "data": data})))
        expect_error(a_out, "invalid_message", field)


def test_user_message_echoes_the_recipient_it_was_addressed_to():
    hub = make()
    a, _ = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    send(hub, a, "user_message", {"to": "bob", "text": "hi", "to_user_id": "someone else"})
    assert [m["to_user_id"] for m in data_of(b_out, "new_message")] == ["bob"]


def test_user_types_separate_principals_with_the_same_id():
    hub = make()
    a, _ = online(hub, ALICE)
    _, user5_out = online(hub, user(5, user_type=1))
    _, merchant5_out = online(hub, user(5, user_type=2))
    dm(hub, a, 5, "for the merchant", to_user_type=2)
    assert texts(merchant5_out) == ["for the merchant"]
    assert user5_out.frames == []


def test_message_for_another_user_type_waits_in_its_own_mailbox():
    hub = make()
    a, _ = online(hub, ALICE)
    _, user5_out = online(hub, user(5, user_type=1))
    dm(hub, a, 5, "for the merchant", to_user_type="2")
    assert user5_out.frames == []
    _, _, pushed = login(hub, user(5, user_type=2))
    assert [f["data"]["text"] for f in pushed] == ["for the merchant"]


# --- group isolation --------------------------------------------------------------------


def test_message_from_group_1_never_reaches_the_recipients_connection_in_group_2():
    hub = make()
    a, _ = online(hub, ALICE)  # group 1
    _, x2_out = online(hub, user("x", group_id=2))
    dm(hub, a, "x", "group one only")
    assert x2_out.frames == []
    # it waits in group 1's mailbox for x
    _, _, pushed = login(hub, user("x", group_id=1))
    assert [f["data"]["text"] for f in pushed] == ["group one only"]
    assert x2_out.frames == []


def test_naming_another_group_is_forbidden_for_a_non_admin():
    hub = make()
    a, a_out = online(hub, ALICE)
    _, x2_out = online(hub, user("x", group_id=2))
    dm(hub, a, "x", "sneak", to_group_id=2)
    expect_error(a_out, "forbidden", "to_group_id")
    assert x2_out.frames == []
    assert hub.last_n == 0


def test_naming_ones_own_group_in_either_id_form_is_allowed():
    hub = make()
    a, _ = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "same group", to_group_id="1")
    assert texts(b_out) == ["same group"]


def test_an_admin_may_message_a_user_of_another_group():
    hub = make()
    admin, admin_out = online(hub, user("root", role="admin"))
    _, x2_out = online(hub, user("x", group_id=2))
    _, x1_out = online(hub, user("x", group_id=1))
    dm(hub, admin, "x", "hello group two", to_group_id=2)
    assert admin_out.last["type"] == "message_sent"
    assert texts(x2_out) == ["hello group two"]
    assert x1_out.frames == []


# --- mailbox limit and TTL --------------------------------------------------------------


def test_mailbox_limit_drops_the_oldest_and_says_so_once_on_connect():
    hub = make(**{"messages.mailbox_limit": 3})
    a, _ = online(hub, ALICE)
    for i in range(1, 6):
        dm(hub, a, "bob", f"m{i}")
    b, _, pushed = login(hub, BOB)
    assert pushed[0]["type"] == "mailbox_truncated"
    assert pushed[0]["data"] == {"dropped": 2}
    assert [(f["data"]["text"], f["data"]["seq"]) for f in pushed[1:]] == [
        ("m3", 3),
        ("m4", 4),
        ("m5", 5),
    ]
    hub.close(b)
    _, _, again = login(hub, BOB)
    assert [f["type"] for f in again] == ["new_message"] * 3  # still undelivered, no notice


def test_mailbox_ttl_drops_old_messages_on_connect_and_counts_them():
    clock = Clock(NOW)
    hub = make(clock, **{"messages.mailbox_ttl": 60})
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "old one")
    dm(hub, a, "bob", "old two")
    clock.advance(30)
    dm(hub, a, "bob", "fresh")
    clock.advance(40)  # the first two are 70 s old, the last one 40 s
    b, _, pushed = login(hub, BOB)
    assert pushed[0]["type"] == "mailbox_truncated"
    assert pushed[0]["data"] == {"dropped": 2}
    assert [f["data"]["text"] for f in pushed[1:]] == ["fresh"]
    hub.close(b)
    _, _, again = login(hub, BOB)
    assert [f["data"]["text"] for f in again] == ["fresh"]


def test_delivered_messages_are_not_counted_as_truncated():
    hub = make(**{"messages.mailbox_limit": 3})
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "m1")
    b, _, pushed = login(hub, BOB)
    send(hub, b, "message_delivered", {"message_id": 1})
    hub.close(b)
    for i in range(2, 5):
        dm(hub, a, "bob", f"m{i}")
    _, _, pushed = login(hub, BOB)
    assert [f["type"] for f in pushed] == ["new_message"] * 3


# --- history ----------------------------------------------------------------------------


def _conversation(hub: Hub, n: int) -> tuple[str, FakeOutlet, str, FakeOutlet]:
    """alice and bob exchange `n` messages m1..mn, alternating, alice first."""
    a, a_out = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    for i in range(1, n + 1):
        if i % 2:
            dm(hub, a, "bob", f"m{i}")
        else:
            dm(hub, b, "alice", f"m{i}")
    a_out.take()
    b_out.take()
    return a, a_out, b, b_out


def history(hub: Hub, conn: str, out: FakeOutlet, **data: Any) -> tuple[list[str], bool]:
    send(hub, conn, "history", data, id="h")
    reply = out.last
    assert reply["type"] == "history" and reply["id"] == "h", reply
    return [m["text"] for m in reply["data"]["messages"]], reply["data"]["has_more"]


def test_history_with_a_user_is_the_conversation_oldest_first_from_either_side():
    hub = make()
    a, a_out, b, b_out = _conversation(hub, 4)
    assert history(hub, a, a_out, with_user_id="bob") == (["m1", "m2", "m3", "m4"], False)
    assert history(hub, b, b_out, with_user_id="alice") == (["m1", "m2", "m3", "m4"], False)


def test_history_entries_carry_the_new_message_fields():
    hub = make()
    a, a_out, _, _ = _conversation(hub, 2)
    send(hub, a, "history", {"with_user_id": "bob"})
    first, second = a_out.last["data"]["messages"]
    assert (
        first["message_id"] == 1
        and first["from_user_id"] == "alice"
        and first["to_user_id"] == "bob"
    )
    assert second["from_user_id"] == "bob" and second["to_user_id"] == "alice"


def test_history_pages_backwards_with_limit_and_before_message_id():
    hub = make()
    a, a_out, _, _ = _conversation(hub, 5)
    assert history(hub, a, a_out, with_user_id="bob", limit=2) == (["m4", "m5"], True)
    assert history(hub, a, a_out, with_user_id="bob", limit=2, before_message_id=4) == (
        ["m2", "m3"],
        True,
    )
    assert history(hub, a, a_out, with_user_id="bob", limit=2, before_message_id=2) == (
        ["m1"],
        False,
    )


def test_history_limit_forgets_the_oldest_messages_of_a_conversation():
    hub = make(**{"messages.history_limit": 3})
    a, a_out, _, _ = _conversation(hub, 5)
    assert history(hub, a, a_out, with_user_id="bob") == (["m3", "m4", "m5"], False)


def test_history_of_a_session_id_lists_only_that_session():
    hub = make()
    a, a_out = online(hub, ALICE)
    b, _ = online(hub, BOB)
    dm(hub, a, "bob", "s1 a", session_id="s1")
    dm(hub, a, "bob", "s2 a", session_id="s2")
    dm(hub, b, "alice", "s1 b", session_id="s1")
    dm(hub, a, "bob", "no session")
    assert history(hub, a, a_out, session_id="s1") == (["s1 a", "s1 b"], False)
    assert history(hub, a, a_out, session_id="s1", limit=1) == (["s1 b"], True)


@pytest.mark.parametrize("limit", [0, 101, -1, "10", True])
def test_history_limit_out_of_range_or_not_an_integer_is_invalid_naming_limit(limit: Any):
    hub = make()
    a, a_out = online(hub, ALICE)
    send(hub, a, "history", {"with_user_id": "bob", "limit": limit})
    expect_error(a_out, "invalid_message", "limit")


def test_history_limit_of_100_is_allowed():
    hub = make()
    a, a_out, _, _ = _conversation(hub, 3)
    assert history(hub, a, a_out, with_user_id="bob", limit=100) == (["m1", "m2", "m3"], False)


def test_history_without_a_partner_or_session_is_invalid():
    hub = make()
    a, a_out = online(hub, ALICE)
    send(hub, a, "history", {"limit": 5})
    expect_error(a_out, "invalid_message", "with_user_id")


def test_a_third_user_only_sees_their_own_conversations():
    hub = make()
    _conversation(hub, 3)
    c, c_out = online(hub, CAROL)
    dm(hub, c, "alice", "carol to alice", session_id="s1")
    c_out.take()
    assert history(hub, c, c_out, with_user_id="alice") == (["carol to alice"], False)
    assert history(hub, c, c_out, with_user_id="bob") == ([], False)
    a, _ = online(hub, ALICE)
    # bob's conversation with alice stays between them, even with a shared session id
    dm(hub, a, "bob", "alice to bob", session_id="s1")
    assert history(hub, c, c_out, session_id="s1") == (["carol to alice"], False)


def test_history_never_crosses_groups():
    hub = make()
    _conversation(hub, 2)
    a2, a2_out = online(hub, user("alice", group_id=2))
    assert history(hub, a2, a2_out, with_user_id="bob") == ([], False)


# --- sync -------------------------------------------------------------------------------


def test_sync_returns_every_kept_message_after_last_seq_in_order_then_sync_done():
    hub = make()
    a, _ = online(hub, ALICE)
    c, _ = online(hub, CAROL)
    b, b_out = online(hub, BOB)
    dm(hub, a, "bob", "one")
    dm(hub, c, "bob", "two")
    dm(hub, b, "alice", "bob's own")  # sent, not received: not in bob's sync
    dm(hub, a, "bob", "three")
    b_out.take()
    send(hub, b, "sync", {"last_seq": 1}, id="s")
    frames = b_out.take()
    assert [f["type"] for f in frames] == ["new_message", "new_message", "sync_done"]
    assert [(f["data"]["text"], f["data"]["seq"]) for f in frames[:2]] == [("two", 2), ("three", 3)]
    assert frames[-1]["data"]["last_seq"] == 3
    assert frames[-1]["id"] == "s"


def test_sync_from_zero_replays_everything_kept():
    hub = make(**{"messages.history_limit": 2})
    a, _ = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    for i in range(1, 5):
        dm(hub, a, "bob", f"m{i}")
    b_out.take()
    send(hub, b, "sync", {"last_seq": 0})
    frames = b_out.take()
    assert [f["data"].get("text") for f in frames[:-1]] == ["m3", "m4"]
    assert frames[-1]["type"] == "sync_done" and frames[-1]["data"]["last_seq"] == 4


def test_sync_when_up_to_date_sends_only_sync_done():
    hub = make()
    a, _ = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    dm(hub, a, "bob")
    b_out.take()
    send(hub, b, "sync", {"last_seq": 1})
    assert [f["type"] for f in b_out.frames] == ["sync_done"]
    assert b_out.last["data"]["last_seq"] == 1


def test_sync_pages_and_says_where_to_continue():
    hub = make()
    a, _ = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    for i in range(1, 6):
        dm(hub, a, "bob", f"m{i}")
    b_out.take()
    send(hub, b, "sync", {"last_seq": 0, "limit": 2})
    frames = b_out.take()
    assert [f["data"].get("seq") for f in frames[:-1]] == [1, 2]
    assert frames[-1]["data"] == {"last_seq": 2, "has_more": True}
    send(hub, b, "sync", {"last_seq": 2, "limit": 2})
    send(hub, b, "sync", {"last_seq": 4, "limit": 2})
    frames = b_out.take()
    assert [f["data"].get("seq") for f in frames if f["type"] == "new_message"] == [3, 4, 5]
    assert [f["data"] for f in frames if f["type"] == "sync_done"] == [
        {"last_seq": 4, "has_more": True},
        {"last_seq": 5, "has_more": False},
    ]


def test_a_mailbox_longer_than_half_the_send_queue_is_pushed_in_part():
    hub = make(**{"limits.send_queue": 4})  # a burst of 2 at most
    a, _ = online(hub, ALICE)
    for i in range(1, 4):
        dm(hub, a, "bob", f"m{i}")
    _, _, pushed = login(hub, BOB)
    assert [f["type"] for f in pushed] == ["new_message", "new_message", "mailbox_more"]
    assert [f["data"]["seq"] for f in pushed[:2]] == [1, 2]
    assert pushed[-1]["data"] == {"remaining": 1, "last_seq": 2}


def test_sync_with_a_non_integer_last_seq_is_invalid_naming_last_seq():
    hub = make()
    b, b_out = online(hub, BOB)
    send(hub, b, "sync", {"last_seq": "3"})
    expect_error(b_out, "invalid_message", "last_seq")


# --- typing -----------------------------------------------------------------------------


def test_typing_is_relayed_to_the_recipients_connections_and_not_stored():
    hub = make()
    a, a_out = online(hub, ALICE)
    _, a2_out = online(hub, ALICE)
    _, b1_out = online(hub, BOB)
    _, b2_out = online(hub, BOB)
    send(hub, a, "typing", {"to_user_id": "bob", "typing": True})
    expected = {
        "type": "typing",
        "data": {
            "from": {"user_id": "alice", "user_type": None, "username": "name-alice"},
            "typing": True,
        },
        "timestamp": NOW_MS,
    }
    assert b1_out.frames == [expected]
    assert b2_out.frames == [expected]
    assert a_out.frames == [] and a2_out.frames == []
    assert hub.last_n == 0
    assert hub.direct.store.to_state()["messages"] == []


def test_typing_stopped_is_relayed_as_false():
    hub = make()
    a, _ = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    send(hub, a, "typing", {"to_user_id": "bob", "typing": False})
    assert data_of(b_out, "typing")[0]["typing"] is False


def test_typing_to_an_offline_user_is_dropped_not_kept():
    hub = make()
    a, a_out = online(hub, ALICE)
    send(hub, a, "typing", {"to_user_id": "bob"})
    assert a_out.frames == []
    _, _, pushed = login(hub, BOB)
    assert pushed == []


def test_typing_to_another_group_is_forbidden():
    hub = make()
    a, a_out = online(hub, ALICE)
    _, x2_out = online(hub, user("x", group_id=2))
    send(hub, a, "typing", {"to_user_id": "x", "to_group_id": 2, "typing": True})
    expect_error(a_out, "forbidden", "to_group_id")
    assert x2_out.frames == []


def test_typing_flag_that_is_not_a_boolean_is_invalid():
    hub = make()
    a, a_out = online(hub, ALICE)
    send(hub, a, "typing", {"to_user_id": "bob", "typing": "yes"})
    expect_error(a_out, "invalid_message", "typing")


# --- bad inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"message": "x"}, "to_user_id"),
        ({"to_user_id": "", "message": "x"}, "to_user_id"),
        ({"to_user_id": True, "message": "x"}, "to_user_id"),
        ({"to_user_id": ["bob"], "message": "x"}, "to_user_id"),
        ({"to_user_id": "bob"}, "message"),
        ({"to_user_id": "bob", "message": 5}, "message"),
        ({"to_user_id": "bob", "message": None, "text": None}, "message"),
        ({"to_user_id": "bob", "text": {"t": 1}}, "text"),
        ({"to_user_id": "bob", "message": "x", "reply_to_message_id": True}, "reply_to_message_id"),
        ({"to_user_id": "bob", "message": "x", "reply_to_message_id": "7"}, "reply_to_message_id"),
        ({"to_user_id": "bob", "message": "x", "client_msg_id": [1]}, "client_msg_id"),
        ({"to_user_id": "bob", "message": "x", "client_msg_id": False}, "client_msg_id"),
        ({"to_user_id": "bob", "message": "x", "message_type": 3}, "message_type"),
        ({"to_user_id": "bob", "message": "x", "session_id": {"s": 1}}, "session_id"),
        ({"to_user_id": "bob", "message": "x", "session_id": True}, "session_id"),
        ("hello bob", "data"),
        (["bob", "hi"], "data"),
        (None, "data"),
    ],
)
def test_bad_send_message_is_invalid_naming_the_field_and_sends_nothing(data: Any, field: str):
    hub = make()
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    send(hub, a, "send_message", data, id="bad")
    err = expect_error(a_out, "invalid_message", field)
    assert err["id"] == "bad" and err["data"]["ref"] == "send_message"
    assert b_out.frames == []
    assert hub.last_n == 0


@pytest.mark.parametrize("mtype", ["user_message", "typing", "history"])
def test_data_that_is_not_an_object_is_invalid_naming_data(mtype: str):
    hub = make()
    a, a_out = online(hub, ALICE)
    send(hub, a, mtype, "bob")
    expect_error(a_out, "invalid_message", "data")


def test_text_over_65536_characters_is_too_large():
    hub = make()
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "x" * 65537)
    expect_error(a_out, "too_large")
    assert b_out.frames == []
    assert hub.last_n == 0


def test_text_of_exactly_65536_characters_is_delivered():
    hub = make()
    a, _ = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "x" * 65536)
    assert len(texts(b_out)[0]) == 65536


def test_a_bad_message_leaves_other_connections_alone():
    hub = make()
    a, a_out = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    dm(hub, a, "", "x")
    expect_error(a_out, "invalid_message", "to_user_id")
    assert b_out.frames == []
    dm(hub, b, "alice", "still fine")
    assert texts(a_out) == ["still fine"]


# --- durability gating ------------------------------------------------------------------


def gated() -> tuple[Hub, Journal]:
    journal = Journal(hold=0)
    return make(storage=journal), journal


def test_nothing_is_announced_before_the_message_is_durable_and_released():
    hub, journal = gated()
    a, a_out = online(hub, ALICE)
    _, a2_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "wait for it", rid="r1")
    assert len(journal.records) == 1 and journal.records[0]["t"] == "msg"
    assert a_out.frames == [] and a2_out.frames == [] and b_out.frames == []
    hub.release()  # not durable yet: still nothing
    assert a_out.frames == [] and b_out.frames == []
    journal.durable_upto = 1
    assert a_out.frames == [] and b_out.frames == []  # durable, but not released yet
    hub.release()
    assert [(f["type"], f.get("id")) for f in a_out.frames] == [("message_sent", "r1")]
    assert texts(b_out) == ["wait for it"]
    assert texts(a2_out) == ["wait for it"]
    hub.release()  # released once only
    assert len(a_out.frames) == 1 and len(b_out.frames) == 1


def test_announcements_are_released_in_order_and_only_up_to_durable():
    hub, journal = gated()
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    for t in ("one", "two", "three"):
        dm(hub, a, "bob", t)
    journal.durable_upto = 2
    hub.release()
    assert sent_ids(a_out) == [1, 2]
    assert texts(b_out) == ["one", "two"]
    journal.durable_upto = 3
    hub.release()
    assert sent_ids(a_out) == [1, 2, 3]
    assert texts(b_out) == ["one", "two", "three"]


def test_receipts_message_status_waits_for_durability():
    hub, journal = gated()
    a, a_out = online(hub, ALICE)
    b, b_out = online(hub, BOB)
    _, b2_out = online(hub, BOB)
    dm(hub, a, "bob")
    journal.durable_upto = 1
    hub.release()
    for out in (a_out, b_out, b2_out):
        out.take()
    send(hub, b, "message_read", {"message_id": 1})
    assert journal.records[-1]["t"] == "status"
    assert a_out.frames == [] and b2_out.frames == []
    journal.durable_upto = 2
    hub.release()
    assert [d["status"] for d in data_of(a_out, "message_status")] == ["read"]
    assert [d["status"] for d in data_of(b2_out, "message_status")] == ["read"]


def test_a_duplicates_message_sent_waits_for_the_pending_commit():
    hub, journal = gated()
    a, a_out = online(hub, ALICE)
    _, b_out = online(hub, BOB)
    dm(hub, a, "bob", "x", client_msg_id="cm-1")
    dm(hub, a, "bob", "x", client_msg_id="cm-1")
    assert a_out.frames == []
    assert len(journal.records) == 1
    journal.durable_upto = 1
    hub.release()
    sent = data_of(a_out, "message_sent")
    assert [(d["message_id"], d.get("duplicate", False)) for d in sent] == [(1, False), (1, True)]
    assert texts(b_out) == ["x"]


def test_recipient_connecting_before_the_commit_gets_the_message_once_at_release():
    hub, journal = gated()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "in flight")
    _, b_out, pushed = login(hub, BOB)
    assert pushed == []  # not durable: not pushed from the mailbox
    journal.durable_upto = 1
    hub.release()
    got = data_of(b_out, "new_message")
    assert [(m["text"], m["offline"]) for m in got] == [("in flight", False)]


def test_recipient_connecting_after_the_commit_but_before_release_gets_it_once():
    # durable_upto moves in the storage writer; release() runs later in the registry
    hub, journal = gated()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "in flight")
    journal.durable_upto = 1
    _, b_out, pushed = login(hub, BOB)
    hub.release()
    assert [f["data"]["text"] for f in pushed + b_out.frames if f["type"] == "new_message"] == [
        "in flight"
    ]


def test_recipient_connecting_after_release_gets_the_mailbox_push():
    hub, journal = gated()
    a, _ = online(hub, ALICE)
    dm(hub, a, "bob", "stored")
    journal.durable_upto = 1
    hub.release()
    _, _, pushed = login(hub, BOB)
    assert [(f["data"]["text"], f["data"]["offline"]) for f in pushed] == [("stored", True)]


def test_announcements_keep_their_order_when_durability_advances_before_release():
    # the writer may mark records durable while the registry is still busy: a
    # retry answered in that gap must not overtake the original's message_sent
    hub, journal = gated()
    a, a_out = online(hub, ALICE)
    online(hub, BOB)
    dm(hub, a, "bob", "x", client_msg_id="cm-1")  # record 1, waiting
    journal.durable_upto = 1  # the writer made it durable; the registry has not released yet
    dm(hub, a, "bob", "x", client_msg_id="cm-1")  # the client's retry
    hub.release()
    sent = data_of(a_out, "message_sent")
    assert [d.get("duplicate", False) for d in sent] == [False, True]


def test_recipient_who_leaves_before_the_announcement_finds_it_in_the_mailbox():
    hub, journal = gated()
    a, _ = online(hub, ALICE)
    b, _ = online(hub, BOB)
    dm(hub, a, "bob", "while you were leaving")  # bob online: not boxed at send time
    hub.close(b)
    journal.durable_upto = len(journal.records)
    hub.release()  # nobody of bob's took it: it is boxed now
    journal.durable_upto = len(journal.records)
    _, _, pushed = login(hub, BOB)
    assert [(f["data"]["text"], f["data"]["offline"]) for f in pushed] == [("while you were leaving", True)]


def test_retry_is_a_duplicate_even_after_history_trimmed_the_first_message():
    hub = make(**{"messages.history_limit": 1})
    a, a_out = online(hub, ALICE)
    online(hub, BOB)
    dm(hub, a, "bob", "x", client_msg_id="once")
    first = a_out.of_type("message_sent")[-1]["data"]
    dm(hub, a, "bob", "y")  # trims "x" from the conversation's history
    dm(hub, a, "bob", "x", client_msg_id="once")
    retry = a_out.of_type("message_sent")[-1]["data"]
    assert retry["duplicate"] is True
    assert (retry["message_id"], retry["seq"]) == (first["message_id"], first["seq"])


def test_session_history_survives_a_restart_from_the_snapshot():
    hub = make()
    a, _ = online(hub, ALICE)
    for text in ("one", "two", "three"):
        dm(hub, a, "bob", text, session_id="s-1")
    dm(hub, a, "bob", "elsewhere", session_id="s-2")
    again = make()
    again.restore(hub.snapshot_state(), [])
    a2, a2_out = online(again, ALICE)
    send(again, a2, "history", {"session_id": "s-1", "limit": 2})
    page = a2_out.last["data"]
    assert [m["text"] for m in page["messages"]] == ["two", "three"] and page["has_more"] is True


# -- the live-connection index -------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["connect", "close", "close"]),
            st.sampled_from([1, "1", 2]),  # the user id, as int or str
            st.sampled_from([1, 2]),  # the group
            st.sampled_from([None, "staff"]),  # the user type
            st.integers(0, 20),  # which open connection to close
        ),
        max_size=40,
    )
)
def test_connections_of_is_the_principals_connections_in_that_group(steps: list[Any]) -> None:
    """`Presence.connections_of` answers from its own index (`by_key`); whatever the
    sequence of connects and closes (tabs, the same user in two groups, ids as
    int and str, user types), it lists what the hub's principals hold for that
    group, in the same order."""
    hub = make()
    presence = hub.presence
    open_ids: list[str] = []
    for action, user_id, group, user_type, pick in steps:
        if action == "connect":
            conn_id, _, _ = login(hub, user(user_id, group, user_type=user_type))
            open_ids.append(conn_id)
        elif open_ids:
            hub.close(open_ids.pop(pick % len(open_ids)))
        for uid, g, utype in itertools.product(["1", "2"], ["1", "2"], ["", "staff"]):
            key = f"{g}|{utype}|{uid}"
            expected = [
                s for s in hub.presence.principals.get(("user", utype, uid), {}).values()
                if s.identity is not None and s.identity.group_key == g
            ]  # fmt: skip
            assert presence.connections_of(key) == expected, (key, steps)
    for conn_id in open_ids:
        hub.close(conn_id)
    assert presence.by_key == {}  # nothing kept for connections that are gone
