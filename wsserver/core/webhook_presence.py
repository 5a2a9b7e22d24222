"""The presence webhook events (SPEC 6.2): `user_online` when a user principal
gets its first connection, `user_offline` when its last one is forgotten,
without I/O.

Which connection is the first or the last is decided where all of them are
known:

- On a single node, from the hub's presence, in its `on_authenticated` /
  `on_closed` hooks (`connected`, `closed`), whatever closed the connection
  (the peer, a heartbeat timeout, a kick, 4008, an eviction).
- On a cluster node, in Redis: the node writing a connection's presence adds
  or removes it with one script that answers how many live connections the
  principal has then (`net.cluster.presence`), so exactly one node sees the
  first (1 after an add) and one the last (0 after a remove), and only that
  node makes the event (`edges`). The hub's own hooks make none there. A dead
  node's principals get their `user_offline` (`reason: "node_gone"`) from the
  one survivor that claims the node (`node_gone`).

Desktop clients (activation codes) are no users and have none. The events are
recorded through `emit` (`core.webhooks.Webhooks._emit`: the outbox).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsserver.core.keys import escape
from wsserver.core.presence import Presence
from wsserver.core.session import Session

__all__ = ["PRESENCE_FIELDS", "PresenceEvents", "lane_of", "presence_data"]

Emit = Callable[[str, str, "dict[str, Any]"], None]
"""Records one event: (name, lane, data)."""


def lane_of(user_type: str, user_id: str) -> str:
    """The lane (order key) of the user principal (`user_type`, `user_id`), both in
    their comparison form, escaped as `core.keys` does (injective)."""
    return f"{escape(user_type)}|{escape(user_id)}"


def _lane(principal: tuple[str, ...] | list[str]) -> str:
    return lane_of(principal[1], principal[2])


PRESENCE_FIELDS = (
    "user_id", "user_type", "group_id", "username", "conn_id", "device_id", "device_info", "ip", "user_agent",
    "connected_at",
)  # fmt: skip
"""The keys of `presence_data`; a cluster's presence entry (`core.cluster_presence.entry`) has them all."""


def presence_data(session: Session) -> dict[str, Any]:
    """What `user_online` / `user_offline` say of a connection (seed 002's device
    and connection tables)."""
    ident = session.identity
    assert ident is not None
    return {
        "user_id": ident.user_id,
        "user_type": ident.user_type,
        "group_id": ident.group_id,
        "username": ident.username,
        "conn_id": session.conn_id,
        "device_id": session.device_id,
        "device_info": session.device_info,
        "ip": session.ip,
        "user_agent": session.user_agent,
        "connected_at": int(session.connected_at * 1000),
    }


class PresenceEvents:
    """Decides `user_online` / `user_offline` (see the module docstring)."""

    def __init__(self, emit: Emit, presence: Presence, enabled: frozenset[str], clustered: Callable[[], bool]) -> None:
        self.emit = emit
        self.presence = presence
        self.online = "user_online" in enabled
        self.offline = "user_offline" in enabled
        self.clustered = clustered  # whether Redis decides (a cluster node)

    def connected(self, session: Session) -> None:
        """(A connection authenticated.) `user_online` for a principal's first one."""
        ident = session.identity
        if not self.online or ident is None or ident.is_device or self.clustered():
            return
        if len(self.presence.of_principal(ident.principal)) == 1:
            self.emit("user_online", _lane(ident.principal), presence_data(session))

    def closed(self, session: Session) -> None:
        """(A connection was forgotten.) `user_offline` when it was its principal's last."""
        ident = session.identity
        if not self.offline or ident is None or ident.is_device or self.clustered():
            return
        if not self.presence.of_principal(ident.principal):
            self.emit("user_offline", _lane(ident.principal), presence_data(session))

    def edges(self, edges: tuple[tuple[bool, dict[str, Any]], ...]) -> None:
        """(Cluster mode, from this node's presence writer.) `(online, entry)`: Redis
        found the entry's connection the first (True) or the last (False) of its
        principal across the cluster."""
        for online, e in edges:
            if e.get("device") or not (self.online if online else self.offline):
                continue
            data = {k: e.get(k) for k in PRESENCE_FIELDS}
            self.emit("user_online" if online else "user_offline", _lane(e["principal"]), data)

    def node_gone(self, entries: tuple[dict[str, Any], ...]) -> None:
        """(Cluster mode, on the one node that cleaned up after a dead one.) The
        dead node's principals without a connection elsewhere
        (`core.cluster_presence` entries, one each): `user_offline`
        (`reason: "node_gone"`) for those without one here either."""
        if not self.offline:
            return
        for e in entries:
            principal = tuple(e["principal"])
            if e.get("device") or self.presence.of_principal(principal):
                continue
            data = {k: e.get(k) for k in PRESENCE_FIELDS}
            self.emit("user_offline", _lane(principal), {**data, "reason": "node_gone"})
