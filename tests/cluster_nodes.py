"""What the cluster tests of the durable state share: nodes (real `wsserver serve`
children on one real redis-server) and a WebSocket client that keeps frames by type."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

from tests.conftest import ws_connect
from tests.hubprocess import Hub
from tests.redis_server import RedisServer


def node(tmp_path: Path, redis: RedisServer, name: str, **env: str) -> Hub:
    return Hub(
        tmp_path / name,
        env={"WSSERVER_CLUSTER_REDIS_URL": redis.url, "WSSERVER_CLUSTER_NODE_NAME": name, **env},
    )


@contextmanager
def two_nodes(tmp_path: Path, redis: RedisServer) -> Iterator[tuple[Hub, Hub]]:
    """Nodes "a" and "b", started, killed at the end."""
    a, b = node(tmp_path, redis, "a"), node(tmp_path, redis, "b")
    with a, b:
        a.start()
        b.start()
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
