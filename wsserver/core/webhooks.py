"""Webhook events to the business backend (SPEC 6.2): which events, when, and the
outbox's delivery schedule, without I/O.

`Webhooks` is a component of the hub. It decides the events:

- `user_online` when a user principal gets its first connection, `user_offline`
  when its last one is forgotten (`core.webhook_presence`: from the hub's
  presence on a single node, decided in Redis on a cluster node). Desktop
  clients (activation codes) are no users and have none.
- `message_undelivered` when a direct message is still `sent` (no `delivered`
  or `read` receipt) `webhooks.undelivered_after` seconds after it was sent.
  The check is durable (`core.webhook_store`): started by the message's own
  record, ended by its receipt or by the event, so a restart neither loses
  nor repeats it; a check found due after a restart runs at once.
- after a restart, `user_offline` (`reason: "restart"`) for every principal
  the receiver was told is online and that has no connection now (a kill -9
  could not say goodbye).

Each event is a `hook` record through the commit log, appended in the same
command as the state change that caused it, so it is journaled with it; a
direct message's `message` event is its `msg` record itself, stamped with the
event's id and made into the event when applied (`core.webhook_messages`). Its
`id` is `<node>-<seq>`: the node id kept with the data directory
(`storage.node`) and the outbox's sequence number, which only grows and is
durable with the outbox (derived from the `hook` records, kept in the
snapshot). It is unique across restarts because an event is handed out only
once its record is durable, so a restart resumes above every id a receiver
can have seen; a new data directory makes a new node id. (A `ping`, never
queued, has a random id.)

In cluster mode the outbox is shared (docs/CLUSTER.md, "Webhooks"): every
node applies every node's `hook*` records from the shared log, so all hold the
same outbox and undelivered checks, and only the node holding the sender's
lease runs the sender (`net.cluster.hooks`). There an event's `seq` is
decided when its record is applied, and its id, decided by the node that
made it, names that node's start: `<node>.<start ms in hex>-<n>`, `n`
counting the events it made since. The sender's 2xx answers are recorded in
batches (`hook_upto`: each lane's events up to a seq), one per round; what a
node recorded and does not see applied yet is kept by `core.webhook_shared`.

The sender task (`wsserver.net.webhooks`) asks for deliveries (`WebhookDue`)
and reports the attempts (`WebhookDone`, or `WebhookDoneMany` for a batch,
whose 2xx answers are one `hook_ack` record); this component keeps the
schedule:

- Order per principal (a lane): a lane's next event is handed out only after
  its previous one was acknowledged (2xx, a durable `hook_ack`; in a cluster
  recorded in a batch, `hook_upto`) or dropped; retries back off, and a
  receiver that keeps failing gets one probe at a time (`core.webhook_schedule`,
  not durable: after a restart every lane with events is tried at once).
- Only durable events are handed out (a crash cannot take back an event the
  receiver has seen).
- Events older than `webhooks.max_age` are dropped (`hook_drop`, counted by
  reason); a new event beyond `webhooks.max_queue` drops the oldest.

The events that report messages and CRM changes (`message_status`, `crm_*`)
are made from the changes' records as they are made (`follow`, a `CommitLog`
follower; which record is which event: `core.webhook_events`); `message` from
the stamped record when applied, as above.

Nothing is made while `webhooks.url` is empty, nor for an event left out of
`webhooks.events`. All `[webhooks]` keys are read once (restart keys).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.presence import Presence
from wsserver.core.stores import CrmStore, MessageStore, WebhookStore
from wsserver.core.webhook_commands import (
    WebhookBatch,
    WebhookDelivery,
    WebhookDone,
    WebhookDoneMany,
    WebhookDue,
    WebhookPing,
    WebhookStart,
)
from wsserver.core.webhook_events import RecordEvents
from wsserver.core.webhook_messages import MessageEvents
from wsserver.core.webhook_presence import PresenceEvents, lane_of
from wsserver.core.webhook_schedule import FIRST_RETRY, HOT_LANE, PROBE_AFTER, Schedule, backoff
from wsserver.core.webhook_shared import SharedOutbox
from wsserver.core.webhook_store import MemoryWebhookStore
from wsserver.protocol.envelope import id_key

__all__ = ["FIRST_RETRY", "PROBE_AFTER", "Webhooks", "backoff", "lane_of"]

_new = tuple.__new__


class Webhooks:
    """The events and the outbox's schedule (see the module docstring)."""

    observed_types: tuple[str, ...] = ("msg", "status")
    """The direct messages' records folded in when applied (`observe`): the
    undelivered checks follow them, and a stamped `msg` record is its
    `message` event too."""

    def __init__(
        self,
        commit: CommitLog,
        presence: Presence,
        env: Env,
        messages: MessageStore,
        *,
        group_id: Callable[[str, Any], Any],
        store: WebhookStore | None = None,
        crm: CrmStore | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.commit = commit
        self.presence = presence
        self.env = env
        self.messages = messages
        self.group_id = group_id  # a group's id as replies echo it (`Hub.group_id`)
        self.new_id = new_id
        cfg = env.config.webhooks
        self.enabled = frozenset(cfg.events) if cfg.url else frozenset()
        after = int(cfg.undelivered_after * 1000) if "message_undelivered" in self.enabled else None
        if store is None:
            store = MemoryWebhookStore(after, track_online="user_offline" in self.enabled)
        self.store: WebhookStore = store
        self.record_types = self.store.record_types
        # the events made from other parts' records (`core.webhook_events`)
        self.record_events = RecordEvents(self.enabled, messages, crm, group_id)
        # `message` events: stamped into their `msg` records, made when applied
        self.stamped_types: tuple[str, ...] = ("msg",) if "message" in self.enabled else ()
        self.followed_types = self.record_events.record_types
        self.max_age_ms = int(cfg.max_age * 1000)
        self.max_queue = cfg.max_queue
        self.schedule = Schedule(cfg.max_backoff)  # (not durable)
        self._wake: Callable[[], None] | None = None
        self._armed = False  # the sender waits: wake it for new work
        self._sleep_until: int | None = None  # when (ms) it wakes by itself
        self._capped = False  # its last round took as many events as it could
        # the commit's n a registered wake-up waits to be durable (None: none is), and
        # that of the last event recorded: one wake-up stands for a durable batch
        self._wake_at: int | None = None
        self._last_event_n = 0
        self.dropped: dict[str, int] = {}  # since start, by reason
        self._started: str | None = None  # a cluster node's start, in event ids
        # cluster mode: what this node recorded in the shared outbox, not back yet
        self.shared = SharedOutbox(commit, self._lost)
        # `message` (`core.webhook_messages`)
        self.message_events = MessageEvents(
            self.store, commit, self.shared, env,
            group_id=group_id, event_id=self._event_id, add=self.apply, make_room=self._make_room,
            queued=self._queued, max_queue=self.max_queue,
        )  # fmt: skip
        self.stamp = self.message_events.stamp  # (the commit log's stamper of `msg` records)
        self.made = self.message_events.made  # (and their follower)
        self.presence_events = events = PresenceEvents(  # user_online / user_offline
            self._emit, presence, self.enabled, lambda: commit.cluster is not None
        )
        self.connected = events.connected  # (the hub's on_authenticated hook)
        self.closed = events.closed  # (its on_closed hook)
        self.node_gone = events.node_gone
        self.presence_edges = events.edges
        self.commands: dict[type[Any], Callable[[Any], Any]] = {
            WebhookStart: self.start,
            WebhookDue: self.due,
            WebhookDone: self.done,
            WebhookDoneMany: self.done_many,
            WebhookPing: self.ping,
        }

    # -- durable state (the store's) ----------------------------------------------------

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold one of the outbox's records into the store (on a cluster node,
        also what it means for this node's schedule)."""
        self.store.apply(rec)
        if self.commit.cluster is not None:
            self._applied_shared(rec)

    def _applied_shared(self, rec: dict[str, Any]) -> None:
        """(Cluster mode: every node's records, in the log's order.) A new event
        makes its lane ready and wakes a waiting sender; what this node
        recorded is no longer pending once back."""
        self.shared.applied(rec, self.store.events)
        if rec["t"] == "hook":
            self.schedule.waiting(rec["lane"])
            self._wake_sender()

    def observe(self, rec: dict[str, Any]) -> None:
        """Fold a direct message's record into the undelivered checks, and a
        stamped `msg` record's `message` event into the outbox (at run time, at
        replay and on every cluster node alike); a waiting sender is woken when
        a new check falls due before it wakes by itself."""
        self.store.observe(rec)
        if rec["t"] != "msg":
            return
        if "hook" in rec:
            self.message_events.applied(rec)
        if self._armed:
            at = self.store.checks.get(rec.get("id", -1))
            if at is not None and (self._sleep_until is None or at < self._sleep_until):
                self._wake_sender()

    def to_state(self) -> dict[str, Any]:
        """The snapshot of the store."""
        return self.store.to_state()

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the store's state with a snapshot's."""
        self.store.load_state(state)

    def follow(self, rec: dict[str, Any]) -> None:
        """(A record of `followed_types` was made.) Record the events it is."""
        for name, lane, data in self.record_events.events(rec):
            self._emit(name, lane, data)

    # -- the events ---------------------------------------------------------------------

    def _id_prefix(self) -> str:
        """What an event id starts with: the node, and on a cluster node (whose
        count of the events it made starts again at every start) the time this
        node started."""
        if self.commit.cluster is None:
            return self.env.node
        if self._started is None:
            self._started = f"{int(self.env.clock() * 1000):x}"
        return f"{self.env.node}.{self._started}"

    def _event_id(self, n: int) -> str:
        """The id of the `n`-th event this node made (`n`: the seq on a single node)."""
        if self.commit.cluster is None:
            return f"{self.env.node}-{n}"  # (`_id_prefix`, inlined: once per event)
        return f"{self._id_prefix()}-{n}"

    def _emit(self, name: str, lane: str, data: dict[str, Any], check: int | None = None) -> None:
        """Record one event (dropping the oldest when the queue is full) and have a
        waiting sender woken once it is durable."""
        self._make_room(self.max_queue)
        if self.commit.cluster is not None:
            self._emit_shared(name, lane, data, check)
            return
        seq = self.store.seq + 1
        rec = self._event_record(seq, name, lane, data, check)
        rec["seq"] = seq
        self.commit.record(rec)
        self._queued(lane)

    def _make_room(self, full: int) -> None:
        """Drop the oldest event when the queue holds `full` events or more."""
        store = self.store
        if len(store) >= full:
            oldest = next((seq for seq in store.events if seq not in self.shared.gone), None)
            if oldest is not None:
                self._drop([oldest], "queue_full")

    def _queued(self, lane: str) -> None:
        """(Single node.) A new event of `lane` was recorded: the lane is ready,
        and the sender is woken once the event is durable."""
        self.schedule.waiting(lane)
        # once durable, wake the sender if it waits by then (it may be asking right
        # now, in `due`, and find the event not durable yet); a wake-up already
        # registered covers this event too (`_durable` registers the next one)
        self._last_event_n = self.commit.last_n
        if self._wake_at is None:
            self._wake_at = self._last_event_n
            self.commit.after_commit(self._durable)

    def _emit_shared(self, name: str, lane: str, data: dict[str, Any], check: int | None) -> None:
        """(Cluster mode.) Hand the event to the shared log: its seq is decided
        when applied, and its lane made ready then (`_applied_shared`)."""
        self.shared.made += 1
        self.shared.event(self._event_record(self.shared.made, name, lane, data, check))

    def _event_record(self, n: int, name: str, lane: str, data: dict[str, Any], check: int | None) -> dict[str, Any]:
        """A `hook` record's event (its id ends with `n`), without its `seq`."""
        rec: dict[str, Any] = {
            "t": "hook",
            "id": self._event_id(n),
            "event": name,
            "time": self.env.now_ms(),
            "node": self.env.node,
            "lane": lane,
            "data": data,
        }
        if check is not None:
            rec["check"] = check
        return rec

    def _lost(self, n: int) -> None:
        """(Cluster mode.) Events the shared log refused: counted as dropped."""
        self.dropped["unavailable"] = self.dropped.get("unavailable", 0) + n

    def _durable(self) -> None:
        """The events recorded up to `_wake_at` are durable: wake the sender, and
        have it woken again once those recorded since are durable too (one
        wake-up per durable batch of events, not per event)."""
        if self._last_event_n > (self._wake_at or 0):
            self._wake_at = self._last_event_n
            self.commit.after_commit(self._durable)
        else:
            self._wake_at = None
        self._wake_sender()

    def _wake_sender(self) -> None:
        if self._armed and self._wake is not None:
            self._armed = False
            self._wake()

    def _drop(self, seqs: list[int], reason: str) -> None:
        """Give up events (counted by `reason`); their lanes go on with the next ones."""
        events = self.store.events
        lanes = {events[seq]["lane"] for seq in seqs}
        rec = {"t": "hook_drop", "seqs": seqs, "reason": reason}
        if self.commit.cluster is None:
            self.commit.record(rec)
        else:  # handed out no more by this node while the record is on its way
            self.shared.drop(rec)
        self.dropped[reason] = self.dropped.get(reason, 0) + len(seqs)
        for lane in lanes:  # ready with their next event, or gone
            self.schedule.moved(lane, self._head(lane) is not None)

    def _undelivered(self, now: int) -> None:
        """Run the undelivered checks that fell due: `message_undelivered` for each
        message still `sent` (a `hook_skip` for one no longer kept)."""
        checks = self.store.checks
        due = []
        for mid, at in checks.items():
            if at > now:
                break
            if mid not in self.shared.checking:  # (cluster mode: its record is on its way)
                due.append(mid)
        gone = []
        for mid in due:
            m = self.messages.message(mid)
            if m is None:
                if self.messages.stored(mid) is None:
                    gone.append(mid)  # forgotten (else not durable yet: next time)
                continue
            self._emit(*self.record_events.undelivered_event(mid, m), check=mid)
        if gone:
            rec = {"t": "hook_skip", "mids": gone}
            if self.commit.cluster is None:
                self.commit.record(rec)
            else:
                self.shared.skip(rec)

    def _expire(self, now: int) -> None:
        """Drop the events older than `webhooks.max_age`."""
        cutoff = now - self.max_age_ms
        old = []
        for seq, event in self.store.events.items():
            if event["time"] > cutoff:
                break
            if seq not in self.shared.gone:
                old.append(seq)
        if old:
            self._drop(old, "max_age")

    def _head(self, lane: str) -> dict[str, Any] | None:
        """The oldest event of `lane` this node may hand out: on a cluster node,
        not one it acknowledged or dropped whose record is not back yet."""
        gone, store = self.shared.gone, self.store
        if not gone:
            return store.head(lane)
        for seq in store.lanes.get(lane, ()):
            if seq not in gone:
                return store.events[seq]
        return None

    # -- the sender's commands ----------------------------------------------------------

    def start(self, cmd: WebhookStart) -> None:
        """`WebhookStart`: a fresh schedule, every lane ready; the principals still
        believed online without a connection get their `user_offline`."""
        self._wake = cmd.wake
        self._armed = False
        self.schedule.reset(self.store.lanes)
        if "user_offline" not in self.enabled or self.commit.cluster is not None:
            return  # (a cluster's dead nodes are cleaned up by a survivor: `node_gone`)
        for lane, data in list(self.store.online.items()):
            principal = ("user", id_key(data.get("user_type")), id_key(data.get("user_id")))
            if not self.presence.of_principal(principal):
                self._emit("user_offline", lane, {**data, "reason": "restart"})

    def due(self, cmd: WebhookDue) -> WebhookBatch:
        """`WebhookDue`: run the checks and expiries that fell due, hand out up to
        `limit` durable events, one per lane, and say when to ask again."""
        now = self.env.now_ms()
        if self.shared.unflushed:  # (cluster mode) the answers since the last round, in one record
            self.shared.flush()
        self._undelivered(now)
        self._expire(now)
        schedule = self.schedule
        limit = schedule.limit(cmd.limit, now)
        durable = self.commit.durable_upto
        store = self.store
        lanes = store.lanes
        ready = schedule.ready
        failures = schedule.failures
        events, gone = store.events, self.shared.gone
        deliveries: list[WebhookDelivery] = []
        handed: list[str] = []
        empty: list[str] = []  # ready lanes without an event (dropped meanwhile)
        hot = False
        for lane in ready:
            if len(handed) >= limit:
                break
            if gone:
                head = self._head(lane)
            else:  # (`_head`, inlined: once per event)
                seqs = lanes.get(lane)
                head = events[seqs[0]] if seqs else None
            if head is None:
                empty.append(lane)
            elif head.get("n", 0) <= durable:
                handed.append(lane)
                if len(lanes[lane]) > HOT_LANE:
                    hot = True
                attempt = failures.get(lane, 0) + 1 if failures else 1
                # (the named tuple's own constructor is a Python function: built directly)
                deliveries.append(_new(WebhookDelivery, (head["seq"], lane, head, attempt)))
        for lane in empty:
            del ready[lane]
        schedule.handed_out(handed)
        self._capped = len(deliveries) >= limit
        wake = self._next_due()
        self._sleep_until = wake
        self._armed = True
        return WebhookBatch(
            tuple(deliveries),
            None if wake is None else max(0.0, (wake - now) / 1000),
            len(store),
            dict(self.dropped),
            hot,
        )

    def _next_due(self) -> int | None:
        """When (ms) the next retry, probe, check or expiry falls due, if any."""
        times = []
        at = self.schedule.next_due()
        if at is not None:
            times.append(at)
        for at in self.store.checks.values():
            times.append(at)
            break
        for event in self.store.events.values():
            times.append(event["time"] + self.max_age_ms + 1)
            break
        return min(times) if times else None

    def done(self, cmd: WebhookDone) -> None:
        """`WebhookDone`: acknowledge the event, or schedule its retry."""
        self._answered((cmd,), (cmd.ok,))

    def done_many(self, cmd: WebhookDoneMany) -> int:
        """`WebhookDoneMany`: the attempts of one exchange ended; the events queued now."""
        return self._answered(cmd.deliveries, cmd.ok)

    def _answered(self, attempts: Sequence[WebhookDelivery | WebhookDone], oks: Sequence[bool]) -> int:
        """Acknowledge the events of `attempts` answered 2xx (`oks`: one `hook_ack`
        record for all of them; in a cluster, with the round's other answers in
        a `hook_upto`, at once when none is left in flight: the sender may stop
        before its next round), and schedule the retries of the others; the
        events queued now."""
        events = self.store.events
        acked = [d for d, ok in zip(attempts, oks, strict=True) if ok and d.seq in events]
        if acked:
            if self.commit.cluster is None:
                seqs = [d.seq for d in acked]
                ack = {"t": "hook_ack", "seq": seqs[0]} if len(seqs) == 1 else {"t": "hook_ack", "seqs": seqs}
                self.commit.record(ack)  # (applied now: the events are gone from the store)
            else:
                for d in acked:
                    self.shared.answered(d.lane, d.seq)
            self.schedule.succeeded()
        schedule = self.schedule
        settled: list[str] = []  # the lanes whose head was acknowledged, or dropped while in flight
        wake = False
        for d, ok in zip(attempts, oks, strict=True):
            if ok or d.seq not in events:
                settled.append(d.lane)
            else:
                schedule.in_flight.discard(d.lane)
                schedule.failed(d.lane, self.env.now_ms())
                wake = True  # its retry may fall due before the sender's planned wake-up
        if settled:
            heads = self.store.lanes if not self.shared.gone else {x for x in settled if self._head(x) is not None}
            wake = schedule.settled(settled, heads) or wake
        if acked and self.commit.cluster is not None and not schedule.in_flight:
            self.shared.flush()
        if wake or (self._capped and schedule.ready):  # (or lanes wait for room in flight)
            self._wake_sender()
        return len(self.store)

    def ping(self, cmd: WebhookPing) -> dict[str, Any]:
        """`WebhookPing`: a `ping` event's body, made now and never queued."""
        env = self.env
        return {"id": self.new_id(), "event": "ping", "time": env.now_ms(), "node": env.node, "data": {}}
