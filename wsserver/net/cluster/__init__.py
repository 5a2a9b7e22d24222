"""Cluster mode (SPEC 11, docs/CLUSTER.md): this node joined to the others through Redis.

(The shared log of durable records, `log`, is started by the server on its own.)

`Cluster` composes the node's Redis side: the link (`link`: the client and
Redis's health), the bus (`bus`: ephemeral deliveries between nodes), the
membership (`nodes`: reports, the live list, dead nodes, goodbye), the
shared presence (`presence`: this node's connections in Redis, the limit
across nodes, every node's connections read for the HTTP API), the other
nodes' connections kept current in the hub (`members`: room members and
limits counted across nodes), the Redis publish channel (`publishes`: a
backend's `PUBLISH` run as an API publish) and the webhook sender's lease
(`hooks`: one node sends the shared outbox). The server
builds one when `cluster.redis_url` is set, importing this package inside
that branch only: without it nothing of Redis is imported.

The hub never awaits Redis: it hands deliveries to `Cluster.outlet` (never
blocking) and hears from the other nodes through commands its actor runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from wsserver.config import ClusterConfig, Config
from wsserver.core.cluster_broker import ClusterOutlets
from wsserver.net.cluster.bus import Bus
from wsserver.net.cluster.hooks import HookLease
from wsserver.net.cluster.link import REDIS_ERRORS, Link
from wsserver.net.cluster.members import Members
from wsserver.net.cluster.nodes import Nodes
from wsserver.net.cluster.presence import PresenceView, PresenceWriter
from wsserver.net.cluster.publish_channel import PublishChannel
from wsserver.ops.background import Background

__all__ = ["REDIS_ERRORS", "Cluster", "ClusterHost", "PresenceView"]

log = logging.getLogger("wsserver.cluster")

SUBSCRIBE_WAIT = 2.0
"""Seconds a starting node waits for its subscription to the bus before serving."""


class ClusterHost(Protocol):
    """What the cluster uses of its server."""

    @property
    def config(self) -> Config: ...

    @property
    def background(self) -> Background: ...

    async def node_info(self) -> dict[str, Any]:
        """This node's `/api/nodes` entry (but `last_seen`)."""

    async def ask(self, command: Any) -> Any:
        """Run `command` in the hub's actor and return its answer."""


class Cluster:
    """This node's link, bus and membership (see the module docstring)."""

    def __init__(self, host: ClusterHost, node: Callable[[], str], tell: Callable[[Any], Awaitable[None]]) -> None:
        self.host = host
        cluster = host.config.cluster
        self.link = Link(cluster.redis_url, host.background)
        self.bus = Bus(self.link, cluster.prefix, node, tell, lambda: self._config().heartbeat)
        self.members = Members(self.link, cluster.prefix, node, self._live, self.bus.outlet, host.ask, tell)
        self.presence = PresenceWriter(
            self.link, cluster.prefix, node, self._live, lambda: host.config, tell, self.bus.outlet, self.members.wrote
        )
        self.view = PresenceView(self.presence)
        self.publishes = PublishChannel(self.link, cluster.prefix, node, lambda: self._config().heartbeat)
        self.nodes = Nodes(
            self.link, self.bus, self._config, node, host.node_info, self._node_dead,
            after_beat=self.presence.resync_if_stale, after_reap=self.members.sync,
        )  # fmt: skip
        self.hooks = HookLease(self.link, cluster.prefix, node, self._config)  # the webhook sender's lease
        self._scope: trio.CancelScope | None = None

    async def _node_dead(self, node: str) -> None:
        """(This node claimed dead `node`.) Its presence and `user_offline`
        (`presence`), then its rooms' `user_left` (`members`), once each."""
        entries = await self.members.entries(node)
        await self.presence.node_gone(node)
        await self.members.gone(node, entries)

    def _live(self) -> set[str]:
        return self.nodes.live

    def _config(self) -> ClusterConfig:
        return self.host.config.cluster

    @property
    def outlets(self) -> ClusterOutlets:
        """The hub's hand-overs to the other nodes: deliveries and presence."""
        return ClusterOutlets(self.bus.outlet, self.presence.outlet)

    errors = REDIS_ERRORS
    """What a Redis command raises while Redis does not answer."""

    @property
    def up(self) -> bool:
        """True while Redis answers."""
        return self.link.up

    async def start(self, nursery: trio.Nursery) -> None:
        """Connect, subscribe and announce this node, in `nursery` (a Redis down
        at start is logged and retried: the node serves its own connections
        meanwhile)."""
        await nursery.start(self._run)

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The client stays open until every task using it has ended: `stop()`
        # cancels the tasks first, so the subscription unsubscribes cleanly.
        async with self.link.client, trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            nursery.start_soon(self.bus.subscriber)
            await nursery.start(self.publishes.run)
            # subscribed before serving, unless Redis does not answer (coredis keeps
            # trying in the background: the node serves its own clients meanwhile)
            with trio.move_on_after(SUBSCRIBE_WAIT):
                await self.bus.subscribed.wait()
                await self.publishes.subscribed.wait()
            nursery.start_soon(self.bus.watch)
            nursery.start_soon(self.bus.publisher)
            nursery.start_soon(self.presence.run)
            await nursery.start(self.nodes.run)
            if self.hooks.sender is not None:
                nursery.start_soon(self.hooks.run)
            task_status.started()

    async def stop(self) -> None:
        """Say goodbye (a graceful stop): the others forget this node at once;
        then end the cluster's tasks."""
        await self.hooks.release()
        await self.nodes.goodbye()
        await self.presence.leave()
        if self._scope is not None:
            self._scope.cancel()

    async def listing(self) -> list[dict[str, Any]]:
        """The live nodes (`/api/nodes`)."""
        return await self.nodes.listing()
