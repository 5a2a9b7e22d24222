"""A cluster node's side of the shared webhook outbox, without I/O.

In cluster mode the outbox's records (`hook`, `hook_drop`, `hook_skip`,
`hook_upto`) go through the shared log like every durable record
(`core.replicated`): every node applies every node's, so all hold the same
outbox. A record handed off is applied only when it comes back from the log,
so what this node recorded and does not see applied yet waits here, lest it
be handed out or made twice meanwhile:

- `gone`: events this node acknowledged (2xx) or dropped;
- `checking`: undelivered checks it ran (their event made) or skipped;
- `unflushed`: the receiver's answers not recorded yet, per lane the highest
  seq answered; `flush` records them all in one `hook_upto` record (the
  sender does once per round), so the next sender resumes where the
  recorded answers stop (an answer not recorded yet is sent again: at least
  once, with its id).

A record the log refuses (Redis unreachable: nothing stored) is undone: the
events it made are counted lost, an answer is recorded with the next flush,
a drop or a check is free to be made again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from wsserver.core.commit import CommitLog
from wsserver.core.replicated import REFUSED
from wsserver.errors import ProtocolError

__all__ = ["SharedOutbox"]


class SharedOutbox:
    """What this node recorded in the shared outbox and is not applied yet."""

    def __init__(self, commit: CommitLog, lost: Callable[[int], None]) -> None:
        self.commit = commit
        self.lost = lost  # counts events the log refused
        self.made = 0  # events made by this node since it started (their ids)
        self.gone: set[int] = set()
        self.checking: set[int] = set()
        self.unflushed: dict[str, int] = {}

    def record(self, rec: dict[str, Any], undo: Callable[[], object]) -> None:
        """Hand `rec` to the shared log; `undo()` when the log refuses it."""

        def applied(result: Any) -> None:
            if result is REFUSED:
                undo()

        try:
            self.commit.record(rec, applied)
        except ProtocolError:
            undo()

    def event(self, rec: dict[str, Any]) -> None:
        """Record an event (its seq is decided when applied)."""
        check = rec.get("check")
        if check is None:
            self.record(rec, lambda: self.lost(1))
            return
        self.checking.add(check)

        def undo() -> None:
            self.checking.discard(check)
            self.lost(1)

        self.record(rec, undo)

    def drop(self, rec: dict[str, Any]) -> None:
        """Record a `hook_drop`: its events are handed out no more meanwhile."""
        seqs = rec["seqs"]
        self.gone.update(seqs)
        self.record(rec, lambda: self.gone.difference_update(seqs))

    def skip(self, rec: dict[str, Any]) -> None:
        """Record a `hook_skip`: its checks are not run again meanwhile."""
        mids = rec["mids"]
        self.checking.update(mids)
        self.record(rec, lambda: self.checking.difference_update(mids))

    def answered(self, lane: str, seq: int) -> None:
        """The receiver answered 2xx to event `seq` of `lane` (recorded at `flush`)."""
        self.gone.add(seq)
        self.unflushed[lane] = seq

    def flush(self) -> None:
        """Record the answers since the last flush in one `hook_upto` record."""
        lanes, self.unflushed = self.unflushed, {}

        def again() -> None:
            for lane, upto in lanes.items():
                if self.unflushed.get(lane, 0) < upto:
                    self.unflushed[lane] = upto

        self.record({"t": "hook_upto", "lanes": lanes}, again)

    def applied(self, rec: dict[str, Any], events: Mapping[int, Any]) -> None:
        """(Any node's outbox record was applied; `events`, the outbox's now.)
        What was waiting for it waits no more."""
        kind = rec["t"]
        if kind == "hook":
            check = rec.get("check")
            if check is not None:
                self.checking.discard(check)
        elif kind == "hook_skip":
            self.checking.difference_update(rec["mids"])
        elif self.gone:  # hook_upto, hook_drop, hook_ack: the store removed them already
            self.gone = {seq for seq in self.gone if seq in events}
