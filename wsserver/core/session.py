"""What the hub keeps per connection, and the types its components share.

A `Session` is the hub's record of one connection; its `Outlet` is where the
connection's frames go (the network layer's connection object). The other
names here are the keys the components index sessions by. Nothing in this
module holds state of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from wsserver.core.identity import Identity
from wsserver.errors import AuthError, CloseCode
from wsserver.protocol.envelope import Inbound

__all__ = ["Handler", "Outlet", "Principal", "Refusal", "RoomKey", "Session", "refusal_for"]

RoomKey = tuple[str, str]  # (group key, room name)
Principal = tuple[str, ...]  # ("user", type, id) or ("device", code)


class Outlet(Protocol):
    """Where a session's frames go. Implementations never block."""

    def deliver(self, frame: str | bytes, soon: bool = False) -> bool:
        """Queue one frame; False when the connection is closing or was just
        closed for being too slow. `soon`: the frame is part of a large
        fan-out, and the outlet may write it a moment later, joined with what
        else it has for the same peer by then (`broker.FANOUT_SOON`)."""

    def close(self, code: int, reason: str, /, **params: object) -> None:
        """Close now, dropping queued frames. `reason` is a catalogue key; its text,
        filled with `params`, is the close frame's reason. The outlet also has the
        hub forget its session (`Forget`) at once, in a later command."""

    def close_after_queued(self, code: int, reason: str, /, **params: object) -> None:
        """Close once the frames queued before this call are written (and have the
        hub forget the session at once, as `close` does)."""


@attrs.define(eq=False, slots=True)
class Session:
    """The hub's record of one connection."""

    conn_id: str
    outlet: Outlet
    ip: str
    user_agent: str
    connected_at: float
    identity: Identity | None = None
    device_id: str | None = None
    device_info: Any = None
    rooms: set[RoomKey] = attrs.field(factory=set)

    @property
    def principal(self) -> Principal | None:
        """The principal key, once authenticated."""
        return None if self.identity is None else self.identity.principal


@attrs.frozen
class Refusal:
    """Why a connection is not admitted: an HTTP status at the handshake, a
    close code after a first-message auth, and the catalogue key saying why."""

    status: int
    close_code: int
    key: str


Handler = Callable[[Session, Inbound], None]
"""Handles one client message of a type (raises `ProtocolError` to answer `error`)."""


def refusal_for(err: AuthError) -> Refusal:
    """The refusal for credentials that did not verify."""
    return Refusal(401, CloseCode.AUTH_FAILED, err.key)
