"""The Redis client cluster mode relies on, as this project uses it: coredis on
trio against a real redis-server (tests/redis_server.py); and the promise that
a hub without `cluster.redis_url` imports nothing of Redis."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import coredis
import trio

from tests.redis_server import RedisServer


async def test_coredis_runs_on_trio_commands_and_pubsub(redis_server: RedisServer) -> None:
    client: Any = coredis.Redis.from_url(redis_server.url)
    async with client:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        async with client.pubsub(channels=["ch"]) as sub:
            assert await client.publish("ch", "hello") == 1
            with trio.fail_after(5):
                async for message in sub:
                    if message["type"] == "message":
                        assert message["data"] == b"hello"
                        break


async def test_a_redis_that_stops_and_returns_serves_the_same_client_again(redis_server: RedisServer) -> None:
    client: Any = coredis.Redis.from_url(redis_server.url)
    async with client:
        await client.set("k", "before")
        redis_server.stop()
        failed = False
        try:
            with trio.fail_after(5):
                await client.get("k")
        except (coredis.exceptions.ConnectionError, OSError):
            failed = True
        assert failed, "a command against a stopped Redis must fail, not hang or succeed"
        redis_server.start()
        with trio.fail_after(10):
            while True:
                try:
                    assert await client.get("k") == b"before"  # the append-only file kept it
                    break
                except coredis.exceptions.ConnectionError:
                    await trio.sleep(0.05)


def test_a_hub_without_redis_url_imports_nothing_of_redis() -> None:
    code = (
        "import sys, wsserver, wsserver.__main__, wsserver.embed, wsserver.net.server;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('coredis', 'redis'));"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
