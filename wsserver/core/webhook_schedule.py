"""The webhook sender's schedule, without I/O: which principal's next event may go
now, and when to try again.

The outbox (`core.webhook_store`) says what waits, per principal (a lane); this
says when a lane's head may be handed out (`core.webhooks` hands it out):

- Order per lane: a lane's next event goes only after its previous one was
  acknowledged or dropped; other lanes go on meanwhile (`in_flight`).
- A failed attempt makes its lane wait `FIRST_RETRY` seconds, doubling per
  failure up to `webhooks.max_backoff`; a success resets it.
- A receiver that fails `PROBE_AFTER` attempts in a row, whatever the
  principals, counts as down: then only one attempt is made at a time, the
  next one after the backoff of the streak, so a receiver that is down gets
  a probe now and then rather than every principal's retries; the first
  success ends it. (A single event the receiver refuses does not stop the
  others: their successes break the streak.)
- None of it is durable: after a restart every lane with events is ready.
"""

from __future__ import annotations

import heapq
from collections.abc import Container, Iterable

__all__ = ["FIRST_RETRY", "HOT_LANE", "PROBE_AFTER", "Schedule", "backoff"]

FIRST_RETRY = 0.5
"""Seconds before the first retry of a failed event; then doubling."""

PROBE_AFTER = 8
"""Failed attempts in a row (any principals, no success between) after which
the receiver counts as down: then one attempt at a time, themselves spaced by
the backoff, until one succeeds."""


HOT_LANE = 8
"""Events waiting in a lane behind the one handed out from which the sender's
next round goes as soon as it is woken, without its gathering pause: a lane
gets one event per round, so a busy principal would otherwise be held to the
pace of the rounds."""


def backoff(failures: int, max_backoff: float) -> float:
    """Seconds a lane waits after its `failures`-th failure in a row."""
    return float(min(max_backoff, FIRST_RETRY * 2 ** min(failures - 1, 32)))


class Schedule:
    """The lanes ready to go, in flight and waiting for their retry (see the
    module docstring). Times are ms on the hub's clock."""

    def __init__(self, max_backoff: float) -> None:
        self.max_backoff = max_backoff
        self.ready: dict[str, None] = {}  # lanes whose head may go now, in order
        self.in_flight: set[str] = set()
        self.failures: dict[str, int] = {}  # lane -> failures in a row of its head
        self.retry_at: dict[str, int] = {}  # lane -> when its head may go again
        self.retries: list[tuple[int, str]] = []  # heap of (retry_at, lane); stale entries skipped
        self.streak = 0  # failed attempts in a row, any lane
        # while the receiver counts as down: when the next probe may go, the lane
        # of the probe in flight, and the probes failed so far
        self.probe_at = 0
        self.probe_lane: str | None = None
        self.probes = 0

    def reset(self, lanes: Iterable[str]) -> None:
        """A fresh schedule (the sender started): every lane given is ready."""
        self.in_flight.clear()
        self.failures.clear()
        self.retry_at.clear()
        self.retries.clear()
        self.streak = self.probe_at = self.probes = 0
        self.probe_lane = None
        self.ready = dict.fromkeys(lanes)

    def waiting(self, lane: str) -> None:
        """`lane` has an event waiting: ready, unless its head is in flight or
        waits for its retry."""
        if lane not in self.in_flight and lane not in self.retry_at:
            self.ready[lane] = None

    @property
    def probing(self) -> bool:
        """Whether the receiver counts as down."""
        return self.streak >= PROBE_AFTER

    def limit(self, limit: int, now: int) -> int:
        """How many events may be handed out now, of `limit` asked for: one
        probe at a time, not before its time, while the receiver is down.
        Retries that fell due are ready first."""
        retries, retry_at, ready = self.retries, self.retry_at, self.ready
        while retries and retries[0][0] <= now:
            at, lane = heapq.heappop(retries)
            if retry_at.get(lane) == at:
                del retry_at[lane]
                ready[lane] = None
        if self.probing:
            return 0 if self.in_flight or now < self.probe_at else min(limit, 1)
        return limit

    def handed_out(self, lanes: list[str]) -> None:
        """The heads of `lanes` went out (no longer ready: in flight)."""
        for lane in lanes:
            self.ready.pop(lane, None)
        self.in_flight.update(lanes)
        if self.probing and lanes:
            self.probe_lane = lanes[0]

    def succeeded(self) -> None:
        """The receiver answered 2xx: it is up."""
        self.streak = 0
        self.probe_lane = None

    def moved(self, lane: str, has_head: bool) -> None:
        """`lane`'s head was acknowledged or dropped: ready with its next event
        (`has_head`), or gone."""
        if not has_head:
            self.ready.pop(lane, None)
            self.failures.pop(lane, None)
            self.retry_at.pop(lane, None)
        else:
            self.waiting(lane)

    def settled(self, lanes: Iterable[str], heads: Container[str]) -> bool:
        """The heads of `lanes`, in flight, were acknowledged or dropped: a lane in
        `heads` (it holds another event) is ready with it, the others are gone
        (`moved` for many, in one pass). Whether any lane has another event."""
        in_flight, ready, failures, retry_at = self.in_flight, self.ready, self.failures, self.retry_at
        again = False
        for lane in lanes:
            in_flight.discard(lane)
            if failures:
                failures.pop(lane, None)
            if lane in heads:
                again = True
                if lane not in retry_at:
                    ready[lane] = None
            else:
                ready.pop(lane, None)
                if retry_at:
                    retry_at.pop(lane, None)
        return again

    def failed(self, lane: str, now: int) -> None:
        """An attempt at `lane`'s head failed: its retry after the backoff."""
        self.streak += 1
        if self.streak == PROBE_AFTER:  # the receiver now counts as down
            self.probes = 0
            self.probe_at = now + int(backoff(1, self.max_backoff) * 1000)
        elif self.streak > PROBE_AFTER and lane == self.probe_lane:
            self.probes += 1
            self.probe_at = now + int(backoff(self.probes + 1, self.max_backoff) * 1000)
        failures = self.failures[lane] = self.failures.get(lane, 0) + 1
        at = now + int(backoff(failures, self.max_backoff) * 1000)
        self.retry_at[lane] = at
        heapq.heappush(self.retries, (at, lane))

    def next_due(self) -> int | None:
        """When the next retry or probe falls due, if any. (Ready lanes left
        over wait for a durable event or an answer, which wake the sender; only
        while probing do they wait for the clock.)"""
        if not self.probing:
            return self.retries[0][0] if self.retries else None
        if not self.in_flight and (self.ready or self.retries):
            first = self.probe_at if self.ready else self.retries[0][0]
            return max(first, self.probe_at)
        return None
