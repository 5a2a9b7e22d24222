"""Everything that reaches below trio's public API, here and in `net.readiness`
(the reads), behind one switch.

trio's stream calls cost a scheduler trip, several coroutines and a one-shot
epoll registration each; with thousands of connections that is most of what a
delivered message costs and most of what every young GC collection walks
(docs/ARCHITECTURE.md). The fast paths skip those layers:

- `raw_socket()` / `listener_socket()`: the stdlib socket under a plain
  `trio.SocketStream` / `trio.SocketListener` (`.socket._sock`, a trio
  internal); None for TLS, a test's memory stream, or with the switch off;
- writes: `RawFrameWriter` (direct `send()`, a backlog in one `sendmsg()`) and
  `Flusher` (the one task writing large fan-outs), keeping `net.writer`'s
  rules (order, whole frames, the write timeout);
- reads: `net.readiness.receive_raw()`, a plain `recv()` that parks an idle
  reader on `Readiness`, an edge-triggered epoll set of our own (Linux);
- `accept_plain()`: the waiting connections in a row, with the stdlib's `accept()`;
- `close_stream()`: the stdlib socket closed without trio's `notify_closing`
  (an `epoll_ctl` that fails, and its exception, per connection).

The switch is `server.fast_io`, a restart key: `Server.start_core` calls
`use_fast_io()` for its trio run before any connection (on by default, e.g.
for this module's unit tests). Off, `raw_socket()` and `listener_socket()`
return None, so every read, write, accept and close goes through trio's public
API; the suite runs a second time so. `internals_problems()` checks the shape
of the trio internals used here and in `net.readiness`: tests/test_fastio.py
fails loudly when it changes, and a server that finds it changed says so and
runs the plain path.
"""

from __future__ import annotations

import inspect
import math
import socket as stdlib_socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio.lowlevel import Abort, RunVar, Task

from wsserver.net.readiness import forget
from wsserver.net.writer import FrameWriter

# Windows sockets have no sendmsg(): there the batch is joined and sent with send()
HAVE_SENDMSG = hasattr(stdlib_socket.socket, "sendmsg")
MAX_SOON = 32  # frames a writer leaves to the flusher; the next one is written at once
ACCEPT_BATCH = 64  # connections accepted in a row before the other tasks get a turn

# the switch, for the current trio run (one server per run); on unless a server said off
_enabled: RunVar[bool] = RunVar("wsserver_fast_io", default=True)


# --------------------------------------------------------------------------- the switch


def use_fast_io(on: bool) -> None:
    """Take the fast paths in the current trio run, or not (`Server.start_core`,
    before any connection; check `internals_problems()` first)."""
    _enabled.set(on)


def internals_problems() -> list[str]:
    """What of trio's internals used here has not the expected shape (empty when all has)."""
    problems = []
    a, b = stdlib_socket.socketpair()
    try:
        # SocketStream and SocketListener hold a trio socket as `.socket` (public);
        # the stdlib socket under it is `_sock`
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
        if getattr(stream.socket, "_sock", None) is not a:
            problems.append("trio.socket.SocketType._sock is not the stdlib socket it wraps")
    finally:
        a.close()
        b.close()
    # the functions used, and the positional arguments they are called with
    expected = {
        "wait_readable": 1,
        "wait_writable": 1,
        "wait_task_rescheduled": 1,
        "reschedule": 1,
        "current_task": 0,
        "checkpoint": 0,
    }
    for name, n in expected.items():
        try:
            inspect.signature(getattr(trio.lowlevel, name)).bind(*range(n))
        except (AttributeError, TypeError, ValueError):
            problems.append(f"trio.lowlevel.{name} cannot be called with {n} positional argument(s)")
    if getattr(Abort, "SUCCEEDED", None) is None:
        problems.append("trio.lowlevel.Abort.SUCCEEDED is missing")
    return problems


def raw_socket(stream: trio.abc.Stream) -> stdlib_socket.socket | None:
    """The stdlib socket under `stream`, when it is a plain TCP stream (not TLS,
    not a test's memory stream) and the fast paths are on."""
    if not isinstance(stream, trio.SocketStream) or not _enabled.get():
        return None
    sock = getattr(stream.socket, "_sock", None)
    return sock if isinstance(sock, stdlib_socket.socket) else None


def listener_socket(listener: Any) -> stdlib_socket.socket | None:
    """The stdlib socket under a plain `trio.SocketListener` (not TLS), when the
    fast paths are on."""
    if not isinstance(listener, trio.SocketListener) or not _enabled.get():
        return None
    sock = getattr(listener.socket, "_sock", None)
    return sock if isinstance(sock, stdlib_socket.socket) else None


# --------------------------------------------------------------------------- accept and close


async def accept_plain(
    lsock: Any,
    on_stream: Callable[[trio.SocketStream, str], None],
    on_error: Callable[[OSError], Awaitable[bool]],
) -> None:
    """Accept on a plain listening socket forever: every connection waiting, up
    to `ACCEPT_BATCH` in a row, with the stdlib's `accept()` (trio's takes a
    scheduler trip per connection); the peer's address comes with it.
    `on_stream(stream, ip)` gets each; `on_error(exc)` decides on a failed
    `accept()`: True to go on, False to raise it."""
    while True:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = lsock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if not await on_error(exc):
                    raise
                continue
            on_stream(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), str(address[0]))
        else:
            await trio.lowlevel.checkpoint()  # more are waiting: let the others run first
            continue
        await trio.lowlevel.wait_readable(lsock)


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close a connection's stream once every task that used it has ended.

    A plain socket on the fast path: the stdlib socket itself, at once, without
    trio's `notify_closing` (no trio wait is left to notify). Anything else
    (TLS, a memory stream, the plain path): `trio.aclose_forcefully`."""
    sock = raw_socket(stream)
    if sock is not None:
        forget(sock)
        sock.close()
        return
    await trio.aclose_forcefully(stream)


# --------------------------------------------------------------------------- writes


def frame_writer(
    transport: trio.abc.Stream,
    spawn: Callable[[Callable[[], Any]], None],
    on_wait: Callable[[float], None] | None = None,
    flusher: Flusher | None = None,
) -> FrameWriter:
    """The writer for one connection: `RawFrameWriter` on a plain socket with the
    fast paths on (large fan-outs go through `flusher`), else `FrameWriter`."""
    sock = raw_socket(transport)
    if sock is None:
        return FrameWriter(transport, spawn, on_wait)
    return RawFrameWriter(transport, sock, spawn, on_wait, flusher)


class RawFrameWriter(FrameWriter):
    """A `FrameWriter` on a plain socket: writes without a scheduler trip.

    - `write_nowait()` sends at once (a non-blocking `send()`) when nothing is
      queued; what the socket does not take is queued for the writer task,
      which writes a backlog with one `sendmsg()` (joined and `send()` on
      Windows) each time the socket is writable.
    - `write_soon()` (large fan-outs) queues the frame for the server's one
      `Flusher`; a fan-out that arrives before the flusher's turn joins it, so
      a burst of publishes costs one system call per connection. A writer
      never leaves more than `MAX_SOON` frames to the flusher: then it writes
      them at once, so publishers slow down to the pace of the writes and only
      a peer that does not read fills `limits.send_queue`.
    """

    __slots__ = ("_deferred", "flusher", "sock")

    def __init__(
        self,
        transport: trio.abc.Stream,
        sock: stdlib_socket.socket,
        spawn: Callable[[Callable[[], Any]], None],
        on_wait: Callable[[float], None] | None = None,
        flusher: Flusher | None = None,
    ) -> None:
        super().__init__(transport, spawn, on_wait)
        self.sock = sock
        self.flusher = flusher
        self._deferred = False  # the queue waits for the flusher (no writer task)

    def write_nowait(self, frame: bytes) -> None:
        """Send `frame` now if the socket takes it, else queue it behind what waits."""
        if self.broken:
            return
        if not self._running:
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

    def write_soon(self, frame: bytes) -> None:
        """Queue `frame` for the flusher to write with the other connections' frames;
        behind a backlog, or without a running flusher, the same as `write_nowait`."""
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
        flusher = self.flusher
        if self._running or flusher is None or not flusher.running:
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

    async def _write_batch(self, batch: list[bytes | memoryview], size: int, head_partial: bool) -> None:
        """(The writer task.) One non-blocking write once the socket is writable;
        what it does not take goes back to the head of the queue."""
        await trio.lowlevel.wait_writable(self.sock)
        sent = self._send(batch, size)
        if sent:
            self.waiting_since = trio.current_time()
        if sent < size and not self.broken:
            self._put_back(batch, sent, head_partial)
        else:
            self._partial = False

    def _send(self, batch: list[bytes | memoryview], size: int) -> int:
        """One non-blocking write of `batch`: the bytes taken (0 when it takes
        none; `broken` is set when it failed)."""
        sock = self.sock
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
        rest: list[bytes | memoryview] = []
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


class Flusher:
    """The task that writes the queues `RawFrameWriter.write_soon()` left to it.

    It takes the writers in the order their first frame arrived and gives way
    to other tasks (the registry, readers, the HTTP API) after every `CHUNK` of
    them; frames queued meanwhile for a writer not yet reached go out in the
    same write. A round that would start less than `GAP` after the previous
    one ended waits until then: while fan-outs follow each other (a burst of
    publishes, or another node's stream of them over the bus), each
    connection's frames of that moment go out in one write rather than one
    write (and one wake-up of the peer) each; a fan-out after a quieter moment
    is written at once. While it does not run (not started yet, ended at
    shutdown, or the fast paths are off) `write_soon()` writes at once, and
    any writer it still held is handed to its own writer task. It parks with
    `trio.lowlevel` (no Event per round).
    """

    CHUNK = 128  # writers flushed between two turns of the other tasks
    GAP = 0.003  # seconds from the end of a round to the start of the next, at least

    __slots__ = ("_dirty", "_task", "running")

    def __init__(self) -> None:
        self._dirty: list[RawFrameWriter] = []
        self._task: Task | None = None  # set while parked, waiting for work
        self.running = False

    def add(self, writer: RawFrameWriter) -> None:
        """`writer` has frames for the flusher (called once per turn)."""
        self._dirty.append(writer)
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _raise_cancel: Any) -> Abort:
        self._task = None
        return Abort.SUCCEEDED

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        batch: list[RawFrameWriter] = []
        ended = -math.inf  # when the previous round ended
        try:
            while True:
                if not self._dirty:
                    self._task = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._abort)
                wait = ended + self.GAP - trio.current_time()
                if wait > 0:  # the fan-outs of the next moment join this round
                    await trio.sleep(wait)
                batch, self._dirty = self._dirty, []
                chunk = self.CHUNK
                for writer in batch:
                    writer.flush_now()
                    chunk -= 1
                    if not chunk:
                        chunk = self.CHUNK
                        await trio.lowlevel.checkpoint()
                batch = []
                ended = trio.current_time()
        finally:
            self.running = False
            self._task = None
            left, self._dirty = batch + self._dirty, []
            for writer in left:
                writer._claim()  # a no-op for those flushed already
