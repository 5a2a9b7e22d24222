"""Property tests: the direct-message state is event-sourced, so replaying the
journal (from nothing, or from any snapshot on) rebuilds exactly the state the
running hub had (SPEC 7), and the store's invariants hold after every step.

Random runs mix connects and disconnects of a few users in two groups, messages
with and without (repeated) `client_msg_id`s, receipts by the right and the
wrong user, history and sync requests, and clock jumps across the dedup window
and the mailbox TTL. Limits are tiny so the truncation paths run.

The journal keeps each record as storage would hand it back: a JSON round trip
carrying its number `"n"`. Snapshots are JSON round trips too.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import Clock, Journal
from tests.test_hub import NOW, FakeOutlet, send, user
from wsserver.config import load_config
from wsserver.core.hub import Hub
from wsserver.core.identity import Identity
from wsserver.core.message_store import MemoryMessageStore, RetentionPolicy

DEDUP_S = 10
TTL_S = 30
MAILBOX_LIMIT = 2
HISTORY_LIMIT = 2

CONFIG = load_config(
    None,
    env={},
    overrides={
        "messages.dedup_window": DEDUP_S,
        "messages.mailbox_ttl": TTL_S,
        "messages.mailbox_limit": MAILBOX_LIMIT,
        "messages.history_limit": HISTORY_LIMIT,
    },
)

# a and b exist in both groups; c only in group 1 (so group 2's mail for c
# never drains); "root" is an admin of group 1 who may write to group 2; d
# never sends, it only connects now and then, so its mailbox fills up.
PRINCIPALS: list[Identity] = [
    user("a", 1),
    user("b", 1),
    user("c", 1),
    user("a", 2),
    user("b", 2),
    user("root", 1, role="admin"),
    user("d", 1),
]
SENDERS = len(PRINCIPALS) - 1
TARGETS = ["a", "b", "c", "d", "d"]
CMIDS = ["k1", "k2", "k3"]

_conns = itertools.count(1)


principal_i = st.integers(0, len(PRINCIPALS) - 1)
sender_i = st.integers(0, SENDERS - 1)

SEND = st.tuples(
    st.just("send"),
    sender_i,
    st.sampled_from(TARGETS),
    st.one_of(st.none(), st.sampled_from(CMIDS)),
    st.booleans(),  # name group 2 (only the admin may)
)
RECEIPT = st.tuples(
    st.just("receipt"),
    st.integers(0, 50),  # which message, among those sent so far
    st.sampled_from(["delivered", "read"]),
    st.booleans(),  # by its recipient, or by someone picked at random
)
CONNECTION = st.tuples(st.sampled_from(["connect", "disconnect"]), principal_i)

# sends, receipts and (dis)connects dominate; the rest come now and then
OPS = st.one_of(
    SEND,
    SEND,
    SEND,
    RECEIPT,
    CONNECTION,
    CONNECTION,
    st.tuples(st.just("history"), sender_i, st.sampled_from(TARGETS), st.integers(1, 5)),
    st.tuples(st.just("sync"), principal_i, st.integers(0, 6)),
    st.tuples(st.just("advance"), st.sampled_from([1, DEDUP_S + 1, TTL_S + 1])),
    st.tuples(st.just("snapshot")),
)


class Run:
    """One hub driven by a list of operations, checking invariants as it goes."""

    def __init__(self) -> None:
        self.clock = Clock(NOW)
        self.journal = Journal()
        self.hub = Hub(CONFIG, clock=self.clock, storage=self.journal)
        self.conns: dict[int, list[tuple[str, FakeOutlet]]] = {
            i: [] for i in range(len(PRINCIPALS))
        }
        self.snapshots: list[tuple[dict[str, Any], int]] = []
        self.seen_msgs = 0  # msg records checked so far
        self.max_seq: dict[str, int] = {}  # recipient key -> highest seq ever assigned
        self.max_id = 0

    # -- driving ---------------------------------------------------------------

    def connect(self, p: int) -> str:
        outlet = FakeOutlet()
        conn_id = f"r{next(_conns)}"
        assert self.hub.admit(outlet, conn_id, "10.0.0.1") is None
        assert self.hub.authenticate(conn_id, PRINCIPALS[p]) is None
        self.conns[p].append((conn_id, outlet))
        return conn_id

    def conn_of(self, p: int) -> str:
        if not self.conns[p]:
            return self.connect(p)
        return self.conns[p][0][0]

    def do(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        hub = self.hub
        if kind == "connect":
            if len(self.conns[op[1]]) < 2:
                self.connect(op[1])
        elif kind == "disconnect":
            if self.conns[op[1]]:
                conn_id, _ = self.conns[op[1]].pop()
                hub.close(conn_id)
        elif kind == "send":
            _, p, to, cmid, other_group = op
            data: dict[str, Any] = {"to_user_id": to, "message": f"m{len(self.journal.records)}"}
            if cmid is not None:
                data["client_msg_id"] = cmid
            if other_group:
                data["to_group_id"] = 2
            send(hub, self.conn_of(p), "send_message", data)
        elif kind == "receipt":
            _, pick, status, right_user = op
            ids = [r["id"] for r in self.journal.records if r["t"] == "msg"]
            if not ids:
                return
            mid = ids[pick % len(ids)]
            p = self.recipient_of(mid) if right_user else pick % len(PRINCIPALS)
            if p is None:
                return
            send(hub, self.conn_of(p), f"message_{status}", {"message_id": mid})
        elif kind == "history":
            _, p, other, limit = op
            send(hub, self.conn_of(p), "history", {"with_user_id": other, "limit": limit})
        elif kind == "sync":
            send(hub, self.conn_of(op[1]), "sync", {"last_seq": op[2]})
        elif kind == "advance":
            self.clock.t += op[1]
        elif kind == "snapshot":
            state = json.loads(json.dumps(hub.snapshot_state()))
            self.snapshots.append((state, len(self.journal.records)))
        for _, outlet in itertools.chain.from_iterable(self.conns.values()):
            errors = [f for f in outlet.take() if f["type"] == "error"]
            assert all(e["data"]["code"] != "internal" for e in errors), errors

    def recipient_of(self, mid: int) -> int | None:
        for r in self.journal.records:
            if r["t"] == "msg" and r["id"] == mid:
                for i, ident in enumerate(PRINCIPALS):
                    key = f"{ident.group_key}||{ident.user_id}"
                    if key == r["to_key"]:
                        return i
        return None

    # -- checking --------------------------------------------------------------

    def check_invariants(self) -> None:
        store = self.hub.direct.store
        # records appended since the last step: ids and seqs step by one
        msgs = [r for r in self.journal.records if r["t"] == "msg"]
        for r in msgs[self.seen_msgs :]:
            assert r["id"] == self.max_id + 1, r
            self.max_id = r["id"]
            assert r["seq"] == self.max_seq.get(r["to_key"], 0) + 1, r
            self.max_seq[r["to_key"]] = r["seq"]
        self.seen_msgs = len(msgs)

        assert store.next_id == self.max_id + 1
        assert all(mid < store.next_id for mid in store.messages)
        # seq per recipient is the max seq it was ever sent (never goes back)
        assert store.seq == self.max_seq
        for mid, m in store.messages.items():
            assert m["id"] == mid
            assert m["seq"] <= store.seq[m["to_key"]]
        for key, box in store.mailbox.items():
            assert box, f"empty mailbox kept for {key}"
            assert len(box) <= MAILBOX_LIMIT
            for mid in box:
                assert mid in store.messages, (key, mid)
                assert store.messages[mid]["to_key"] == key
                assert store.messages[mid]["status"] == "sent"
            seqs = [store.messages[mid]["seq"] for mid in box]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), (key, seqs)
        for conv, ids in store.conversations.items():
            assert len(ids) <= HISTORY_LIMIT
            assert ids == sorted(ids), conv
            assert all(mid in store.messages for mid in ids), conv
        assert all(n > 0 for n in store.truncated.values())
        assert self.hub.last_n == len(self.journal.records)

    def check_replay(self) -> None:
        want = self.hub.direct.store.to_state()
        records = self.journal.records
        starts: list[tuple[dict[str, Any] | None, int]] = [(None, 0), *self.snapshots]
        for state, upto in starts:
            fresh = Hub(CONFIG, clock=Clock(NOW))
            fresh.restore(state, json.loads(json.dumps(records[upto:])))
            assert fresh.direct.store.to_state() == want, f"replay from record {upto}"
            assert fresh.last_n == self.hub.last_n


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(OPS, min_size=30, max_size=100))
def test_replay_of_snapshot_and_journal_rebuilds_the_same_state(ops: list[tuple[Any, ...]]):
    run = Run()
    for op in ops:
        run.do(op)
        run.check_invariants()
    run.check_replay()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, min_size=5, max_size=50), st.lists(OPS, min_size=5, max_size=50))
def test_a_restored_hub_goes_on_exactly_like_the_original(
    before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]
):
    """Restart in the middle: the restored hub, fed the same requests, writes the
    same records and ends in the same state as the hub that never stopped."""
    run = Run()
    for op in before:
        run.do(op)
    # the restart: every connection drops, then the same clients come back to both hubs
    counts = {p: len(conns) for p, conns in run.conns.items()}
    for conns in run.conns.values():
        for conn_id, _ in conns:
            run.hub.close(conn_id)
        conns.clear()
    state = json.loads(json.dumps(run.hub.snapshot_state()))
    upto = len(run.journal.records)

    restarted = Run()
    restarted.clock.t = run.clock.t
    restarted.journal.records = json.loads(json.dumps(run.journal.records))
    restarted.hub.restore(state, [])
    for p, n in counts.items():
        for _ in range(n):
            run.connect(p)
            restarted.connect(p)
    pushed = [
        [f for _, o in r.conns[p] for f in o.take() if f["type"] != "connected"]
        for r in (run, restarted)
        for p in counts
    ]
    assert pushed[: len(counts)] == pushed[len(counts) :]
    for op in after:
        run.do(op)
        restarted.do(op)
    new_original = [{k: v for k, v in r.items() if k != "n"} for r in run.journal.records[upto:]]
    new_restarted = [
        {k: v for k, v in r.items() if k != "n"} for r in restarted.journal.records[upto:]
    ]
    assert new_restarted == new_original
    assert restarted.hub.direct.store.to_state() == run.hub.direct.store.to_state()


def test_replayed_status_records_never_move_a_message_back():
    """`apply()` alone keeps statuses monotonic, whatever order receipts were journaled in."""
    store = MemoryMessageStore(RetentionPolicy())
    store.apply(
        {
            "t": "msg",
            "n": 1,
            "id": 1,
            "seq": 1,
            "from_key": "1||a",
            "to_key": "1||b",
            "from": {"user_id": "a", "user_type": None, "username": "a"},
            "to": {"user_id": "b", "user_type": None, "group_id": "1"},
            "text": "hi",
            "time": 1,
            "boxed": True,
        }
    )
    store.apply({"t": "status", "n": 2, "id": 1, "status": "read", "time": 2})
    store.apply({"t": "status", "n": 3, "id": 1, "status": "delivered", "time": 3})
    store.apply({"t": "status", "n": 4, "id": 1, "status": "sent", "time": 4})
    assert store.messages[1]["status"] == "read"
    assert "delivered_at" not in store.messages[1]
    assert store.mailbox == {}
