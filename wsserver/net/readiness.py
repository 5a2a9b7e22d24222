"""The reads of plain sockets on the fast path: `receive_raw()`, a plain `recv()`
that parks an idle reader on `Readiness`, an edge-triggered epoll set of our own
(Linux).

Part of the fast I/O below trio's public API (`net.fastio` holds the switch,
the writes, accepts and closes, and checks the trio internals both use): a
reader gets here only through `fastio.raw_socket()`, so with `server.fast_io`
off nothing here runs. Kept apart because reads are their own concern: their
own waits, their own poller task, and no state shared with the writes.

Whatever a waiting reader allocates stays alive, and is walked by every young
GC collection, until its next message. trio's `wait_readable` builds many
objects per wait and re-arms a one-shot epoll registration each time.
`Readiness` (Linux) keeps its own edge-triggered epoll set, each socket added
once: an idle reader parks with `trio.lowlevel.wait_task_rescheduled` (the
abort function made once per socket) and one poller task reschedules the
readers whose sockets became ready. Edge-triggered is safe because a reader
waits only after `recv()` said EAGAIN. Without a Readiness (no epoll, or no
server) `receive_raw` waits with trio's `wait_readable`.

Closing: a socket leaves the epoll set by itself when closed. Entries are
kept with the socket object (the kernel reuses fd numbers), so a new socket
under an old number is added anew; `forget(sock)`, called before closing,
wakes a reader still parked on it (it then reads EBADF: the end) and drops
the entry.
"""

from __future__ import annotations

import functools
import select
import socket as stdlib_socket
from typing import Any

import trio
from trio.lowlevel import Abort, RunVar, Task

__all__ = ["HAVE_EPOLL", "Readiness", "forget", "receive_raw"]

HAVE_EPOLL = hasattr(select, "epoll")
MAX_EVENTS = 1024  # readiness events taken per poll; more stay ready for the next round

# the running server's Readiness, if it has one
_current: RunVar[Readiness | None] = RunVar("wsserver_readiness", default=None)


def _abort(waiting: dict[int, Task], fd: int, _raise_cancel: Any) -> Abort:
    waiting.pop(fd, None)
    return Abort.SUCCEEDED


class Readiness:
    """An edge-triggered epoll set for connection reads and its poller task."""

    __slots__ = ("_aborts", "_empty", "_ep", "_sockets", "_waiting")

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._waiting: dict[int, Task] = {}  # fd -> the task parked on it
        self._sockets: dict[int, stdlib_socket.socket] = {}  # fd -> the socket registered
        self._aborts: dict[int, functools.partial[Abort]] = {}
        # fds whose last read took less than it asked for (the socket was empty
        # then) with no edge since: the next read would say EAGAIN, so park at once
        self._empty: set[int] = set()

    def install(self) -> None:
        """Make this the Readiness `receive_raw` uses in the current trio run."""
        _current.set(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The poller: wake the readers whose sockets became readable."""
        ep = self._ep
        waiting = self._waiting
        empty = self._empty
        reschedule = trio.lowlevel.reschedule
        self.install()
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(ep.fileno())
                for fd, _events in ep.poll(0, MAX_EVENTS):
                    empty.discard(fd)
                    task = waiting.pop(fd, None)
                    if task is not None:
                        reschedule(task)
        finally:
            if _current.get() is self:
                _current.set(None)
            for task in waiting.values():  # readers still parked: let them see the end
                reschedule(task)
            waiting.clear()
            empty.clear()
            self._sockets.clear()
            self._aborts.clear()
            ep.close()

    def _add(self, sock: stdlib_socket.socket, fd: int) -> functools.partial[Abort]:
        flags = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
        try:
            self._ep.register(fd, flags)
        except FileExistsError:  # a closed socket's number, not yet dropped here
            self._ep.modify(fd, flags)
        self._sockets[fd] = sock
        self._empty.discard(fd)
        abort = self._aborts[fd] = functools.partial(_abort, self._waiting, fd)
        return abort

    def park(self, sock: stdlib_socket.socket) -> functools.partial[Abort] | None:
        """Register the current task as waiting for `sock` to become readable;
        the abort function to wait with, None if `sock` was closed meanwhile
        (then the next read says so). The caller awaits
        `trio.lowlevel.wait_task_rescheduled(abort)` at once."""
        fd = sock.fileno()
        if self._sockets.get(fd) is sock:
            abort = self._aborts[fd]
        else:
            try:
                abort = self._add(sock, fd)
            except (OSError, ValueError):
                return None
        if fd in self._waiting:
            raise trio.BusyResourceError("another task is already reading this socket")
        self._waiting[fd] = trio.lowlevel.current_task()
        return abort

    def drained(self, sock: stdlib_socket.socket) -> None:
        """A read of `sock` just took everything it had (a short read): until
        its next edge, a read would only say EAGAIN."""
        fd = sock.fileno()
        if self._sockets.get(fd) is not sock:
            try:
                self._add(sock, fd)
            except (OSError, ValueError):
                return
        self._empty.add(fd)

    def is_drained(self, sock: stdlib_socket.socket) -> bool:
        """No edge on `sock` since its last short read."""
        fd = sock.fileno()
        return fd in self._empty and self._sockets.get(fd) is sock

    def forget(self, sock: stdlib_socket.socket) -> None:
        """`sock` is about to be closed: wake a reader parked on it, drop its entry."""
        fd = sock.fileno()
        if fd < 0 or self._sockets.get(fd) is not sock:
            return
        del self._sockets[fd]
        del self._aborts[fd]
        self._empty.discard(fd)
        task = self._waiting.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task)


def forget(sock: stdlib_socket.socket) -> None:
    """Call before closing a plain socket that `receive_raw` may have read."""
    readiness = _current.get()
    if readiness is not None:
        readiness.forget(sock)


def _recv(sock: stdlib_socket.socket, max_bytes: int) -> bytes | None:
    """What `sock` has now; None when nothing (EAGAIN), b"" at its end or on an error."""
    try:
        return sock.recv(max_bytes)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


async def receive_raw(sock: stdlib_socket.socket, max_bytes: int) -> bytes:
    """Read what `sock` has (b"" at its end or on an error), waiting for it only
    when there is nothing. The wait is outside the `except`, so no exception
    (and its traceback) stays alive while the socket is idle.

    With a `Readiness`, a short read marks the socket drained, and the next
    call parks at once instead of asking the kernel first (one `recv()` that
    would say EAGAIN less per message)."""
    readiness = _current.get()
    waited = False
    # drained at the last read and no edge since: a recv() now would say EAGAIN
    skip_read = readiness is not None and readiness.is_drained(sock)
    while True:
        if skip_read:
            skip_read = False
        else:
            data = _recv(sock, max_bytes)
            if data is not None:
                break
        # looked up at every wait: once the server's poller has ended (shutdown),
        # waits go back to trio's
        readiness = _current.get()
        if readiness is None:
            await trio.lowlevel.wait_readable(sock)
        else:
            # inline, not a helper coroutine: one object less per waiting connection
            abort = readiness.park(sock)
            if abort is None:  # closed meanwhile: the next recv() says so
                await trio.lowlevel.checkpoint()
            else:
                await trio.lowlevel.wait_task_rescheduled(abort)
            abort = None
        waited = True
    if readiness is not None and data and len(data) < max_bytes:
        readiness.drained(sock)
    if not waited:
        await trio.lowlevel.checkpoint()
    return data
