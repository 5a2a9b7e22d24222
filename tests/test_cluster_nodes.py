"""Cluster mode's nodes (SPEC 11): real `wsserver serve` processes on one real
redis-server list each other in `/api/nodes`; a node killed with -9 is
forgotten within `cluster.node_ttl`, one stopped gracefully at once. And the
sans-IO decision of which node is alive."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import coredis
import trio

from tests.cluster_nodes import client
from tests.hubprocess import Hub, cluster_env
from tests.redis_server import RedisServer
from wsserver.core.cluster_nodes import dead_nodes, live_nodes


def test_a_node_is_alive_while_its_last_report_is_younger_than_node_ttl() -> None:
    infos = {b"a": json.dumps({"name": "A"}), b"b": json.dumps({"name": "B"}), b"c": "not json"}
    seen = {"a": 10_000.0, "b": 4_000.0, "c": 10_000.0}
    live = live_nodes(infos, seen, now_ms=12_000, node_ttl=5)
    assert [(n["node_id"], n["name"], n["last_seen"]) for n in live] == [("a", "A", 10_000)]
    assert dead_nodes(seen, now_ms=12_000, node_ttl=5) == ["b"]
    assert dead_nodes({"a": 7_000.0}, now_ms=12_000, node_ttl=5) == ["a"]  # exactly node_ttl old


async def names(hub: Hub) -> list[str]:
    status, reply = await hub.api("GET", "/api/nodes")
    assert status == 200, reply
    return sorted(n["name"] for n in reply["data"]["nodes"])


async def until_names(hub: Hub, expected: list[str], within: float) -> float:
    """Poll `/api/nodes` until it lists `expected`; the seconds it took."""
    start = time.monotonic()
    with trio.fail_after(within):
        while await names(hub) != expected:
            await trio.sleep(0.05)
    return time.monotonic() - start


def start_nodes(tmp_path: Path, redis: RedisServer, count: int, **timing: float) -> list[Hub]:
    hubs = [Hub(tmp_path / f"n{i}", env=cluster_env(redis.url, f"n{i}", **timing)) for i in range(1, count + 1)]
    for hub in hubs:
        hub.start()
    return hubs


async def test_every_node_lists_every_live_node(tmp_path: Path, redis_server: RedisServer) -> None:
    hubs = start_nodes(tmp_path, redis_server, 3, heartbeat=0.3, node_ttl=2)
    try:
        for hub in hubs:
            await until_names(hub, ["n1", "n2", "n3"], within=5)
        _, reply = await hubs[0].api("GET", "/api/nodes")
        node: dict[str, Any] = reply["data"]["nodes"][0]
        assert set(node) == {"node_id", "name", "version", "connections", "users", "uptime", "last_seen"}
        assert len({n["node_id"] for n in reply["data"]["nodes"]}) == 3
    finally:
        for hub in hubs:
            hub.kill()


async def test_a_node_killed_with_9_is_forgotten_within_node_ttl(tmp_path: Path, redis_server: RedisServer) -> None:
    hubs = start_nodes(tmp_path, redis_server, 3, heartbeat=0.3, node_ttl=2)
    try:
        await until_names(hubs[0], ["n1", "n2", "n3"], within=5)
        hubs[2].kill()
        took = await until_names(hubs[0], ["n1", "n2"], within=4)
        assert took <= 2 + 0.5
        assert await names(hubs[1]) == ["n1", "n2"]
    finally:
        for hub in hubs:
            hub.kill()


async def test_a_node_stopped_gracefully_is_forgotten_at_once(tmp_path: Path, redis_server: RedisServer) -> None:
    hubs = start_nodes(tmp_path, redis_server, 2, heartbeat=1, node_ttl=30)
    redis: Any = coredis.Redis.from_url(redis_server.url)
    try:
        await until_names(hubs[0], ["n1", "n2"], within=5)
        async with client(hubs[1], 4), redis:
            with trio.fail_after(5):
                while not await redis.keys("wsserver:conns:*"):
                    await trio.sleep(0.05)
            assert await redis.zcard("wsserver:principal:user||4") == 1
            assert hubs[1].stop() == 0, "".join(hubs[1].log)
            # node_ttl is 30 s: only the goodbye can make it this quick
            took = await until_names(hubs[0], ["n1"], within=3)
            assert took < 3
            # and its connections left Redis with it
            assert await redis.keys("wsserver:conns:*") == set()
            assert await redis.zcard("wsserver:principal:user||4") == 0
    finally:
        for hub in hubs:
            hub.kill()


def test_check_config_names_the_cluster_key_at_fault() -> None:
    import os
    import subprocess
    import sys

    for env, key in (
        ({"WSSERVER_CLUSTER_REDIS_URL": "localhost:6379"}, "cluster.redis_url"),
        ({"WSSERVER_CLUSTER_HEARTBEAT": "20"}, "cluster.heartbeat"),
        ({"WSSERVER_CLUSTER_PREFIX": "my hub"}, "cluster.prefix"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "wsserver", "check-config"],
            env={**os.environ, **env}, capture_output=True, text=True, check=False,
        )
        assert done.returncode == 2 and f"config error: {key}:" in done.stderr, done.stderr
