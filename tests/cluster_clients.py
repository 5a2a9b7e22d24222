"""Clients and nodes for the cluster tests: several `wsserver serve` nodes on
one redis-server (tests/hubprocess.py, tests/redis_server.py), and plain
WebSocket clients that read the frames a node sends them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

from tests.conftest import ws_connect
from tests.hubprocess import Hub, cluster_env
from tests.redis_server import RedisServer


@contextmanager
def nodes(tmp_path: Path, redis: RedisServer, count: int, **env: Any) -> Iterator[list[Hub]]:
    """`count` nodes of one cluster, started, killed at the end. `env`:
    `heartbeat`/`node_ttl`, and other `WSSERVER_*` keys as `extra`."""
    extra = env.pop("extra", {})
    hubs = [
        Hub(tmp_path / f"n{i}", env={**cluster_env(redis.url, f"n{i}", **env), **extra})
        for i in range(1, count + 1)
    ]
    try:
        for hub in hubs:
            hub.start()
        yield hubs
    finally:
        for hub in hubs:
            hub.kill()


class Client:
    """One WebSocket client: `send(type, **data)`, `next(type)` skips other types."""

    def __init__(self, ws: Any, greeting: dict[str, Any]) -> None:
        self.ws = ws
        self.greeting = greeting

    async def send(self, mtype: str, **data: Any) -> None:
        await self.ws.send_message(json.dumps({"type": mtype, "data": data}))

    async def receive(self, within: float = 5) -> dict[str, Any]:
        with trio.fail_after(within):
            msg: dict[str, Any] = json.loads(await self.ws.get_message())
            return msg

    async def next(self, mtype: str, within: float = 5) -> dict[str, Any]:
        with trio.fail_after(within):
            while True:
                msg = await self.receive(within)
                if msg["type"] == mtype:
                    return msg

    async def request(self, mtype: str, answer: str, **data: Any) -> dict[str, Any]:
        await self.send(mtype, **data)
        return await self.next(answer)


@asynccontextmanager
async def client(hub: Hub, user_id: Any, **claims: Any) -> AsyncIterator[Client]:
    """A client of `user_id` on `hub`, once greeted (`connected`)."""
    async with ws_connect(f"{hub.url}?token={hub.token(user_id, **claims)}") as ws:
        with trio.fail_after(5):
            greeting = json.loads(await ws.get_message())
        assert greeting["type"] == "connected", greeting
        yield Client(ws, greeting)
