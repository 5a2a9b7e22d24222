"""What the HTTP API asks of the hub about its live connections, one class per
request: who is online and where (`OnlineCount`, `Devices`, `MailboxSize`),
rooms and their members (`RoomList`, `RoomMembers`), the counts (`Stats`,
`WebsocketStats`) and a group's CRM counters and accounts (`GroupStats`,
`GroupAccounts`), and closing a user's connections (`Kick`).

`core.admin.HubAdmin` answers each of them inside the hub actor. Kept apart
from `core.commands`, which holds the commands of the hub's other parts and
the values commands share (`Publish`, `Target`): these are the operator's and
the backend's questions, sent by the HTTP API (`Stats` also by the embedding
host and the server's status and node entry) and answered by one component.
Like every command they are values: built by the caller, read by the hub,
never changed by either.
"""

from __future__ import annotations

from typing import Any

import attrs

from wsserver.core.commands import Command

__all__ = [
    "Devices",
    "GroupAccounts",
    "GroupStats",
    "Kick",
    "MailboxSize",
    "OnlineCount",
    "RoomList",
    "RoomMembers",
    "Stats",
    "WebsocketStats",
]


@attrs.frozen
class Kick(Command[int]):
    """Send `kicked {reason}` to matching connections of a user, then close them
    with 4003; answers how many. Neither `device_id` nor `conn_id`: all of them."""

    user_id: Any
    device_id: str | None = None
    conn_id: str | None = None
    reason: str | None = None
    user_type: Any = None
    group_id: Any = None


@attrs.frozen
class OnlineCount(Command[int]):
    """How many connections a user has (0 = offline)."""

    user_id: Any
    user_type: Any = None
    group_id: Any = None


@attrs.frozen
class MailboxSize(Command[int]):
    """How many durable messages wait in a user's mailboxes (narrowed by type and
    group when given): direct messages and persisted pushes for the user."""

    user_id: Any
    user_type: Any = None
    group_id: Any = None


@attrs.frozen
class Devices(Command["list[dict[str, Any]]"]):
    """A user's connections, oldest first, as the device list of the API."""

    user_id: Any
    user_type: Any = None
    group_id: Any = None


@attrs.frozen
class RoomList(Command["list[dict[str, Any]]"]):
    """Rooms with members, of one group or (`None`) of every group."""

    group_id: Any = None


@attrs.frozen
class RoomMembers(Command["dict[str, Any]"]):
    """`{room, group_id, members}`: a room's members, one entry per principal."""

    room: str
    group_id: Any = None


@attrs.frozen
class Stats(Command["dict[str, Any]"]):
    """Everything `GET /api/stats` and `/metrics` report about the hub."""


@attrs.frozen
class WebsocketStats(Command["dict[str, Any]"]):
    """Seed 001's `{total_connections, connected_users}`."""


@attrs.frozen
class GroupStats(Command["dict[str, Any]"]):
    """A group's CRM counters, with its `group_id` as replies echo it."""

    group: str


@attrs.frozen
class GroupAccounts(Command["dict[str, Any]"]):
    """`{group_id, accounts}`: a group's Line accounts."""

    group: str
