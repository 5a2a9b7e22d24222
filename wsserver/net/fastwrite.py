"""The outbound byte path of one WebSocket connection: pre-built frames, written
without a scheduler trip when the socket can take them.

Every byte the server sends after the handshake goes through one `FrameWriter`,
in order: data frames, pongs, pings and the close frame.

- `write_nowait()` sends straight to the socket (a non-blocking `send()` on the
  stdlib socket under trio's `SocketStream`) when nothing is queued; whatever
  the socket does not take is queued.
- Queued frames are written by a writer task, started only while there is a
  backlog (an idle connection has no writer task). It writes everything queued
  at once: one `sendmsg()` of up to `MAX_BATCH` bytes on a plain socket
  (joined and `send()` on Windows, which has no `sendmsg()`), one
  `send_all()` of the joined bytes on TLS or a test's memory stream.
- A partially sent frame's remainder stays at the head of the queue and is
  completed before anything else; `drop_pending()` (a close was decided) keeps
  it, so the peer never sees half a frame followed by another frame. `torn` is
  True while the peer has seen part of a frame whose rest is unsent: then
  nothing, not even a close frame, may follow.

Server frames are unmasked and identical for every recipient, so callers hand
the same `bytes` object to many writers (`Wire.frame`). The queue is bounded by
the caller (`frames` counts queued frames).

This module is also where the stdlib socket under a trio `SocketStream`
(`socket._sock`, a trio internal) is reached: `raw_socket()` (reads without
trio's layers are in `readiness`).
"""

from __future__ import annotations

import socket as stdlib_socket
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

MAX_BATCH = 256 * 1024  # bytes written by one sendmsg()/send_all() of the writer task
MAX_IOV = 512  # buffers per sendmsg() (Linux allows 1024)
# Windows sockets have no sendmsg(): there the batch is joined and sent with send()
HAVE_SENDMSG = hasattr(stdlib_socket.socket, "sendmsg")


class _Marker:
    """A queued callback (e.g. "close now"), run when the writer reaches it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback


Item = bytes | memoryview | _Marker


def raw_socket(transport: trio.abc.Stream) -> stdlib_socket.socket | None:
    """The stdlib socket under `transport`, when it is a plain TCP stream (not TLS,
    not a test's memory stream)."""
    if not isinstance(transport, trio.SocketStream):
        return None
    sock = getattr(transport.socket, "_sock", None)
    return sock if isinstance(sock, stdlib_socket.socket) else None


class FrameWriter:
    """Writes whole frames to one connection in order (see the module docstring).

    `spawn(fn)` starts the writer task `fn` in the connection's nursery; it is
    called when a backlog appears and no writer task runs.
    """

    __slots__ = ("_busy", "_partial", "_running", "_spawn", "broken", "frames", "pending", "sock", "transport")

    def __init__(self, transport: trio.abc.Stream, spawn: Callable[[Callable[[], Any]], None]) -> None:
        self.transport = transport
        self.sock = raw_socket(transport)
        self.pending: deque[Item] | None = None  # created with the first backlog
        self.frames = 0  # frames waiting in `pending` (not markers)
        self._partial = False  # pending[0] is the rest of a frame already started
        self._busy = False  # the writer task is inside a send_all() that may be partial
        self._running = False  # a writer task exists
        self._spawn = spawn
        self.broken = False

    # -- producers (never block) ----------------------------------------------

    def write_nowait(self, frame: bytes) -> None:
        """Send `frame` now if the socket takes it, else queue it behind what waits."""
        if self.broken:
            return
        if not self._running and self.sock is not None:
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
                self._queue(memoryview(frame)[sent:])
                self._partial = True
                return
        self._queue(frame)

    def _queue(self, item: Item) -> None:
        pending = self.pending
        if pending is None:
            pending = self.pending = deque()
        pending.append(item)
        if not isinstance(item, _Marker):
            self.frames += 1
        if not self._running:
            self._running = True
            self._spawn(self._run)

    def call_when_written(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything queued before it has been written."""
        if not self._running:
            callback()
            return
        self._queue(_Marker(callback))

    def drop_pending(self) -> None:
        """Forget queued frames (a close was decided), keeping a partial head."""
        pending = self.pending
        if not pending:
            return
        keep: deque[Item] = deque()
        if self._partial:
            keep.append(pending[0])
        # markers stay (a flush() may wait on one); callers' callbacks see `closing`
        keep.extend(item for item in pending if isinstance(item, _Marker))
        self.pending = keep
        self.frames = 1 if self._partial else 0

    @property
    def idle(self) -> bool:
        """Nothing queued and no write in progress."""
        return not self._running

    @property
    def torn(self) -> bool:
        """The peer has seen part of a frame whose rest is not sent."""
        return self._partial or self._busy

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or the transport broke)."""
        if not self._running:
            return
        done = trio.Event()
        self._queue(_Marker(done.set))
        await done.wait()

    # -- the writer task ----------------------------------------------------------

    async def _run(self) -> None:
        """Write the backlog, joining queued frames; ends when the queue is empty."""
        try:
            while True:
                pending = self.pending
                if not pending:
                    return
                batch: list[bytes | memoryview] = []
                size = 0
                head_partial = self._partial
                while pending and size < MAX_BATCH and len(batch) < MAX_IOV:
                    item = pending[0]
                    if isinstance(item, _Marker):
                        if batch:
                            break
                        pending.popleft()
                        item.callback()
                        continue
                    pending.popleft()
                    self.frames -= 1
                    batch.append(item)
                    size += len(item)
                if not batch:
                    continue
                if self.broken:
                    self._partial = False
                    continue  # markers still run; frames are discarded
                if self.sock is not None:
                    await self._sendmsg(batch, size, head_partial)
                else:
                    self._busy = True  # a cancelled send_all() may have written part
                    try:
                        await self.transport.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.broken = True
                    self._busy = False
                    self._partial = False
        finally:
            self._running = False
            if self.broken and self.pending:
                markers = [i for i in self.pending if isinstance(i, _Marker)]
                self.pending.clear()
                self.frames = 0
                for marker in markers:
                    marker.callback()

    async def _sendmsg(self, batch: list[bytes | memoryview], size: int, head_partial: bool) -> None:
        """Write `batch` with as few `sendmsg()` calls as the socket allows; an
        unsent rest goes back to the head of the queue (a partial frame)."""
        sock = self.sock
        assert sock is not None
        await trio.lowlevel.wait_writable(sock)
        try:
            if HAVE_SENDMSG:
                sent = sock.sendmsg(batch)
            else:
                sent = sock.send(batch[0] if len(batch) == 1 else b"".join(batch))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.broken = True
            return
        if sent == size:
            self._partial = False
            return
        # put back what was not sent, in order, the first piece possibly partial
        rest: list[Item] = []
        for i, data in enumerate(batch):
            n = len(data)
            if sent >= n:
                sent -= n
                continue
            rest.append(memoryview(data)[sent:] if sent else data)
            rest.extend(batch[i + 1 :])
            self._partial = bool(sent) or (i == 0 and head_partial)
            break
        assert self.pending is not None
        self.pending.extendleft(reversed(rest))
        self.frames += len(rest)
