"""The `message` webhook event of each direct message (SPEC 13), without I/O: one
journal line is both the message and its event.

- `stamp`: when a direct message's `msg` record is made (a `CommitLog`
  stamper, at run time only), it gets its event's id, the node that made it
  and the group id as replies echo it (which depends on who is connected):
  what replay, or another cluster node, could not decide the same way. Only
  a direct message is stamped, not a backend's push kept for an offline user.
- `applied`: whenever a stamped record is applied (at run time, at replay and
  on every cluster node alike), its event, made from the record (its ids,
  parties and text), joins the outbox as a `hook` event of its own, durable
  with the record (its `n`), in the recipient's lane (`recipient_lane`). So
  every replay and every node hold the same outbox with the same ids and
  seqs, whatever `webhooks.events` says by then. A record without a stamp
  (the event was off, or a journal written before stamps, whose events are
  `hook` records of their own) makes none, nor a cluster's repeat of a
  `client_msg_id` (`dup`).
- `made`: right after a stamped record was made (a `CommitLog` follower), the
  queue's limit is kept and, on a single node, the sender is woken once the
  record is durable.

Each step runs once per direct message: written for few calls and objects.

`MessageEvents` belongs to `core.webhooks.Webhooks`, which gives it the outbox
and what it does with a new event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.keys import SYSTEM
from wsserver.core.stored_messages import extra_value
from wsserver.core.stores import WebhookStore
from wsserver.core.webhook_events import recipient_lane
from wsserver.core.webhook_shared import SharedOutbox
from wsserver.protocol.webhook import event_body

__all__ = ["MessageEvents"]


class MessageEvents:
    """Stamps direct messages' records and makes their events (see the module docstring).

    `group_id(key, None)` is a group's id as replies echo it; `event_id(n)` is
    the id of this node's `n`-th event; `add(record)` folds a `hook` record
    into the outbox; `make_room(full)` drops the oldest event when the queue
    holds `full`; `queued(lane)` has a waiting sender woken once the newest
    event of `lane` is durable (single node).
    """

    def __init__(
        self,
        store: WebhookStore,
        commit: CommitLog,
        shared: SharedOutbox,
        env: Env,
        *,
        group_id: Callable[[str, Any], Any],
        event_id: Callable[[int], str],
        add: Callable[[dict[str, Any]], None],
        make_room: Callable[[int], None],
        queued: Callable[[str], None],
        max_queue: int,
    ) -> None:
        self.store = store
        self.commit = commit
        self.shared = shared
        self.env = env  # (its node id is known once the state is loaded: read when stamping)
        self.group_id = group_id
        self.event_id = event_id
        self.add = add
        self.make_room = make_room
        self.queued = queued
        self.max_queue = max_queue
        self.lane = ""  # the lane of the last event `applied` made (read by `made`)

    def stamp(self, rec: dict[str, Any]) -> None:
        """(A `msg` record is being made, `message` events on.) Stamp a direct
        message's record with its event's id, node and group id."""
        if rec["from_key"] == SYSTEM or "push" in rec:  # a backend's push kept in a mailbox
            return
        node = self.env.node
        if self.commit.cluster is None:  # the event's seq once the record is applied
            event_id = f"{node}-{self.store.seq + 1}"  # (`event_id`, inlined)
        else:
            self.shared.made += 1
            event_id = self.event_id(self.shared.made)
        rec["hook"] = {
            "id": event_id,
            "node": node,
            "group_id": self.group_id(rec["to"].get("group_id") or "", None),
        }

    def applied(self, rec: dict[str, Any]) -> None:
        """A stamped `msg` record was applied: its `message` event joins the
        outbox, durable with the record (its `n`)."""
        if rec.get("dup"):  # a cluster's repeat of a `client_msg_id`: not stored
            return
        stamp, sender, to, time = rec["hook"], rec["from"], rec["to"], rec["time"]
        data = {
            "message_id": rec["id"],
            "seq": rec["seq"],
            "session_id": rec.get("session_id"),
            "from": sender,
            "from_user_id": sender.get("user_id"),
            "to_user_id": to.get("user_id"),
            "to_user_type": to.get("user_type"),
            "group_id": stamp["group_id"],
            "text": rec["text"],
            "message_type": rec.get("message_type") or "text",
            "reply_to_message_id": rec.get("reply_to"),
            "client_msg_id": rec.get("cmid"),
            "time": time,
            "status": "sent",
        }
        if rec.get("extra"):  # (JSON text in the record: as the sender gave it)
            data["extra"] = extra_value(rec["extra"])
        self.lane = lane = recipient_lane(rec["to_key"])
        event = {
            "t": "hook",
            "id": stamp["id"],
            "event": "message",
            "time": time,
            "node": stamp["node"],
            "lane": lane,
            "data": data,
            "n": rec.get("n", 0),
        }
        # kept as its body, encoded once: one flat object waits in the outbox, and
        # the event's dict is freed at once (`protocol.webhook.event_body`); copied
        # (`%b`), since orjson's bytes keep its whole output buffer
        event["body"] = b"%b" % event_body(event)
        del event["data"]
        self.add(event)

    def made(self, rec: dict[str, Any]) -> None:
        """A `msg` record was made (and applied): when it made its event, keep the
        queue's limit and, on a single node, have the sender woken for it."""
        if "hook" in rec and not rec.get("dup"):  # it made its event (`applied`)
            if len(self.store.events) > self.max_queue:
                self.make_room(self.max_queue + 1)
            if self.commit.cluster is None:
                self.queued(self.lane)  # (the record's, `applied` just now)
