"""The cluster's broker: local delivery first, then one hand-over to the bus.

`ClusterBroker` is a `LocalBroker` whose ephemeral deliveries to targets
(a publish's `Target`, a user id, a room, a principal's typing signal) also
go to the other nodes: it hands `(route, frame)` to a non-blocking `outlet`
(the network layer's bounded channel, drained by the bus task, which
publishes one Redis message per hand-over). Another node's bus gives the
pair back through the `Deliver` command, and `deliver_here` runs the local
delivery only, so nothing is published twice.

Durable frames (direct messages, receipts, mailbox pushes, and the CRM's
announcements, which follow its records) never go through the outlet: `send`, `fan_out` and `to_principal` stay local, and the shared
log's apply on each node delivers with them.

Invariants:

- A route is a tuple of JSON values (it crosses the bus as JSON): its first
  item names the delivery (`ROUTE_*`), the rest are that delivery's
  arguments in the wire's comparison forms.
- The outlet never blocks the hub: a full outlet drops the hand-over (the
  other nodes miss that frame; counted in `bus_dropped`, logged).
- The count a delivery returns is this node's connections only.
- Kicks and the closes of the per-principal limit travel as routes too
  (`ROUTE_KICK`, `ROUTE_CLOSE`, with an empty frame); the hub runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs

from wsserver.core.broker import Frame, LocalBroker
from wsserver.core.cluster_presence import PresenceOutlet
from wsserver.core.commands import Target
from wsserver.core.env import Env
from wsserver.core.keys import Key
from wsserver.core.presence import LocalPresence
from wsserver.core.session import RoomKey, Session

__all__ = [
    "ROUTE_CLOSE",
    "ROUTE_KICK",
    "ROUTE_PRINCIPAL",
    "ROUTE_ROOM",
    "ROUTE_TARGET",
    "ROUTE_USER",
    "BusOutlet",
    "ClusterBroker",
    "ClusterOutlets",
    "Route",
]

log = logging.getLogger("wsserver.cluster")


@attrs.frozen
class ClusterOutlets:
    """What a hub in a cluster hands to the network layer without blocking:
    deliveries for the other nodes (`bus`), and its presence changes
    (`presence`, `core.cluster_presence.PresenceOutlet`)."""

    bus: BusOutlet
    presence: PresenceOutlet

Route = tuple[Any, ...]
BusOutlet = Callable[[Route, Frame], bool]
"""Takes one hand-over for the other nodes without blocking; False when full."""


ROUTE_TARGET = "t"  # (t, user_ids, group_id, room, everyone, user_type, connections, activation_code): a publish
ROUTE_USER = "u"  # (u, user_id, user_type, group_id): a user id's connections
ROUTE_ROOM = "r"  # (r, group_key, room): a room's members
ROUTE_PRINCIPAL = "p"  # (p, key): a user principal's connections (typing)
ROUTE_KICK = "k"  # (k, user_id, device_id, conn_id, reason, user_type, group_id): the hub's Kick
ROUTE_CLOSE = "c"  # (c, node, conn_id, close code, catalogue key): one node closes one connection


class ClusterBroker(LocalBroker):
    """Delivers to this node's connections and hands ephemeral target
    deliveries to the other nodes (see the module docstring)."""

    shares = True

    def __init__(self, presence: LocalPresence, env: Env, outlet: BusOutlet) -> None:
        super().__init__(presence, env)
        self.outlet = outlet
        self.bus_dropped = 0

    def share(self, route: Route, frame: Frame) -> None:
        if not self.outlet(route, frame):
            self.bus_dropped += 1
            if self.bus_dropped == 1 or self.bus_dropped % 1000 == 0:
                log.warning("cluster bus full: %d frame(s) not sent to the other nodes", self.bus_dropped)

    def to_target(self, target: Target, frame: Frame) -> int:
        """One frame to a publish's target on every node; counts this node's."""
        t = target
        route = (ROUTE_TARGET, list(t.user_ids), t.group_id, t.room, t.everyone, t.user_type, t.connections,
                 t.activation_code)  # fmt: skip
        self.share(route, frame)
        return super().to_target(target, frame)

    def to_user(self, user_id: Any, user_type: Any, group_id: Any, frame: Frame) -> int:
        """One frame to a user id's connections on every node; counts this node's."""
        self.share((ROUTE_USER, user_id, user_type, group_id), frame)
        return super().to_user(user_id, user_type, group_id, frame)

    def to_room(self, key: RoomKey, frame: Frame, skip: Session | None = None) -> int:
        """One frame to a room's members on every node (the sender `skip` is on
        this one); counts this node's."""
        self.share((ROUTE_ROOM, key[0], key[1]), frame)
        return super().to_room(key, frame, skip)

    def signal_principal(self, key: Key, frame: Frame) -> int:
        """An ephemeral frame to a user principal's connections on every node."""
        self.share((ROUTE_PRINCIPAL, key), frame)
        return super().to_principal(key, frame)

    def deliver_here(self, route: Route, frame: Frame) -> int:
        """Another node's hand-over: this node's connections only (never shared
        again). An unknown route is ignored (a newer node's): 0."""
        kind = route[0]
        if kind == ROUTE_TARGET:
            # (a route of 6 items is an older node's: no `connections` / code form)
            _, user_ids, group_id, room, everyone, user_type, *more = route
            connections, code = [*more, None, None][:2]
            target = Target(tuple(user_ids), group_id, room, everyone, user_type, connections, code)
            return super().to_target(target, frame)
        if kind == ROUTE_ROOM:
            return super().to_room((route[1], route[2]), frame)
        if kind == ROUTE_USER:
            return super().to_user(route[1], route[2], route[3], frame)
        if kind == ROUTE_PRINCIPAL:
            return super().to_principal(route[1], frame)
        return 0
