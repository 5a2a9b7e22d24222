"""The webhook sender with HTTP/1.1 pipelining (`webhooks.pipeline`), a real
server and a real receiver: many principals' events written several per
request batch and read several per read, each principal's in order; a
connection broken mid-pipeline and malformed answers lose nothing; depth 1
sends one request at a time per connection, as before."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio

from tests.conftest import token, ws_connect
from tests.test_webhooks import metrics, receiver
from tests.webhook_receiver import Receiver

USERS = 48


async def online_then_offline(server: Any, rec: Receiver) -> None:
    """USERS principals connect at once, each hears its welcome, then all leave
    at once: a `user_online` and a `user_offline` each, in bursts."""
    leave = trio.Event()

    async def user(uid: int, here: trio.Semaphore) -> None:
        async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id=uid)}") as ws:
            await ws.get_message()
            here.release()
            await leave.wait()

    here = trio.Semaphore(0)
    async with trio.open_nursery() as users:
        for uid in range(USERS):
            users.start_soon(user, uid, here)
        for _ in range(USERS):
            await here.acquire()
        await rec.wait_for(lambda: len(rec.delivered()) >= USERS)
        leave.set()
    await rec.wait_for(lambda: len(rec.delivered()) >= 2 * USERS)


def in_order_per_principal(rec: Receiver) -> None:
    """Every principal's events arrived once each (as answered 2xx), online before offline."""
    delivered = rec.delivered()
    ids = [e["id"] for e in delivered]
    assert len(ids) == len(set(ids)) == 2 * USERS
    by_user = {
        uid: [e["event"] for e in events]
        for uid, events in itertools.groupby(sorted(delivered, key=lambda e: e["data"]["user_id"]), lambda e: e["data"]["user_id"])
    }
    assert by_user == {uid: ["user_online", "user_offline"] for uid in range(USERS)}


async def test_pipelined_events_reach_the_receiver_several_per_read_each_principal_in_order(live_server: Any) -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        server = await live_server(webhooks__url=rec.url, webhooks__events=["user_online", "user_offline"])
        assert server.config.webhooks.pipeline == 64  # the default
        await online_then_offline(server, rec)
        in_order_per_principal(rec)
        assert max(rec.per_read) > 1, rec.per_read  # several requests came in one read
        assert len(rec.per_read) < len(rec.requests), rec.per_read
        nursery.cancel_scope.cancel()


async def test_depth_1_sends_one_request_at_a_time_on_each_connection(live_server: Any) -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        server = await live_server(
            webhooks__url=rec.url, webhooks__events=["user_online", "user_offline"], webhooks__pipeline=1
        )
        await online_then_offline(server, rec)
        in_order_per_principal(rec)
        assert max(rec.per_read) == 1, rec.per_read
        assert rec.connections <= 16
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("break_after", [0, 3])
async def test_a_connection_broken_mid_pipeline_loses_nothing(live_server: Any, break_after: int) -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        rec.break_after = break_after  # the first connection closes after this many answers
        server = await live_server(webhooks__url=rec.url, webhooks__events=["user_online", "user_offline"])
        await online_then_offline(server, rec)
        in_order_per_principal(rec)  # the unanswered ones were sent again, nothing twice
        assert rec.break_after is None and rec.connections >= 2
        seen = await metrics(server)
        assert seen[("wsserver_webhooks_sent_total", ())] == 2 * USERS
        nursery.cancel_scope.cancel()


async def test_malformed_answers_are_failures_retried_after_the_backoff(live_server: Any) -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        rec.malformed = 2  # the first attempt and its resend on a fresh connection
        server = await live_server(webhooks__url=rec.url, webhooks__events=["user_online"], webhooks__max_backoff=0.5)
        async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id=1)}") as ws:
            await ws.get_message()
            await rec.wait_for(lambda: len(rec.delivered()) == 1)
        assert [r.status for r in rec.requests] == [0, 0, 204]  # the same event thrice
        assert len({r.event["id"] for r in rec.requests}) == 1
        assert rec.requests[2].at - rec.requests[1].at >= 0.45  # after the first backoff
        seen = await metrics(server)
        assert seen[("wsserver_webhooks_failed_total", (("reason", "network"),))] == 1
        assert seen[("wsserver_webhooks_retried_total", ())] == 1
        assert seen[("wsserver_webhooks_sent_total", ())] == 1
        nursery.cancel_scope.cancel()
