"""The one timer task for all connections (`wsserver.net.heartbeat`)."""

from __future__ import annotations

from typing import Any

import trio

from wsserver.net.heartbeat import Heartbeats


class Ticker:
    def __init__(self, every: float | None, times: int = 1_000) -> None:
        self.timer_due: float | None = None
        self.every = every
        self.ticks: list[float] = []
        self.times = times

    def tick(self, now: float) -> float | None:
        self.ticks.append(now)
        if self.every is None or len(self.ticks) >= self.times:
            return None
        return now + self.every


async def test_each_item_ticks_at_its_own_deadlines(autojump_clock: Any) -> None:
    hb = Heartbeats()
    a, b = Ticker(1.0, times=4), Ticker(2.5, times=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(hb.run)
        t0 = trio.current_time()
        hb.schedule(a, t0 + 1)
        hb.schedule(b, t0 + 2.5)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [t - t0 for t in a.ticks] == [1, 2, 3, 4]
    assert [t - t0 for t in b.ticks] == [2.5, 5]
    assert a.timer_due is None and b.timer_due is None
    assert len(hb) == 0  # nothing left behind


async def test_an_earlier_schedule_wakes_the_sleeping_task(autojump_clock: Any) -> None:
    hb = Heartbeats()
    late, early = Ticker(None), Ticker(None)
    async with trio.open_nursery() as nursery:
        await nursery.start(hb.run)
        t0 = trio.current_time()
        hb.schedule(late, t0 + 100)
        await trio.sleep(1)  # the task now sleeps until t0 + 100
        hb.schedule(early, t0 + 2)
        await trio.sleep(5)
        assert [t - t0 for t in early.ticks] == [2]
        assert late.ticks == []
        nursery.cancel_scope.cancel()


async def test_rescheduling_replaces_the_old_deadline(autojump_clock: Any) -> None:
    hb = Heartbeats()
    item = Ticker(None)
    async with trio.open_nursery() as nursery:
        await nursery.start(hb.run)
        t0 = trio.current_time()
        hb.schedule(item, t0 + 5)
        hb.schedule(item, t0 + 1)  # moved earlier: the entry at +5 is stale
        await trio.sleep(10)
        assert [t - t0 for t in item.ticks] == [1]
        hb.schedule(item, trio.current_time() + 1)
        item.timer_due = None  # forgotten (a closed connection): never ticks
        await trio.sleep(5)
        assert len(item.ticks) == 1
        nursery.cancel_scope.cancel()


async def test_reschedule_all_ticks_everything_now(autojump_clock: Any) -> None:
    hb = Heartbeats()
    items = [Ticker(50.0) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(hb.run)
        t0 = trio.current_time()
        for item in items:
            hb.schedule(item, t0 + 50)
        await trio.sleep(1)
        hb.reschedule_all(trio.current_time())
        await trio.sleep(0.5)
        assert all([t - t0 for t in item.ticks] == [1] for item in items)
        nursery.cancel_scope.cancel()
