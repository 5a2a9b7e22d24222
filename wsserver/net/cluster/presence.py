"""Shared presence in Redis: this node's connections written, every node's read.

Keys (`<prefix>` is `cluster.prefix`):

    <prefix>:conns:<node>         hash: conn id -> entry (JSON, `core.cluster_presence.entry`)
    <prefix>:principal:<p>        sorted set: "<node> <conn id>" -> connected at (ms),
                                  `<p>` the principal's parts joined by `|`

Each node writes only its own connections (the `ClusterPresence` outlet:
a bounded channel drained by `PresenceWriter.run`, several changes per
pipeline); a node's liveness (`net.cluster.nodes`) decides whether its
entries count, so a killed node's connections stop counting within
`node_ttl` even before a survivor removes them (`node_gone`).

The writer keeps a mirror of what it wrote; after Redis was unreachable it
writes the whole mirror again (`resync`), on the next change or heartbeat.
Each write is then told to `wrote` (`net.cluster.members`: the other nodes'
copies of this node's connections follow the writes).

Adding or removing a connection also counts its principal's live
connections in one script (`net.cluster.online`): the node that finds a
principal's first or last connection anywhere tells its hub (`PresenceEdges`),
which makes the `user_online` / `user_offline` event, once per cluster.

The per-principal limit across nodes: after writing a new connection, the
writer reads its principal's set; the connections beyond
`limits.max_connections_per_user` (the oldest, on live nodes) are closed with
4004 by their own node (a `close` route on the bus). The limit is thus
enforced a moment after the new connection is greeted, not before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from wsserver.config import Config
from wsserver.core.cluster_broker import ROUTE_CLOSE, BusOutlet
from wsserver.core.cluster_commands import CloseConnection, NodeGone, PresenceEdges
from wsserver.core.cluster_presence import (
    device_view,
    matches,
    merge_members,
    over_limit,
    room_list,
    room_members,
)
from wsserver.errors import CloseCode
from wsserver.net.cluster.link import REDIS_ERRORS, Link, receive_batch
from wsserver.net.cluster.online import ADD, REMOVE, count_args
from wsserver.net.http import HttpError
from wsserver.protocol.envelope import id_key

__all__ = ["PresenceView", "PresenceWriter"]

log = logging.getLogger("wsserver.cluster")

OUTBOX_SIZE = 16384
BATCH = 512


class PresenceWriter:
    """This node's connections in Redis, the limit across nodes, and the
    reading of every live node's connections."""

    def __init__(
        self,
        link: Link,
        prefix: str,
        node: Callable[[], str],
        live: Callable[[], set[str]],
        config: Callable[[], Config],
        tell: Callable[[Any], Awaitable[None]],
        bus: BusOutlet,
        wrote: Callable[[dict[str, dict[str, Any] | None] | None], Awaitable[None]] | None = None,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.node = node
        self.live = live  # the live nodes' ids as last seen (`Nodes.live`)
        self.config = config
        self.tell = tell  # the hub's door
        self.bus = bus
        self.wrote = wrote  # told each batch written (None: all of it), `net.cluster.members`
        self._send, self._receive = trio.open_memory_channel[tuple[str, "dict[str, Any] | None"]](OUTBOX_SIZE)
        self.mirror: dict[str, dict[str, Any]] = {}
        self.stale = True  # Redis may not hold the mirror: write it whole

    def conns_key(self, node: str) -> str:
        return f"{self.prefix}:conns:{node}"

    def principal_key(self, principal: list[Any]) -> str:
        return f"{self.prefix}:principal:" + "|".join(map(str, principal))

    def outlet(self, conn_id: str, entry: dict[str, Any] | None) -> bool:
        """`core.cluster_presence.PresenceOutlet`: never blocks."""
        try:
            self._send.send_nowait((conn_id, entry))
        except trio.WouldBlock:
            self.stale = True  # the mirror misses it: a full rewrite is due
            return False
        return True

    # -- writing -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        receive = self._receive
        while True:
            batch = await receive_batch(receive, BATCH)
            changes: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]] = {}
            flashes: list[dict[str, Any]] = []  # connections that came and went in the batch
            for conn_id, entry in batch:
                before = self.mirror.get(conn_id)
                if entry is None:
                    self.mirror.pop(conn_id, None)
                else:
                    self.mirror[conn_id] = entry
                first = changes.get(conn_id, (before, None))[0]
                if entry is None and first is None and before is not None:
                    flashes.append(before)
                changes[conn_id] = (first, entry)
            try:
                rewrote = self.stale
                if rewrote:
                    await self.resync()  # (the others' copies reload this node whole)
                await self._write(changes, flashes)  # (after a resync too: its events)
                if not rewrote and self.wrote is not None:
                    await self.wrote({conn_id: after for conn_id, (_, after) in changes.items()})
                self.link.mark_up()
            except REDIS_ERRORS as exc:
                self.stale = True
                self.link.mark_down(exc)
                continue
            new = [after for before, after in changes.values() if before is None and after is not None]
            for entry in new:
                try:
                    await self._enforce_limit(entry)
                except REDIS_ERRORS as exc:
                    self.link.mark_down(exc)

    async def _write(
        self,
        changes: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]],
        flashes: list[dict[str, Any]],
    ) -> None:
        """Write a batch of changes; a connection added or removed is counted in
        its principal's set (`net.cluster.online`) and the hub hears which were
        the principal's first or last anywhere."""
        node = self.node()
        key = self.conns_key(node)
        edges: list[tuple[bool, dict[str, Any], Any]] = []
        async with self.link.client.pipeline(transaction=False) as pipe:
            for e in flashes:  # (added and removed: both counted, in order)
                pipe.hset(key, {e["conn_id"]: json.dumps(e)})
                edges.append((True, e, self._count(pipe, ADD, e)))
                pipe.hdel(key, [e["conn_id"]])
                edges.append((False, e, self._count(pipe, REMOVE, e)))
            for conn_id, (before, after) in changes.items():
                if after is None:
                    if before is not None:
                        pipe.hdel(key, [conn_id])
                        edges.append((False, before, self._count(pipe, REMOVE, before)))
                else:
                    pipe.hset(key, {conn_id: json.dumps(after)})
                    if before is None:
                        edges.append((True, after, self._count(pipe, ADD, after)))
                    else:
                        pipe.zadd(self.principal_key(after["principal"]), {f"{node} {conn_id}": after["connected_at"]})
        await self._tell_edges(edges)

    def _count(self, pipe: Any, script: str, e: dict[str, Any]) -> Any:
        """Queue `script` (`ADD`/`REMOVE`) for entry `e`'s connection in `pipe`;
        the live count it answers, once the pipeline ran."""
        node = self.node()
        keys = [self.principal_key(e["principal"]), f"{self.prefix}:nodes:seen"]
        member = f"{node} {e['conn_id']}"
        args = count_args(member, e["connected_at"], self.config().cluster.node_ttl, node, self.prefix)
        return pipe.eval(script, keys, args)

    async def _tell_edges(self, edges: list[tuple[bool, dict[str, Any], Any]]) -> None:
        """Tell the hub the users' connections that were their principal's first
        (the script answered 1 after an add) or last (0 after a remove)."""
        found = []
        for online, e, count in edges:
            n = await count
            if not e.get("device") and n == (1 if online else 0):
                found.append((online, e))
        if found:
            await self.tell(PresenceEdges(tuple(found)))

    async def resync(self) -> None:
        """Write the whole mirror (after Redis was unreachable, and at start)."""
        node = self.node()
        key = self.conns_key(node)
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.delete([key])
            if self.mirror:
                pipe.hset(key, {c: json.dumps(e) for c, e in self.mirror.items()})
                for conn_id, e in self.mirror.items():
                    pipe.zadd(self.principal_key(e["principal"]), {f"{node} {conn_id}": e["connected_at"]})
        self.stale = False
        if self.wrote is not None:
            await self.wrote(None)

    async def resync_if_stale(self) -> None:
        """(After a heartbeat that reached Redis.) The rewrite a failure left due."""
        if self.stale:
            await self.resync()

    async def _enforce_limit(self, entry: dict[str, Any]) -> None:
        limits = self.config().limits
        limit = limits.max_connections_per_user
        if not limit or limits.per_user_policy == "reject":
            return
        pkey = self.principal_key(entry["principal"])
        me = self.node()
        live = self.live() | {me}
        client = self.link.client
        found = []
        for m in await client.zrange(pkey, 0, -1, withscores=True):
            member = m.member.decode() if isinstance(m.member, bytes) else m.member
            node, _, conn_id = member.partition(" ")
            if node in live:
                found.append((node, conn_id, m.score))
        if len(found) <= limit:
            return
        # a member whose node restarted since is stale: its node's hash no longer has it
        async with client.pipeline(transaction=False) as pipe:
            exists = [pipe.hexists(self.conns_key(node), conn_id) for node, conn_id, _ in found]
        conns = []
        for (node, conn_id, score), there in zip(found, exists, strict=True):
            if await there:
                conns.append((node, conn_id, score))
            else:
                await client.zrem(pkey, [f"{node} {conn_id}"])
        for node, conn_id in over_limit(conns, limit):
            log.info("cluster: connection %s on node %s is over the per-user limit: closed (4004)", conn_id, node)
            if node == me:
                await self.tell(CloseConnection(conn_id, CloseCode.REPLACED, "replaced"))
            else:
                self.bus((ROUTE_CLOSE, node, conn_id, CloseCode.REPLACED, "replaced"), "")

    async def leave(self) -> None:
        """(A graceful stop.) Remove this node's connections from Redis at once;
        the users left with none anywhere get their `user_offline`."""
        node = self.node()
        with trio.move_on_after(2):
            try:
                edges = []
                async with self.link.client.pipeline(transaction=False) as pipe:
                    pipe.delete([self.conns_key(node)])
                    for e in self.mirror.values():
                        edges.append((False, e, self._count(pipe, REMOVE, e)))
                self.mirror.clear()  # (a close after this one is nothing more to write)
                await self._tell_edges(edges)
            except REDIS_ERRORS as exc:
                log.warning("cluster: could not remove this node's presence (%s)", exc)

    # -- a dead node ------------------------------------------------------------------

    async def node_gone(self, node: str) -> None:
        """(Claimed by this node.) A dead node's connections vanish; its users
        with no connection left anywhere get `user_offline` (the hub's webhooks)."""
        client = self.link.client
        key = self.conns_key(node)
        raw = await client.hgetall(key)
        entries = [json.loads(v) for v in raw.values()]
        async with client.pipeline(transaction=False) as pipe:
            pipe.delete([key])
            for e in entries:
                pipe.zrem(self.principal_key(e["principal"]), [f"{node} {e['conn_id']}"])
        live = self.live() | {self.node()}
        gone: dict[str, dict[str, Any]] = {}
        for e in entries:
            if e.get("device"):
                continue
            pkey = self.principal_key(e["principal"])
            if pkey in gone:
                continue
            members = await client.zrange(pkey, 0, -1)
            elsewhere = [m for m in members if (m.decode() if isinstance(m, bytes) else m).partition(" ")[0] in live]
            if not elsewhere:
                gone[pkey] = e
        if gone:
            await self.tell(NodeGone(tuple(gone.values())))


class PresenceView:
    """The other live nodes' connections, for the HTTP API's answers."""

    def __init__(self, writer: PresenceWriter) -> None:
        self.writer = writer

    async def entries(self, *, mine: bool = False) -> list[dict[str, Any]]:
        """Every connection of the other live nodes (and this one's as written,
        with `mine`); raises `REDIS_ERRORS`."""
        writer = self.writer
        me = writer.node()
        nodes = sorted(writer.live() | {me} if mine else writer.live() - {me})
        if not nodes:
            return []
        out: list[dict[str, Any]] = []
        try:
            async with writer.link.client.pipeline(transaction=False) as pipe:
                requests = [pipe.hgetall(writer.conns_key(node)) for node in nodes]
            for node, request in zip(nodes, requests, strict=True):
                for value in (await request).values():
                    out.append({**json.loads(value), "node": node})
        except REDIS_ERRORS:
            raise HttpError(503, "cluster_unavailable") from None
        return out

    async def online(self, user_id: Any, user_type: Any, group_id: Any) -> int:
        return sum(1 for e in await self.entries() if matches(e, user_id, user_type, group_id))

    async def devices(self, user_id: Any, user_type: Any, group_id: Any) -> list[dict[str, Any]]:
        found = [e for e in await self.entries() if matches(e, user_id, user_type, group_id)]
        return [device_view(e) for e in found]

    async def rooms(self, local: list[dict[str, Any]], group_id: Any) -> list[dict[str, Any]]:
        """This node's room list (`HubAdmin.room_list`) with the other nodes' rooms counted in."""
        remote = room_list(await self.entries())
        by_room: dict[tuple[str, str], dict[str, Any]] = {
            (id_key(r["group_id"]), r["room"]): dict(r) for r in local
        }
        for (group, room), (principals, n, gid) in remote.items():
            if group_id is not None and group != id_key(group_id):
                continue
            found = by_room.get((group, room))
            if found is None:
                by_room[(group, room)] = {"room": room, "group_id": gid, "members": len(principals), "connections": n}
            else:
                found["connections"] += n
                found["members"] += len(principals)  # (a principal on several nodes counts per node)
        return [by_room[k] for k in sorted(by_room)]

    async def room_members(self, local: dict[str, Any]) -> dict[str, Any]:
        remote = room_members(await self.entries(), id_key(local["group_id"]), local["room"])
        return {**local, "members": merge_members(local["members"], remote)}

    async def stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """`/api/stats` with the other nodes' connections counted in."""
        me = self.writer.node()
        every = await self.entries(mine=True)
        entries = [e for e in every if e.get("node") != me]
        users = sum(1 for e in entries if not e.get("device"))
        devices = len(entries) - users
        conns = local["connections"]
        return {
            **local,
            "connections": {
                **conns,
                "total": conns["total"] + len(entries),
                "user": conns["user"] + users,
                "device": conns["device"] + devices,
            },
            "users": len({id_key(e.get("user_id")) for e in every if not e.get("device")}),
            "nodes": len(self.writer.live() | {me}),
        }

    async def websocket_stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """Seed 001's `{total_connections, connected_users}` over every node."""
        entries = await self.entries()
        users = {id_key(u): u for u in local["connected_users"]}
        for e in entries:
            if not e.get("device"):
                users.setdefault(id_key(e.get("user_id")), e.get("user_id"))
        return {"total_connections": local["total_connections"] + len(entries), "connected_users": list(users.values())}
