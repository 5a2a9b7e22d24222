"""The hub's rules of connections: admitting, authenticating and forgetting them.

They span the hub's components (presence, rooms, the activation codes, the
broker, and the hooks the others run when a connection authenticates or is
forgotten), so they are the hub's own, not a component's: `core.hub.Hub`
extends `ConnectionRules`, which holds them apart from the composition, the
command door and the routing of messages. The hub makes the parts named in
the class; these methods read and change nothing else. Inside the hub actor
only, like all of the hub.

- Capacity: `limits.max_connections` counts authenticated sessions only;
  sessions still waiting to authenticate have their own cap
  (`limits.max_pending`), so sockets that never authenticate cannot lock
  users out. `limits.max_connections_per_ip` counts every connection of an IP.
- A principal at `limits.max_connections_per_user` loses its oldest
  connection (4004, `per_user_policy = "evict_oldest"`) or is refused
  (`"reject"`, counting the other nodes' connections in a cluster).
- A desktop client's identity takes its activation code's group; a code that
  is unknown or disabled refuses it (4001).
- Forgetting (`close`) runs as soon as a close is decided, whoever decides
  it: a connection on its way out is in no room, online for no one and
  counted in no limit. It is idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from wsserver.core.session import Outlet, Refusal, Session
from wsserver.errors import CloseCode
from wsserver.protocol.envelope import encode

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.core.activation_codes import ActivationCodes
    from wsserver.core.broker import Broker
    from wsserver.core.env import Env
    from wsserver.core.identity import Identity
    from wsserver.core.presence import Presence
    from wsserver.core.rooms import Rooms

__all__ = ["ConnectionRules"]

log = logging.getLogger("wsserver.hub")


class ConnectionRules:
    """Admitting, authenticating (limits, eviction, the greeting) and forgetting
    connections; the base of `core.hub.Hub`, which makes the parts below."""

    env: Env
    presence: Presence
    broker: Broker
    rooms: Rooms
    activation_codes: ActivationCodes
    on_authenticated: list[Callable[[Session], None]]
    """What the components do when a connection authenticates."""
    on_closed: list[Callable[[Session], None]]
    """What the components do when an authenticated connection is forgotten."""

    if TYPE_CHECKING:

        @property
        def config(self) -> Config:
            """The running configuration (`Hub.config`)."""

    def admit(
        self,
        outlet: Outlet,
        conn_id: str,
        ip: str,
        user_agent: str = "",
        identity: Identity | None = None,
        device_id: str | None = None,
        device_info: Any = None,
    ) -> Refusal | None:
        """Take a new connection, or say why not (per-IP limit; without an identity
        the cap on unauthenticated connections, with one everything `authenticate`
        checks). Connections still to authenticate have their own cap so that
        they can never fill `max_connections` and lock users out."""
        limits = self.config.limits
        presence = self.presence
        if identity is None:
            if presence.pending >= limits.max_pending:
                return Refusal(503, CloseCode.OVER_CAPACITY, "too_many_pending")
        elif self._full():
            return Refusal(503, CloseCode.OVER_CAPACITY, "over_capacity")
        if limits.max_connections_per_ip and presence.ip_count(ip) >= limits.max_connections_per_ip:
            return Refusal(429, CloseCode.OVER_CAPACITY, "too_many_ip_connections")
        presence.add(Session(conn_id, outlet, ip, user_agent, self.env.clock()))
        if identity is not None:
            refusal = self.authenticate(conn_id, identity, device_id, device_info)
            if refusal is not None:
                self.close(conn_id)
                return refusal
        return None

    def _full(self) -> bool:
        """True when authenticated sessions reach `limits.max_connections`."""
        limit = self.config.limits.max_connections
        presence = self.presence
        return bool(limit) and len(presence.sessions) - presence.pending >= limit

    def authenticate(
        self,
        conn_id: str,
        identity: Identity,
        device_id: str | None = None,
        device_info: Any = None,
        request_id: Any = None,
    ) -> Refusal | None:
        """Bind an admitted connection to its principal and greet it.

        Activation codes are checked here (they are shared state), and
        `limits.max_connections` (authenticated sessions only). The
        per-principal limit evicts the oldest connection (4004; across nodes
        the cluster's presence writer evicts after the fact) or refuses,
        counting the other nodes' connections too (`core.cluster_members`).
        A desktop client's identity takes its code's group (a new value: the
        one the connection presented is left as it was).
        """
        presence = self.presence
        session = presence.sessions.get(conn_id)
        if session is None or self._full():
            return Refusal(503, CloseCode.OVER_CAPACITY, "over_capacity")
        if session.identity is not None:  # (the connection never asks twice)
            return Refusal(409, CloseCode.POLICY, "already_authenticated")
        if identity.is_device:
            record = self.activation_codes.get(identity.activation_code or "")
            if record is None:
                return Refusal(401, CloseCode.AUTH_FAILED, "activation_code_invalid")
            if not record.enabled:
                return Refusal(401, CloseCode.AUTH_FAILED, "activation_code_disabled")
            identity = attrs.evolve(identity, group_id=record.group_id)
        principal = identity.principal
        mine = presence.of_principal(principal)
        limits = self.config.limits
        limit = limits.max_connections_per_user
        if limit and limits.per_user_policy == "reject":
            # every node's connections (the copy of the other nodes' in a cluster)
            if len(mine) + self.rooms.others.connections_of(principal) >= limit:
                return Refusal(429, CloseCode.OVER_CAPACITY, "too_many_user_connections")
        elif limit and len(mine) >= limit:
            while len(mine) >= limit:
                oldest = next(iter(mine.values()))
                oldest.outlet.close(CloseCode.REPLACED, "replaced")
                self.close(oldest.conn_id)
                mine = presence.of_principal(principal)
        session.device_id = device_id
        session.device_info = device_info
        presence.bind(session, identity)
        self._greet(session, request_id)
        for hook in self.on_authenticated:
            hook(session)
        return None

    def _greet(self, session: Session, request_id: Any) -> None:
        ident = session.identity
        assert ident is not None
        env = self.env
        if ident.is_device:
            data = {
                "group_id": ident.group_id,
                "activation_code": ident.activation_code,
                "message": env.text("auth_success"),
            }
            mtype = "auth_success"
        else:
            data = {
                "user_id": ident.user_id,
                "group_id": ident.group_id,
                "conn_id": session.conn_id,
                "message": env.text("connected"),
            }
            if ident.user_type is not None:
                data["user_type"] = ident.user_type
            if session.device_id is not None:
                data["device_id"] = session.device_id
            mtype = "connected"
        self.broker.send(session, encode(mtype, data, env.now_ms(), request_id=request_id))

    def close(self, conn_id: str) -> None:
        """Forget a connection and everything it held (rooms, presence). Idempotent.

        Runs as soon as a close is decided, whoever decides it (the connection,
        the hub, an admin), not when the socket is done: a connection on its way
        out is in no room, online for no one and counted in no limit."""
        session = self.presence.remove(conn_id)
        if session is None:
            return
        self.rooms.leave_all(session)
        if session.identity is not None:
            self.presence.unbind(session)
            for hook in self.on_closed:
                try:
                    hook(session)
                except Exception:
                    log.exception("close hook failed for connection %s", conn_id)

    def close_all(self, code: int, reason: str) -> None:
        """Ask every connection to close (server shutdown)."""
        for session in list(self.presence.sessions.values()):
            session.outlet.close(code, reason)
