"""The commit log of a cluster node, without I/O (`core.replicated`): records go to
the shared log, values that depend on the state are decided when applied, the
origin hears them from its callback, announcements wait for their records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.test_direct import data_of, dm, login, make, online, texts
from tests.test_hub import user
from wsserver.core.commit import CommitLog
from wsserver.core.crm_store import MemoryCrmStore
from wsserver.core.log_commands import ApplyLog, JoinLog
from wsserver.core.message_store import MemoryMessageStore
from wsserver.core.replicated import REFUSED, Replicated
from wsserver.errors import ErrorCode, ProtocolError


class Messages:
    """The message store as a durable part (what `core.direct` registers)."""

    record_types = ("msg", "status", "box", "drop", "trunc_seen")

    def __init__(self, store: MemoryMessageStore) -> None:
        self.apply = store.apply
        self.to_state = store.to_state
        self.load_state = store.load_state


class Node:
    """A CommitLog in cluster mode over a message store, its hand-offs kept in `sent`."""

    def __init__(self, origin: str, accept: bool = True) -> None:
        self.sent: list[dict[str, Any]] = []
        self.accept = accept
        self.store = MemoryMessageStore()
        self.commit = CommitLog()
        self.commit.register("messages", Messages(self.store))
        self.commit.clustered(Replicated(origin, self._hand_off), lambda state, last_id: None)
        cluster = self.commit.cluster
        assert cluster is not None
        cluster.live = True

    def _hand_off(self, rec: dict[str, Any]) -> bool:
        if self.accept:
            self.sent.append(rec)
        return self.accept


def msg(sender: str, to: str, cmid: str | None = None, time: int = 1000) -> dict[str, Any]:
    return {"t": "msg", "from_key": sender, "to_key": to, "from": {"user_id": sender}, "to": {"user_id": to},
            "text": "x", "cmid": cmid, "time": time, "boxed": False}  # fmt: skip


def log_of(*nodes: Node) -> list[tuple[str, dict[str, Any]]]:
    """What the shared log holds: each node's hand-offs, in turn (as Redis would
    order concurrent XADDs), each a copy (every node decodes its own)."""
    entries = []
    for node in nodes:
        for rec in node.sent:
            entries.append((f"{len(entries) + 1}-0", {**rec, "o": list(rec["o"])}))
    return entries


def test_two_nodes_applying_the_same_log_decide_the_same_ids_seqs_and_duplicates() -> None:
    a, b = Node("a"), Node("b")
    heard: dict[str, list[Any]] = {"a": [], "b": []}
    a.commit.record(msg("u1", "u2", "c1"), heard["a"].append, "conn-a")
    b.commit.record(msg("u3", "u2"), heard["b"].append, "conn-b")
    b.commit.record(msg("u1", "u2", "c1"), heard["b"].append, "conn-b2")  # the same cmid, concurrently
    entries = log_of(a, b)
    a.commit.apply_log([(i, dict(r)) for i, r in entries])
    b.commit.apply_log([(i, dict(r)) for i, r in entries])
    assert a.store.to_state() == b.store.to_state()
    assert [(m["id"], m["seq"]) for m in heard["b"]] == [(2, 2), (1, 1)]
    assert heard["b"][1]["duplicate"] is True
    assert heard["a"][0]["id"] == 1 and "duplicate" not in heard["a"][0]
    assert "o" not in a.store.messages[1]  # the origin is never stored


def test_an_announcement_waits_until_the_nodes_own_records_came_back() -> None:
    a = Node("a")
    said: list[str] = []
    a.commit.after_commit(lambda: said.append("nothing in flight: at once"))
    a.commit.record(msg("u1", "u2"))
    a.commit.after_commit(lambda: said.append("after the record"))
    assert said == ["nothing in flight: at once"]
    a.commit.apply_log(log_of(a))
    assert said == ["nothing in flight: at once", "after the record"]


def test_a_record_the_log_cannot_take_is_refused_at_once_and_stores_nothing() -> None:
    a = Node("a", accept=False)
    with pytest.raises(ProtocolError) as err:
        a.commit.record(msg("u1", "u2"))
    assert err.value.code == ErrorCode.UNAVAILABLE
    assert a.store.messages == {}


def test_a_record_the_log_lost_tells_its_sender_and_frees_what_waited() -> None:
    a = Node("a")
    heard: list[Any] = []
    said: list[str] = []
    a.commit.record(msg("u1", "u2"), heard.append)
    a.commit.after_commit(lambda: said.append("released"))
    a.commit.log_failed([1])
    assert heard == [REFUSED] and said == ["released"]


def test_a_single_node_record_keeps_the_values_its_sender_computed() -> None:
    store = MemoryMessageStore()
    commit = CommitLog()
    commit.register("messages", Messages(store))
    heard: list[Any] = []
    commit.record({**msg("u1", "u2"), "id": 5, "seq": 9}, heard.append)
    assert (heard[0]["id"], heard[0]["seq"]) == (5, 9)
    assert commit.last_n == 1


class ClusterHub:
    """A whole hub in cluster mode (no I/O): its hand-offs kept, fed back as the log."""

    def __init__(self) -> None:
        self.hub = make()
        self.sent: list[dict[str, Any]] = []
        self.hub.execute(JoinLog("node-1", self._hand_off, lambda state, last_id: None))
        self.hub.execute(ApplyLog([], live=True, since="0-0"))
        self.n = 0

    def _hand_off(self, rec: dict[str, Any]) -> bool:
        self.sent.append(rec)
        return True

    def log_comes_back(self) -> None:
        entries = []
        for rec in self.sent:
            self.n += 1
            entries.append((f"{self.n}-0", json.loads(json.dumps(rec))))  # as Redis hands it back
        self.sent.clear()
        self.hub.execute(ApplyLog(entries))


def test_a_cluster_message_is_announced_when_the_log_applies_it_with_the_values_it_decided() -> None:
    node = ClusterHub()
    a, alice = online(node.hub, user(1))
    _, bob = online(node.hub, user(2))
    dm(node.hub, a, 2, "hi", rid=5)
    assert alice.take() == [] and bob.take() == []  # nothing before the log has it
    node.log_comes_back()
    assert [(d["message_id"], d["seq"]) for d in data_of(alice, "message_sent")] == [(1, 1)]
    assert texts(bob) == ["hi"]


def test_a_recipient_gone_before_the_log_applied_its_message_finds_it_in_the_mailbox() -> None:
    node = ClusterHub()
    a, _ = online(node.hub, user(1))
    b, _ = online(node.hub, user(2))
    dm(node.hub, a, 2, "while you left")  # the recipient is here: not for the mailbox
    node.hub.close(b)
    node.log_comes_back()  # applied: nobody of the recipient's reached
    node.log_comes_back()  # the "box" record the sending node made then
    _, _, pushed = login(node.hub, user(2))
    assert [f["data"]["text"] for f in pushed if f["type"] == "new_message"] == ["while you left"]


def test_crm_ids_of_records_made_concurrently_on_two_nodes_are_decided_by_the_log_order() -> None:
    store = MemoryCrmStore()
    first = {"t": "crm_customer", "g": "7", "customer_id": "c1", "fields": {"name": "Zed"}}
    second = {"t": "crm_customer", "g": "7", "customer_id": "c1", "fields": {"phone": "1"}}  # the same, elsewhere
    other = {"t": "crm_customer", "g": "7", "customer_id": "c2", "fields": {}}
    assert [store.apply(r) for r in (first, second, other)] == [
        {"customer_db_id": 1}, {"customer_db_id": 1}, {"customer_db_id": 2}
    ]
    assert store.customer("7", "c1") == {"customer_db_id": 1, "name": "Zed", "phone": "1"}
    ups = [store.apply({"t": "crm_follow_up", "g": "7", "customer_id": "c1", "fields": {}}) for _ in range(2)]
    assert ups == [{"follow_up_id": 1}, {"follow_up_id": 2}]
    accounts = {"t": "crm_accounts", "g": "7", "by": "X", "accounts": [{"line_account_id": "a1"}], "time": 1}
    assert [store.apply(dict(accounts)) for _ in range(2)] == [{"created": 1}, {"created": 0}]
