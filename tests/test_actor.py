"""The hub actor (`wsserver.net.actor`): replies, errors, order, a full
inbox, callers cancelled while they wait, and the one command that may skip
the inbox."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.conftest import make_config
from wsserver.core.admin_commands import Stats
from wsserver.core.commands import AddHandler, ListCodes, PutCode
from wsserver.net import actor as actor_mod
from wsserver.net.actor import HubActor


def codes(listing: list[dict[str, Any]]) -> list[str]:
    return [c["code"] for c in listing]


def nothing(request: Any) -> None:
    pass


async def test_calls_answer_in_order_and_errors_reach_the_caller(tmp_path: Any) -> None:
    actor = HubActor(make_config(tmp_path))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        assert await actor.call(PutCode("C1", 1)) == (True, 0)
        assert actor.tell_nowait(PutCode("C2", 1))
        await actor.tell(PutCode("C3", 1))
        assert await actor.call(PutCode("C1", 2)) == (False, 0)
        with pytest.raises(ValueError, match="already handled"):
            await actor.call(AddHandler("join_room", nothing))
        assert codes(await actor.call(ListCodes())) == ["C1", "C2", "C3"]  # the actor survived
        nursery.cancel_scope.cancel()


async def test_a_caller_cancelled_while_waiting_leaves_the_actor_working(tmp_path: Any) -> None:
    actor = HubActor(make_config(tmp_path))
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            scope.cancel()  # cancelled before the actor even runs
            await actor.call(PutCode("C1", 1))
        await nursery.start(actor.run)
        await trio.sleep(0.01)
        assert codes(await actor.call(ListCodes())) == ["C1"]  # it ran; its answer was dropped
        assert await actor.call(PutCode("C2", 1)) == (True, 0)
        nursery.cancel_scope.cancel()


async def test_calls_wait_for_room_when_the_inbox_is_full(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(actor_mod, "INBOX_SIZE", 2)
    actor = HubActor(make_config(tmp_path))
    results: list[Any] = []
    async with trio.open_nursery() as nursery:
        for i in range(6):  # more callers than the inbox holds, before the actor runs
            nursery.start_soon(lambda i=i: _call(actor, i, results))
        await trio.sleep(0.01)
        assert results == []
        await nursery.start(actor.run)
        with trio.fail_after(5):
            while len(results) < 6:
                await trio.sleep(0.01)
        assert sorted(codes(await actor.call(ListCodes()))) == [f"C{i}" for i in range(6)]
        nursery.cancel_scope.cancel()
    assert results == [(True, 0)] * 6


async def _call(actor: HubActor, i: int, results: list[Any]) -> None:
    results.append(await actor.call(PutCode(f"C{i}", 1)))


async def test_only_a_host_handler_skips_the_inbox_while_the_actor_runs(tmp_path: Any) -> None:
    actor = HubActor(make_config(tmp_path))
    assert actor.execute_now(PutCode("C1", 1)) == (True, 0)  # before it runs: start-up
    assert "order_placed" not in actor.message_types
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        actor.execute_now(AddHandler("order_placed", nothing))
        assert "order_placed" in actor.message_types  # the metrics' view is live
        with pytest.raises(RuntimeError, match="inbox"):
            actor.execute_now(Stats())
        assert codes(await actor.call(ListCodes())) == ["C1"]
        nursery.cancel_scope.cancel()
