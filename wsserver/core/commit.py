"""The commit machinery: durable changes as records, and announcements held
until their records are durable.

The hub's durable state is event-sourced. A component never changes it
directly: it builds a record (`{"t": type, ...}`) and `CommitLog.record`
appends it to the journal and applies it through the component's own
`apply`, at once. Start-up replays the last snapshot and the journal after it
through the same `apply` (`restore`), so replay reproduces the state by
construction.

Invariants:

- Records are numbered by the journal; `last_n` is the number of the last one
  appended (or restored).
- `after_commit(announce)` runs `announce` only once every record appended
  before it is durable (`Journal.durable_upto`), in the order the
  announcements were made: a client never hears of a change that a crash
  could still take back. `release()` runs those that became durable.
- Followers (`follow`) see the records made at run time, never replayed
  ones: what they record in turn is in the journal already at replay.
- Stamps (`stamp`) are added to a record made at run time before it is
  journaled (or handed to the shared log): what another part derives from
  the record when it is applied, and could not decide the same way at
  replay or on another node, travels in the record itself.
- A snapshot (`snapshot_view`, `snapshot_state`) reflects exactly the records
  up to `last_n`, and holds each durable part's state under its name.
- In cluster mode (`clustered`, `core.replicated`) `record` hands the record
  to the shared log instead, and `apply_log` applies the log's records, every
  node's, in the log's order; `apply` decides what depends on the state, and
  the origin hears it through `record`'s `applied` callback. With one node
  `apply` runs inside `record` and the callback at once, so the values are
  those the caller could have computed itself (the journal's format holds
  them).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from wsserver.core.migrate import STATE_VERSION, migrate
from wsserver.core.replicated import REFUSED, Applied, ClusterJournal, Effect, Replicated, Snapshot

__all__ = ["CommitLog", "Durable", "InstantJournal", "Journal"]

log = logging.getLogger("wsserver.hub")


class Journal(Protocol):
    """What the hub needs of durable storage (`wsserver.storage` implements it):
    a non-blocking append that numbers records, how far they are durable, and
    a snapshot queued behind them."""

    @property
    def durable_upto(self) -> int:
        """The number of the last record that is durable."""

    def append(self, record: dict[str, Any]) -> int:
        """Queue one record for writing; returns its number (never blocks)."""

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Queue a snapshot of `state`, which reflects the records up to `upto`."""


class Durable(Protocol):
    """A durable part of the hub's state (direct messages, CRM, activation codes):
    it folds its own records and can dump and reload its state."""

    record_types: tuple[str, ...]

    def apply(self, record: dict[str, Any]) -> Any:
        """Fold one record of one of `record_types` into the state; what it
        returns is handed to the origin's `applied` callback."""

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with one from `to_state()` (start-up only)."""


class InstantJournal:
    """A journal that keeps nothing and is durable at once (no data directory)."""

    def __init__(self) -> None:
        self.durable_upto = 0

    def append(self, record: dict[str, Any]) -> int:
        self.durable_upto += 1
        return self.durable_upto

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Nothing to keep."""


class CommitLog:
    """Records, applies and snapshots the durable parts; holds announcements
    until their records are durable."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal: Journal = journal if journal is not None else InstantJournal()
        self.appliers: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.effects: dict[str, Effect] = {}  # live effects of applied log records (cluster)
        self.cluster: Replicated | None = None
        self.parts: dict[str, Durable] = {}  # by their key in the snapshot
        self.last_n = 0  # the journal number of the last record appended (or restored)
        self.snapshot_n = -1  # the journal number of the last snapshot queued
        self._pending: deque[tuple[int, Callable[[], object]]] = deque()
        self.followers: dict[str, Callable[[dict[str, Any]], None]] = {}  # run time only
        self.stampers: dict[str, Callable[[dict[str, Any]], None]] = {}  # run time only

    def register(self, name: str, part: Durable) -> None:
        """Keep `part` under `name` in snapshots, and fold its record types with it."""
        self.parts[name] = part
        self.appliers.update(dict.fromkeys(part.record_types, part.apply))

    def observe(self, record_types: tuple[str, ...], fold: Callable[[dict[str, Any]], None]) -> None:
        """Also fold records of `record_types` (another part's, registered already)
        with `fold`, right after their owner, at run time and at replay alike: a
        part whose state follows from another's records (the webhooks' undelivered
        checks from the direct messages') needs no records of its own for it. On
        a cluster node `fold` sees every node's records, as the owner does."""
        for kind in record_types:
            owner = self.appliers[kind]

            def both(rec: dict[str, Any], owner: Callable[[dict[str, Any]], Any] = owner) -> Any:
                result = owner(rec)
                fold(rec)
                return result

            self.appliers[kind] = both

    def follow(self, record_types: tuple[str, ...], fn: Callable[[dict[str, Any]], None]) -> None:
        """Call `fn` with each record of `record_types` made at run time, right
        after it is applied (never at replay): what follows from a change, as
        records of its own, in the same command (the webhook events that report
        messages and CRM changes). Several followers of a type run in order."""
        for kind in record_types:
            before = self.followers.get(kind)
            if before is None:
                self.followers[kind] = fn
            else:

                def both(
                    rec: dict[str, Any],
                    first: Callable[[dict[str, Any]], None] = before,
                    then: Callable[[dict[str, Any]], None] = fn,
                ) -> None:
                    first(rec)
                    then(rec)

                self.followers[kind] = both

    def stamp(self, record_types: tuple[str, ...], fn: Callable[[dict[str, Any]], None]) -> None:
        """Call `fn` with each record of `record_types` made at run time, before it
        is journaled, to add fields of its own to it: what `fn`'s part derives
        from the record when applying it (`observe`) and decides at run time (the
        webhooks' `message` event: its id, so one record is both the message and
        its event). One stamper per type."""
        for kind in record_types:
            if kind in self.stampers:
                raise ValueError(f"{kind!r} records have a stamper already")
            self.stampers[kind] = fn

    def _stamped(self, rec: dict[str, Any]) -> None:
        stamper = self.stampers.get(rec["t"])
        if stamper is not None:
            stamper(rec)

    @property
    def durable_upto(self) -> int:
        """The number of the last durable record."""
        return self.journal.durable_upto

    # -- run time --------------------------------------------------------------

    def record(self, rec: dict[str, Any], applied: Applied | None = None, conn: str | None = None) -> int:
        """Journal one durable change and apply it; returns its journal number.
        `applied` gets what `apply` returned. (`conn`, the connection that made
        it, is for a cluster's live effects.)"""
        if self.stampers:
            self._stamped(rec)
        n = self.journal.append(rec)
        rec["n"] = n
        result = self.appliers[rec["t"]](rec)
        self.last_n = n
        if self.followers:
            follower = self.followers.get(rec["t"])
            if follower is not None:
                follower(rec)
        if applied is not None:
            applied(result)
        return n

    # -- cluster mode -------------------------------------------------------------

    def clustered(self, cluster: Replicated, snapshot: Snapshot) -> None:
        """Switch to cluster mode (before restoring): records go through the
        shared log (`cluster.hand_off`), snapshots to `snapshot(state, log id)`."""
        self.cluster = cluster
        self.journal = ClusterJournal(cluster, snapshot)
        self.record = self._submit  # type: ignore[method-assign]
        self.after_commit = cluster.after_commit  # type: ignore[method-assign]

    def _submit(self, rec: dict[str, Any], applied: Applied | None = None, conn: str | None = None) -> int:
        cluster = self.cluster
        assert cluster is not None
        if rec["t"] in cluster.local_types:  # this node's own business: applied here and now
            rec["n"] = self.last_n
            result = self.appliers[rec["t"]](rec)
            if applied is not None:
                applied(result)
            return self.last_n
        if self.stampers:
            self._stamped(rec)
        cluster.submit(rec, applied, conn)
        return self.last_n

    def on_applied(self, record_types: tuple[str, ...], effect: Effect) -> None:
        """In cluster mode, run `effect` for each record of `record_types` applied
        from the log while serving (not at start-up): the frames it means for
        this node's own connections."""
        self.effects.update(dict.fromkeys(record_types, effect))

    def apply_log(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Apply the shared log's records `(log id, record)`, in order: each
        node's, this one's included (then its `applied` callback runs)."""
        cluster = self.cluster
        assert cluster is not None
        appliers, effects, live = self.appliers, self.effects, cluster.live
        for log_id, rec in entries:
            origin = rec.pop("o", None)
            conn, applied = cluster.came_back(origin)
            n = self.last_n + 1
            rec["n"] = n
            try:
                result = appliers[rec["t"]](rec)
            except Exception:  # one bad record must not stop the others
                log.exception("applying a %r record from the log failed", rec.get("t"))
                result = None
            self.last_n = n
            cluster.last_id = log_id
            if not live:
                continue
            effect = effects.get(rec["t"])
            follower = self.followers.get(rec["t"]) if cluster.own and self.followers else None
            try:
                if follower is not None:  # this node's own record: its events are this node's
                    follower(rec)
                if effect is not None:
                    effect(rec, result, conn)
                if applied is not None:
                    applied(result)
            except Exception:
                log.exception("the effects of a %r record failed", rec.get("t"))
        cluster.release()

    def log_failed(self, tokens: list[int]) -> None:
        """The log refused this node's records `tokens`: their callbacks hear
        `REFUSED` (nothing was stored), and what waited for them goes on."""
        cluster = self.cluster
        assert cluster is not None
        for token in tokens:
            applied = cluster.failed(token)
            if applied is not None:
                try:
                    applied(REFUSED)
                except Exception:
                    log.exception("a refused record's callback failed")
        cluster.release()

    def after_commit(self, announce: Callable[[], object]) -> None:
        """Run `announce` once every record appended so far is durable.

        Acknowledgements and the pushes they imply go through here, so a
        client never hears of a change that a crash could still take back.
        """
        if not self._pending and self.last_n <= self.journal.durable_upto:
            announce()
        else:  # behind older announcements still waiting: keep their order
            self._pending.append((self.last_n, announce))

    def after_stored(self, callback: Callable[[bool], object]) -> None:
        """`after_commit`, telling `callback` whether every record appended so
        far was stored (only a cluster's shared log refuses records)."""
        cluster = self.cluster
        if cluster is None:
            self.after_commit(lambda: callback(True))
            return
        refused = cluster.refused
        cluster.after_commit(lambda: callback(cluster.refused == refused))

    def release(self) -> None:
        """Run the announcements whose records became durable."""
        durable = self.journal.durable_upto
        pending = self._pending
        while pending and pending[0][0] <= durable:
            _, announce = pending.popleft()
            try:
                announce()
            except Exception:
                log.exception("announcement failed")

    # -- start-up and snapshots ------------------------------------------------

    def restore(
        self, state: dict[str, Any] | None, records: list[dict[str, Any]], version: int = STATE_VERSION
    ) -> None:
        """Rebuild durable state at start-up: the snapshot, then the journal.

        `version` is the format they were written in; an older one is migrated
        first (`core.migrate`), and the caller then snapshots the result before
        appending anything, so the journal never mixes formats. (The caller
        pauses the cyclic GC meanwhile: nothing made here is garbage.)
        """
        if version != STATE_VERSION:
            state, records = migrate(state, records, version)
        if state is not None:
            for name, part in self.parts.items():
                if name in state:
                    part.load_state(state[name])
            self.last_n = state.get("n", 0)
        appliers = self.appliers
        last_n = self.last_n
        try:
            for rec in records:
                appliers[rec["t"]](rec)
                n = rec.get("n", 0)
                if n > last_n:
                    last_n = n
        finally:
            self.last_n = last_n
            self.snapshot_n = last_n  # what was restored counts as taken
            journal = self.journal
            if isinstance(journal, InstantJournal):  # numbers go on after the restored ones
                journal.durable_upto = max(journal.durable_upto, last_n)

    def snapshot_state(self) -> dict[str, Any]:
        """A detached copy of all durable state, for `Journal.request_snapshot`."""
        state: dict[str, Any] = {"n": self.last_n}
        for name, part in self.parts.items():
            state[name] = part.to_state()
        return state

    def snapshot_view(self) -> dict[str, Any]:
        """What `snapshot_state()` gives, for the snapshot writer: parts with a
        `snapshot_view()` (the message store) hand over their never-changed parts
        without copying them; the storage encodes the view with
        `storage.base.json_chunks`. This runs in the hub actor: with a million
        stored messages the copy took it seconds."""
        state: dict[str, Any] = {"n": self.last_n}
        for name, part in self.parts.items():
            view = getattr(part, "snapshot_view", None)
            state[name] = view() if view is not None else part.to_state()
        return state

    def take_snapshot(self, if_changed: bool = False) -> int:
        """Queue a snapshot of everything recorded so far (with `if_changed`, only
        when something was since the last one); returns the number it reflects."""
        n = self.last_n
        if if_changed and n == self.snapshot_n:
            return n
        self.journal.request_snapshot(self.snapshot_view(), n)
        self.snapshot_n = n
        return n
