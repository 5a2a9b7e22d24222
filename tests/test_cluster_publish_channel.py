"""The Redis publish channel (SPEC 13, docs/CLUSTER.md): a backend's
`PUBLISH wsserver:publish <the /api/publish body>` on the cluster's Redis is
a publish, delivered once to the matching connections of every node; a bad
body is logged with its field and counted, and the channel goes on; the
subscription comes back after a Redis restart; `persist` stores once.
Real redis-server, two real nodes, real WebSocket clients."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import trio

from tests.cluster_nodes import Client, client, nodes, user
from tests.conftest import http_request
from tests.hubprocess import Hub
from tests.redis_server import RedisServer

CHANNEL = "wsserver:publish"


@asynccontextmanager
async def backend(redis_server: RedisServer) -> AsyncIterator[Any]:
    """The business backend's own Redis client."""
    redis: Any = coredis.Redis.from_url(redis_server.url)
    async with redis:
        yield redis


async def publish(redis: Any, body: Any) -> int:
    """PUBLISH `body` (JSON unless bytes) on the channel: how many nodes listen."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return int(await redis.publish(CHANNEL, raw))


async def until_end(receiver: Client) -> list[dict[str, Any]]:
    """Every frame up to the next `end`."""
    got = []
    while (msg := await receiver.receive())["type"] != "end":
        got.append(msg)
    return got


async def rejected(hub: Hub) -> dict[str, float]:
    """`wsserver_redis_publish_rejected_total` by reason, from `/metrics`."""
    status, _, body = await http_request(hub.address, "GET", "/metrics")
    assert status == 200
    found = re.findall(r'^wsserver_redis_publish_rejected_total\{reason="(\w+)"\} (\S+)$', body.decode(), re.M)
    return {why: float(n) for why, n in found}


async def test_a_redis_publish_reaches_each_target_once_on_both_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with (
            client(a, 1, group_id=1, user_type="staff") as one_on_a,
            client(b, 1, group_id=1, user_type="staff") as one_on_b,
            client(b, 2, group_id=1) as two_on_b,
            client(a, 3, group_id=2) as three_on_a,
            backend(redis_server) as redis,
        ):
            await one_on_b.request("join_room", "room_joined", room="lobby")
            await three_on_a.request("join_room", "room_joined", room="lobby", group_id=2)
            everyone = [one_on_a, one_on_b, two_on_b, three_on_a]
            cases: list[tuple[dict[str, Any], list[Client]]] = [
                ({"user_id": 1}, [one_on_a, one_on_b]),
                ({"user_ids": [1, 2, 1]}, [one_on_a, one_on_b, two_on_b]),
                ({"group_id": 1}, [one_on_a, one_on_b, two_on_b]),
                ({"room": "lobby", "group_id": 1}, [one_on_b]),
                ({"all": True}, everyone),
                ({"all": True, "user_type": "staff"}, [one_on_a, one_on_b]),
            ]
            for n, (target, _) in enumerate(cases):
                assert await publish(redis, {**target, "type": "note", "data": {"n": n}}) == 2  # both nodes listen
            await publish(redis, {"all": True, "type": "end"})
            for receiver in everyone:
                notes = [m["data"]["n"] for m in await until_end(receiver) if m["type"] == "note"]
                expected = [n for n, (_, reached) in enumerate(cases) if receiver in reached]
                assert notes == expected  # each once, in the order published


async def test_a_bad_redis_publish_is_logged_and_counted_and_the_next_one_works(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with client(a, 1) as on_a, client(b, 2) as on_b, backend(redis_server) as redis:
            await publish(redis, b"{not json")
            await publish(redis, b"[1, 2]")
            await publish(redis, {"type": "note", "user_id": True})  # a field of the wrong shape
            await publish(redis, {"type": "note", "user_id": 1, "room": "lobby"})  # two targets
            await publish(redis, {"type": "note", "all": True, "persist": True})  # persist needs users
            await publish(redis, {"type": "note", "user_id": 1, "data": "x" * (1024 * 1024)})  # > max_http_body_bytes
            await publish(redis, {"type": "note", "user_ids": [1, 2], "data": "good"})
            for receiver in (on_a, on_b):
                assert (await receiver.next("note"))["data"] == "good"  # nothing of the bad ones came
            for hub in (a, b):
                assert await rejected(hub) == {"json": 2.0, "shape": 3.0, "too_large": 1.0}
                log = "".join(hub.log)
                assert "field user_id" in log and "field persist" in log and "field room" in log, log
            # the nodes still serve
            status, reply = await a.api("POST", "/api/publish", {"user_id": 2, "type": "http", "data": {}})
            assert status == 200, reply
            await on_b.next("http")


async def test_a_redis_publish_works_again_after_redis_restarts(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(a, 1) as on_a, client(b, 2) as on_b:
            async with backend(redis_server) as redis:
                await publish(redis, {"user_ids": [1, 2], "type": "before"})
                await on_a.next("before")
                await on_b.next("before")
            redis_server.stop()
            redis_server.start()
            async with backend(redis_server) as redis:
                with trio.fail_after(15):  # each node subscribes again by itself
                    while await publish(redis, {"type": "probe"}) < 2:  # (a body refused: nothing delivered)
                        await trio.sleep(0.05)
                await publish(redis, {"user_ids": [1, 2], "type": "after"})
                await publish(redis, {"user_ids": [1, 2], "type": "end"})
                for receiver in (on_a, on_b):
                    assert [m["type"] for m in await until_end(receiver)] == ["after"]


async def mailbox(hub: Hub, user_id: str) -> int:
    status, reply = await hub.api("GET", f"/api/users/{user_id}/online")
    assert status == 200, reply
    return int(reply["data"]["mailbox"])


async def test_a_persist_redis_publish_is_stored_once_and_delivered_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with user(a, 7) as seven_on_a, user(b, 7) as seven_on_b, backend(redis_server) as redis:
            await publish(redis, {"user_id": 7, "type": "notice", "data": {"n": 1}, "persist": True})
            await publish(redis, {"user_id": 7, "type": "end", "persist": True})
            for receiver in (seven_on_a, seven_on_b):  # online on both nodes: each connection once
                assert (await receiver.expect("notice"))["data"] == {"n": 1}
                await receiver.expect("end")
                assert [f for f in receiver.seen if f["type"] == "notice"] == []
        async with backend(redis_server) as redis:  # u9 is offline everywhere
            await publish(redis, {"user_id": "u9", "type": "notice", "data": {"n": 2}, "persist": True})
            await publish(redis, {"user_id": "u10", "type": "later", "persist": True})
        with trio.fail_after(10):
            while await mailbox(a, "u10") < 1 or await mailbox(b, "u10") < 1:
                await trio.sleep(0.05)
        assert await mailbox(a, "u9") == await mailbox(b, "u9") == 1  # kept once, by whichever node
        async with user(b, "u9") as u9:
            notice = await u9.expect("notice")
            assert notice["data"] == {"n": 2} and notice["offline"] is True
            await u9.send("sync", {"last_seq": 0})
            await u9.expect("sync_done")
            assert [f for f in u9.seen if f["type"] == "notice"] == []  # not a second copy


async def test_a_persist_publish_to_a_user_connected_to_both_nodes_reaches_both(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The HTTP route's own path, which the channel's claimed `persist` runs."""
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with user(a, 7) as seven_on_a, user(b, 7) as seven_on_b:
            status, reply = await a.api("POST", "/api/publish",
                                        {"user_id": 7, "type": "notice", "data": {"n": 1}, "persist": True})  # fmt: skip
            assert status == 200 and reply["data"] == {"delivered": 1, "queued": 0}, reply
            for receiver in (seven_on_a, seven_on_b):
                assert (await receiver.expect("notice"))["data"] == {"n": 1}
