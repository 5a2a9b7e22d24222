"""The replies to a desktop client's CRM requests, kept so that a retry is
answered, not done again (SPEC 13: idempotent CRM writes), without I/O.

A desktop client that lost a reply (a dropped connection, a timeout) sends the
same message again with the same request `id`. Done twice, an `incoming` would
count twice and a `follow_up_sync` would create a second follow-up. So each
CRM change made for a request with an `id` carries the request in its own
record (`req`: the request's key, time and reply type): the change and the
memory of its answer are one journal line (one log entry in a cluster),
durable together, and a crash can never keep one without the other. Applying
the record builds the reply from the record and what applying it answered
(`core.crm`) and `RequestMemory.remember`s it — at run time, at replay and on
every cluster node alike, so a retry sent to another node is recognised too.

Invariants:
- A request's key is its sender (group, activation code, `device_id` when the
  connection gave one), its message type and its `id`: two desktop
  installations of one code that number their requests alike stay apart when
  they say who they are; the same `id` on another message type is another
  request.
- A request seen again within `messages.dedup_window` of its first time gets
  the first reply again (its `id` echoed) and changes nothing; later, it is a
  new request. Entries are kept in the order they were made (their times
  never decrease), so pruning pops from the front.
- Stored replies are never changed in place: snapshots share them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from wsserver.core.keys import escape

__all__ = ["RequestMemory", "request_key"]


def request_key(group: str, code: str, device_id: str | None, mtype: str, request_id: Any) -> str:
    """The key of one request: each part escaped (`core.keys`), joined with `|`."""
    parts = (group, code, device_id or "", mtype, str(request_id))
    return "|".join(escape(p) for p in parts)


class RequestMemory:
    """Replies by request key, for `messages.dedup_window`."""

    def __init__(self) -> None:
        self.replies: OrderedDict[str, tuple[int, str, Any]] = OrderedDict()  # key -> (time, type, data)

    def remember(self, key: str, now: int, mtype: str, data: Any, window_ms: int) -> None:
        """Keep the reply (`mtype`, `data`) to the request `key` made at `now`, and
        forget the entries older than `window_ms` before it."""
        replies = self.replies
        replies.pop(key, None)  # (re-inserted at the end: keeps time order)
        replies[key] = (now, mtype, data)
        while replies:
            first = next(iter(replies))
            if now - replies[first][0] <= window_ms:
                break
            del replies[first]

    def answer(self, key: str, now_ms: int, window_ms: int) -> tuple[str, Any] | None:
        """The first reply (type, data) to a request seen within the window, or None."""
        hit = self.replies.get(key)
        if hit is None or now_ms - hit[0] > window_ms:
            return None
        return hit[1], hit[2]

    def to_state(self) -> list[list[Any]]:
        """A JSON-able copy: `[key, time, type, data]` in order."""
        return [[key, t, mtype, data] for key, (t, mtype, data) in self.replies.items()]

    def load_state(self, state: list[list[Any]]) -> None:
        """Replace the entries with a snapshot's."""
        self.replies = OrderedDict((key, (t, mtype, data)) for key, t, mtype, data in state)
