"""Presence: who is connected where.

`Presence` is what the hub's components ask about connections: the sessions
by connection id, the principals online and their connections (tabs,
devices), the authenticated sessions of a group, a user id's principals
across user types, connections per IP, how many still have to authenticate,
and which rooms hold which sessions. `LocalPresence` keeps all of it in this
process; in a cluster, `core.cluster_presence.ClusterPresence` keeps the same
and tells each change to the other nodes (through Redis).

Presence records and answers; it decides nothing. The rules (who may connect,
join, be evicted) are the hub's and its components'.

Invariants of `LocalPresence`:

- A session is in `sessions` from `add` to `remove`; it is `pending` until
  `bind` gives it an identity.
- An authenticated session is in exactly the indexes of its identity:
  `principals`, `by_group`, a user's `user_principals` and (users only)
  `by_key`, until `unbind`; each index drops a key when its last session goes,
  so the maps hold no empty entries.
- Rooms: a session is in `rooms[key]` exactly when `key` is in its
  `session.rooms`; an empty room is dropped.
- Every index keeps sessions in connect (or join) order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from wsserver.core.identity import Identity
from wsserver.core.keys import Key, principal_key
from wsserver.core.session import Principal, RoomKey, Session
from wsserver.protocol.envelope import id_key

__all__ = ["LocalPresence", "Presence"]


class Presence(Protocol):
    """Who is connected where (see the module docstring)."""

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Every session by connection id, authenticated or not."""

    @property
    def pending(self) -> int:
        """Sessions admitted that have not authenticated yet."""

    def add(self, session: Session) -> None:
        """A connection was admitted (not authenticated yet)."""

    def bind(self, session: Session, identity: Identity) -> None:
        """`session` authenticated as `identity`."""

    def remove(self, conn_id: str) -> Session | None:
        """Forget a connection (it is still in its rooms and principal's indexes
        until `leave` and `unbind`); None when it is not known."""

    def unbind(self, session: Session) -> None:
        """Drop an authenticated, removed session from its principal's indexes."""

    def ip_count(self, ip: str) -> int:
        """Connections from `ip`."""

    def of_principal(self, principal: Principal) -> Mapping[str, Session]:
        """The connections of a principal, across groups."""

    def of_group(self, group_key: str) -> Mapping[str, Session]:
        """The authenticated connections of a group."""

    def connections_of(self, key: Key) -> list[Session]:
        """The connections of a user principal in a group (`core.keys.principal_key`)."""

    def user_sessions(self, user_id: Any, user_type: Any = None, group_id: Any = None) -> list[Session]:
        """The connections of a user id, narrowed by type and group when given."""

    def authenticated(self) -> Iterator[Session]:
        """Every authenticated session."""

    def user_count(self) -> int:
        """User ids with a connection (each counted once across user types)."""

    def principal_count(self) -> int:
        """Principals with a connection."""

    def join(self, session: Session, key: RoomKey) -> None:
        """Put `session` in a room."""

    def leave(self, session: Session, key: RoomKey) -> bool:
        """Take `session` out of a room; False when it was not in it."""

    def room(self, key: RoomKey) -> Mapping[str, Session]:
        """A room's sessions, in join order (empty for a room nobody is in)."""

    def room_keys(self) -> list[RoomKey]:
        """Every room somebody is in."""


class LocalPresence:
    """Presence of this process's connections, in plain dicts."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        # group key -> its authenticated sessions (group broadcasts, CRM dashboards)
        self.by_group: dict[str, dict[str, Session]] = {}
        self.principals: dict[Principal, dict[str, Session]] = {}
        # user id (comparison form) -> the user principals online with it, one
        # per user_type: the HTTP API addresses "user 42" across user types
        self.user_principals: dict[str, dict[Principal, None]] = {}
        # a user principal in its group (`core.keys`) -> its connections: what the
        # direct messages ask three times per message
        self.by_key: dict[Key, dict[str, Session]] = {}
        self.per_ip: dict[str, int] = {}
        # sessions admitted without an identity yet: capped by `limits.max_pending`,
        # never counted against `limits.max_connections`
        self.unauthenticated = 0
        self.rooms: dict[RoomKey, dict[str, Session]] = {}

    @property
    def pending(self) -> int:
        """Sessions admitted that have not authenticated yet."""
        return self.unauthenticated

    # -- connections -------------------------------------------------------------

    def add(self, session: Session) -> None:
        """A connection was admitted (not authenticated yet)."""
        self.sessions[session.conn_id] = session
        self.per_ip[session.ip] = self.per_ip.get(session.ip, 0) + 1
        self.unauthenticated += 1

    def bind(self, session: Session, identity: Identity) -> None:
        """`session` authenticated as `identity`."""
        session.identity = identity
        self.unauthenticated -= 1
        conn_id = session.conn_id
        principal = identity.principal
        self.principals.setdefault(principal, {})[conn_id] = session
        self.by_group.setdefault(identity.group_key, {})[conn_id] = session
        if not identity.is_device:
            self.user_principals.setdefault(principal[2], {})[principal] = None
            key = principal_key(identity.group_key, principal[1], principal[2])
            self.by_key.setdefault(key, {})[conn_id] = session

    def remove(self, conn_id: str) -> Session | None:
        """Forget a connection's session and its counts; see `Presence.remove`."""
        session = self.sessions.pop(conn_id, None)
        if session is None:
            return None
        if session.identity is None:
            self.unauthenticated -= 1
        left = self.per_ip.get(session.ip, 0) - 1
        if left > 0:
            self.per_ip[session.ip] = left
        else:
            self.per_ip.pop(session.ip, None)
        return session

    def unbind(self, session: Session) -> None:
        """Drop an authenticated, removed session from its principal's indexes."""
        identity = session.identity
        assert identity is not None
        conn_id = session.conn_id
        _discard(self.by_group, identity.group_key, conn_id)
        principal = identity.principal
        if _discard(self.principals, principal, conn_id) and principal[0] == "user":
            others = self.user_principals.get(principal[2])
            if others is not None:
                others.pop(principal, None)
                if not others:
                    del self.user_principals[principal[2]]
        if not identity.is_device:
            _discard(self.by_key, principal_key(identity.group_key, principal[1], principal[2]), conn_id)

    # -- asking ------------------------------------------------------------------

    def ip_count(self, ip: str) -> int:
        """Connections from `ip`."""
        return self.per_ip.get(ip, 0)

    def of_principal(self, principal: Principal) -> Mapping[str, Session]:
        """The connections of a principal, across groups."""
        return self.principals.get(principal, _NONE)

    def of_group(self, group_key: str) -> Mapping[str, Session]:
        """The authenticated connections of a group."""
        return self.by_group.get(group_key, _NONE)

    def connections_of(self, key: Key) -> list[Session]:
        """The connections of a user principal in a group, in connect order."""
        sessions = self.by_key.get(key)
        return list(sessions.values()) if sessions else []

    def user_sessions(self, user_id: Any, user_type: Any = None, group_id: Any = None) -> list[Session]:
        """The connections of a user id, narrowed by type and group when given."""
        found: list[Session] = []
        for principal in self.user_principals.get(id_key(user_id), ()):
            if user_type is not None and principal[1] != id_key(user_type):
                continue
            for session in self.principals.get(principal, _NONE).values():
                if group_id is None or _group_key(session) == id_key(group_id):
                    found.append(session)
        return found

    def authenticated(self) -> Iterator[Session]:
        """Every authenticated session."""
        return (s for s in self.sessions.values() if s.identity is not None)

    def user_count(self) -> int:
        """User ids with a connection (each counted once across user types)."""
        return len(self.user_principals)

    def principal_count(self) -> int:
        """Principals with a connection."""
        return len(self.principals)

    # -- rooms -------------------------------------------------------------------

    def join(self, session: Session, key: RoomKey) -> None:
        """Put `session` in a room."""
        self.rooms.setdefault(key, {})[session.conn_id] = session
        session.rooms.add(key)

    def leave(self, session: Session, key: RoomKey) -> bool:
        """Take `session` out of a room; False when it was not in it."""
        session.rooms.discard(key)
        return _discard(self.rooms, key, session.conn_id) is not None

    def room(self, key: RoomKey) -> Mapping[str, Session]:
        """A room's sessions, in join order (empty for a room nobody is in)."""
        return self.rooms.get(key, _NONE)

    def room_keys(self) -> list[RoomKey]:
        """Every room somebody is in."""
        return list(self.rooms)


_NONE: Mapping[str, Session] = {}
"""What an index answers for a key it does not hold (never written to)."""


def _discard(index: dict[Any, dict[str, Session]], key: Any, conn_id: str) -> bool | None:
    """Drop `conn_id` from `index[key]` and the key once empty. None when it was
    not there; else whether the key went with it."""
    members = index.get(key)
    if members is None or members.pop(conn_id, None) is None:
        return None
    if members:
        return False
    del index[key]
    return True


def _group_key(session: Session) -> str:
    ident = session.identity
    return "" if ident is None else ident.group_key
