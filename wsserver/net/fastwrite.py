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
- While the writer task runs, `waiting_since` is when the peer last took bytes
  (or when the backlog began): the connection's timer closes a connection
  whose peer has taken nothing for `limits.write_timeout`. It is set only by
  the writer task (at its start and after each write that moved bytes; on
  TLS or a memory stream after each batch's whole `send_all()`), so the paths
  that write at once pay nothing for it.
- A partially sent frame's remainder stays at the head of the queue and is
  completed before anything else; `drop_pending()` (a close was decided) keeps
  it, so the peer never sees half a frame followed by another frame. `torn` is
  True while the peer has seen part of a frame whose rest is unsent: then
  nothing, not even a close frame, may follow.

- `write_soon()` (what large fan-outs use) queues the frame and leaves the write
  to the server's one `Flusher` task, which writes the queues of many
  connections one after the other and lets other tasks run between chunks of
  them. A fan-out that arrives meanwhile joins the frames still waiting, so a
  connection receiving several publishes in quick succession gets them in one
  `sendmsg()`: one system call where each costs more than everything else a
  delivery does. Whatever the socket does not take goes to the writer task. A
  connection never leaves more than `MAX_SOON` frames to the flusher: when
  fan-outs come faster than it writes, the next one writes them at once (so
  the publishers slow down to the pace of the writes, and a queue only grows
  toward `limits.send_queue` when the peer does not read).

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

from wsserver.protocol.coalesce import KeyedFrame

MAX_BATCH = 256 * 1024  # bytes written by one sendmsg()/send_all() of the writer task
MAX_IOV = 512  # buffers per sendmsg() (Linux allows 1024)
MAX_SOON = 32  # frames a writer leaves to the flusher; the next one is written at once
# Windows sockets have no sendmsg(): there the batch is joined and sent with send()
HAVE_SENDMSG = hasattr(stdlib_socket.socket, "sendmsg")


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
    called when a backlog appears and no writer task runs. `on_wait(since)`,
    when given, is called as that task starts waiting on the peer.
    """

    __slots__ = (
        "_busy",
        "_deferred",
        "_latest",
        "_partial",
        "_running",
        "_spawn",
        "broken",
        "frames",
        "on_wait",
        "pending",
        "sock",
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
        self.sock = raw_socket(transport)
        self.pending: deque[Item] | None = None  # created with the first backlog
        self.frames = 0  # frames waiting in `pending` (not markers)
        self._partial = False  # pending[0] is the rest of a frame already started
        self._busy = False  # the writer task is inside a send_all() that may be partial
        self._running = False  # a writer task exists, or the flusher owns the queue
        self._deferred = False  # the queue waits for the flusher (no writer task)
        self._latest: dict[Any, _Keyed] | None = None  # key -> its replaceable frame queued
        self._spawn = spawn
        self.on_wait = on_wait
        self.broken = False
        # trio time of the backlog's start or of the peer's last taking bytes,
        # while the writer task runs (None otherwise)
        self.waiting_since: float | None = None

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

    def write_soon(self, frame: bytes, flusher: Flusher) -> None:
        """Queue `frame` for `flusher` to write with the other connections' frames;
        behind a backlog, or without a plain socket, the same as `write_nowait`."""
        if self.broken:
            return
        if self._deferred:  # the flusher has not reached this writer yet: join its frames
            assert self.pending is not None
            self.pending.append(frame)
            self.frames += 1
            if self.frames >= MAX_SOON:
                # The flusher is behind (publishes arrive faster than it writes):
                # write them now, so frames wait in the socket rather than here
                # and only a peer that does not read reaches `send_queue`.
                self.flush_now()
            return
        if self._running or self.sock is None or not flusher.running:
            self.write_nowait(frame)
            return
        pending = self.pending
        if pending is None:
            pending = self.pending = deque()
        pending.append(frame)
        self.frames += 1
        self._running = self._deferred = True
        flusher.add(self)

    def flush_now(self) -> None:
        """The flusher's turn: write the queue with non-blocking sends while the
        socket takes it; what is left goes to the writer task."""
        if not self._deferred:
            return  # claimed by `_claim()` meanwhile
        self._deferred = False
        while self.pending:
            batch, size, head_partial = self._take_batch()
            if not batch:
                continue
            if self.broken:
                continue  # frames are discarded
            sent = self._send(batch, size)
            if self.broken:
                continue  # the rest is discarded too
            if sent < size:
                self._put_back(batch, sent, head_partial)
                self._hand_to_task()
                return
            self._partial = False
        self._running = False

    def _claim(self) -> None:
        """Take the queue back from the flusher: a writer task writes it now."""
        if self._deferred:
            self._deferred = False
            self._hand_to_task()

    def _hand_to_task(self) -> None:
        """Start the writer task for the queue (`_running` stays True)."""
        try:
            self._spawn(self._run)
        except RuntimeError:  # the connection's nursery has closed: it is over
            self.broken = True
            self._running = False
            if self.pending:
                self._discard()

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
                if self.sock is not None:
                    await trio.lowlevel.wait_writable(self.sock)
                    sent = self._send(batch, size)
                    if sent:
                        self.waiting_since = trio.current_time()
                    if sent < size and not self.broken:
                        self._put_back(batch, sent, head_partial)
                    else:
                        self._partial = False
                else:
                    self._busy = True  # a cancelled send_all() may have written part
                    try:
                        await self.transport.send_all(batch[0] if len(batch) == 1 else b"".join(batch))
                        self.waiting_since = trio.current_time()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.broken = True
                    self._busy = False
                    self._partial = False
        finally:
            self._running = False
            self.waiting_since = None
            if self.broken and self.pending:
                self._discard()

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

    def _send(self, batch: list[bytes | memoryview], size: int) -> int:
        """One non-blocking write of `batch` to the plain socket: the bytes taken
        (0 when it takes none; `broken` is set when it failed)."""
        sock = self.sock
        assert sock is not None
        try:
            if len(batch) == 1:
                return sock.send(batch[0])
            if HAVE_SENDMSG:
                return sock.sendmsg(batch)
            return sock.send(b"".join(batch))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.broken = True
            return 0

    def _put_back(self, batch: list[bytes | memoryview], sent: int, head_partial: bool) -> None:
        """Return what of `batch` was not sent to the head of the queue, in order,
        the first piece possibly partial."""
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

    def _discard(self) -> None:
        """The transport broke: drop the queued frames, run the markers."""
        assert self.pending is not None
        markers = [i for i in self.pending if i.__class__ is _Marker]
        self.pending.clear()
        self.frames = 0
        self._latest = None
        for marker in markers:
            marker.callback()


class Flusher:
    """The task that writes the queues `FrameWriter.write_soon()` left to it.

    It takes the writers in the order their first frame arrived and gives way
    to other tasks (the registry, readers, the HTTP API) after every `CHUNK` of
    them; frames queued meanwhile for a writer not yet reached go out in the
    same write. While it does not run (not started yet, or ended at shutdown)
    `write_soon()` writes at once, and any writer it still held is handed to
    its own writer task.
    """

    CHUNK = 128  # writers flushed between two turns of the other tasks

    __slots__ = ("_dirty", "_task", "running")

    def __init__(self) -> None:
        self._dirty: list[FrameWriter] = []
        self._task: trio.lowlevel.Task | None = None  # set while parked, waiting for work
        self.running = False

    def add(self, writer: FrameWriter) -> None:
        """`writer` has frames for the flusher (called once per turn)."""
        self._dirty.append(writer)
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        batch: list[FrameWriter] = []
        try:
            while True:
                if not self._dirty:
                    self._task = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._abort)
                batch, self._dirty = self._dirty, []
                chunk = self.CHUNK
                for writer in batch:
                    writer.flush_now()
                    chunk -= 1
                    if not chunk:
                        chunk = self.CHUNK
                        await trio.lowlevel.checkpoint()
                batch = []
        finally:
            self.running = False
            self._task = None
            left, self._dirty = batch + self._dirty, []
            for writer in left:
                writer._claim()  # a no-op for those flushed already
