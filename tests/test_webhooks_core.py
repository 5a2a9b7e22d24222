"""The webhook decisions without I/O (SPEC 6.2; core/webhooks.py): which events, when,
the outbox's order, retries, drops, and what a restart keeps. The hub runs on a
clock the tests move and a journal whose durability they control; the sender's
part is played by calling its commands (`WebhookStart`, `WebhookDue`, `WebhookDone`)."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes import Clock, Journal
from tests.test_hub import FakeOutlet, send, user
from wsserver.config import load_config
from wsserver.core.commands import (
    PushTask,
    Restore,
    Target,
    TaskList,
)
from wsserver.core.hub import Hub
from wsserver.core.webhook_commands import (
    WebhookBatch,
    WebhookDone,
    WebhookDoneMany,
    WebhookDue,
    WebhookPing,
    WebhookStart,
)
from wsserver.core.webhooks import FIRST_RETRY, PROBE_AFTER, backoff
from wsserver.protocol.webhook import event_body

START = 1_000.0


class Rig:
    """A hub with webhooks on, and the sender's side of the conversation."""

    def __init__(
        self, journal: Journal | None = None, clock: Clock | None = None, config: Any = None, **overrides: Any
    ) -> None:
        values: dict[str, Any] = {"webhooks.url": "http://127.0.0.1:9/hooks", "webhooks.undelivered_after": 60}
        values.update({k.replace("__", "."): v for k, v in overrides.items()})
        self.config = config or load_config(None, env={}, overrides=values)
        self.clock = clock or Clock(START)
        self.journal = journal or Journal()
        self.hub = Hub(self.config, clock=self.clock, storage=self.journal)
        self.wakes = 0
        self.outlets: dict[str, FakeOutlet] = {}
        self._n = 0

    def restarted(self) -> Rig:
        """The same journal replayed into a new hub (a kill -9 and a start)."""
        rig = Rig(self.journal, self.clock, self.config)
        rig.hub.execute(Restore(None, list(self.journal.records), 2, "node-b"))
        return rig

    def start(self) -> None:
        def wake() -> None:
            self.wakes += 1

        self.hub.execute(WebhookStart(wake))

    def connect(self, user_id: Any, **claims: Any) -> str:
        self._n += 1
        conn_id = f"c{self._n}"
        outlet = self.outlets[conn_id] = FakeOutlet()
        assert self.hub.admit(outlet, conn_id, "10.0.0.9", "agent/1") is None
        assert self.hub.authenticate(conn_id, user(user_id, **claims), f"dev-{self._n}", {"os": "x"}) is None
        return conn_id

    def due(self, limit: int = 16) -> WebhookBatch:
        return self.hub.execute(WebhookDue(limit))

    def deliver(self, ok: bool = True, limit: int = 16) -> list[dict[str, Any]]:
        """One round of the sender: every event handed out, answered `ok`; their
        bodies as the receiver reads them."""
        batch = self.due(limit)
        for d in batch.deliveries:
            self.hub.execute(WebhookDone(d.seq, d.lane, ok))
        return [json.loads(event_body(d.event)) for d in batch.deliveries]

    def drain(self) -> list[dict[str, Any]]:
        """Deliver everything deliverable now, successfully, in rounds."""
        out: list[dict[str, Any]] = []
        while True:
            got = self.deliver()
            if not got:
                return out
            out += got

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


# -- the events ---------------------------------------------------------------------------


def test_first_and_last_connection_of_a_user_make_online_and_offline_events() -> None:
    rig = Rig()
    rig.start()
    a = rig.connect(7, group_id=3, user_type=2)
    rig.connect(7, group_id=3, user_type=2)  # a second tab: no event
    rig.hub.close(a)  # one tab left: no event
    [online] = rig.drain()
    assert online["event"] == "user_online"
    assert online["data"] == {
        "user_id": 7, "user_type": 2, "group_id": 3, "username": "name-7", "conn_id": "c1",
        "device_id": "dev-1", "device_info": {"os": "x"}, "ip": "10.0.0.9", "user_agent": "agent/1",
        "connected_at": int(START * 1000),
    }  # fmt: skip
    assert online["node"] == "local" and online["time"] == int(START * 1000) and online["id"] == "local-1"
    rig.hub.close("c2")
    [offline] = rig.drain()
    assert offline["event"] == "user_offline" and offline["data"]["conn_id"] == "c2"
    assert offline["id"] != online["id"]


def test_desktop_clients_make_no_presence_events() -> None:
    rig = Rig(activation_codes=[{"code": "DESK-1", "group_id": 1}])
    rig.start()
    from wsserver.core.identity import Identity

    outlet = FakeOutlet()
    assert rig.hub.admit(outlet, "d1", "10.0.0.1", identity=Identity(activation_code="DESK-1")) is None
    rig.hub.close("d1")
    assert rig.drain() == []


def test_events_left_out_of_the_list_or_with_no_url_are_never_made() -> None:
    rig = Rig(webhooks__events=["user_offline"])
    rig.start()
    rig.hub.close(rig.connect(1))
    assert names(rig.drain()) == ["user_offline"]
    only_online = Rig(webhooks__events=["user_online"])
    only_online.start()
    only_online.hub.close(only_online.connect(1))
    assert names(only_online.drain()) == ["user_online"]
    assert only_online.hub.webhooks.store.online == {}  # nobody would ever leave it
    off = Rig(webhooks__url="")
    off.start()
    off.hub.close(off.connect(1))
    assert off.drain() == [] and off.hub.webhooks.store.events == {}


def test_a_direct_message_still_undelivered_after_the_delay_is_reported_once() -> None:
    rig = Rig(webhooks__events=["message_undelivered"])
    rig.start()
    sender = rig.connect(1, group_id=5)
    send(rig.hub, sender, "send_message", {"to_user_id": 2, "text": "are you there?", "session_id": "s1"})
    send(rig.hub, sender, "send_message", {"to_user_id": 3, "text": "read it"})
    reader = rig.connect(3, group_id=5)
    send(rig.hub, reader, "message_delivered", {"message_id": 2})  # this one arrived
    rig.advance(59)
    assert rig.drain() == []
    rig.advance(1)
    [event] = rig.drain()
    assert event["event"] == "message_undelivered"
    assert event["data"] == {
        "user_id": 2, "user_type": None, "group_id": 5, "message_id": 1, "seq": 1, "session_id": "s1",
        "from": {"user_id": 1, "user_type": None, "username": "name-1"}, "text": "are you there?",
        "message_type": "text", "sent_at": int(START * 1000), "status": "sent",
    }  # fmt: skip
    rig.advance(3600)
    assert rig.drain() == []  # never twice
    assert rig.hub.webhooks.store.checks == {}


def test_a_persisted_push_is_no_direct_message_and_is_never_reported() -> None:
    from wsserver.core.commands import Publish

    rig = Rig(webhooks__events=["message_undelivered"])
    rig.start()
    rig.hub.execute(Publish("notice", {"x": 1}, Target(user_ids=(9,)), persist=True))
    rig.advance(120)
    assert rig.drain() == []


# -- order, retries, drops ------------------------------------------------------------------


def test_a_principal_s_next_event_waits_for_its_previous_one_while_others_go_on() -> None:
    rig = Rig()
    rig.start()
    rig.hub.close(rig.connect(1))  # user 1: online, offline
    rig.connect(2)  # user 2: online
    batch = rig.due()
    assert [(d.event["event"], d.event["data"]["user_id"]) for d in batch.deliveries] == [
        ("user_online", 1),
        ("user_online", 2),
    ]
    first, second = batch.deliveries
    assert rig.due().deliveries == ()  # user 1's offline waits for its online
    rig.hub.execute(WebhookDone(first.seq, first.lane, False))  # user 1's receiver failed
    rig.hub.execute(WebhookDone(second.seq, second.lane, True))
    assert rig.due().deliveries == ()  # user 1 backs off, user 2 has nothing more
    rig.advance(FIRST_RETRY)
    [again] = rig.due().deliveries
    assert again.event == first.event and again.attempt == 2
    rig.hub.execute(WebhookDone(again.seq, again.lane, True))
    assert names(rig.drain()) == ["user_offline"]


def test_retries_back_off_exponentially_up_to_max_backoff() -> None:
    assert [backoff(n, 60) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(1000, 5) == 5
    rig = Rig(webhooks__max_backoff=3)
    rig.start()
    rig.connect(1)
    waits = []
    for _ in range(5):
        [d] = rig.due().deliveries
        rig.hub.execute(WebhookDone(d.seq, d.lane, False))
        batch = rig.due()
        assert batch.deliveries == ()
        waits.append(batch.wait)
        assert batch.wait is not None
        rig.advance(batch.wait)
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_receiver_that_keeps_failing_gets_one_probe_at_a_time_until_it_answers() -> None:
    rig = Rig(webhooks__max_backoff=8)
    rig.start()
    for uid in range(20):
        rig.connect(uid)
    assert len(rig.deliver(ok=False)) == 16  # the receiver is down: all of them fail
    probes = []
    for _ in range(4):
        batch = rig.due()
        assert batch.deliveries == () and batch.wait is not None
        rig.advance(batch.wait)
        probes.append(batch.wait)
        assert len(rig.deliver(ok=False)) == 1  # one attempt, the others wait
    assert probes == [0.5, 1.0, 2.0, 4.0]
    assert rig.hub.webhooks.schedule.streak == 16 + 4 >= PROBE_AFTER
    rig.advance(8)
    assert len(rig.deliver(ok=True)) == 1  # the probe succeeds: the receiver is back
    assert len(rig.due().deliveries) == 16  # everyone else goes again at once


def test_one_event_the_receiver_refuses_does_not_hold_back_the_others() -> None:
    rig = Rig()
    rig.start()
    refused = None
    for uid in range(40):
        rig.connect(uid)
    delivered = 0
    for _ in range(30):
        batch = rig.due()
        for d in batch.deliveries:
            ok = d.event["data"]["user_id"] != 0
            refused = refused or (None if ok else d)
            rig.hub.execute(WebhookDone(d.seq, d.lane, ok))
            delivered += ok
        rig.advance(0.5)
    assert delivered == 39 and refused is not None
    assert rig.hub.webhooks.schedule.streak < PROBE_AFTER


def test_only_durable_events_are_handed_out_and_the_sender_is_woken_for_them() -> None:
    journal = Journal()
    rig = Rig(journal)
    rig.start()
    assert rig.due().deliveries == () and rig.wakes == 0  # the sender now waits
    journal.hold = len(journal.records)
    rig.connect(1)
    assert rig.due().deliveries == ()  # not durable yet
    assert rig.wakes == 0
    journal.hold = None
    rig.hub.release()
    assert rig.wakes == 1
    assert names(rig.drain()) == ["user_online"]


def test_an_event_made_while_the_sender_asks_wakes_it_once_durable() -> None:
    journal = Journal()
    rig = Rig(journal, webhooks__events=["message_undelivered"], webhooks__undelivered_after=1)
    rig.start()
    send(rig.hub, rig.connect(1), "send_message", {"to_user_id": 2, "text": "a"})
    rig.advance(1)
    journal.hold = len(journal.records)
    batch = rig.due()  # makes the event, which is not durable yet
    assert batch.deliveries == () and batch.queued == 1 and batch.wait is not None and batch.wait > 3600
    wakes = rig.wakes
    journal.hold = None
    rig.hub.release()
    assert rig.wakes == wakes + 1
    assert names(rig.drain()) == ["message_undelivered"]


def test_events_older_than_max_age_are_dropped_and_counted() -> None:
    rig = Rig(webhooks__max_age=30)
    rig.start()
    rig.connect(1)
    rig.connect(2)
    [d1, d2] = rig.due().deliveries
    for d in (d1, d2):
        rig.hub.execute(WebhookDone(d.seq, d.lane, False))
    batch = rig.due()
    assert batch.queued == 2 and batch.wait == FIRST_RETRY
    rig.advance(30)
    batch = rig.due()
    assert batch.deliveries == () and batch.queued == 0 and batch.dropped == {"max_age": 2}
    rig.connect(3)
    assert [e["data"]["user_id"] for e in rig.drain()] == [3]


def test_a_full_queue_drops_its_oldest_event_and_counts_it() -> None:
    rig = Rig(webhooks__max_queue=3)
    rig.start()
    for uid in range(1, 6):
        rig.connect(uid)
    batch = rig.due()
    assert batch.queued == 3 and batch.dropped == {"queue_full": 2}
    assert [d.event["data"]["user_id"] for d in batch.deliveries] == [3, 4, 5]


def test_an_event_dropped_while_in_flight_lets_its_principal_go_on() -> None:
    rig = Rig(webhooks__max_queue=1)
    rig.start()
    rig.connect(1)
    [d] = rig.due().deliveries
    rig.hub.close("c1")  # user_offline pushes user_online out of the queue
    rig.hub.execute(WebhookDone(d.seq, d.lane, False))  # the answer for a dropped event
    assert names(rig.drain()) == ["user_offline"]


def test_the_sender_is_woken_when_a_new_check_falls_due_before_it_would_wake() -> None:
    rig = Rig(webhooks__events=["message_undelivered"], webhooks__undelivered_after=10)
    rig.start()
    sender = rig.connect(1)
    assert rig.due().wait is None  # nothing to wait for: sleeps until woken
    send(rig.hub, sender, "send_message", {"to_user_id": 2, "text": "a"})
    assert rig.wakes == 1
    assert rig.due().wait == 10.0
    send(rig.hub, sender, "send_message", {"to_user_id": 2, "text": "b"})
    assert rig.wakes == 1  # due later than the sleep already planned


# -- restarts -------------------------------------------------------------------------------


def test_a_restart_keeps_the_queue_and_its_order_and_forgets_what_was_in_flight() -> None:
    rig = Rig()
    rig.start()
    rig.hub.close(rig.connect(1))
    rig.connect(2)
    [d1, d2] = rig.due().deliveries
    rig.hub.execute(WebhookDone(d2.seq, d2.lane, True))  # user 2's online is acknowledged
    again = rig.restarted()  # user 1's online was in flight
    again.start()
    got = again.drain()
    of_1 = [e for e in got if e["data"]["user_id"] == 1]
    of_2 = [e for e in got if e["data"]["user_id"] == 2]
    assert names(of_1) == ["user_online", "user_offline"]
    assert of_1[0]["id"] == d1.event["id"]  # the same event, so the receiver can de-duplicate
    # the receiver was told 2 is online, and the crash took it away
    assert names(of_2) == ["user_offline"]
    assert of_2[0]["data"]["reason"] == "restart" and of_2[0]["node"] == "node-b"
    assert len(got) == 3


def test_an_undelivered_check_survives_a_restart_and_is_never_repeated_by_one() -> None:
    rig = Rig(webhooks__events=["message_undelivered"])
    rig.start()
    send(rig.hub, rig.connect(1), "send_message", {"to_user_id": 2, "text": "hello"})
    rig.advance(30)
    again = rig.restarted()  # before the deadline
    again.start()
    assert again.drain() == []
    again.advance(30)
    [event] = again.drain()
    assert event["data"]["message_id"] == 1
    third = again.restarted()  # after the event: it is not made again
    third.start()
    third.advance(600)
    assert third.drain() == []


def test_a_snapshot_holds_the_outbox_and_the_checks() -> None:
    rig = Rig(webhooks__events=["user_online", "message_undelivered"])
    rig.start()
    send(rig.hub, rig.connect(1), "send_message", {"to_user_id": 2, "text": "x"})
    state = json.loads(json.dumps(rig.hub.snapshot_state()))
    assert [e["event"] for e in state["webhooks"]["events"]] == ["user_online"]
    assert state["webhooks"]["checks"] == [[1, int(START * 1000) + 60_000]]
    hub = Hub(rig.config, clock=rig.clock, storage=Journal())
    hub.execute(Restore(state, [], 2))
    assert hub.snapshot_state()["webhooks"] == state["webhooks"]


def test_event_ids_name_their_node_and_never_repeat_after_a_restart_from_a_snapshot() -> None:
    rig = Rig()
    rig.start()
    rig.hub.close(rig.connect(1))
    assert [e["id"] for e in rig.drain()] == ["local-1", "local-2"]  # acknowledged: the outbox is empty
    state = json.loads(json.dumps(rig.hub.snapshot_state()))
    again = Rig(Journal(), rig.clock, rig.config)  # the same data directory, journal compacted away
    again.hub.execute(Restore(state, [], 2, "local"))
    again.start()
    again.connect(2)
    assert [e["id"] for e in again.drain()] == ["local-3"]


def test_a_ping_is_made_on_demand_and_never_queued() -> None:
    rig = Rig()
    ping = rig.hub.execute(WebhookPing())
    assert ping["event"] == "ping" and ping["data"] == {} and len(ping["id"]) == 32
    assert rig.hub.webhooks.store.events == {}


# -- task states (SPEC 6.1) -------------------------------------------------------------------


def test_task_states_are_kept_per_user_and_task_and_listed_latest_first_updated_last() -> None:
    rig = Rig(messages__task_state_ttl=60)

    def push(kind: str, task: str, progress: float, **target: Any) -> None:
        target.setdefault("user_ids", (1,))
        data = {"task_id": task, "task_type": "batchgo", "status": kind, "progress": progress}
        rig.hub.execute(PushTask(f"batchgo_{kind}", data, Target(**target)))

    push("start", "t1", 0)
    push("start", "t2", 0)
    push("progress", "t1", 40)
    push("progress", "t3", 10, user_ids=(2,))
    listed = rig.hub.execute(TaskList(1))
    assert [(t["task_id"], t["type"], t["data"]["progress"]) for t in listed] == [
        ("t2", "batchgo_start", 0),
        ("t1", "batchgo_progress", 40),
    ]
    push("complete", "t1", 100)
    rig.advance(59)
    assert [t["task_id"] for t in rig.hub.execute(TaskList(1))] == ["t2", "t1"]
    rig.advance(1)
    assert [t["task_id"] for t in rig.hub.execute(TaskList(1))] == ["t2"]  # TTL after completion
    again = rig.restarted()
    assert [t["task_id"] for t in again.hub.execute(TaskList(1))] == ["t2"]


def test_a_user_who_connects_gets_each_running_task_right_after_connected() -> None:
    rig = Rig()
    data = {"task_id": 5, "task_type": "siterank", "status": "running", "progress": 12.5}
    rig.hub.execute(PushTask("siterank_progress", data, Target(user_ids=("u1",))))
    rig.hub.execute(
        PushTask("siterank_progress", {**data, "task_id": 6}, Target(user_ids=("u1",), user_type=3))
    )
    outlet = FakeOutlet()
    assert rig.hub.admit(outlet, "x", "10.0.0.1") is None
    assert rig.hub.authenticate("x", user("u1")) is None
    assert [f["type"] for f in outlet.frames] == ["connected", "siterank_progress"]
    assert outlet.frames[1]["data"] == data and outlet.frames[1]["latest"] is True
    # the update narrowed to user_type 3 goes only to such connections
    typed = FakeOutlet()
    assert rig.hub.admit(typed, "y", "10.0.0.1") is None
    assert rig.hub.authenticate("y", user("u1", user_type=3)) is None
    assert [f["data"]["task_id"] for f in typed.frames[1:]] == [5, 6]


def test_a_batch_s_acknowledgements_are_one_record_and_its_failures_are_retried() -> None:
    rig = Rig()
    rig.start()
    for uid in range(4):
        rig.connect(uid)
    batch = rig.due().deliveries
    assert len(batch) == 4
    before = len(rig.journal.records)
    answers = (True, False, True, True)
    rig.hub.execute(WebhookDoneMany(batch, answers))
    acks = [r for r in rig.journal.records[before:] if r["t"] == "hook_ack"]
    assert acks == [{**acks[0], "t": "hook_ack", "seqs": [batch[0].seq, batch[2].seq, batch[3].seq]}]
    assert rig.due().deliveries == ()  # the failed one waits for its backoff
    rig.advance(FIRST_RETRY)
    [retry] = rig.due().deliveries
    assert (retry.event["id"], retry.attempt) == (batch[1].event["id"], 2)
    # a restart replays the batched acknowledgement: of the four, only the failed one is left
    again = rig.restarted()
    again.start()
    assert [e["id"] for e in again.drain() if e["event"] == "user_online"] == [batch[1].event["id"]]


def test_a_burst_of_events_registers_one_wake_up_per_durable_batch_and_wakes_for_each() -> None:
    journal = Journal()
    rig = Rig(journal)
    rig.start()
    assert rig.due().deliveries == ()  # the sender now waits
    journal.hold = len(journal.records)
    for uid in range(1, 6):  # five user_online events, none durable yet
        rig.connect(uid)
    assert len(rig.hub.commit._pending) == 1  # one wake-up stands for the five
    journal.hold = len(journal.records) - 2  # the first three become durable
    rig.hub.release()
    assert rig.wakes == 1
    assert len(rig.drain()) == 3  # the sender asks again, and waits for the rest
    journal.hold = None
    rig.hub.release()
    assert rig.wakes == 2  # woken again once the last two are durable
    assert len(rig.drain()) == 2
