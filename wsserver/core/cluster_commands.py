"""The commands a hub in a cluster runs for the other nodes and for its own
network layer: another node's delivery, kick or close (`Deliver`), a kick
that reaches every node (`Kick`), one connection closed (`CloseConnection`),
a dead node's `user_offline` events (`NodeGone`), a principal's first or
last connection in the cluster (`PresenceEdges`), and the other nodes'
room members and connections this node counts (`core.cluster_members`:
their batches on the bus, `MembersCheck`, `LoadMembers`, and a dead node's
`user_left` events, `NodeLeftRooms`).

`ClusterCommands.commands` joins the hub's command table in cluster mode
only (the way `TaskStates` and `Webhooks` contribute theirs); a hub without
a cluster has none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from wsserver.core.admin import HubAdmin
from wsserver.core.admin_commands import Kick
from wsserver.core.cluster_broker import ROUTE_CLOSE, ROUTE_KICK, ClusterBroker
from wsserver.core.cluster_members import ROUTE_MEMBERS, LoadMembers, MembersCheck, NodeLeftRooms
from wsserver.core.commands import Command
from wsserver.core.env import Env
from wsserver.core.presence import LocalPresence
from wsserver.core.rooms import Rooms
from wsserver.core.webhooks import Webhooks

__all__ = ["CloseConnection", "ClusterCommands", "Deliver", "NodeGone", "PresenceEdges"]


@attrs.frozen
class Deliver(Command[int]):
    """(Cluster mode) another node's ephemeral delivery: `frame` to this node's
    connections on `route` (`core.cluster_broker`); answers how many took it."""

    route: tuple[Any, ...]
    frame: str


@attrs.frozen
class CloseConnection(Command[bool]):
    """(Cluster mode) close one connection of this node with `code` (the
    catalogue key `reason`) and forget it; False when it is not here."""

    conn_id: str
    code: int
    reason: str


@attrs.frozen
class NodeGone(Command[None]):
    """(Cluster mode) a dead node's connections, one per principal that has no
    connection on the other nodes: `user_offline` for each without one here."""

    entries: tuple[dict[str, Any], ...]


@attrs.frozen
class PresenceEdges(Command[None]):
    """(Cluster mode) `(online, entry)` per connection of this node that Redis
    found the first (True) or the last (False) of its principal anywhere:
    `user_online` / `user_offline` (`core.webhook_presence`)."""

    edges: tuple[tuple[bool, dict[str, Any]], ...]


class ClusterCommands:
    """The cluster's commands of one hub (see the module docstring)."""

    def __init__(
        self,
        broker: ClusterBroker,
        presence: LocalPresence,
        env: Env,
        admin: HubAdmin,
        webhooks: Webhooks,
        forget: Callable[[str], None],
        rooms: Rooms,
    ) -> None:
        self.broker = broker
        self.presence = presence
        self.env = env
        self.admin = admin
        self.forget = forget  # the hub forgets a connection it closed (`Hub.close`)
        self.rooms = rooms
        others = rooms.others
        self.commands: dict[type[Any], Callable[[Any], Any]] = {
            Deliver: self.deliver,
            Kick: self.kick_everywhere,
            CloseConnection: lambda cmd: self.close_connection(cmd.conn_id, cmd.code, cmd.reason),
            NodeGone: lambda cmd: webhooks.node_gone(cmd.entries),
            MembersCheck: lambda cmd: others.check(cmd.live, cmd.seqs),
            LoadMembers: lambda cmd: others.load(cmd.node, cmd.seq, cmd.entries),
            NodeLeftRooms: self.node_left_rooms,
            PresenceEdges: lambda cmd: webhooks.presence_edges(cmd.edges),
        }

    def deliver(self, cmd: Deliver) -> int:
        """Another node's hand-over: a delivery to this node's connections, a
        kick, or a close of one of them (when it names this node)."""
        route = cmd.route
        if route[0] == ROUTE_CLOSE:
            _, node, conn_id, code, reason = route
            return int(node == self.env.node and self.close_connection(conn_id, code, reason))
        if route[0] == ROUTE_KICK:
            return self.admin.kick(Kick(*route[1:]))
        if route[0] == ROUTE_MEMBERS:
            _, node, seq, changes = route
            return self.rooms.others.delta(node, seq, changes)
        return self.broker.deliver_here(route, cmd.frame)

    def node_left_rooms(self, cmd: NodeLeftRooms) -> int:
        """(This node claimed a dead node.) Its users leave their rooms: `user_left`
        to every node's members, once per room and user with no connection left
        in it anywhere; answers how many were sent."""
        rooms = self.rooms
        rooms.others.drop(cmd.node)
        seen: set[tuple[Any, ...]] = set()
        sent = 0
        for e in cmd.entries:
            if e.get("device"):
                continue
            principal = tuple(e.get("principal") or ())
            for group, room in e.get("rooms", ()):
                if (group, room, principal) in seen:
                    continue
                seen.add((group, room, principal))
                sent += rooms.left_with_a_node((group, room), principal, e.get("user_id"), e.get("username"))
        return sent

    def kick_everywhere(self, cmd: Kick) -> int:
        """A kick of this node's connections, handed to the others too (each
        kicks its own); answers this node's count."""
        route = (ROUTE_KICK, cmd.user_id, cmd.device_id, cmd.conn_id, cmd.reason, cmd.user_type, cmd.group_id)
        self.broker.share(route, "")
        return self.admin.kick(cmd)

    def close_connection(self, conn_id: str, code: int, reason: str) -> bool:
        """Close one connection with `code` and forget it; False when unknown."""
        session = self.presence.sessions.get(conn_id)
        if session is None:
            return False
        session.outlet.close(code, reason)
        self.forget(conn_id)
        return True
