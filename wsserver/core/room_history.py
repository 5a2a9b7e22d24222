"""A room's last messages (SPEC 13: `rooms.history_limit`, `room_history`).

With `rooms.history_limit` N > 0 each room keeps the payloads of its last N
`room_message`s (as its members received them, with their `from`), and each
kept message carries `room_seq`, the room's own counter, so a client can
page back: `room_history {room, group_id?, before?, limit? (1-100, default
50)}` answers `room_history {room, messages, has_more}`, oldest first, the
messages with `room_seq < before` (all when no `before`). Who may ask: the
members, and anyone allowed to join the room (as `room_members`).

Ephemeral: kept in memory only, never journaled, lost at a restart, and a
room's history goes with the room when its last member leaves (memory stays
bounded by the live rooms). A smaller limit applies on the next message; 0
stops keeping (what is kept stays until the room empties).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from wsserver.core.session import RoomKey

__all__ = ["RoomHistory"]


class RoomHistory:
    """The kept messages of every live room."""

    def __init__(self) -> None:
        self._rooms: dict[RoomKey, deque[dict[str, Any]]] = {}
        self._seq: dict[RoomKey, int] = {}

    def keep(self, key: RoomKey, payload: dict[str, Any], limit: int) -> None:
        """Number `payload` (`room_seq`, set in it) and keep it among the room's last `limit`."""
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        payload["room_seq"] = seq
        kept = self._rooms.get(key)
        if kept is None or kept.maxlen != limit:
            kept = self._rooms[key] = deque(kept or (), maxlen=limit)
        kept.append(payload)

    def page(self, key: RoomKey, before: int | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` kept messages before `before`, oldest first, and whether more are kept."""
        kept = [m for m in self._rooms.get(key, ()) if before is None or m["room_seq"] < before]
        return kept[-limit:], len(kept) > limit

    def drop(self, key: RoomKey) -> None:
        """The room emptied: forget its messages and counter."""
        self._rooms.pop(key, None)
        self._seq.pop(key, None)
