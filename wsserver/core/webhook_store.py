"""The webhook outbox's durable state, without I/O: the events waiting for a 2xx,
the undelivered-message checks still to run, and who was announced online.

`MemoryWebhookStore` keeps it in this process, journaled and snapshotted
through the hub's commit log; it implements `core.stores.WebhookStore`, what
the webhooks component (`core.webhooks`) asks of its store. A cluster node
keeps the same store, its records shared through the cluster's log (in
Redis), so every node holds the same state.

Records (each applied when appended and again at replay):

    hook       an event: {seq, id, event, time, node, lane, data[, check]}; a
               `message` event, made from its `msg` record when that is applied
               (`core.webhook_messages`), holds its encoded `body` instead of
               `data` (text in the snapshot)
    hook_ack   the receiver answered 2xx: {seq}, or {seqs} for several at once
    hook_upto  (cluster mode) the receiver answered 2xx to each lane's events
               up to a seq: {lanes: {lane: seq}}, several answers in one record
    hook_drop  events given up: {seqs, reason} ("max_age", "queue_full")
    hook_skip  undelivered checks that found no message to report: {mids}

and, folded in as they pass (`observe`), the direct messages' own records:
a `msg` record of a direct message starts its undelivered check (when the
event is enabled), a `status` record `delivered` or `read` ends it.

Invariants:

- `events` holds every event not yet acknowledged or dropped, in `seq` order,
  which is the order they were made in; `lanes[lane]` holds the seqs of one
  lane (a principal) in the same order, and a lane with no event is absent.
- `seq` only grows (it is derived from the records), so an event's place
  survives restarts. A cluster node's `hook` record comes without one: it is
  decided when the record is applied (the next one), the same on every node.
- `checks` maps a direct message's id to the time (ms) its check is due, in
  message-id order; a check ends with its message's `delivered`/`read`
  record, with the `hook` record of its event (`check`), or a `hook_skip`.
  So a restart neither loses a check nor runs one twice.
- `online` maps a lane to the data of its last `user_online` event while no
  `user_offline` event followed it: the principals the receiver believes
  online.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, MutableSequence
from typing import Any

__all__ = ["MemoryWebhookStore"]

_DONE = frozenset(("delivered", "read"))

LONG_LANE = 32
"""Seqs from which a lane keeps them in a deque (taking the oldest off a list
moves all the others)."""


class MemoryWebhookStore:
    """The outbox, the undelivered checks and the online set, in memory.

    `undelivered_after_ms` is the delay of the undelivered check, or None when
    `message_undelivered` is off (no checks are started then). `track_online`:
    keep the online set (only worth it while `user_offline` is on: else it
    would only grow).
    """

    record_types: tuple[str, ...] = ("hook", "hook_ack", "hook_drop", "hook_skip", "hook_upto")
    observed_types: tuple[str, ...] = ("msg", "status")

    def __init__(self, undelivered_after_ms: int | None = None, track_online: bool = True) -> None:
        self.undelivered_after_ms = undelivered_after_ms
        self.track_online = track_online
        self.seq = 0
        self.events: dict[int, dict[str, Any]] = {}
        # a lane's seqs: a list while short (most lanes hold one event at a time, and
        # a list of one is far smaller than a deque), a deque from `LONG_LANE` on
        self.lanes: dict[str, MutableSequence[int]] = {}
        self.checks: dict[int, int] = {}
        self.online: dict[str, dict[str, Any]] = {}

    # -- reading -------------------------------------------------------------------

    def head(self, lane: str) -> dict[str, Any] | None:
        """The oldest event of `lane`, or None when it has none."""
        seqs = self.lanes.get(lane)
        return self.events[seqs[0]] if seqs else None

    def __len__(self) -> int:
        return len(self.events)

    # -- the only mutations --------------------------------------------------------

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold one of the outbox's own records into the state."""
        kind = rec["t"]
        if kind == "hook":
            seq = rec.get("seq")
            if seq is None:  # a cluster's event: its place is decided now
                seq = rec["seq"] = self.seq + 1
            self.events[seq] = rec
            if seq > self.seq:
                self.seq = seq
            lane = rec["lane"]
            seqs = self.lanes.get(lane)
            if seqs is None:
                self.lanes[lane] = [seq]
            else:
                if len(seqs) >= LONG_LANE and type(seqs) is list:
                    seqs = self.lanes[lane] = deque(seqs)
                seqs.append(seq)
            check = rec.get("check")
            if check is not None:
                self.checks.pop(check, None)
            name = rec["event"]
            if name == "user_online":
                if self.track_online:
                    self.online[lane] = rec["data"]
            elif name == "user_offline":
                self.online.pop(lane, None)
        elif kind == "hook_ack":
            self._remove(rec["seqs"] if "seqs" in rec else (rec["seq"],))
        elif kind == "hook_drop":
            self._remove(rec["seqs"])
        elif kind == "hook_upto":
            for lane, upto in rec["lanes"].items():
                seqs = self.lanes.get(lane)
                while seqs and seqs[0] <= upto:
                    self.events.pop(seqs[0], None)
                    del seqs[0]
                if seqs is not None and not seqs:
                    del self.lanes[lane]
        elif kind == "hook_skip":
            for mid in rec["mids"]:
                self.checks.pop(mid, None)
        else:
            raise ValueError(f"unknown record type {kind!r}")

    def observe(self, rec: dict[str, Any]) -> None:
        """Fold a direct-message record (`msg`, `status`) into the checks."""
        if rec["t"] == "msg":
            after = self.undelivered_after_ms
            # a direct message (not a persisted push, not a cluster's repeat) starts its check
            if after is not None and rec.get("push") is None and not rec.get("dup"):
                self.checks[rec["id"]] = rec["time"] + after
        elif rec["status"] in _DONE:
            self.checks.pop(rec["id"], None)

    def _remove(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            event = self.events.pop(seq, None)
            if event is None:
                continue
            lane = event["lane"]
            lane_seqs = self.lanes[lane]
            if lane_seqs[0] == seq:
                del lane_seqs[0]  # (a deque's popleft; a list's is short)
            else:
                lane_seqs.remove(seq)
            if not lane_seqs:
                del self.lanes[lane]

    # -- snapshot ------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy of the state."""
        return {
            "seq": self.seq,
            "events": [_snapshot_event(e) for e in self.events.values()],
            "checks": [[mid, due] for mid, due in self.checks.items()],
            "online": {lane: dict(data) for lane, data in self.online.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's (lanes are derived from the events)."""
        self.seq = state["seq"]
        self.events = {}
        self.lanes = {}
        lanes: dict[str, deque[int]] = {}
        for event in state["events"]:
            if "body" in event:  # (kept encoded: `_snapshot_event`)
                event = {**event, "body": event["body"].encode("utf-8")}
            self.events[event["seq"]] = event
            lanes.setdefault(event["lane"], deque()).append(event["seq"])
        self.lanes = {lane: list(seqs) if len(seqs) < LONG_LANE else seqs for lane, seqs in lanes.items()}
        # checks of an event since turned off are not kept
        self.checks = {} if self.undelivered_after_ms is None else {mid: due for mid, due in state["checks"]}
        self.online = dict(state["online"]) if self.track_online else {}


def _snapshot_event(event: dict[str, Any]) -> dict[str, Any]:
    """A detached copy of an event for the snapshot: a body kept encoded (a
    `message` event's) as its text."""
    copy = dict(event)
    body = copy.get("body")
    if body is not None:
        copy["body"] = body.decode("utf-8")
    return copy
