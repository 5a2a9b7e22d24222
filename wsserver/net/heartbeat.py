"""One timer task for every connection: pings, liveness, auth and token deadlines.

A task per connection would cost each idle connection a few KB (its coroutine
frames, cancel scopes, the scheduler's bookkeeping); here a connection costs one
heap entry. Each connection has at most one live entry, its next deadline
(`Timed.timer_due`); `tick(now)` does what is due and returns the next deadline,
or None when the connection is gone. An entry whose deadline no longer matches
the connection's is stale and skipped, so moving a deadline earlier is just
another `schedule()`.

The task sleeps until the earliest deadline; a `schedule()` earlier than that
moves the sleep's deadline (no wake-up event, no polling).
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Protocol

import trio


class Timed(Protocol):
    timer_due: float | None

    def tick(self, now: float) -> float | None:
        """Do what is due at `now`; the next deadline, or None to forget this one."""


class Heartbeats:
    """The deadlines of every connection, served by one task (`run`)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = itertools.count()
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, item: Timed, when: float) -> None:
        """Call `item.tick()` at `when` (replacing its previous deadline)."""
        item.timer_due = when
        heapq.heappush(self._heap, (when, next(self._seq), item))
        sleep = self._sleep
        if sleep is not None and when < sleep.deadline:
            sleep.deadline = when

    def reschedule_all(self, when: float) -> None:
        """Tick every connection at `when` (e.g. after a reload changed the timings)."""
        items = {id(item): item for _, _, item in self._heap if item.timer_due is not None}
        for item in items.values():
            self.schedule(item, when)

    def run_due(self, now: float) -> int:
        """Tick everything due at `now`; how many ticked."""
        heap = self._heap
        n = 0
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            if item.timer_due != when:
                continue  # stale: rescheduled or gone
            n += 1
            nxt = item.tick(now)
            if nxt is None:
                item.timer_due = None
            else:
                self.schedule(item, nxt if nxt > now else now + 0.001)
        return n

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None
            self.run_due(trio.current_time())
            await trio.lowlevel.checkpoint()
