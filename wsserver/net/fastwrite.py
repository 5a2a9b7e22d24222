"""The outbound byte path of one WebSocket connection: pre-built frames, written
without a scheduler trip when the socket can take them.

trio-websocket stays the protocol layer (handshake, reading, ping/pong, the
closing handshake); this module only replaces how bytes reach the socket.
It uses two pieces of trio-websocket and trio internals, and only here:

- `WebSocketConnection._send` is replaced on the instance, so the frames
  trio-websocket itself writes (pongs, pings, close frames) go through the same
  queue as ours and can never be interleaved with a half-written frame of ours;
- the stdlib socket under a trio `SocketStream` (`socket._sock`) is used for a
  non-blocking `send()` straight from `write_nowait()`.

Invariants:
- one writer: bytes reach the transport either from `write_nowait()` (only when
  nothing is queued and the writer task is idle, so order holds) or from the
  writer task; a partially sent frame's remainder stays at the head of the
  queue and is completed before anything else;
- server frames are unmasked and identical for every recipient, so callers hand
  the same `bytes` object to many writers (`Wire.frame`);
- the queue is bounded by the caller (`pending` counts frames); dropping the
  queue (`drop_pending`) keeps a partial head, so the peer never sees half a
  frame followed by another frame.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections import deque
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.connection import ConnectionState

from wsserver.net.http import ReplayStream

MAX_BATCH = 256 * 1024  # bytes joined into one write by the writer task


class _Marker:
    """A queued callback (e.g. "close now"), run when the writer reaches it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback


class _Internal:
    """Bytes trio-websocket asked to send; `done` is set once they are written."""

    __slots__ = ("data", "done", "error")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = trio.Event()
        self.error = False


Item = bytes | memoryview | _Marker | _Internal


def raw_socket(transport: ReplayStream) -> stdlib_socket.socket | None:
    """The stdlib socket under `transport`, when it is a plain TCP stream (not TLS,
    not a test's memory stream)."""
    inner: Any = transport.transport
    if not isinstance(inner, trio.SocketStream):
        return None
    sock = getattr(inner.socket, "_sock", None)
    return sock if isinstance(sock, stdlib_socket.socket) else None


class FrameWriter:
    """Writes whole frames to one connection in order (see the module docstring)."""

    def __init__(self, ws: WebSocketConnection, transport: ReplayStream) -> None:
        self.ws = ws
        self.transport = transport
        self.sock = raw_socket(transport)
        self.pending: deque[Item] = deque()
        self.frames = 0  # frames waiting in `pending` (not markers, not internal)
        self._partial = False  # pending[0] is the rest of a frame already started
        self._busy = False  # the writer task is writing
        self._wake = trio.Event()
        self.broken = False
        ws._send = self._ws_send  # type: ignore[method-assign]

    # -- producers (never block) ----------------------------------------------

    def write_nowait(self, frame: bytes) -> None:
        """Send `frame` now if the socket takes it, else queue it behind what waits."""
        if self.broken:
            return
        if not self.pending and not self._busy and self.sock is not None:
            try:
                sent = self.sock.send(frame)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.broken = True
                return
            if sent == len(frame):
                return
            if sent:
                self.pending.append(memoryview(frame)[sent:])
                self._partial = True
                self.frames += 1
                self._wake.set()
                return
        self.pending.append(frame)
        self.frames += 1
        self._wake.set()

    def call_when_written(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything queued before it has been written."""
        if not self.pending and not self._busy:
            callback()
            return
        self.pending.append(_Marker(callback))
        self._wake.set()

    def drop_pending(self) -> None:
        """Forget queued frames (a close was decided), keeping a partial head and
        trio-websocket's own frames."""
        keep: deque[Item] = deque()
        if self._partial and self.pending:
            keep.append(self.pending[0])
        keep.extend(item for item in self.pending if isinstance(item, _Internal))
        self.pending = keep
        self.frames = 1 if self._partial and keep else 0

    async def _ws_send(self, event: Any) -> None:
        """trio-websocket's `_send`, routed through the queue (pongs, pings, close)."""
        ws = self.ws
        data = ws._wsproto.send(event)
        item = _Internal(data)
        self.pending.append(item)
        self._wake.set()
        await item.done.wait()
        if item.error:
            await ws._abort_web_socket()
            assert ws._close_reason is not None
            raise ConnectionClosed(ws._close_reason)

    # -- the writer task ----------------------------------------------------------

    async def run(self) -> None:
        """Drain the queue, joining consecutive frames into one write."""
        pending = self.pending
        try:
            while True:
                while not self.pending:
                    self._wake = trio.Event()
                    await self._wake.wait()
                pending = self.pending
                batch: list[bytes | memoryview] = []
                internals: list[_Internal] = []
                size = 0
                while pending and size < MAX_BATCH:
                    item = pending[0]
                    if isinstance(item, _Marker):
                        if batch:
                            break
                        pending.popleft()
                        item.callback()
                        continue
                    pending.popleft()
                    if isinstance(item, _Internal):
                        internals.append(item)
                        data: bytes | memoryview = item.data
                    else:
                        data = item
                        self.frames -= 1
                    batch.append(data)
                    size += len(data)
                self._partial = False
                if not batch:
                    continue
                self._busy = True
                try:
                    await self.transport.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._fail(internals)
                    return
                finally:
                    self._busy = False
                for item in internals:
                    item.done.set()
        finally:
            self._fail([i for i in list(self.pending) if isinstance(i, _Internal)])

    def _fail(self, internals: list[_Internal]) -> None:
        """The transport is gone: wake trio-websocket's waiting sends with an error."""
        self.broken = True
        for item in internals:
            item.error = True
            item.done.set()

    @property
    def open(self) -> bool:
        """True while data frames may still be sent (no close sent or received)."""
        return not self.broken and self.ws._wsproto.state == ConnectionState.OPEN
