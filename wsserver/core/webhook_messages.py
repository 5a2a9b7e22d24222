"""The `message` webhook event of each direct message (SPEC 13), without I/O: one
journal line is both the message and its event.

- `stamp`: when a direct message's `msg` record is made (a `CommitLog`
  stamper, at run time only), it gets its event's id, the node that made it
  and the group id as replies echo it (`RecordEvents.message_stamp`: what
  replay, or another cluster node, could not decide the same way).
- `applied`: whenever a stamped record is applied (at run time, at replay and
  on every cluster node alike), its event joins the outbox as a `hook` event
  of its own, durable with the record (its `n`). So every replay and every
  node hold the same outbox with the same ids and seqs, whatever
  `webhooks.events` says by then.
- `made`: right after a stamped record was made (a `CommitLog` follower), the
  queue's limit is kept and, on a single node, the sender is woken once the
  record is durable.

`MessageEvents` belongs to `core.webhooks.Webhooks`, which gives it the outbox
and what it does with a new event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.stores import WebhookStore
from wsserver.core.webhook_events import RecordEvents, recipient_lane
from wsserver.core.webhook_shared import SharedOutbox

__all__ = ["MessageEvents"]


class MessageEvents:
    """Stamps direct messages' records and makes their events (see the module docstring).

    `event_id(n)` is the id of this node's `n`-th event; `add(record)` folds a
    `hook` record into the outbox; `make_room(full)` drops the oldest event
    when the queue holds `full`; `queued(lane)` has a waiting sender woken
    once the newest event of `lane` is durable (single node).
    """

    def __init__(
        self,
        record_events: RecordEvents,
        store: WebhookStore,
        commit: CommitLog,
        shared: SharedOutbox,
        env: Env,
        *,
        event_id: Callable[[int], str],
        add: Callable[[dict[str, Any]], None],
        make_room: Callable[[int], None],
        queued: Callable[[str], None],
        max_queue: int,
    ) -> None:
        self.record_events = record_events
        self.store = store
        self.commit = commit
        self.shared = shared
        self.env = env  # (its node id is known once the state is loaded: read when stamping)
        self.event_id = event_id
        self.add = add
        self.make_room = make_room
        self.queued = queued
        self.max_queue = max_queue

    def stamp(self, rec: dict[str, Any]) -> None:
        """(A `msg` record is being made, `message` events on.) Stamp it with its
        event's id (and what else the event needs that replay could not decide)."""
        if not self.record_events.is_direct(rec):
            return
        if self.commit.cluster is None:
            n = self.store.seq + 1  # the event's seq once the record is applied
        else:
            self.shared.made += 1
            n = self.shared.made
        rec["hook"] = self.record_events.message_stamp(rec, self.event_id(n), self.env.node)

    def applied(self, rec: dict[str, Any]) -> None:
        """A stamped `msg` record was applied: its `message` event joins the
        outbox, durable with the record (its `n`)."""
        made = self.record_events.message_event(rec)
        if made is None:
            return
        name, lane, data = made
        stamp = rec["hook"]
        self.add(
            {
                "t": "hook",
                "id": stamp["id"],
                "event": name,
                "time": rec["time"],
                "node": stamp["node"],
                "lane": lane,
                "data": data,
                "n": rec.get("n", 0),
            }
        )

    def made(self, rec: dict[str, Any]) -> None:
        """A `msg` record was made (and applied): when it made its event, keep the
        queue's limit and, on a single node, have the sender woken for it."""
        if "hook" in rec and not rec.get("dup"):  # it made its event (`applied`)
            if len(self.store.events) > self.max_queue:
                self.make_room(self.max_queue + 1)
            if self.commit.cluster is None:
                self.queued(recipient_lane(rec["to_key"]))
