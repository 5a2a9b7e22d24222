"""The other nodes' connections kept current in each hub (`core.cluster_members`).

Keys (`<prefix>` is `cluster.prefix`):

    <prefix>:pseq:<node>    integer: the node's presence batches written so far

This node's side (`wrote`): after its presence writer wrote a batch to
Redis, INCR the sequence number and hand `(m, node, seq, batch)` to the bus
(the batch as the other nodes keep it, `member_entry`); after a whole
rewrite, `(m, node, seq, None)`. The INCR follows the write, so whoever
reads the number and the hash in one MULTI gets a hash at least as new.

The other nodes' side (`sync`, after each heartbeat): read the live nodes'
numbers (one MGET), let the hub say which nodes it must load again
(`MembersCheck`), and read each one's number and hash in one MULTI
(`LoadMembers`). A node claimed dead (`gone`): its rooms' `user_left`
(`NodeLeftRooms`) and its number removed.

Nothing here blocks the hub: it is told, or asked between two commands.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wsserver.core.cluster_broker import BusOutlet
from wsserver.core.cluster_members import (
    ROUTE_MEMBERS,
    LoadMembers,
    MembersCheck,
    NodeLeftRooms,
    member_entry,
)
from wsserver.net.cluster.link import Link

__all__ = ["Members"]

log = logging.getLogger("wsserver.cluster")


class Members:
    """This node's presence batches told to the others, and the others' loaded
    into this node's hub (see the module docstring)."""

    def __init__(
        self,
        link: Link,
        prefix: str,
        node: Callable[[], str],
        live: Callable[[], set[str]],
        bus: BusOutlet,
        ask: Callable[[Any], Awaitable[Any]],
        tell: Callable[[Any], Awaitable[None]],
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.node = node
        self.live = live  # the live nodes' ids as last seen (`Nodes.live`)
        self.bus = bus
        self.ask = ask  # the hub's door, answered (`HubActor.call`)
        self.tell = tell

    def seq_key(self, node: str) -> str:
        return f"{self.prefix}:pseq:{node}"

    def conns_key(self, node: str) -> str:
        return f"{self.prefix}:conns:{node}"  # (`net.cluster.presence`'s hash)

    async def wrote(self, changes: dict[str, dict[str, Any] | None] | None) -> None:
        """(The presence writer, after a write that reached Redis.) Number the
        batch and hand it to the bus; `None`: the presence was rewritten whole.
        A hand-over the bus drops is noticed by the others' next check."""
        node = self.node()
        seq = int(await self.link.client.incr(self.seq_key(node)))
        batch = None if changes is None else [[c, None if e is None else member_entry(e)] for c, e in changes.items()]
        self.bus((ROUTE_MEMBERS, node, seq, batch), "")

    async def sync(self) -> None:
        """(After a heartbeat.) Load again the live nodes the hub's copy misses;
        raises `REDIS_ERRORS`."""
        me = self.node()
        nodes = sorted(self.live() - {me})
        client = self.link.client
        seqs: dict[str, int] = {}
        if nodes:
            for node, value in zip(nodes, await client.mget([self.seq_key(n) for n in nodes]), strict=True):
                seqs[node] = int(value) if value is not None else 0
        for node in await self.ask(MembersCheck(frozenset(nodes), seqs)):
            async with client.pipeline(transaction=True) as pipe:
                seq = pipe.get(self.seq_key(node))
                conns = pipe.hgetall(self.conns_key(node))
            value = await seq
            entries = tuple(json.loads(v) for v in (await conns).values())
            await self.tell(LoadMembers(node, int(value) if value is not None else 0, entries))

    async def entries(self, node: str) -> tuple[dict[str, Any], ...]:
        """A node's connections as Redis holds them (a dead node's, before its
        clean-up removes them)."""
        raw = await self.link.client.hgetall(self.conns_key(node))
        return tuple(json.loads(v) for v in raw.values())

    async def gone(self, node: str, entries: tuple[dict[str, Any], ...]) -> None:
        """(On the node that claimed dead `node`.) Its users' `user_left`, once
        across the cluster, and its sequence number removed."""
        await self.tell(NodeLeftRooms(node, entries))
        await self.link.client.delete([self.seq_key(node)])
