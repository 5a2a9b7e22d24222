"""Webhook events in cluster mode (SPEC 6.2 and 11): one outbox for the whole
cluster, kept in Redis, sent by one node at a time; real redis-server, real
nodes (tests/cluster_nodes.py), a real receiver (tests/webhook_receiver.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import coredis
import trio

from tests.cluster_nodes import client, node, nodes, user
from tests.conftest import http_request
from tests.hubprocess import API_KEY, Hub
from tests.redis_server import RedisServer
from tests.webhook_receiver import Received, Receiver

FAST = {"heartbeat": 0.3, "node_ttl": 2}


def hooks(rec: Receiver, events: str = '["user_online","user_offline"]') -> dict[str, Any]:
    return {"extra": {"WSSERVER_WEBHOOKS_URL": rec.url, "WSSERVER_WEBHOOKS_EVENTS": events}}


class Switch:
    """A receiver's answer: 503 while `down`, else 204."""

    def __init__(self) -> None:
        self.down = True

    def __call__(self, request: Received) -> int:
        return 503 if self.down else 204


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10) -> None:
    with trio.fail_after(within):
        while not await check():
            await trio.sleep(0.05)


async def queued(hub: Hub) -> int:
    """The node's `wsserver_webhooks_queue` gauge."""
    status, _, body = await http_request(hub.address, "GET", "/metrics", headers=[("X-API-Key", API_KEY)])
    assert status == 200
    found = re.search(rb"^wsserver_webhooks_queue (\S+)$", body, re.M)
    return int(float(found.group(1))) if found else 0


def of_user(events: list[dict[str, Any]], user_id: Any) -> list[tuple[str, str]]:
    return [(e["event"], e["id"]) for e in events if e["data"].get("user_id") == user_id]


async def test_an_event_not_yet_delivered_when_its_node_is_killed_is_delivered_by_another_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    switch = Switch()
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver(switch).serve)
        a = node(tmp_path, redis_server, "a", **FAST, **hooks(rec))
        b = node(tmp_path, redis_server, "b", **FAST, **hooks(rec))
        try:
            a.start()  # alone: a sends
            async with client(a, 7):
                await rec.wait_for(lambda: any(e["event"] == "user_online" for e in rec.events))
                first = rec.events[0]
                b.start()
                a.kill()
            switch.down = False
            await rec.wait_for(lambda: len(rec.delivered()) >= 2, timeout=15)
            # a late repeat would come at the next attempt: give it a few rounds
            await trio.sleep(1)
            delivered = of_user(rec.delivered(), 7)
            assert delivered[0] == ("user_online", first["id"])
            assert [name for name, _ in delivered] == ["user_online", "user_offline"]
            assert rec.delivered()[1]["data"]["reason"] == "node_gone"
        finally:
            a.kill()
            b.kill()
        nursery.cancel_scope.cancel()


async def test_a_node_restart_neither_loses_nor_reorders_waiting_events(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    switch = Switch()
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver(switch).serve)
        hub = node(tmp_path, redis_server, "a", **FAST, **hooks(rec))
        try:
            hub.start()
            for n in (2, 4, 6):  # (each close counted before the next connect)
                async with client(hub, 5):
                    pass

                async def made(n: int = n) -> bool:
                    return await queued(hub) == n

                await eventually(made)
            first = rec.events[0]
            hub.kill()
            hub.start()
            switch.down = False
            await rec.wait_for(lambda: len(rec.delivered()) >= 6, timeout=15)
            delivered = of_user(rec.delivered(), 5)
            assert [name for name, _ in delivered] == ["user_online", "user_offline"] * 3
            assert delivered[0][1] == first["id"]
            assert len({mid for _, mid in delivered}) == 6
        finally:
            hub.kill()
        nursery.cancel_scope.cancel()


async def test_every_event_of_a_cluster_reaches_the_receiver_once(tmp_path: Path, redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver().serve)
        with nodes(tmp_path, redis_server, 3, **FAST, **hooks(rec)) as hubs:
            for i, hub in enumerate(hubs):
                async with client(hub, 100 + i):
                    pass
            await rec.wait_for(lambda: len(rec.delivered()) >= 6)
            await trio.sleep(1)  # a repeat would come from another node's sender
            ids = [e["id"] for e in rec.events]
            assert len(ids) == len(set(ids)) == 6
            for i in range(3):
                assert [name for name, _ in of_user(rec.events, 100 + i)] == ["user_online", "user_offline"]
        nursery.cancel_scope.cancel()


async def test_a_user_on_two_nodes_is_online_once_and_offline_once(tmp_path: Path, redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver().serve)
        events = '["user_online","user_offline","message"]'
        with nodes(tmp_path, redis_server, 2, **FAST, **hooks(rec, events)) as (a, b):

            async def barrier(n: int) -> None:
                """A message to user 9 from node a: its event comes after every
                event of user 9 recorded before it (one lane)."""
                async with client(a, 10) as ten:
                    await ten.request("send_message", "message_sent", to_user_id=9, text=f"barrier {n}")
                await rec.wait_for(lambda: sum(e["event"] == "message" for e in rec.delivered()) == n)

            def nine() -> list[str]:
                return [
                    e["event"]
                    for e in rec.delivered()
                    if e["data"].get("user_id") == 9 or e["data"].get("to_user_id") == 9
                ]

            async with client(a, 9) as first:
                await rec.wait_for(lambda: nine() == ["user_online"])
                async with client(b, 9):

                    async def two() -> bool:
                        return (await b.api("GET", "/api/users/9/online"))[1]["data"]["connections"] == 2

                    await eventually(two)
                await eventually(lambda: one(b))
                await barrier(1)
                assert nine() == ["user_online", "message"]
            await rec.wait_for(lambda: nine()[-1:] == ["user_offline"])
            await barrier(2)
            assert nine() == ["user_online", "message", "user_offline", "message"]
            online, offline = (e for e in rec.delivered() if e["event"].startswith("user_") and e["data"]["user_id"] == 9)
            assert online["data"]["conn_id"] == offline["data"]["conn_id"] == first.greeting["data"]["conn_id"]
        nursery.cancel_scope.cancel()


async def one(hub: Hub) -> bool:
    """User 9 has one connection left in the cluster."""
    return (await hub.api("GET", "/api/users/9/online"))[1]["data"]["connections"] == 1  # type: ignore[no-any-return]


async def test_a_gracefully_stopped_node_s_users_go_offline_once(tmp_path: Path, redis_server: RedisServer) -> None:
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver().serve)
        with nodes(tmp_path, redis_server, 2, **FAST, **hooks(rec)) as (a, b):
            async with client(a, 11), client(a, 12), client(b, 12):
                await rec.wait_for(lambda: len(rec.delivered()) == 2)
                assert await trio.to_thread.run_sync(a.stop) == 0
                await rec.wait_for(lambda: len(rec.delivered()) == 3)
            await rec.wait_for(lambda: len(rec.delivered()) == 4)
            await trio.sleep(1)  # a repeat would come by then
            assert [(e["event"], e["data"]["user_id"]) for e in rec.delivered()][2:] == [
                ("user_offline", 11),
                ("user_offline", 12),
            ]
        nursery.cancel_scope.cancel()


async def test_waiting_events_are_in_the_shared_snapshot_and_a_new_node_sends_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    switch = Switch()
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver(switch).serve)
        settings = hooks(rec)
        settings["extra"]["WSSERVER_STORAGE_SNAPSHOT_INTERVAL"] = "0.2"
        a = node(tmp_path, redis_server, "a", **FAST, **settings)
        b = node(tmp_path, redis_server, "b", **FAST, **settings)
        try:
            a.start()
            async with client(a, 3):
                pass

            async def two() -> bool:
                return await queued(a) == 2

            await eventually(two)
            redis: Any = coredis.Redis.from_url(redis_server.url)
            async with redis:

                async def snapshotted() -> bool:
                    state = await redis.hget("wsserver:snapshot", "state")
                    return state is not None and len(json.loads(state).get("webhooks", {}).get("events", [])) == 2

                await eventually(snapshotted)
            ids = [e["id"] for e in rec.events[:1]]
            a.kill()
            b.start()  # a new node: the outbox comes from the snapshot
            switch.down = False
            await rec.wait_for(lambda: len(rec.delivered()) == 2, timeout=15)
            assert [e["event"] for e in rec.delivered()] == ["user_online", "user_offline"]
            assert rec.delivered()[0]["id"] == ids[0]
        finally:
            a.kill()
            b.kill()
        nursery.cancel_scope.cancel()


async def test_message_events_of_both_nodes_reach_the_receiver_once_after_their_node_is_killed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A direct message's `message` event is made from its shared `msg` record by
    every node alike (one outbox, the same ids), so the other node delivers it
    when the node that took the message is killed before the receiver answered."""
    switch = Switch()
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver(switch).serve)
        a = node(tmp_path, redis_server, "a", **FAST, **hooks(rec, '["message"]'))
        b = node(tmp_path, redis_server, "b", **FAST, **hooks(rec, '["message"]'))
        try:
            a.start()  # alone: a holds the sender's lease
            b.start()
            async with user(a, 1) as alice, user(b, 2) as bob:
                for text in ("one", "two"):
                    await alice.send("send_message", {"to_user_id": 2, "message": text})
                    await alice.expect("message_sent")
                await bob.send("send_message", {"to_user_id": 1, "message": "three"})
                await bob.expect("message_sent")
                # each lane's first event is tried (and refused) while the receiver is down
                await rec.wait_for(lambda: len({e["id"] for e in rec.events}) == 2)

                async def all_three() -> bool:  # (the gauge of the node that sends)
                    return await queued(a) == 3

                await eventually(all_three)
            [first] = {e["id"] for e in rec.events if e["data"]["text"] == "one"}
            a.kill()
            switch.down = False
            await rec.wait_for(lambda: len(rec.delivered()) == 3, timeout=15)
            await trio.sleep(1)  # a repeat would come at the next round
            delivered = rec.delivered()
            assert [e["data"]["text"] for e in delivered if e["data"]["to_user_id"] == 2] == ["one", "two"]
            assert delivered[0]["id"] == first or delivered[1]["id"] == first
            # each names the node that took the message (a's for both of a's, b's for b's)
            assert all(e["id"].startswith(e["node"] + ".") for e in delivered)
            assert len({e["node"] for e in delivered if e["data"]["to_user_id"] == 2}) == 1
            assert {e["node"] for e in delivered if e["data"]["to_user_id"] == 1}.isdisjoint(
                {e["node"] for e in delivered if e["data"]["to_user_id"] == 2}
            )
            assert len({e["id"] for e in delivered}) == 3
        finally:
            a.kill()
            b.kill()
        nursery.cancel_scope.cancel()
