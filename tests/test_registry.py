"""The registry actor (`wsserver.net.registry`): replies, errors, order, a full
inbox, and callers cancelled while they wait."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from wsserver.net import registry as registry_mod
from wsserver.net.registry import Registry


class State:
    def __init__(self) -> None:
        self.log: list[Any] = []

    def add(self, x: Any) -> Any:
        self.log.append(x)
        return x * 2

    def fail(self) -> None:
        raise ValueError("no")


async def test_calls_answer_in_order_and_errors_reach_the_caller() -> None:
    state = State()
    reg = Registry(state)
    async with trio.open_nursery() as nursery:
        await nursery.start(reg.run)
        assert await reg.call(state.add, 1) == 2
        assert reg.tell_nowait(state.add, 2)
        await reg.tell(state.add, 3)
        assert await reg.call(state.add, 4) == 8
        with pytest.raises(ValueError, match="no"):
            await reg.call(state.fail)
        assert await reg.call(state.add, 5) == 10  # the actor survived
        nursery.cancel_scope.cancel()
    assert state.log == [1, 2, 3, 4, 5]


async def test_a_caller_cancelled_while_waiting_leaves_the_actor_working() -> None:
    state = State()
    reg = Registry(state)
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before the actor even runs
            await reg.call(state.add, 1)
        await nursery.start(reg.run)
        await trio.sleep(0.01)
        assert state.log == [1]  # the command ran; its answer was dropped
        assert await reg.call(state.add, 2) == 4
        nursery.cancel_scope.cancel()


async def test_calls_wait_for_room_when_the_inbox_is_full(monkeypatch: Any) -> None:
    monkeypatch.setattr(registry_mod, "INBOX_SIZE", 2)
    state = State()
    reg = Registry(state)
    results: list[Any] = []
    async with trio.open_nursery() as nursery:
        for i in range(6):  # more callers than the inbox holds, before the actor runs
            nursery.start_soon(lambda i=i: _call(reg, state, i, results))
        await trio.sleep(0.01)
        assert results == []
        await nursery.start(reg.run)
        with trio.fail_after(5):
            while len(results) < 6:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert sorted(results) == [0, 2, 4, 6, 8, 10]
    assert sorted(state.log) == [0, 1, 2, 3, 4, 5]


async def _call(reg: Registry, state: State, i: int, results: list[Any]) -> None:
    results.append(await reg.call(state.add, i))
