"""The `message` webhook event without I/O (SPEC 13; core/webhook_events.py): one
journal line is both the direct message and its event. The `msg` record is
stamped when made (the event's id, node and the group id as replies echo it),
and the event is made from the stamped record whenever it is applied, so a
replay gives the same outbox: the same ids, seqs and order, whatever the
configuration says by then. Old journals, whose message events are `hook`
records of their own, replay as before."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import Journal
from tests.test_hub import send
from tests.test_webhooks_core import START, Rig
from wsserver.config import load_config
from wsserver.core import webhook_events
from wsserver.core.commands import Publish, Restore, Target
from wsserver.core.keys import principal_key, split_key
from wsserver.core.webhook_commands import WebhookDone
from wsserver.core.webhook_presence import lane_of
from wsserver.protocol.webhook import event_body


def body_of(event: dict[str, Any]) -> dict[str, Any]:
    """An outbox event as the receiver gets it (a `message` event is kept encoded)."""
    body: dict[str, Any] = json.loads(event_body(event))
    return body


def events_of(rig: Rig) -> list[tuple[str, str]]:
    """(event, id) of every event in the outbox, in seq order."""
    return [(e["event"], e["id"]) for e in rig.hub.webhooks.store.events.values()]


def replayed(rig: Rig, events: list[str], records: list[dict[str, Any]] | None = None) -> Rig:
    """A kill -9 and a start on the same journal (or on `records`), with `webhooks.events`
    set to `events` by then."""
    config = load_config(
        None, env={}, overrides={"webhooks.url": "http://127.0.0.1:9/hooks", "webhooks.events": events}
    )
    journal = Journal()
    journal.records = list(rig.journal.records if records is None else records)
    again = Rig(journal, rig.clock, config)
    again.hub.execute(Restore(None, list(journal.records), 2, "local"))
    return again


def test_a_direct_message_is_one_record_stamped_with_its_event() -> None:
    rig = Rig(webhooks__events=["message"])
    rig.start()
    sender = rig.connect(1, group_id=5)
    send(rig.hub, sender, "send_message", {"to_user_id": 2, "text": "hi", "session_id": "s1", "client_msg_id": "c1"})
    kinds = [r["t"] for r in rig.journal.records]
    assert "hook" not in kinds and kinds.count("msg") == 1
    [msg] = [r for r in rig.journal.records if r["t"] == "msg"]
    assert msg["hook"] == {"id": "local-1", "node": "local", "group_id": 5}
    [event] = rig.drain()
    assert event == {
        "id": "local-1", "event": "message", "time": int(START * 1000), "node": "local",
        "data": {
            "message_id": 1, "seq": 1, "session_id": "s1",
            "from": {"user_id": 1, "user_type": None, "username": "name-1"},
            "from_user_id": 1, "to_user_id": 2, "to_user_type": None, "group_id": 5,
            "text": "hi", "message_type": "text", "reply_to_message_id": None,
            "client_msg_id": "c1", "time": int(START * 1000), "status": "sent",
        },
    }  # fmt: skip
    assert rig.hub.webhooks.store.events == {}


def test_message_events_keep_their_ids_seqs_and_order_across_a_restart() -> None:
    rig = Rig(webhooks__events=["user_online", "message"])
    rig.start()
    one = rig.connect(1)  # seq 1: user 1 online
    send(rig.hub, one, "send_message", {"to_user_id": 2, "text": "a"})  # 2: message to 2
    three = rig.connect(3)  # 3: user 3 online
    send(rig.hub, one, "send_message", {"to_user_id": 3, "text": "b"})  # 4: message to 3
    send(rig.hub, three, "send_message", {"to_user_id": 2, "text": "c"})  # 5: message to 2
    before = events_of(rig)
    assert [seq for seq in rig.hub.webhooks.store.events] == [1, 2, 3, 4, 5]
    batch = rig.due()
    [to_2] = [d for d in batch.deliveries if body_of(d.event)["data"].get("text") == "a"]
    rig.hub.execute(WebhookDone(to_2.seq, to_2.lane, True))  # only the first message to 2 is acknowledged
    again = replayed(rig, ["user_online", "message"])
    assert events_of(again) == [e for e in before if e[1] != to_2.event["id"]]
    assert list(again.hub.webhooks.store.events) == [1, 3, 4, 5]
    again.start()
    got = again.drain()
    lanes: dict[str, list[str]] = {}
    for e in got:
        lanes.setdefault(str(e["data"].get("to_user_id", e["data"].get("user_id"))), []).append(e["id"])
    assert lanes == {"1": ["local-1"], "3": ["local-3", "local-4"], "2": ["local-5"]}
    # what is made after the restart takes the next seq: no id is given twice
    send(again.hub, again.connect(7), "send_message", {"to_user_id": 8, "text": "d"})
    assert [e["id"] for e in again.drain()] == ["local-6", "local-7"]


def test_a_stamped_message_s_event_is_kept_when_the_event_is_turned_off_before_the_restart() -> None:
    rig = Rig(webhooks__events=["user_online", "message"])
    rig.start()
    send(rig.hub, rig.connect(1), "send_message", {"to_user_id": 2, "text": "kept"})
    again = replayed(rig, ["user_online"])
    again.start()
    send(again.hub, again.connect(3), "send_message", {"to_user_id": 4, "text": "not reported"})
    got = again.drain()
    assert [(e["event"], e["id"]) for e in got] == [
        ("user_online", "local-1"),
        ("message", "local-2"),
        ("user_online", "local-3"),
    ]
    assert "hook" not in [r for r in again.journal.records if r["t"] == "msg"][-1]


def test_a_journal_from_before_stamps_replays_its_message_events_from_their_own_records() -> None:
    rig = Rig(webhooks__events=["user_online", "message"])
    rig.start()
    one = rig.connect(1)
    send(rig.hub, one, "send_message", {"to_user_id": 2, "text": "old"})
    send(rig.hub, one, "send_message", {"to_user_id": 2, "text": "older"})
    expected = [body_of(e) for e in rig.hub.webhooks.store.events.values()]
    # the same history as the code before stamps wrote it: a `hook` record behind each `msg`
    old: list[dict[str, Any]] = []
    for rec in rig.journal.records:
        rec = dict(rec)
        stamp = rec.pop("hook", None)
        old.append(rec)
        if stamp is not None:
            event = rig.hub.webhooks.store.events[int(stamp["id"].rsplit("-", 1)[1])]
            old.append({**{k: v for k, v in event.items() if k not in ("n", "body")}, "data": body_of(event)["data"]})
    for n, rec in enumerate(old, 1):
        rec["n"] = n
    assert [r["t"] for r in old].count("hook") == 3
    again = replayed(rig, ["user_online", "message"], old)
    again.start()
    assert again.drain() == expected


def test_a_full_queue_drops_its_oldest_when_a_message_event_joins_it() -> None:
    rig = Rig(webhooks__events=["message"], webhooks__max_queue=2)
    rig.start()
    sender = rig.connect(1)
    for to in (2, 3, 4):
        send(rig.hub, sender, "send_message", {"to_user_id": to, "text": f"to {to}"})
    batch = rig.due()
    assert batch.queued == 2 and batch.dropped == {"queue_full": 1}
    assert [body_of(d.event)["data"]["to_user_id"] for d in batch.deliveries] == [3, 4]
    # the drop is journaled behind the message that caused it: a replay agrees
    again = replayed(rig, ["message"])
    assert [body_of(e)["data"]["to_user_id"] for e in again.hub.webhooks.store.events.values()] == [3, 4]


def test_a_persisted_push_is_not_stamped_and_makes_no_message_event() -> None:
    rig = Rig(webhooks__events=["message"])
    rig.start()
    rig.hub.execute(Publish("notice", {"x": 1}, Target(user_ids=(9,)), persist=True))
    [msg] = [r for r in rig.journal.records if r["t"] == "msg"]
    assert "hook" not in msg
    assert rig.drain() == []


def test_the_sender_is_woken_once_the_message_record_is_durable() -> None:
    journal = Journal(hold=0)
    rig = Rig(journal, webhooks__events=["message"])
    rig.start()
    assert rig.due().deliveries == ()  # armed: it waits
    send(rig.hub, rig.connect(1), "send_message", {"to_user_id": 2, "text": "x"})
    assert rig.wakes == 0 and rig.due().deliveries == ()  # not durable yet
    journal.durable_upto = len(journal.records)
    rig.hub.commit.release()
    assert rig.wakes == 1
    [d] = rig.due().deliveries
    assert d.event["event"] == "message"


def test_the_stamp_is_not_part_of_the_stored_message() -> None:
    """The stored message is the message (what `history` and `sync` show, what a
    mailbox counts), and holds no container, so the GC never tracks it."""
    import gc

    rig = Rig(webhooks__events=["message"])
    send(rig.hub, rig.connect(1), "send_message", {"to_user_id": 2, "text": "x"})
    [msg] = [r for r in rig.journal.records if r["t"] == "msg"]
    assert "hook" in msg
    stored = rig.hub.direct.store.messages[1]
    assert "hook" not in stored and not gc.is_tracked(stored)


def test_the_stamp_names_the_node_the_loaded_state_says() -> None:
    """The node id is known once the state is loaded (`Restore`), after the hub
    was made: a stamp made then names it, as the event's id does."""
    rig = Rig(webhooks__events=["message"]).restarted()  # loaded as node-b
    rig.start()
    send(rig.hub, rig.connect(1, group_id=5), "send_message", {"to_user_id": 2, "text": "hi"})
    [msg] = [r for r in rig.journal.records if r["t"] == "msg"]
    assert msg["hook"]["node"] == "node-b" and msg["hook"]["id"].startswith("node-b-")
    [event] = rig.hub.webhooks.store.events.values()
    assert event["node"] == "node-b" and event["id"] == msg["hook"]["id"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12), st.text(min_size=1, max_size=12))
def test_a_recipients_lane_is_its_principal_s_lane_whatever_its_ids_hold(group: str, user_type: str, user_id: str) -> None:
    key = principal_key(group, user_type, user_id)
    assert webhook_events.recipient_lane(key) == lane_of(user_type, user_id)
    for plain in ("5||7", "5|staff|7", "|staff|x y"):  # (nothing escaped: the key's own tail)
        _, kind, uid = split_key(plain)
        assert webhook_events.recipient_lane(plain) == lane_of(kind or "", uid)


def test_message_events_kept_encoded_survive_a_snapshot_and_reach_the_receiver_alike() -> None:
    rig = Rig(webhooks__events=["user_online", "message"])
    rig.start()
    one = rig.connect(1)
    send(rig.hub, one, "send_message", {"to_user_id": 2, "text": "snap \u00e9 \U0001f600", "extra": {"k": [1, 2]}})
    send(rig.hub, one, "send_message", {"to_user_id": 3, "text": "shot"})
    expected = [body_of(e) for e in rig.hub.webhooks.store.events.values()]
    assert [e["event"] for e in expected] == ["user_online", "message", "message"]
    assert expected[1]["data"]["text"] == "snap \u00e9 \U0001f600" and expected[1]["data"]["extra"] == {"k": [1, 2]}
    state = json.loads(json.dumps(rig.hub.snapshot_state()))  # (as the snapshot file holds it)
    again = Rig(rig.journal, rig.clock, rig.config)  # (the records behind the snapshot stay durable)
    again.hub.execute(Restore(state, [], 2, "local"))
    assert again.hub.snapshot_state()["webhooks"] == state["webhooks"]
    again.start()
    assert again.drain() == expected


def test_a_message_s_extra_reaches_the_receiver_as_its_sender_gave_it() -> None:
    rig = Rig(webhooks__events=["message"])
    rig.start()
    one = rig.connect(1)
    two = rig.connect(2)
    extra = {"order": {"id": 7, "items": [1, 2.5, None, "é"]}, "flag": True}
    send(rig.hub, one, "send_message", {"to_user_id": 2, "text": "with extra", "extra": extra})
    send(rig.hub, one, "send_message", {"to_user_id": 2, "text": "without"})
    got = rig.drain()
    assert got[0]["data"]["extra"] == extra  # an object, as the recipient's new_message has it
    assert "extra" not in got[1]["data"]
    [delivered] = [f for f in rig.outlets[two].frames if f.get("type") == "new_message" and f["data"]["text"] == "with extra"]
    assert delivered["data"]["extra"] == got[0]["data"]["extra"]
