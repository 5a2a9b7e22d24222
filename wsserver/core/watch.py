"""`watch_presence`: a connection follows the presence of users of its group (SPEC 13).

`watch_presence {user_ids?: [..], user_type?, users?: [{user_id, user_type?}]}`
(at most 1000 users in all) replaces the connection's watch list (none stops
watching). The answer is one
`watching {users: [{user_id, user_type, online, devices}]}` with the state
now (one frame, not a thousand: the send queue would fill), then every
change of a watched principal (a connection authenticated or gone) sends
`presence {user_id, user_type, online, devices}`, `devices` being its
connections in the group. A user id is watched as the principal of
its `user_type` (the message's for `user_ids`, each item's own in `users`), inside
the watcher's own group only; desktop (activation-code) connections watch
nobody. In a cluster `devices` counts every node (`others`, the hub's copy of
the other nodes' connections), and a change another node made reaches this
node's watchers when that node's batch arrives (`OtherNodes.listener`).

Invariants: a session is in `_watchers[key]` exactly when `key` is in
`_watching[conn_id]`; both drop a session when it closes, and neither keeps
an empty entry. The cost of a connect or a close is one dict lookup when
nobody watches that principal.
"""

from __future__ import annotations

from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.cluster_members import OtherNodes
from wsserver.core.env import Env
from wsserver.core.inbox import own_key
from wsserver.core.keys import Key, principal_key
from wsserver.core.presence import Presence
from wsserver.core.session import Handler, Session
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode, id_key
from wsserver.protocol.messages import MAX_WATCHED, WatchPresence, read

__all__ = ["PresenceWatch"]

class PresenceWatch:
    """Who watches whom, and the `presence` frames of their changes."""

    def __init__(self, presence: Presence, broker: Broker, env: Env, others: OtherNodes | None = None) -> None:
        self.presence = presence
        self.broker = broker
        self.env = env
        self.others = OtherNodes() if others is None else others  # (empty on a single node)
        self.others.listener = self._other_node_changed
        self._watchers: dict[Key, dict[str, Session]] = {}
        self._watching: dict[str, dict[Key, tuple[Any, Any]]] = {}
        self.handlers: dict[str, Handler] = {"watch_presence": self._watch}

    def _watch(self, session: Session, msg: Inbound) -> None:
        ident = session.identity
        assert ident is not None
        if ident.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "device_no_direct")
        req = read(msg.data, WatchPresence)
        wanted: dict[Key, tuple[Any, Any]] = {}
        named = [(uid, req.user_type) for uid in req.user_ids] + [(u.user_id, u.user_type) for u in req.users]
        if len(named) > MAX_WATCHED:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_invalid", field="users")
        for user_id, user_type in named:
            wanted[principal_key(ident.group_key, id_key(user_type), id_key(user_id))] = (user_id, user_type)
        self.forget(session)
        if wanted:
            self._watching[session.conn_id] = wanted
            for key in wanted:
                self._watchers.setdefault(key, {})[session.conn_id] = session
        users = [self._state(key, *who) for key, who in wanted.items()]
        self.broker.reply(session, msg, "watching", {"users": users})

    def _state(self, key: Key, user_id: Any, user_type: Any) -> dict[str, Any]:
        devices = len(self.presence.connections_of(key)) + self.others.connections_in_group(key)
        return {"user_id": user_id, "user_type": user_type, "online": devices > 0, "devices": devices}

    def changed(self, session: Session) -> None:
        """(A connection authenticated or was forgotten.) Tell its principal's watchers."""
        ident = session.identity
        if ident is None or ident.is_device or not self._watchers:
            return
        key = own_key(session)
        watchers = self._watchers.get(key)
        if not watchers:
            return
        self._tell(watchers, key, ident.user_id, ident.user_type)

    def _other_node_changed(self, key: Key) -> None:
        """(Another node's connections of `key` changed.) Tell its watchers here."""
        watchers = self._watchers.get(key)
        if not watchers:
            return
        user_id, user_type = self._watching[next(iter(watchers))][key]
        self._tell(watchers, key, user_id, user_type)

    def _tell(self, watchers: dict[str, Session], key: Key, user_id: Any, user_type: Any) -> None:
        state = self._state(key, user_id, user_type)
        self.broker.fan_out(list(watchers.values()), encode("presence", state, self.env.now_ms()))

    def forget(self, session: Session) -> None:
        """Stop `session`'s watching (a new list, or its close)."""
        keys = self._watching.pop(session.conn_id, None)
        for key in keys or ():
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.pop(session.conn_id, None)
                if not watchers:
                    del self._watchers[key]

    def closed(self, session: Session) -> None:
        """(A connection was forgotten.) Its own watching ends; its watchers hear."""
        self.forget(session)
        self.changed(session)
