"""Frames that may stand in for an older frame of the same key (SPEC 6.1).

A task's `_progress` frames only matter until the next one: for a connection
whose outbound queue backs up, the newest may replace one of the same task
still waiting unsent (the queue then holds one progress frame per task, not
hundreds). A `_start` or `_complete` frame of that task must never be
dropped, and no progress frame may move across it.

So a server frame can carry a key (`KeyedFrame`, a `bytes` with two
attributes): `replaces` frames may replace a waiting predecessor of the same
key, the others are barriers (kept, and a later frame of the key never
replaces one queued before them). Plain frames are plain `bytes`: the writer
looks at the key only when it has to queue a frame (`net.writer`).
"""

from __future__ import annotations

from collections.abc import Hashable

from wsserver.protocol.envelope import Wire

__all__ = ["KeyedFrame", "keyed"]


class KeyedFrame(bytes):
    """A server frame with a coalescing `key`; `replaces`: it may stand in for an
    older frame of the same key that is still waiting."""

    key: Hashable
    replaces: bool


def keyed(wire: str, key: Hashable, *, replaces: bool) -> str:
    """`wire` (an encoded message, `protocol.envelope.encode`) whose frame carries
    `key`: every connection it goes to may coalesce it (see the module docstring)."""
    assert isinstance(wire, Wire)
    frame = KeyedFrame(wire.frame)
    frame.key = key
    frame.replaces = replaces
    wire.frame = frame
    return wire
