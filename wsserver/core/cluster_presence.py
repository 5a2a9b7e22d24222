"""The cluster's presence: this node's connections told to the others, and
what the others' connections mean, without I/O.

`ClusterPresence` is a `LocalPresence` that also hands each change of an
authenticated connection to a non-blocking outlet: `(conn_id, entry)` when
it authenticates or changes rooms, `(conn_id, None)` when it is forgotten.
The network layer (`net.cluster.presence`) keeps the entries in Redis, one
hash per node, so every node can read every node's connections.

An entry is a JSON object of the connection's identity and what the API
shows of it (`entry`); the functions below answer the API's questions over
the entries of other nodes the same way `LocalPresence` and `HubAdmin`
answer them over this node's sessions.

Invariants:

- The hub's own decisions read `LocalPresence` and its copy of the other
  nodes' connections (`core.cluster_members`: rooms, the `reject` limit),
  never Redis; the other nodes' connections as Redis holds them count in the
  HTTP API's answers, the per-principal limit (enforced after the fact,
  `over_limit`) and `user_offline`.
- Entries are handed over in the order of the changes, so the last one
  handed over for a connection is its state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wsserver.core.identity import Identity
from wsserver.core.keys import principal_key
from wsserver.core.presence import LocalPresence
from wsserver.core.session import RoomKey, Session
from wsserver.protocol.envelope import id_key

__all__ = [
    "ClusterPresence",
    "PresenceOutlet",
    "device_view",
    "entry",
    "matches",
    "merge_members",
    "over_limit",
    "room_list",
    "room_members",
]

PresenceOutlet = Callable[[str, "dict[str, Any] | None"], bool]
"""Takes one change `(conn_id, entry or None)` without blocking; False when full."""


def entry(session: Session) -> dict[str, Any]:
    """What the other nodes know of an authenticated connection."""
    ident = session.identity
    assert ident is not None
    principal = ident.principal
    return {
        "conn_id": session.conn_id,
        "principal": list(principal),
        "key": None if ident.is_device else principal_key(ident.group_key, principal[1], principal[2]),
        "user_id": ident.user_id,
        "user_type": ident.user_type,
        "username": ident.username,
        "group_id": ident.group_id,
        "group_key": ident.group_key,
        "device": ident.is_device,
        "device_id": session.device_id,
        "device_info": session.device_info,
        "ip": session.ip,
        "user_agent": session.user_agent,
        "connected_at": int(session.connected_at * 1000),
        "rooms": sorted([group, room] for group, room in session.rooms),
    }


class ClusterPresence(LocalPresence):
    """This node's presence, each change also handed to `outlet`."""

    def __init__(self, outlet: PresenceOutlet) -> None:
        super().__init__()
        self.outlet = outlet
        self.dropped = 0  # changes the outlet refused (the writer resyncs)

    def _tell(self, conn_id: str, value: dict[str, Any] | None) -> None:
        if not self.outlet(conn_id, value):
            self.dropped += 1

    def bind(self, session: Session, identity: Identity) -> None:
        super().bind(session, identity)
        self._tell(session.conn_id, entry(session))

    def unbind(self, session: Session) -> None:
        super().unbind(session)
        self._tell(session.conn_id, None)

    def join(self, session: Session, key: RoomKey) -> None:
        super().join(session, key)
        if session.identity is not None:
            self._tell(session.conn_id, entry(session))

    def leave(self, session: Session, key: RoomKey) -> bool:
        left = super().leave(session, key)
        if left and session.identity is not None and session.conn_id in self.sessions:
            self._tell(session.conn_id, entry(session))
        return left


# -- the other nodes' entries ------------------------------------------------------


def matches(e: dict[str, Any], user_id: Any, user_type: Any = None, group_id: Any = None) -> bool:
    """True when entry `e` is a connection of user `user_id`, narrowed by type
    and group when given (as `LocalPresence.user_sessions`)."""
    if e.get("device") or id_key(e.get("user_id")) != id_key(user_id):
        return False
    if user_type is not None and id_key(e.get("user_type")) != id_key(user_type):
        return False
    return group_id is None or e.get("group_key") == id_key(group_id)


def device_view(e: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API's connection list shows a connection (`HubAdmin.devices`)."""
    return {
        "conn_id": e.get("conn_id"),
        "device_id": e.get("device_id"),
        "device_info": e.get("device_info"),
        "ip": e.get("ip"),
        "user_agent": e.get("user_agent"),
        "connected_at": e.get("connected_at"),
        "last_seen": e.get("connected_at"),
        "user_id": e.get("user_id"),
        "user_type": e.get("user_type"),
        "group_id": e.get("group_id"),
        "rooms": sorted(room for _, room in e.get("rooms", ())),
        "messages_in": None,
        "messages_out": None,
    }


def room_members(entries: Iterable[dict[str, Any]], group_key: str, room: str) -> list[dict[str, Any]]:
    """A room's members among `entries`, one per principal with its connection
    count (as `Rooms.members`)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in entries:
        if [group_key, room] not in e.get("rooms", ()):
            continue
        principal = tuple(e.get("principal", ()))
        found = out.get(principal)
        if found is None:
            found = out[principal] = {
                "user_id": e.get("user_id"),
                "username": e.get("username"),
                "user_type": e.get("user_type"),
                "connections": 0,
            }
        found["connections"] += 1
    return list(out.values())


def merge_members(local: list[dict[str, Any]], remote: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """This node's members of a room and the other nodes', one per principal."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for m in (*local, *remote):
        k = (id_key(m.get("user_type")), id_key(m.get("user_id")))
        if k in out:
            out[k] = {**out[k], "connections": out[k]["connections"] + m["connections"]}
        else:
            out[k] = dict(m)
    return list(out.values())


def room_list(entries: Iterable[dict[str, Any]]) -> dict[tuple[str, str], tuple[set[tuple[Any, ...]], int, Any]]:
    """Rooms among `entries`: (group key, room) -> (principals, connections, a group id)."""
    out: dict[tuple[str, str], tuple[set[tuple[Any, ...]], int, Any]] = {}
    for e in entries:
        for group, room in e.get("rooms", ()):
            principals, n, gid = out.get((group, room), (set(), 0, e.get("group_id")))
            principals.add(tuple(e.get("principal", ())))
            out[(group, room)] = (principals, n + 1, gid)
    return out


def over_limit(conns: Iterable[tuple[str, str, float]], limit: int) -> list[tuple[str, str]]:
    """The connections `(node, conn_id)` of one principal, given as
    `(node, conn_id, connected_at)`, that exceed `limit`: the oldest first
    (the newest `limit` stay). Ties keep the given order."""
    if not limit:
        return []
    ordered = sorted(conns, key=lambda c: c[2])
    return [(node, conn) for node, conn, _ in ordered[: max(0, len(ordered) - limit)]]
