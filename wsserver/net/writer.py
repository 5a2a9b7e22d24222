"""The outbound byte path of one WebSocket connection: pre-built frames, in order,
without tearing one.

Every byte the server sends after the handshake goes through one `FrameWriter`,
in order: data frames, pongs, pings and the close frame. This class is the path
through trio's public API (`send_all()`), used for TLS, a test's memory stream
and every connection when `server.fast_io` is off; `net.fastio.RawFrameWriter`
extends it for plain TCP sockets with writes that need no scheduler trip
(`net.fastio.frame_writer()` picks one).

- `write_nowait()` queues the frame; queued frames are written by a writer
  task, started only while there is a backlog (an idle connection has no writer
  task). It writes everything queued at once: one `send_all()` of the joined
  bytes, up to `MAX_BATCH` of them.
- While the writer task runs, `waiting_since` is when the peer last took bytes
  (or when the backlog began): the connection's timer closes a connection
  whose peer has taken nothing for `limits.write_timeout`. It is set only by
  the writer task (at its start and after each write that moved bytes), so the
  paths that write at once pay nothing for it.
- A partially sent frame's remainder stays at the head of the queue and is
  completed before anything else; `drop_pending()` (a close was decided) keeps
  it, so the peer never sees half a frame followed by another frame. `torn` is
  True while the peer has seen part of a frame whose rest is unsent: then
  nothing, not even a close frame, may follow.
- `write_soon()` is what large fan-outs use: here the same as `write_nowait()`;
  the raw writer leaves such frames to the server's one `Flusher`.

- A frame that must wait and carries a coalescing key
  (`protocol.coalesce.KeyedFrame`, e.g. a task's `_progress`) replaces a
  frame of the same key still waiting unsent, in that frame's place, instead
  of queueing behind it; a keyed frame that does not `replaces` (a task's
  `_start` or `_complete`) is a barrier: it is queued, and no later frame of
  its key replaces one queued before it. Plain frames are never looked at:
  the check is made only when a frame has to be queued.

Server frames are unmasked and identical for every recipient, so callers hand
the same `bytes` object to many writers (`Wire.frame`). The queue is bounded by
the caller (`frames` counts queued frames).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from wsserver.protocol.coalesce import KeyedFrame

MAX_BATCH = 256 * 1024  # bytes written by one sendmsg()/send_all() of the writer task
MAX_IOV = 512  # buffers per sendmsg() (Linux allows 1024)


class _Marker:
    """A queued callback (e.g. "close now"), run when the writer reaches it."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback


class _Keyed(_Marker):
    """A queued keyed frame that a newer frame of its key may still replace."""

    __slots__ = ("frame", "key")

    def __init__(self, frame: KeyedFrame) -> None:
        self.frame = frame
        self.key = frame.key


Item = bytes | memoryview | _Marker


class FrameWriter:
    """Writes whole frames to one connection in order (see the module docstring).

    `spawn(fn)` starts the writer task `fn` in the connection's nursery; it is
    called when a backlog appears and no writer task runs. `on_wait(since)`,
    when given, is called as that task starts waiting on the peer.
    """

    __slots__ = (
        "_busy",
        "_latest",
        "_partial",
        "_running",
        "_spawn",
        "broken",
        "frames",
        "on_wait",
        "pending",
        "transport",
        "waiting_since",
    )

    def __init__(
        self,
        transport: trio.abc.Stream,
        spawn: Callable[[Callable[[], Any]], None],
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.transport = transport
        self.pending: deque[Item] | None = None  # created with the first backlog
        self.frames = 0  # frames waiting in `pending` (not markers)
        self._partial = False  # pending[0] is the rest of a frame already started
        self._busy = False  # the writer task is inside a send_all() that may be partial
        self._running = False  # a writer task exists (or, raw, the flusher owns the queue)
        self._latest: dict[Any, _Keyed] | None = None  # key -> its replaceable frame queued
        self._spawn = spawn
        self.on_wait = on_wait
        self.broken = False
        # trio time of the backlog's start or of the peer's last taking bytes,
        # while the writer task runs (None otherwise)
        self.waiting_since: float | None = None

    # -- producers (never block) ----------------------------------------------

    def write_nowait(self, frame: bytes) -> None:
        """Queue `frame` behind what waits; the writer task writes it."""
        if self.broken:
            return
        self._queue(frame)

    def write_soon(self, frame: bytes) -> None:
        """A frame of a large fan-out: here the same as `write_nowait`."""
        self.write_nowait(frame)

    def _claim(self) -> None:
        """Take the queue back from the flusher (the raw writer's; nothing here)."""

    def _queue(self, item: Item) -> None:
        if item.__class__ is KeyedFrame:  # (plain frames: this one check)
            assert isinstance(item, KeyedFrame)
            if self._coalesce(item):
                return
            if item.replaces:
                item = self._hold(item)
        pending = self.pending
        if pending is None:
            pending = self.pending = deque()
        pending.append(item)
        if not isinstance(item, _Marker) or item.__class__ is _Keyed:
            self.frames += 1
        if not self._running:
            self._running = True
            self._spawn(self._run)

    def _coalesce(self, frame: KeyedFrame) -> bool:
        """A keyed frame about to be queued: True when it replaced the waiting frame
        of its key (nothing more to queue). A barrier ends its key's replacing."""
        latest = self._latest
        if not latest:
            return False
        if not frame.replaces:
            latest.pop(frame.key, None)
            return False
        held = latest.get(frame.key)
        if held is None:
            return False
        held.frame = frame
        return True

    def _hold(self, frame: KeyedFrame) -> _Keyed:
        """Queue `frame` in a holder a newer frame of its key can replace."""
        held = _Keyed(frame)
        latest = self._latest
        if latest is None:
            latest = self._latest = {}
        latest[held.key] = held
        return held

    def call_when_written(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything queued before it has been written."""
        if not self._running:
            callback()
            return
        self._claim()  # the closing paths wait on their own task, never on the flusher
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
        keep.extend(item for item in pending if item.__class__ is _Marker)
        self.pending = keep
        self.frames = 1 if self._partial else 0
        self._latest = None

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
        self._claim()
        self._queue(_Marker(done.set))
        await done.wait()

    # -- the writer task ----------------------------------------------------------

    async def _run(self) -> None:
        """Write the backlog, joining queued frames; ends when the queue is empty."""
        self.waiting_since = trio.current_time()
        if self.on_wait is not None:
            self.on_wait(self.waiting_since)
        try:
            while True:
                pending = self.pending
                if not pending:
                    return
                batch, size, head_partial = self._take_batch()
                if not batch:
                    continue
                if self.broken:
                    self._partial = False
                    continue  # markers still run; frames are discarded
                await self._write_batch(batch, size, head_partial)
        finally:
            self._running = False
            self.waiting_since = None
            if self.broken and self.pending:
                self._discard()

    async def _write_batch(self, batch: list[bytes | memoryview], size: int, head_partial: bool) -> None:
        """(The writer task.) Write `batch` whole with trio's `send_all()`."""
        self._busy = True  # a cancelled send_all() may have written part
        try:
            await self.transport.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
            self.waiting_since = trio.current_time()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
        self._busy = False
        self._partial = False

    def _take_batch(self) -> tuple[list[bytes | memoryview], int, bool]:
        """Take the frames at the head of the queue, up to `MAX_BATCH` bytes or the
        next marker; markers at the head run. Also says whether the first frame
        is the rest of a frame already started."""
        pending = self.pending
        assert pending is not None
        batch: list[bytes | memoryview] = []
        size = 0
        head_partial = self._partial
        while pending and size < MAX_BATCH and len(batch) < MAX_IOV:
            item = pending[0]
            if isinstance(item, _Marker):
                if isinstance(item, _Keyed):  # a frame, as it is now: replaceable no more
                    pending.popleft()
                    self.frames -= 1
                    latest = self._latest
                    if latest and latest.get(item.key) is item:
                        del latest[item.key]
                    batch.append(item.frame)
                    size += len(item.frame)
                    continue
                if batch:
                    break
                pending.popleft()
                item.callback()
                continue
            pending.popleft()
            self.frames -= 1
            batch.append(item)
            size += len(item)
        return batch, size, head_partial

    def _discard(self) -> None:
        """The transport broke: drop the queued frames, run the markers."""
        assert self.pending is not None
        markers = [i for i in self.pending if i.__class__ is _Marker]
        self.pending.clear()
        self.frames = 0
        self._latest = None
        for marker in markers:
            marker.callback()
