"""The cluster's shared webhook outbox without I/O (core/webhooks.py, cluster mode):
every node applies every node's `hook*` records from one log, the sender's
answers are recorded in batches (`hook_upto`), and a node that takes over
sending resumes where the recorded answers stopped."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes import Clock
from wsserver.config import load_config
from wsserver.core.cluster_broker import ClusterOutlets
from wsserver.core.cluster_commands import PresenceEdges
from wsserver.core.hub import Hub
from wsserver.core.log_commands import ApplyLog, JoinLog
from wsserver.core.webhook_commands import WebhookDone, WebhookDue, WebhookStart


class Log:
    """The shared log: every node's hand-offs in arrival order, read by each node."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def hand_off(self, rec: dict[str, Any]) -> bool:
        self.entries.append((f"{len(self.entries) + 1}-0", json.loads(json.dumps(rec))))
        return True


class Node:
    """A hub in cluster mode with webhooks on, reading `log` from its position."""

    def __init__(self, name: str, log: Log) -> None:
        config = load_config(None, env={}, overrides={"webhooks.url": "http://127.0.0.1:9/hooks"})
        outlets = ClusterOutlets(lambda route, frame: True, lambda conn_id, entry: True)
        self.hub = Hub(config, clock=Clock(1_000.0), cluster=outlets)
        self.hub.env.node = name
        self.log = log
        self.read = 0
        self.hub.execute(JoinLog(name, log.hand_off, lambda state, last_id: None))
        self.hub.execute(ApplyLog([], live=True, since="0-0"))

    def catch_up(self) -> None:
        entries = [(i, json.loads(json.dumps(r))) for i, r in self.log.entries[self.read :]]
        self.read = len(self.log.entries)
        self.hub.execute(ApplyLog(entries))

    def online(self, user_id: int, online: bool = True) -> None:
        entry = {"principal": ["user", "", str(user_id)], "user_id": user_id, "conn_id": f"c{user_id}"}
        self.hub.execute(PresenceEdges(((online, entry),)))

    def outbox(self) -> list[tuple[int, str, str]]:
        store = self.hub.webhooks.store
        return [(seq, e["event"], e["id"]) for seq, e in store.events.items()]


def test_every_node_holds_the_same_outbox_and_one_answer_record_per_round() -> None:
    log = Log()
    a, b = Node("a", log), Node("b", log)
    a.online(1)
    b.online(2)
    a.online(1, online=False)
    for node in (a, b):
        node.catch_up()
    assert a.outbox() == b.outbox()
    assert [(seq, name) for seq, name, _ in a.outbox()] == [(1, "user_online"), (2, "user_online"), (3, "user_offline")]
    b.hub.execute(WebhookStart(lambda: None))  # b sends
    batch = b.hub.execute(WebhookDue(16))
    assert [d.seq for d in batch.deliveries] == [1, 2]
    before = len(log.entries)
    for d in batch.deliveries:
        b.hub.execute(WebhookDone(d.seq, d.lane, True))
    [upto] = [r for _, r in log.entries[before:]]
    assert upto == {"t": "hook_upto", "lanes": {"|1": 1, "|2": 2}, "o": upto["o"]}
    # user 1's next event goes out before the answers' record is back
    assert [d.seq for d in b.hub.execute(WebhookDue(16)).deliveries] == [3]
    for node in (a, b):
        node.catch_up()
    assert [seq for seq, _, _ in a.outbox()] == [3] == [seq for seq, _, _ in b.outbox()]


def test_a_node_that_takes_over_sends_what_was_not_acknowledged_with_its_ids() -> None:
    log = Log()
    a, b = Node("a", log), Node("b", log)
    a.online(1)
    a.online(1, online=False)
    a.online(1)
    for node in (a, b):
        node.catch_up()
    ids = [mid for _, _, mid in a.outbox()]
    a.hub.execute(WebhookStart(lambda: None))
    [first] = a.hub.execute(WebhookDue(16)).deliveries
    a.hub.execute(WebhookDone(first.seq, first.lane, True))  # recorded
    [second] = a.hub.execute(WebhookDue(16)).deliveries
    a.hub.execute(WebhookDone(second.seq, second.lane, True))  # answered, a is killed before the record
    del log.entries[-1]
    b.catch_up()
    b.hub.execute(WebhookStart(lambda: None))
    sent = []
    while True:
        batch = b.hub.execute(WebhookDue(16))
        if not batch.deliveries:
            break
        for d in batch.deliveries:
            sent.append(d.event["id"])
            b.hub.execute(WebhookDone(d.seq, d.lane, True))
        b.catch_up()
    assert sent == ids[1:]  # the second again (at least once), then the third
