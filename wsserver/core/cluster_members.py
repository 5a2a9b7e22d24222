"""The other nodes' connections as this node's hub counts them: rooms and
per-principal limits across the cluster, without I/O.

The hub's own decisions never await Redis, yet a room's members, its
`limits.max_room_members`, the room presence events and the per-principal
`reject` policy count every node (SPEC 11). So each hub keeps `OtherNodes`:
a copy of the other live nodes' authenticated connections (their principal,
names and rooms only), indexed by room and by principal, read synchronously.

How the copy stays current (the network layer, `net.cluster.members`):

- each node's presence writer, after writing a batch of changes to Redis,
  increments the node's sequence number there and hands the batch to the
  bus as one `ROUTE_MEMBERS` route `(m, node, seq, [[conn_id, entry or None],
  ...])`; a rewrite of the whole presence goes as `(m, node, seq, None)`:
  "read me again";
- every other node applies the batches in sequence order (`delta`); a batch
  out of sequence, or "read me again", makes that node `stale`: its batches
  are kept (bounded) until a `load` of its whole presence read from Redis
  (the sequence number and the hash in one MULTI, so the hash is at least as
  new as the number), after which the kept batches newer than the load apply;
- after each heartbeat the node checks every live node (`check`): stale or
  never loaded, a sequence number in Redis below the copy's (Redis lost it),
  or one the previous check saw that never arrived (a batch lost on the
  bus) — each such node is loaded again. Nodes no longer live are dropped.

Invariants:

- An entry is a whole connection's state, so applying a batch twice is
  harmless; only an older state applied after a newer one would be wrong,
  and the sequence order rules it out.
- The indexes hold exactly the entries of `nodes` (no empty keys).
- `listener` hears of a user principal (in its group) exactly when a batch,
  a load or a drop changed its number of connections on the other nodes
  (`watch_presence` follows it), once per change however many entries moved.
- The copy is as fresh as the bus: two joins (or connects) on two nodes at
  the same moment each count the other only once it arrived (both may pass
  a limit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from wsserver.core.commands import Command
from wsserver.core.session import RoomKey

__all__ = [
    "MAX_KEPT",
    "ROUTE_MEMBERS",
    "LoadMembers",
    "MembersCheck",
    "NodeLeftRooms",
    "OtherNodes",
    "member_entry",
]

ROUTE_MEMBERS = "m"  # (m, node, seq, [[conn_id, entry or None], ...] or None): a node's presence changes

MAX_KEPT = 4096
"""Batches kept per stale node until its load; beyond, the node is loaded again."""

Principal = tuple[str, ...]


def member_entry(e: dict[str, Any]) -> dict[str, Any]:
    """What the other nodes keep of a presence entry (`core.cluster_presence.entry`)."""
    return {
        "principal": e.get("principal"),
        "key": e.get("key"),  # the principal in its group (None for a device)
        "user_id": e.get("user_id"),
        "username": e.get("username"),
        "user_type": e.get("user_type"),
        "device": bool(e.get("device")),
        "rooms": e.get("rooms", []),
    }


@attrs.frozen
class MembersCheck(Command[list[str]]):
    """(Cluster mode, after a heartbeat) the live other nodes and their sequence
    numbers in Redis (0 when none); answers the nodes to load again."""

    live: frozenset[str]
    seqs: dict[str, int]


@attrs.frozen
class LoadMembers(Command[None]):
    """(Cluster mode) a node's whole presence as Redis held it at `seq`."""

    node: str
    seq: int
    entries: tuple[dict[str, Any], ...]


@attrs.frozen
class NodeLeftRooms(Command[int]):
    """(Cluster mode, on the node that claimed a dead node) the dead node's
    connections: `user_left` for each of its users left in no connection of
    a room it was in; answers how many were sent."""

    node: str
    entries: tuple[dict[str, Any], ...]


@attrs.define
class _Node:
    """One other node's connections as this node knows them."""

    seq: int = 0
    stale: bool = True  # not loaded yet, or a batch went missing
    conns: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    kept: list[tuple[int, list[Any]]] = attrs.field(factory=list)  # batches while stale
    overflow: bool = False  # `kept` could not keep them all
    seen: int = 0  # the sequence number in Redis at the previous check


class OtherNodes:
    """The other live nodes' connections, by room and by principal (see the
    module docstring). Empty on a single node."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}
        # room -> principal -> [member (user_id, username, user_type), connections]
        self.rooms: dict[RoomKey, dict[Principal, list[Any]]] = {}
        self.principals: dict[Principal, int] = {}
        # a user principal in its group (`core.keys.principal_key`) -> connections
        self.keys: dict[str, int] = {}
        # told each key whose count changed, once per batch, load or drop
        self.listener: Callable[[str], None] | None = None
        self._before: dict[str, int] = {}  # the keys changed so far and their counts before
        self.loads = 0  # whole loads (a node joined, or a batch went missing)

    # -- reads (the hub's decisions) ----------------------------------------------

    def room_connections(self, key: RoomKey) -> int:
        """The other nodes' connections in room `key`."""
        room = self.rooms.get(key)
        return 0 if room is None else sum(n for _, n in room.values())

    def in_room(self, key: RoomKey, principal: Principal | None) -> bool:
        """True when `principal` has a connection in room `key` on another node."""
        room = self.rooms.get(key)
        return room is not None and principal in room

    def members(self, key: RoomKey) -> list[dict[str, Any]]:
        """Room `key`'s members on the other nodes, one per principal with its
        connection count (as `Rooms.members`)."""
        room = self.rooms.get(key)
        if not room:
            return []
        return [{**member, "connections": n} for member, n in room.values()]

    def connections_in_group(self, key: str) -> int:
        """The other nodes' connections of a user principal in its group."""
        return self.keys.get(key, 0)

    def connections_of(self, principal: Principal) -> int:
        """The other nodes' connections of `principal`."""
        return self.principals.get(principal, 0)

    # -- keeping the copy -------------------------------------------------------

    def delta(self, node: str, seq: int, changes: list[Any] | None) -> int:
        """A node's batch of presence changes from the bus (`ROUTE_MEMBERS`);
        answers how many connections it changed here."""
        known = self.nodes.get(node)
        if known is None:
            known = self.nodes[node] = _Node()
        if changes is None:  # it wrote its presence whole: read it again
            known.stale, known.kept, known.overflow = True, [], False
            return 0
        if known.stale:
            if len(known.kept) < MAX_KEPT:
                known.kept.append((seq, changes))
            else:
                known.overflow = True
            return 0
        if seq <= known.seq:
            return 0  # already in a load
        if seq != known.seq + 1:  # one went missing: load it again
            known.stale, known.kept, known.overflow = True, [(seq, changes)], False
            return 0
        known.seq = seq
        n = self._apply(known, changes)
        self._told()
        return n

    def load(self, node: str, seq: int, entries: Iterable[dict[str, Any]]) -> None:
        """A node's whole presence as of `seq`, then its batches kept since."""
        try:
            self._load(node, seq, entries)
        finally:
            self._told()

    def _load(self, node: str, seq: int, entries: Iterable[dict[str, Any]]) -> None:
        known = self.nodes.get(node)
        if known is None:
            known = self.nodes[node] = _Node()
        self._forget(known)
        for e in entries:
            conn_id = e.get("conn_id")
            if isinstance(conn_id, str):
                self._add(known, conn_id, member_entry(e))
        self.loads += 1
        known.seq = seq
        kept, overflow = known.kept, known.overflow
        known.kept, known.overflow, known.stale = [], False, False
        for n, changes in kept:
            if n <= known.seq:
                continue
            if n != known.seq + 1:
                known.stale = True  # a gap: the next check loads it again
                return
            known.seq = n
            self._apply(known, changes)
        known.stale = overflow

    def check(self, live: frozenset[str], seqs: dict[str, int]) -> list[str]:
        """Drop the nodes no longer live; answer the live ones to load again."""
        for node in [n for n in self.nodes if n not in live]:
            self.drop(node)
        again = []
        for node in sorted(live):
            known = self.nodes.get(node)
            if known is None:
                known = self.nodes[node] = _Node()
            stored = seqs.get(node, 0)
            if known.stale or stored < known.seq or known.seq < known.seen:
                again.append(node)
            known.seen = stored
        return again

    def drop(self, node: str) -> list[dict[str, Any]]:
        """Forget a node (dead or gone); answers its connections as known."""
        known = self.nodes.pop(node, None)
        if known is None:
            return []
        entries = list(known.conns.values())
        self._forget(known)
        self._told()
        return entries

    # -- the indexes ----------------------------------------------------------------

    def _apply(self, known: _Node, changes: list[Any]) -> int:
        n = 0
        for change in changes:
            conn_id, e = change
            old = known.conns.pop(conn_id, None)
            if old is not None:
                self._unindex(old)
            if e is not None:
                self._add(known, conn_id, e)
            n += 1
        return n

    def _add(self, known: _Node, conn_id: str, e: dict[str, Any]) -> None:
        known.conns[conn_id] = e
        principal = tuple(e.get("principal") or ())
        self.principals[principal] = self.principals.get(principal, 0) + 1
        key = e.get("key")
        if isinstance(key, str):
            n = self.keys.get(key, 0)
            self._before.setdefault(key, n)
            self.keys[key] = n + 1
        member = {"user_id": e.get("user_id"), "username": e.get("username"), "user_type": e.get("user_type")}
        for group, room in e.get("rooms", ()):
            members = self.rooms.setdefault((group, room), {})
            found = members.get(principal)
            if found is None:
                members[principal] = [member, 1]
            else:
                found[1] += 1

    def _unindex(self, e: dict[str, Any]) -> None:
        principal = tuple(e.get("principal") or ())
        n = self.principals.get(principal, 0) - 1
        if n > 0:
            self.principals[principal] = n
        else:
            self.principals.pop(principal, None)
        pkey = e.get("key")
        if isinstance(pkey, str):
            n = self.keys.get(pkey, 0)
            self._before.setdefault(pkey, n)
            if n > 1:
                self.keys[pkey] = n - 1
            else:
                self.keys.pop(pkey, None)
        for group, room in e.get("rooms", ()):
            key = (group, room)
            members = self.rooms.get(key)
            if members is None or principal not in members:
                continue
            found = members[principal]
            found[1] -= 1
            if found[1] <= 0:
                del members[principal]
                if not members:
                    del self.rooms[key]

    def _told(self) -> None:
        """Tell the listener each key whose count differs from before the change."""
        before, self._before = self._before, {}
        if self.listener is None:
            return
        for key, n in before.items():
            if self.keys.get(key, 0) != n:
                self.listener(key)

    def _forget(self, known: _Node) -> None:
        for e in known.conns.values():
            self._unindex(e)
        known.conns = {}

