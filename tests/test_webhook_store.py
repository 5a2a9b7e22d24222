"""The outbox's lanes (`core.webhook_store`): short ones are lists, long ones deques,
and either way each lane holds exactly its events in order, whatever removes them."""

from __future__ import annotations

from collections import deque
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wsserver.core.webhook_store import LONG_LANE, MemoryWebhookStore

LANES = ("|1", "|2", "|3")

# an operation: ("hook", lane, n) makes n events; ("ack" | "drop", k) removes the k-th
# event still queued (modulo their number); ("upto", lane, k) acknowledges a lane's
# events up to its k-th
ops = st.lists(
    st.one_of(
        st.tuples(st.just("hook"), st.sampled_from(LANES), st.integers(1, 2 * LONG_LANE)),
        st.tuples(st.sampled_from(("ack", "drop")), st.integers(0, 200)),
        st.tuples(st.just("upto"), st.sampled_from(LANES), st.integers(0, 80)),
        st.tuples(st.just("snapshot")),
    ),
    max_size=100,
)


def hook(lane: str) -> dict[str, Any]:
    return {"t": "hook", "id": "x", "event": "message", "time": 0, "node": "x", "lane": lane, "data": {}}


def check(store: MemoryWebhookStore, model: dict[str, list[int]]) -> None:
    assert {lane: list(seqs) for lane, seqs in store.lanes.items()} == model
    assert sorted(store.events) == sorted(seq for seqs in model.values() for seq in seqs)
    for lane in LANES:
        head = store.head(lane)
        assert (head["seq"] if head else None) == (model[lane][0] if lane in model else None)
    for seqs in store.lanes.values():  # a long lane is a deque (a short one may be either)
        assert type(seqs) in (list, deque)
        assert len(seqs) <= LONG_LANE or type(seqs) is deque


@settings(max_examples=200, deadline=None)
@given(ops)
def test_lanes_hold_their_events_in_order_through_any_removals(operations: list[tuple[Any, ...]]) -> None:
    store = MemoryWebhookStore()
    model: dict[str, list[int]] = {}
    for op in operations:
        queued = sorted(seq for seqs in model.values() for seq in seqs)
        if op[0] == "hook":
            for _ in range(op[2]):
                store.apply(hook(op[1]))
                model.setdefault(op[1], []).append(store.seq)
        elif op[0] in ("ack", "drop") and queued:
            seq = queued[op[1] % len(queued)]
            store.apply({"t": "hook_ack", "seq": seq} if op[0] == "ack" else {"t": "hook_drop", "seqs": [seq], "reason": "x"})
            for lane, seqs in list(model.items()):
                if seq in seqs:
                    seqs.remove(seq)
                    if not seqs:
                        del model[lane]
        elif op[0] == "upto" and op[1] in model:
            seqs = model[op[1]]
            upto = seqs[min(op[2], len(seqs) - 1)]
            store.apply({"t": "hook_upto", "lanes": {op[1]: upto}})
            model[op[1]] = [seq for seq in seqs if seq > upto]
            if not model[op[1]]:
                del model[op[1]]
        elif op[0] == "snapshot":
            state = store.to_state()
            store = MemoryWebhookStore()
            store.load_state(state)
        check(store, model)


def test_a_lane_becomes_a_deque_when_long_and_drains_from_its_head() -> None:
    store = MemoryWebhookStore()
    for _ in range(LONG_LANE + 5):
        store.apply(hook("|1"))
    store.apply(hook("|2"))
    assert type(store.lanes["|1"]) is deque
    assert type(store.lanes["|2"]) is list
    for seq in range(1, LONG_LANE + 6):
        assert store.head("|1") == store.events[seq]
        store.apply({"t": "hook_ack", "seq": seq})
    assert "|1" not in store.lanes
    assert list(store.lanes["|2"]) == [LONG_LANE + 6]
