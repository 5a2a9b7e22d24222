"""Rooms (SPEC 4.2): join, leave, message and list members, without I/O.

A room is scoped by group: the key is (group key, room name). Membership is
kept by `Presence`; this module holds the rules: which names are valid, who
may join (`rooms.allow` and a token's `rooms` claim), the per-connection and
per-room limits, and the `user_joined`/`user_left` events.

Invariants:

- A desktop client (activation code) joins no room.
- In a cluster, members, `limits.max_room_members` and the presence events
  count the other nodes' connections too (`others`,
  `core.cluster_members.OtherNodes`, as fresh as the bus); on a single node
  `others` is empty.
- Only an admin names a room of another group (`group_id`).
- `user_joined` goes out when a principal's first connection joins, and
  `user_left` when its last one leaves (or closes), to the other members, and
  only with `rooms.presence_events`.
- A room message reaches the other members only; its sender is stamped by the
  hub (`from`), never taken from the payload.
- With `rooms.history_limit` a room keeps its last messages until it empties
  (`core.room_history`, `room_history`).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.cluster_members import OtherNodes
from wsserver.core.env import Env
from wsserver.core.identity import Identity
from wsserver.core.presence import Presence
from wsserver.core.room_history import RoomHistory
from wsserver.core.session import Handler, Principal, RoomKey, Session
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode, id_key
from wsserver.protocol.messages import RoomHistoryRequest, RoomMessage, RoomRef, fault, read
from wsserver.shapes import ShapeError, structurer

__all__ = ["Rooms"]

_ROOM_REF = structurer(RoomRef)
_ROOM_MESSAGE = structurer(RoomMessage)


class Rooms:
    """The room rules and the room message handlers."""

    def __init__(self, presence: Presence, broker: Broker, env: Env, others: OtherNodes | None = None) -> None:
        self.presence = presence
        self.broker = broker
        self.env = env
        self.others = OtherNodes() if others is None else others  # the other nodes' members
        self.handlers: dict[str, Handler] = {
            "join_room": self._join_room,
            "leave_room": self._leave_room,
            "room_message": self._room_message,
            "room_members": self._room_members,
            "room_history": self._room_history,
        }
        self.history = RoomHistory()  # rooms.history_limit (core.room_history)

    # -- rules -------------------------------------------------------------------

    def may_join(self, identity: Identity, room: str) -> bool:
        """`rooms.allow` patterns, and the token's `rooms` claim when it has one."""
        if not any(fnmatchcase(room, p) for p in self.env.config.rooms.allow):
            return False
        if identity.rooms is not None and not identity.is_admin:
            return any(fnmatchcase(room, p) for p in identity.rooms)
        return True

    def members(self, key: RoomKey) -> list[dict[str, Any]]:
        """A room's members on every node, one entry per principal with its
        connection count (the client's replies)."""
        return list(self._members(key, self.others.rooms.get(key, {})).values())

    def local_members(self, key: RoomKey) -> list[dict[str, Any]]:
        """A room's members on this node (the HTTP API adds the other nodes'
        as Redis holds them)."""
        return list(self._members(key, {}).values())

    def _members(self, key: RoomKey, others: dict[Principal, list[Any]]) -> dict[Principal, dict[str, Any]]:
        out: dict[Principal, dict[str, Any]] = {}
        for s in self.presence.room(key).values():
            ident = s.identity
            assert ident is not None
            entry = out.get(ident.principal)
            if entry is None:
                entry = out[ident.principal] = {
                    "user_id": ident.user_id,
                    "username": ident.username,
                    "user_type": ident.user_type,
                    "connections": 0,
                }
            entry["connections"] += 1
        for principal, (member, n) in others.items():
            entry = out.get(principal)
            if entry is None:
                out[principal] = {**member, "connections": n}
            else:
                entry["connections"] += n
        return out

    def left_with_a_node(self, key: RoomKey, principal: Principal, user_id: Any, username: Any) -> bool:
        """A principal's connections in room `key` were on a node that died (the
        copy no longer holds them): `user_left` when it has no connection left
        in the room anywhere and somebody is left to tell; True when sent."""
        if self._principal_in_room(key, principal, None):
            return False
        if not self.presence.room(key) and key not in self.others.rooms:
            return False
        self.announce(key, "user_left", user_id, username)
        return self.env.config.rooms.presence_events

    def leave_all(self, session: Session) -> None:
        """A connection is forgotten: it leaves every room it is in."""
        for key in list(session.rooms):
            self._leave(session, key)

    # -- what a request names ------------------------------------------------------

    def _target(self, session: Session, room: str, group: Any) -> RoomKey:
        """The (group, room) a room request names, checked for who may name it."""
        ident = session.identity
        assert ident is not None
        if ident.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "device_no_rooms", field="room")
        group_key = ident.group_key
        if group is not None and id_key(group) != group_key:
            if not ident.is_admin:
                raise ProtocolError(ErrorCode.FORBIDDEN, "group_forbidden", field="group_id")
            group_key = id_key(group)
        return (group_key, room)

    def _ref(self, session: Session, msg: Inbound) -> RoomKey:
        """The room `join_room`, `leave_room` or `room_members` names."""
        try:
            ref = _ROOM_REF(msg.data)
        except ShapeError as err:
            raise fault(err) from None
        return self._target(session, ref.room, ref.group_id)

    def _principal_in_room(self, key: RoomKey, principal: Principal | None, skip: Session | None) -> bool:
        """True when `principal` has a connection in the room besides `skip`, on any node."""
        if self.others.in_room(key, principal):
            return True
        return any(s is not skip and s.principal == principal for s in self.presence.room(key).values())

    def _presence(self, key: RoomKey, session: Session, mtype: str) -> None:
        ident = session.identity
        assert ident is not None
        self.announce(key, mtype, ident.user_id, ident.username, skip=session)

    def announce(self, key: RoomKey, mtype: str, user_id: Any, username: Any, skip: Session | None = None) -> None:
        """`user_joined`/`user_left` of a user to the room's members on every
        node (with `rooms.presence_events`)."""
        if not self.env.config.rooms.presence_events:
            return
        frame = encode(mtype, {"room": key[1], "user_id": user_id, "username": username}, self.env.now_ms())
        self.broker.to_room(key, frame, skip=skip)

    def _leave(self, session: Session, key: RoomKey) -> None:
        if not self.presence.leave(session, key):
            return
        if not self.presence.room(key):  # the room is gone, and its history with it
            self.history.drop(key)
        occupied = self.presence.room(key) or key in self.others.rooms  # somebody to tell
        if occupied and not self._principal_in_room(key, session.principal, session):
            self._presence(key, session, "user_left")

    # -- handlers ------------------------------------------------------------------

    def _join_room(self, session: Session, msg: Inbound) -> None:
        key = self._ref(session, msg)
        assert session.identity is not None
        if not self.may_join(session.identity, key[1]):
            raise ProtocolError(ErrorCode.FORBIDDEN, "room_forbidden", field="room")
        members = self.presence.room(key)
        if key not in session.rooms:
            limits = self.env.config.limits
            if limits.max_rooms_per_connection and len(session.rooms) >= limits.max_rooms_per_connection:
                raise ProtocolError(ErrorCode.CONFLICT, "too_many_rooms", field="room")
            limit = limits.max_room_members
            if limit and len(members) + self.others.room_connections(key) >= limit:
                raise ProtocolError(ErrorCode.CONFLICT, "room_full", field="room")
            first_of_principal = not self._principal_in_room(key, session.principal, session)
            self.presence.join(session, key)
            if first_of_principal:
                self._presence(key, session, "user_joined")
        self.broker.reply(session, msg, "room_joined", {"room": key[1], "members": self.members(key)})

    def _leave_room(self, session: Session, msg: Inbound) -> None:
        key = self._ref(session, msg)
        if key not in session.rooms:
            raise ProtocolError(ErrorCode.NOT_FOUND, "not_in_room", field="room")
        self._leave(session, key)
        self.broker.reply(session, msg, "room_left", {"room": key[1]})

    def _room_message(self, session: Session, msg: Inbound) -> None:
        try:
            req = _ROOM_MESSAGE(msg.data)
        except ShapeError as err:
            raise fault(err) from None
        key = self._target(session, req.room, req.group_id)
        if key not in session.rooms:
            raise ProtocolError(ErrorCode.FORBIDDEN, "not_in_room", field="room")
        ident = session.identity
        assert ident is not None
        payload = req.payload  # the client's own, every key but room, group_id and from
        payload["room"] = key[1]
        payload["from"] = ident.sender()
        limit = self.env.config.rooms.history_limit
        if limit:
            self.history.keep(key, payload, limit)
        frame = encode("room_message", payload, self.env.now_ms())
        delivered = self.broker.to_room(key, frame, skip=session)
        self.broker.reply(session, msg, "room_message_ack", {"room": key[1], "delivered": delivered})

    def _room_members(self, session: Session, msg: Inbound) -> None:
        key = self._ref(session, msg)
        assert session.identity is not None
        if key not in session.rooms and not self.may_join(session.identity, key[1]):
            raise ProtocolError(ErrorCode.FORBIDDEN, "room_forbidden", field="room")
        self.broker.reply(session, msg, "room_members", {"room": key[1], "members": self.members(key)})

    def _room_history(self, session: Session, msg: Inbound) -> None:
        req = read(msg.data, RoomHistoryRequest)
        key = self._target(session, req.room, req.group_id)
        assert session.identity is not None
        if key not in session.rooms and not self.may_join(session.identity, key[1]):
            raise ProtocolError(ErrorCode.FORBIDDEN, "room_forbidden", field="room")
        page, more = self.history.page(key, req.before, req.limit)
        self.broker.reply(session, msg, "room_history", {"room": key[1], "messages": page, "has_more": more})
