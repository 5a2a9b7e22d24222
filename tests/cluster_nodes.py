"""What the cluster tests share: nodes (real `wsserver serve` children on one real
redis-server, tests/hubprocess.py and tests/redis_server.py) and two WebSocket
clients: `Peer` keeps the frames it was not asked for yet (a test that checks
several kinds in any order), `Client` reads on past them (a test that follows
one stream)."""

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


def node(tmp_path: Path, redis: RedisServer, name: str, **env: Any) -> Hub:
    """One node (not started) named `name`. `env`: `heartbeat`/`node_ttl`, and
    other `WSSERVER_*` variables as `extra`."""
    extra = env.pop("extra", {})
    return Hub(tmp_path / name, env={**cluster_env(redis.url, name, **env), **extra})


@contextmanager
def nodes(tmp_path: Path, redis: RedisServer, count: int, **env: Any) -> Iterator[list[Hub]]:
    """`count` nodes of one cluster (`n1`, `n2`, ...), started, killed at the end."""
    hubs = [node(tmp_path, redis, f"n{i}", **dict(env)) for i in range(1, count + 1)]
    try:
        for hub in hubs:
            hub.start()
        yield hubs
    finally:
        for hub in hubs:
            hub.kill()


@contextmanager
def two_nodes(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[Hub, Hub]]:
    """Two nodes, started, killed at the end."""
    with nodes(tmp_path, redis, 2) as (a, b):
        yield a, b


class Peer:
    """One WebSocket client of a node: frames kept by type as they come."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self._next = 0

    async def send(self, mtype: str, data: Any, mid: Any = None) -> None:
        msg: dict[str, Any] = {"type": mtype, "data": data}
        if mid is not None:
            msg["id"] = mid
        await self.ws.send_message(json.dumps(msg))

    async def expect(self, *mtypes: str, timeout: float = 10) -> dict[str, Any]:
        """The next frame of one of `mtypes` not taken yet (frames of other types are kept)."""
        with trio.fail_after(timeout):
            while True:
                for i, frame in enumerate(self.seen):
                    if frame["type"] in mtypes:
                        del self.seen[i]
                        return frame
                self.seen.append(json.loads(await self.ws.get_message()))

    async def request(self, mtype: str, data: Any, reply: str) -> dict[str, Any]:
        await self.send(mtype, data)
        return (await self.expect(reply))["data"]  # type: ignore[no-any-return]


@asynccontextmanager
async def user(hub: Hub, user_id: Any, **claims: Any) -> AsyncIterator[Peer]:
    async with ws_connect(f"{hub.url}?token={hub.token(user_id, **claims)}") as ws:
        peer = Peer(ws)
        await peer.expect("connected")
        yield peer


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
