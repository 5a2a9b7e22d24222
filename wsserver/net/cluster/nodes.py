"""Node membership in Redis: each node's report, the live list, goodbye.

Keys (`<prefix>` is `cluster.prefix`):

    <prefix>:nodes        hash: node id -> the node's info (JSON)
    <prefix>:nodes:seen   sorted set: node id -> last report, Unix ms

A hash and a sorted set rather than one key per node with a TTL: a key that
expires vanishes silently, while a dead node's entry stays in the sorted set
until a survivor removes it, and `ZREM` answers 1 to exactly one remover. That
one node runs the dead node's clean-up (`on_dead`: its presence, its users'
`user_offline`), so it happens once across the cluster. Listing reads both
keys and keeps the nodes seen within `node_ttl` (`core.cluster_nodes`), so a
killed node stops being listed within `node_ttl` even before anyone cleans up.

Each `heartbeat`: write this node's report (one pipeline), publish the bus
heartbeat (the subscription's probe), then look for dead nodes. A graceful
stop removes the node's entries at once (`goodbye`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from wsserver.config import ClusterConfig
from wsserver.core.cluster_nodes import dead_nodes, live_nodes
from wsserver.net.cluster.bus import Bus
from wsserver.net.cluster.link import REDIS_ERRORS, Link

__all__ = ["Nodes"]

log = logging.getLogger("wsserver.cluster")


def now_ms() -> float:
    return time.time() * 1000


class Nodes:
    """This node's membership: reports, the live list, dead nodes, goodbye."""

    def __init__(
        self,
        link: Link,
        bus: Bus,
        config: Callable[[], ClusterConfig],
        node: Callable[[], str],
        info: Callable[[], Awaitable[dict[str, Any]]],
        on_dead: Callable[[str], Awaitable[None]],
        after_beat: Callable[[], Awaitable[None]] | None = None,
        after_reap: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.link = link
        self.bus = bus
        self.config = config
        self.node = node
        self.info = info  # this node's info (`/api/nodes`'s fields but last_seen)
        self.on_dead = on_dead  # a dead node's clean-up, run by the node that claimed it
        self.after_beat = after_beat  # what else a heartbeat that reached Redis does
        self.after_reap = after_reap  # ... once `live` is current
        self.live: set[str] = set()  # the live nodes as the last heartbeat saw them
        prefix = config().prefix
        self.nodes_key = f"{prefix}:nodes"
        self.seen_key = f"{prefix}:nodes:seen"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report every `cluster.heartbeat` seconds, until cancelled (the first
        report is the node's announcement)."""
        await self.beat()
        task_status.started()
        while True:
            await trio.sleep(self.config().heartbeat)
            await self.beat()

    async def beat(self) -> None:
        """One report, the bus probe, and the dead nodes' clean-up."""
        try:
            info = await self.info()
            node = self.node()
            client = self.link.client
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(self.nodes_key, {node: json.dumps(info)})
                pipe.zadd(self.seen_key, {node: now_ms()})
            await self.bus.publish_heartbeat()
            self.link.mark_up()
            if self.after_beat is not None:
                await self.after_beat()
            await self._reap()
            if self.after_reap is not None:
                await self.after_reap()
        except REDIS_ERRORS as exc:
            self.link.mark_down(exc)

    async def _reap(self) -> None:
        client = self.link.client
        seen = await self._seen()
        ttl = self.config().node_ttl
        dead = dead_nodes(seen, now_ms(), ttl)
        self.live = set(seen) - set(dead)
        for node in dead:
            if await client.zrem(self.seen_key, [node]) != 1:
                continue  # another node claimed it
            log.warning("cluster: node %s stopped reporting; cleaning up after it", node)
            await client.hdel(self.nodes_key, [node])
            await self.on_dead(node)

    async def _seen(self) -> dict[str, float]:
        scored = await self.link.client.zrangebyscore(self.seen_key, "-inf", "+inf", withscores=True)
        return {_text(m.member): m.score for m in scored}

    async def listing(self) -> list[dict[str, Any]]:
        """The live nodes (raises `REDIS_ERRORS` when Redis does not answer)."""
        client = self.link.client
        infos = await client.hgetall(self.nodes_key)
        return live_nodes(infos, await self._seen(), now_ms(), self.config().node_ttl)

    async def goodbye(self) -> None:
        """Leave at once (a graceful stop): the others stop listing this node."""
        node = self.node()
        client = self.link.client
        with trio.move_on_after(2):
            try:
                async with client.pipeline(transaction=True) as pipe:
                    pipe.zrem(self.seen_key, [node])
                    pipe.hdel(self.nodes_key, [node])
                log.info("cluster: node %s left", node)
            except REDIS_ERRORS as exc:
                log.warning("cluster: could not say goodbye (%s); the others forget this node within node_ttl", exc)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

