"""What the HTTP API asks of the hub: publish, presence, devices, kick, rooms, stats.

Sans-IO like the rest of `core`: a `HubAdmin` wraps a `Hub` and its methods
run inside the registry actor (`registry.call(admin.publish, ...)`), never
anywhere else, so they read and change hub state without locks.

Invariants:

- A publish is encoded once; the same string is handed to every connection
  (`Hub.fan_out`).
- Only authenticated connections receive what the API publishes.
- A user target reaches every connection of that user id: all tabs and
  devices, every `user_type` unless one is given, every group unless
  `group_id` is given.
- `persist` applies to user targets only: each targeted user that no
  connection took the frame for gets it in the mailbox through
  `DirectMessaging.persist_push`.
- Nothing here blocks or does I/O; kicking a connection queues `kicked` and
  then its close (4003) behind whatever it was already sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from wsserver._version import __version__
from wsserver.core.commands import (
    Devices,
    GroupAccounts,
    GroupStats,
    Kick,
    OnlineCount,
    Publish,
    PublishResult,
    RoomList,
    RoomMembers,
    Stats,
    Target,
    WebsocketStats,
)
from wsserver.errors import CloseCode
from wsserver.protocol.envelope import encode, id_key

if TYPE_CHECKING:
    from wsserver.core.hub import Hub
    from wsserver.core.session import RoomKey, Session

__all__ = ["HubAdmin"]


class HubAdmin:
    """The hub as the HTTP API sees it. Call its methods only in the registry actor."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    # -- addressing ------------------------------------------------------------

    def user_sessions(
        self, user_id: Any, user_type: Any = None, group_id: Any = None
    ) -> list[Session]:
        """The live connections of a user id, narrowed by type and group when given."""
        hub = self.hub
        found: list[Session] = []
        for principal in hub.user_principals.get(id_key(user_id), ()):
            if user_type is not None and principal[1] != id_key(user_type):
                continue
            for session in hub.principals.get(principal, {}).values():
                if group_id is None or _group_key(session) == id_key(group_id):
                    found.append(session)
        return found

    def _authenticated(self) -> Iterable[Session]:
        return (s for s in self.hub.sessions.values() if s.identity is not None)

    def _sessions_for(self, target: Target) -> list[Session]:
        kind = target.kind
        if kind == "users":
            seen: dict[str, Session] = {}
            for uid in target.user_ids:
                for s in self.user_sessions(uid, target.user_type, target.group_id):
                    seen[s.conn_id] = s
            return list(seen.values())
        if kind == "room":
            key: RoomKey = (id_key(target.group_id), target.room or "")
            sessions = list(self.hub.rooms.get(key, {}).values())
        elif kind == "group":
            group = id_key(target.group_id)
            sessions = list(self.hub.by_group.get(group, {}).values())
        else:
            sessions = list(self._authenticated())
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

    # -- publish ---------------------------------------------------------------

    def publish(self, p: Publish) -> PublishResult:
        """Deliver `p` to its target's connections; with `persist`, queue it for
        targeted users none of whose connections took it.
        """
        hub = self.hub
        target = p.target
        persist = p.persist and target.kind == "users"
        frame = encode(p.type, p.data, hub.now_ms())
        if not persist:
            return PublishResult(hub.fan_out(self._sessions_for(target), frame), 0)
        delivered = queued = 0
        done: set[str] = set()
        for uid in target.user_ids:
            if id_key(uid) in done:
                continue
            done.add(id_key(uid))
            took = hub.fan_out(self.user_sessions(uid, target.user_type, target.group_id), frame)
            delivered += took
            if took == 0 and hub.direct.persist_push(
                target.group_id, target.user_type, uid, p.type, p.data
            ):
                queued += 1
        return PublishResult(delivered, queued)

    # -- presence and devices --------------------------------------------------

    def online_count(self, cmd: OnlineCount) -> int:
        """How many connections a user has (0 = offline)."""
        return len(self.user_sessions(cmd.user_id, cmd.user_type, cmd.group_id))

    def devices(self, cmd: Devices) -> list[dict[str, Any]]:
        """A user's connections, oldest first, as the device list of the API.

        Times are Unix milliseconds. `last_seen` is the last frame or pong from
        the client when the outlet tracks it (`last_seen_ms`), else the
        connection time.
        """
        out = []
        for s in sorted(
            self.user_sessions(cmd.user_id, cmd.user_type, cmd.group_id), key=lambda s: s.connected_at
        ):
            ident = s.identity
            assert ident is not None
            connected_at = int(s.connected_at * 1000)
            outlet: Any = s.outlet
            last_seen = getattr(outlet, "last_seen_ms", None)
            out.append(
                {
                    "conn_id": s.conn_id,
                    "device_id": s.device_id,
                    "device_info": s.device_info,
                    "ip": s.ip,
                    "user_agent": s.user_agent,
                    "connected_at": connected_at,
                    "last_seen": last_seen if isinstance(last_seen, int) else connected_at,
                    "user_id": ident.user_id,
                    "user_type": ident.user_type,
                    "group_id": ident.group_id,
                    "rooms": sorted(room for _, room in s.rooms),
                    "messages_in": getattr(outlet, "messages_in", None),
                    "messages_out": getattr(outlet, "messages_out", None),
                }
            )
        return out

    def kick(self, cmd: Kick) -> int:
        """Send `kicked {reason}` to the matching connections of a user, then close
        them with 4003 once that frame is written, the same reason in the close
        frame (cut to its 123 bytes); returns how many.

        With neither `device_id` nor `conn_id` every connection of the user is
        kicked; with both, a connection must match both. Kicked connections are
        forgotten at once, so they receive nothing more and no longer count as
        online.
        """
        hub = self.hub
        reason = hub.text("kicked") if cmd.reason is None else cmd.reason
        frame = encode("kicked", {"reason": reason}, hub.now_ms())
        n = 0
        for s in self.user_sessions(cmd.user_id, cmd.user_type, cmd.group_id):
            if cmd.device_id is not None and s.device_id != cmd.device_id:
                continue
            if cmd.conn_id is not None and s.conn_id != cmd.conn_id:
                continue
            hub.send(s, frame)
            s.outlet.close_after_queued(CloseCode.KICKED, "kicked_reason", reason=reason)
            hub.close(s.conn_id)
            n += 1
        return n

    # -- rooms -----------------------------------------------------------------

    def rooms(self, cmd: RoomList) -> list[dict[str, Any]]:
        """Rooms with members, of one group or (`None`) of every group."""
        group_id = cmd.group_id
        out = []
        for (group, room), members in sorted(self.hub.rooms.items()):
            if group_id is not None and group != id_key(group_id):
                continue
            out.append(
                {
                    "room": room,
                    "group_id": self.hub.group_id(group, group_id),
                    "members": len(self.hub.members((group, room))),
                    "connections": len(members),
                }
            )
        return out

    def room_members(self, cmd: RoomMembers) -> dict[str, Any]:
        """`{room, group_id, members}`: a room's members, one entry per principal
        (none for an unknown room); the group id as replies echo it (`Hub.group_id`)."""
        key = id_key(cmd.group_id)
        return {
            "room": cmd.room,
            "group_id": self.hub.group_id(key, cmd.group_id),
            "members": self.hub.members((key, cmd.room)),
        }

    # -- the CRM -----------------------------------------------------------------

    def group_stats(self, cmd: GroupStats) -> dict[str, Any]:
        """A group's CRM counters (as in `group_stats_update`) with its `group_id`."""
        hub = self.hub
        key = cmd.group
        return {"group_id": hub.group_id(key, key), **hub.crm.group_stats(key, hub.now_ms())}

    def group_accounts(self, cmd: GroupAccounts) -> dict[str, Any]:
        """`{group_id, accounts}`: a group's Line accounts."""
        hub = self.hub
        key = cmd.group
        return {"group_id": hub.group_id(key, key), "accounts": hub.crm.accounts(key)}

    # -- stats -----------------------------------------------------------------

    def websocket_stats(self, cmd: WebsocketStats | None = None) -> dict[str, Any]:
        """Seed 001's `{total_connections, connected_users}`: authenticated
        connections, and the online user ids as they came in the tokens."""
        users: dict[str, Any] = {}
        total = 0
        for s in self._authenticated():
            total += 1
            ident = s.identity
            assert ident is not None
            if not ident.is_device:
                users.setdefault(id_key(ident.user_id), ident.user_id)
        return {"total_connections": total, "connected_users": list(users.values())}

    def stats(self, cmd: Stats | None = None) -> dict[str, Any]:
        """Everything `GET /api/stats` and `/metrics` report about the hub."""
        hub = self.hub
        base = hub.stats()
        groups = {_group_key(s) for s in self._authenticated()}
        groups.discard("")
        mailbox = hub.direct.store.mailbox
        now = hub.clock()
        return {
            "connections": {
                "total": base["connections"],
                "user": base["user_connections"],
                "device": base["device_connections"],
                "pending": base["pending_connections"],
            },
            "users": len(hub.user_principals),
            "principals": base["principals"],
            "groups": len(groups),
            "rooms": base["rooms"],
            "messages": {"in": base["messages_in"], "out": base["messages_out"]},
            "mailboxes": {"count": len(mailbox), "messages": sum(len(b) for b in mailbox.values())},
            "uptime": round(now - hub.started_at, 3),
            "started_at": int(hub.started_at * 1000),
            "version": __version__,
        }


def _group_key(session: Session) -> str:
    ident = session.identity
    return "" if ident is None else ident.group_key
