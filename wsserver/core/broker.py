"""The broker: every frame the hub sends leaves through it.

`Broker` delivers one encoded frame to a target: one session (an answer to
its own request), a list of sessions, a user principal in a group, a user id,
a room, or a publish's `Target` (users, a group, a room, everyone).
`LocalBroker` delivers to this process's connections, found through
`LocalPresence` (whose indexes it reads directly on the per-message paths);
a cluster's broker (`core.cluster_broker`) also hands the ephemeral
deliveries to the other nodes; `LocalBroker`'s own methods are the local-only
delivery every node runs for what another node or the shared log hands it.

Invariants:

- A frame is encoded once by the caller; every outlet gets the same object.
- Delivery never blocks: an outlet takes the frame or refuses it (closing or
  too slow), and the broker counts the deliveries (`messages_out`).
- A delivery to `FANOUT_SOON` sessions or more asks each outlet to deliver
  "soon" (see there).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from wsserver.core.commands import Target
from wsserver.core.env import Env
from wsserver.core.keys import Key
from wsserver.core.presence import LocalPresence
from wsserver.core.session import RoomKey, Session
from wsserver.errors import ProtocolError
from wsserver.protocol.envelope import Inbound, encode, encode_error, id_key

__all__ = ["FANOUT_SOON", "Broker", "LocalBroker"]

FANOUT_SOON = 32
"""A fan-out to at least this many sessions asks its outlets to deliver "soon":
the network layer then writes the frames from one task, a moment later, and a
connection that meanwhile gets more frames (the next publish) receives them in
one write. Smaller deliveries (a user's own tabs, a direct message) go out at
once."""

Frame = str | bytes


class Broker(Protocol):
    """Delivers encoded frames to targets; each method returns how many
    connections took the frame."""

    messages_out: int
    """Frames delivered so far."""

    def send(self, session: Session, frame: Frame) -> bool:
        """One frame to one session."""

    def reply(self, session: Session, msg: Inbound, mtype: str, data: Any) -> None:
        """Answer `msg` on its connection, echoing its `id`."""

    def send_error(self, session: Session, err: ProtocolError, msg: Inbound | None) -> None:
        """An `error` for `err` to one session."""

    def fan_out(self, sessions: Iterable[Session], frame: Frame, skip: Session | None = None) -> int:
        """One frame to many sessions (but `skip`)."""

    def to_principal(self, key: Key, frame: Frame, skip: Session | None = None) -> int:
        """One frame to the connections of a user principal in a group (but `skip`)."""

    def to_user(self, user_id: Any, user_type: Any, group_id: Any, frame: Frame) -> int:
        """One frame to a user id's connections, narrowed by type and group when given."""

    def to_user_here(self, user_id: Any, user_type: Any, group_id: Any, frame: Frame) -> int:
        """`to_user`, this node's connections only (in a cluster the others hear of
        it otherwise: a kept push through the shared log)."""

    def to_room(self, key: RoomKey, frame: Frame, skip: Session | None = None) -> int:
        """One frame to a room's members (but `skip`)."""

    def signal_principal(self, key: Key, frame: Frame) -> int:
        """An ephemeral frame (typing) to the connections of a user principal in
        a group: in a cluster on every node, unlike `to_principal`, which the
        durable frames use (their log delivers them on each node)."""

    def to_target(self, target: Target, frame: Frame) -> int:
        """One frame to a publish's target: its authenticated connections."""

    def to_target_here(self, target: Target, frame: Frame) -> int:
        """`to_target`, this node's connections only (a publish every node of a
        cluster runs itself: the Redis publish channel)."""

    shares: bool
    """True when deliveries also reach other nodes (a cluster): a component
    then announces even without connections of its own to announce to."""



class LocalBroker:
    """Delivers to this process's connections."""

    shares = False

    def __init__(self, presence: LocalPresence, env: Env) -> None:
        self.presence = presence
        self.env = env
        self.messages_out = 0
        # the indexes the per-message paths read (never replaced, only changed)
        self._by_key = presence.by_key
        self._rooms = presence.rooms

    def send(self, session: Session, frame: Frame) -> bool:
        """One frame to one session."""
        if session.outlet.deliver(frame):
            self.messages_out += 1
            return True
        return False

    def reply(self, session: Session, msg: Inbound, mtype: str, data: Any) -> None:
        """Answer `msg` on its connection, echoing its `id`."""
        self.send(session, encode(mtype, data, self.env.now_ms(), request_id=msg.id))

    def send_error(self, session: Session, err: ProtocolError, msg: Inbound | None) -> None:
        """An `error` for `err` to one session."""
        env = self.env
        frame = encode_error(
            err,
            msg.type if msg else None,
            env.now_ms(),
            locale=env.config.server.locale,
            request_id=msg.id if msg else None,
        )
        self.send(session, frame)

    def fan_out(self, sessions: Iterable[Session], frame: Frame, skip: Session | None = None) -> int:
        """One frame to many sessions (but `skip`)."""
        n = 0
        targets = list(sessions)  # a copy: a delivery may close a connection
        soon = len(targets) >= FANOUT_SOON
        for s in targets:
            if s is not skip and s.outlet.deliver(frame, soon):
                n += 1
        self.messages_out += n
        return n

    def to_principal(self, key: Key, frame: Frame, skip: Session | None = None) -> int:
        """One frame to the connections of a user principal in a group (but `skip`)."""
        found = self._by_key.get(key)
        if not found:
            return 0
        if skip is None:
            return self.fan_out(found.values(), frame)
        return self.fan_out([s for s in found.values() if s is not skip], frame)

    def to_user(self, user_id: Any, user_type: Any, group_id: Any, frame: Frame) -> int:
        """One frame to a user id's connections, narrowed by type and group when given."""
        return self.fan_out(self.presence.user_sessions(user_id, user_type, group_id), frame)

    def to_user_here(self, user_id: Any, user_type: Any, group_id: Any, frame: Frame) -> int:
        """`to_user` (one process is every node)."""
        return self.fan_out(self.presence.user_sessions(user_id, user_type, group_id), frame)

    def to_room(self, key: RoomKey, frame: Frame, skip: Session | None = None) -> int:
        """One frame to a room's members (but `skip`)."""
        members = self._rooms.get(key)
        return self.fan_out(members.values(), frame, skip) if members else 0

    def signal_principal(self, key: Key, frame: Frame) -> int:
        """An ephemeral frame (typing) to the connections of a user principal."""
        return self.to_principal(key, frame)

    def to_target(self, target: Target, frame: Frame) -> int:
        """One frame to a publish's target: its authenticated connections."""
        return self.to_target_here(target, frame)

    def to_target_here(self, target: Target, frame: Frame) -> int:
        """One frame to a publish's target's connections in this process."""
        return self.fan_out(self._sessions_for(target), frame)

    def _sessions_for(self, target: Target) -> list[Session]:
        presence = self.presence
        kind = target.kind
        if kind == "users":
            seen: dict[str, Session] = {}
            for uid in target.user_ids:
                for s in presence.user_sessions(uid, target.user_type, target.group_id):
                    seen[s.conn_id] = s
            return list(seen.values())
        if kind == "code":
            return list(presence.of_principal(("device", target.activation_code or "")).values())
        if kind == "room":
            sessions = list(presence.room((id_key(target.group_id), target.room or "")).values())
        elif kind == "group":
            sessions = list(presence.of_group(id_key(target.group_id)).values())
            if target.connections is not None:  # a group's dashboards, or its desktop clients
                devices = target.connections == "device"
                sessions = [s for s in sessions if s.identity is not None and s.identity.is_device == devices]
        else:
            sessions = list(presence.authenticated())
        if target.user_type is not None:
            wanted = id_key(target.user_type)
            sessions = [
                s
                for s in sessions
                if s.identity is not None
                and not s.identity.is_device
                and id_key(s.identity.user_type) == wanted
            ]
        return sessions
