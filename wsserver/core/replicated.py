"""The commit log of a cluster node: one shared, ordered log of records, without I/O.

In cluster mode (`cluster.redis_url`) the journal of the whole cluster is one
Redis Stream (`net.cluster.log` does the I/O). `CommitLog.record` on a node
does not apply a record at once: it tags it with its origin and hands it to
the log bridge (a non-blocking hand-off); every node, the origin included,
applies the log's records in the log's order through the same `apply` as a
single node (`CommitLog.apply_log`). So every node holds the same durable
state, and a record is durable once Redis acknowledged its XADD, which is
before any node applies it.

Invariants:

- Values that depend on the state (a message's id, the recipient's seq, a
  de-duplication hit) are decided by `apply`, from the state, so every node
  decides the same. The origin learns them when its record comes back: the
  `applied` callback given to `record` runs with what `apply` returned, or
  with `REFUSED` when the log refused the record (nothing was stored).
- A record's origin is `[origin, token, conn_id]`: `origin` is unique per
  process (a restarted node is another origin), `token` counts the records
  it handed off, `conn_id` is the connection that made it (or None). It is
  removed before `apply`, so the stored state never holds it.
- `after_commit(announce)` waits until every record this node handed off so
  far came back (or failed): an announcement never runs before the change it
  announces is applied here.
- Live effects (`effects`, the frames a record means for this node's own
  connections) run only for records applied while serving, never at start-up
  replay; the origin's connection is named so an effect can leave it out.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

from wsserver.errors import ErrorCode, ProtocolError

__all__ = ["REFUSED", "Applied", "ClusterJournal", "Effect", "Replicated", "Snapshot"]

log = logging.getLogger("wsserver.hub")

REFUSED: Any = type("Refused", (), {"__repr__": lambda self: "REFUSED"})()
"""What the origin's callback hears when the log refused its record (nothing stored)."""

Applied = Callable[[Any], object]
"""The origin's callback: what `apply` returned, or `REFUSED`."""

Effect = Callable[[dict[str, Any], Any, "str | None"], None]
"""A record's live effect on this node: (record, what apply returned, the
origin's connection id when the record is this node's own, else None)."""


Snapshot = Callable[[dict[str, Any], str], None]
"""Where a cluster node's snapshot goes: (the state, the log id it covers)."""


class ClusterJournal:
    """The `core.commit.Journal` of a cluster node: what a node applied came
    from the log, so it is durable already; a snapshot goes to `snapshot`
    with the log id of the last record it reflects. The parts kept per node
    (`Replicated.local_parts`) are left out of it."""

    def __init__(self, cluster: Replicated, snapshot: Snapshot) -> None:
        self._cluster = cluster
        self._snapshot = snapshot
        self.durable_upto = sys.maxsize

    def append(self, record: dict[str, Any]) -> int:
        return 0  # a record kept per node (`Replicated.local_types`): nothing to write

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        shared = {k: v for k, v in state.items() if k not in self._cluster.local_parts}
        self._snapshot(shared, self._cluster.last_id)


class Replicated:
    """A node's side of the shared log: hand-off, origins, waiting callbacks."""

    def __init__(self, origin: str, hand_off: Callable[[dict[str, Any]], bool]) -> None:
        self.origin = origin
        self.hand_off = hand_off
        self.issued = 0  # records handed off by this process
        self.refused = 0  # of them, those the log did not store
        self.waiting: dict[int, Applied | None] = {}  # tokens not back yet, in order
        self.announcements: deque[tuple[int, Callable[[], object]]] = deque()
        self.effects: dict[str, Effect] = {}
        self.live = False  # start-up replay has no live effects
        self.last_id = ""  # the log id of the last record applied (for snapshots)
        self.own = True  # whether the record being applied is this process's own
        # record types and parts kept per node, never shared (applied at once and
        # left out of the shared snapshot); none since the webhooks' outbox is shared
        self.local_types: frozenset[str] = frozenset()
        self.local_parts: frozenset[str] = frozenset()

    def submit(self, rec: dict[str, Any], applied: Applied | None, conn: str | None) -> None:
        """Hand `rec` to the log; `unavailable` (nothing stored) when the log
        cannot take it now."""
        token = self.issued + 1
        rec["o"] = [self.origin, token, conn]
        if not self.hand_off(rec):
            del rec["o"]
            raise ProtocolError(ErrorCode.UNAVAILABLE, "unavailable")
        self.issued = token
        self.waiting[token] = applied

    def came_back(self, origin: Any) -> tuple[str | None, Applied | None]:
        """(A record with `origin` was applied.) The origin's connection and
        callback when the record is this process's own."""
        if type(origin) is not list or origin[0] != self.origin:
            self.own = False
            return None, None
        self.own = True
        return origin[2], self.waiting.pop(origin[1], None)

    def failed(self, token: int) -> Applied | None:
        """The log refused this process's record `token`: its callback, if any."""
        self.refused += 1
        return self.waiting.pop(token, None)

    def after_commit(self, announce: Callable[[], object]) -> None:
        """Run `announce` once every record handed off so far is back."""
        if not self.waiting and not self.announcements:
            announce()
        else:
            self.announcements.append((self.issued, announce))

    def release(self) -> None:
        """Run the announcements whose records are all back."""
        pending = self.announcements
        waiting = self.waiting
        while pending:
            if waiting and next(iter(waiting)) <= pending[0][0]:
                return
            _, announce = pending.popleft()
            try:
                announce()
            except Exception:
                log.exception("announcement failed")
