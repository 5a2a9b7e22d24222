"""What the HTTP API and the embedding host ask of the hub: publish,
presence, devices, kick, rooms, the CRM's counters, stats.

`HubAdmin` is a component of the hub: each of its public methods answers one
command (`Publish` of `core.commands`; `Kick`, `Devices`, `Stats`, ... of
`core.admin_commands`) and runs inside the hub actor, never anywhere else, so
it reads and changes hub state without locks. It reads presence and sends
through the broker.

Invariants:

- A publish is encoded once; the same string is handed to every connection
  (`Broker.to_target`).
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

from collections.abc import Callable
from typing import Any

from wsserver._version import __version__
from wsserver.core.admin_commands import (
    Devices,
    GroupAccounts,
    GroupStats,
    Kick,
    MailboxSize,
    OnlineCount,
    RoomList,
    RoomMembers,
    Stats,
    WebsocketStats,
)
from wsserver.core.broker import Broker
from wsserver.core.commands import Publish, PublishResult
from wsserver.core.crm import Crm
from wsserver.core.direct import DirectMessaging
from wsserver.core.env import Env
from wsserver.core.presence import Presence
from wsserver.core.rooms import Rooms
from wsserver.core.session import Session
from wsserver.errors import CloseCode
from wsserver.protocol.envelope import encode, id_key

__all__ = ["HubAdmin"]


class HubAdmin:
    """The hub's answers to the administrative commands."""

    def __init__(
        self,
        presence: Presence,
        broker: Broker,
        env: Env,
        rooms: Rooms,
        direct: DirectMessaging,
        crm: Crm,
        *,
        forget: Callable[[str], None],
        group_id: Callable[[str, Any], Any],
        counters: Callable[[], dict[str, Any]],
    ) -> None:
        self.presence = presence
        self.broker = broker
        self.env = env
        self.rooms = rooms
        self.direct = direct
        self.crm = crm
        self.forget = forget  # the hub forgets a connection it closed (`Hub.close`)
        self.group_id = group_id  # a group's id as replies echo it (`Hub.group_id`)
        self.counters = counters  # the hub's own counts (`Hub.stats`)
        self.started_at = env.clock()

    # -- publish ---------------------------------------------------------------

    def publish(self, p: Publish) -> PublishResult:
        """Deliver `p` to its target's connections; with `persist`, queue it for
        targeted users none of whose connections took it.

        In a cluster a `persist` publish to a user connected to this node goes to
        their connections on every node at once (the bus); a user with none here
        gets it as a kept push through the shared log, on whichever node they
        are connected to (then marked delivered), so no user hears it twice. A publish `here` stays on
        this node's connections (each node runs it for its own).
        """
        broker = self.broker
        target = p.target
        persist = p.persist and target.kind == "users"
        frame = encode(p.type, p.data, self.env.now_ms())
        if not persist:
            deliver = broker.to_target_here if p.here else broker.to_target
            return PublishResult(deliver(target, frame), 0)
        delivered = queued = 0
        done: set[str] = set()
        for uid in target.user_ids:
            if id_key(uid) in done:
                continue
            done.add(id_key(uid))
            if broker.shares and self.presence.user_sessions(uid, target.user_type, target.group_id):
                # connected here: here at once, and on the other nodes over the bus
                delivered += broker.to_user(uid, target.user_type, target.group_id, frame)
                continue
            took = broker.to_user_here(uid, target.user_type, target.group_id, frame)
            delivered += took
            if took == 0 and self.direct.persist_push(
                target.group_id, target.user_type, uid, p.type, p.data
            ):
                queued += 1
        return PublishResult(delivered, queued)

    # -- presence and devices --------------------------------------------------

    def online_count(self, cmd: OnlineCount) -> int:
        """How many connections a user has (0 = offline)."""
        return len(self.presence.user_sessions(cmd.user_id, cmd.user_type, cmd.group_id))

    def mailbox_size(self, cmd: MailboxSize) -> int:
        """How many durable messages wait in a user's mailboxes."""

        def key(value: Any) -> str | None:
            return None if value is None else id_key(value)

        return self.direct.waiting_for(id_key(cmd.user_id), key(cmd.user_type), key(cmd.group_id))

    def devices(self, cmd: Devices) -> list[dict[str, Any]]:
        """A user's connections, oldest first, as the device list of the API.

        Times are Unix milliseconds. `last_seen` is the last frame or pong from
        the client when the outlet tracks it (`last_seen_ms`), else the
        connection time.
        """
        out = []
        for s in sorted(
            self.presence.user_sessions(cmd.user_id, cmd.user_type, cmd.group_id), key=lambda s: s.connected_at
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
        env = self.env
        reason = env.text("kicked") if cmd.reason is None else cmd.reason
        frame = encode("kicked", {"reason": reason}, env.now_ms())
        n = 0
        for s in self.presence.user_sessions(cmd.user_id, cmd.user_type, cmd.group_id):
            if cmd.device_id is not None and s.device_id != cmd.device_id:
                continue
            if cmd.conn_id is not None and s.conn_id != cmd.conn_id:
                continue
            self.broker.send(s, frame)
            s.outlet.close_after_queued(CloseCode.KICKED, "kicked_reason", reason=reason)
            self.forget(s.conn_id)
            n += 1
        return n

    # -- rooms -----------------------------------------------------------------

    def room_list(self, cmd: RoomList) -> list[dict[str, Any]]:
        """Rooms with members, of one group or (`None`) of every group."""
        group_id = cmd.group_id
        out = []
        for group, room in sorted(self.presence.room_keys()):
            if group_id is not None and group != id_key(group_id):
                continue
            out.append(
                {
                    "room": room,
                    "group_id": self.group_id(group, group_id),
                    "members": len(self.rooms.local_members((group, room))),
                    "connections": len(self.presence.room((group, room))),
                }
            )
        return out

    def room_members(self, cmd: RoomMembers) -> dict[str, Any]:
        """`{room, group_id, members}`: a room's members, one entry per principal
        (none for an unknown room); the group id as replies echo it (`Hub.group_id`)."""
        key = id_key(cmd.group_id)
        return {
            "room": cmd.room,
            "group_id": self.group_id(key, cmd.group_id),
            "members": self.rooms.local_members((key, cmd.room)),
        }

    # -- the CRM -----------------------------------------------------------------

    def group_stats(self, cmd: GroupStats) -> dict[str, Any]:
        """A group's CRM counters (as in `group_stats_update`) with its `group_id`."""
        key = cmd.group
        return {"group_id": self.group_id(key, key), **self.crm.group_stats(key, self.env.now_ms())}

    def group_accounts(self, cmd: GroupAccounts) -> dict[str, Any]:
        """`{group_id, accounts}`: a group's Line accounts."""
        key = cmd.group
        return {"group_id": self.group_id(key, key), "accounts": self.crm.accounts(key)}

    # -- stats -----------------------------------------------------------------

    def websocket_stats(self, cmd: WebsocketStats) -> dict[str, Any]:
        """Seed 001's `{total_connections, connected_users}`: authenticated
        connections, and the online user ids as they came in the tokens."""
        users: dict[str, Any] = {}
        total = 0
        for s in self.presence.authenticated():
            total += 1
            ident = s.identity
            assert ident is not None
            if not ident.is_device:
                users.setdefault(id_key(ident.user_id), ident.user_id)
        return {"total_connections": total, "connected_users": list(users.values())}

    def stats(self, cmd: Stats) -> dict[str, Any]:
        """Everything `GET /api/stats` and `/metrics` report about the hub."""
        base = self.counters()
        groups = {_group_key(s) for s in self.presence.authenticated()}
        groups.discard("")
        mailboxes, waiting = self.direct.mailbox_counts()
        now = self.env.clock()
        return {
            "connections": {
                "total": base["connections"],
                "user": base["user_connections"],
                "device": base["device_connections"],
                "pending": base["pending_connections"],
            },
            "users": self.presence.user_count(),
            "principals": base["principals"],
            "groups": len(groups),
            "rooms": base["rooms"],
            "messages": {"in": base["messages_in"], "out": base["messages_out"]},
            "mailboxes": {"count": mailboxes, "messages": waiting},
            "uptime": round(now - self.started_at, 3),
            "started_at": int(self.started_at * 1000),
            "version": __version__,
            "node_id": self.env.node,
        }


def _group_key(session: Session) -> str:
    ident = session.identity
    return "" if ident is None else ident.group_key
