"""The connections' timer: one task for every connection (`Heartbeats`), and what
it does for a connection at its deadlines (`tick_connection`): pings, liveness,
auth, token and write deadlines.

A task per connection would cost each idle connection a few KB (its coroutine
frames, cancel scopes, the scheduler's bookkeeping); here a connection costs one
heap entry. Each connection has at most one live entry, its next deadline
(`Timed.timer_due`); `tick(now)` does what is due and returns the next deadline,
or None when the connection is gone. An entry whose deadline no longer matches
the connection's is stale and skipped, so moving a deadline earlier is just
another `schedule()`.

The task sleeps until the earliest deadline; a `schedule()` earlier than that
moves the sleep's deadline (no wake-up event, no polling).

At a connection's tick (`tick_connection`, with the configuration read anew
each time: a reload changes `[heartbeat]` and `[auth]` timings live):

- not authenticated within `auth.timeout` (and not the echo path): close 4002;
- nothing heard for `heartbeat.timeout` (any frame counts, a pong too): 4000;
- a backlog the peer has taken nothing of for `limits.write_timeout`: 4008;
- every `heartbeat.interval`: a WebSocket ping (and, with `heartbeat.app_ping`,
  a `ping` message);
- `TOKEN_WARN_BEFORE` the token's expiry: `token_expiring`, once per expiry
  (a refresh moves it); past the expiry and `auth.expiry_grace`: 4001.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Any, Protocol

import trio

from wsserver.errors import CloseCode
from wsserver.protocol.frames import ping_frame

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.core.identity import Identity
    from wsserver.net.writer import FrameWriter
    from wsserver.protocol.envelope import Inbound

TOKEN_WARN_BEFORE = 60.0  # seconds before `exp` that `token_expiring` is sent


class Timed(Protocol):
    timer_due: float | None

    def tick(self, now: float) -> float | None:
        """Do what is due at `now`; the next deadline, or None to forget this one."""


class TimedConnection(Timed, Protocol):
    """What `tick_connection` reads and changes of a connection
    (`net.connection.Connection`); it changes only `last_ping` and
    `expiry_warned`, its own state."""

    last_ping: float
    expiry_warned: bool

    @property
    def closing(self) -> tuple[int, str] | None: ...
    @property
    def reading(self) -> bool: ...
    @property
    def identity(self) -> Identity | None: ...
    @property
    def echo(self) -> bool: ...
    @property
    def started(self) -> float: ...
    @property
    def last_seen(self) -> float: ...
    @property
    def expires_at(self) -> float | None: ...
    @property
    def wall_offset(self) -> float: ...
    @property
    def writer(self) -> FrameWriter | None: ...
    def write_frame(self, data: bytes, soon: bool = False) -> bool: ...
    def reply(self, msg: Inbound | None, mtype: str, data: Any, **extra: Any) -> None: ...
    def close(self, code: int, reason: str, /, **params: object) -> None: ...


class Heartbeats:
    """The deadlines of every connection, served by one task (`run`)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timed]] = []
        self._seq = itertools.count()
        self._sleep: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, item: Timed, when: float) -> None:
        """Call `item.tick()` at `when` (replacing its previous deadline)."""
        item.timer_due = when
        heapq.heappush(self._heap, (when, next(self._seq), item))
        sleep = self._sleep
        if sleep is not None and when < sleep.deadline:
            sleep.deadline = when

    def reschedule_all(self, when: float) -> None:
        """Tick every connection at `when` (e.g. after a reload changed the timings)."""
        items = {id(item): item for _, _, item in self._heap if item.timer_due is not None}
        for item in items.values():
            self.schedule(item, when)

    def run_due(self, now: float) -> int:
        """Tick everything due at `now`; how many ticked."""
        heap = self._heap
        n = 0
        while heap and heap[0][0] <= now:
            when, _, item = heapq.heappop(heap)
            if item.timer_due != when:
                continue  # stale: rescheduled or gone
            n += 1
            nxt = item.tick(now)
            if nxt is None:
                item.timer_due = None
            else:
                self.schedule(item, nxt if nxt > now else now + 0.001)
        return n

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        heap = self._heap
        while True:
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as sleep:
                self._sleep = sleep
                await trio.sleep_forever()
            self._sleep = None
            self.run_due(trio.current_time())
            await trio.lowlevel.checkpoint()


def tick_connection(conn: TimedConnection, now: float, cfg: Config) -> float | None:
    """Pings, liveness, auth, token and write deadlines of `conn` at `now` (see
    the module docstring); the next deadline, or None once it is closing."""
    if conn.closing is not None or not conn.reading:
        return None
    # Read on every tick: a reload changes [heartbeat] and [auth] timings live.
    hb = cfg.heartbeat
    unauthenticated = conn.identity is None and not conn.echo
    auth_deadline = conn.started + cfg.auth.timeout
    if unauthenticated and now >= auth_deadline:
        conn.close(CloseCode.AUTH_TIMEOUT, "auth_timeout")
        return None
    if now - conn.last_seen >= hb.timeout:
        conn.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat_timeout")
        return None
    stalled_until = _write_deadline(conn.writer, cfg.limits.write_timeout)
    if stalled_until is not None and now >= stalled_until:
        conn.close(CloseCode.SLOW_CONSUMER, "slow_consumer")
        return None
    next_ping = conn.last_ping + hb.interval
    if now >= next_ping:
        conn.write_frame(ping_frame())  # its pong (any frame) refreshes `last_seen`
        if hb.app_ping:
            conn.reply(None, "ping", None)
        conn.last_ping = now
        next_ping = now + hb.interval
    due = min(next_ping, conn.last_seen + hb.timeout)
    if stalled_until is not None:
        due = min(due, stalled_until)
    if unauthenticated:
        due = min(due, auth_deadline)
    expiry = _expiry(conn)
    if expiry is not None:
        if now >= expiry + cfg.auth.expiry_grace:
            conn.close(CloseCode.AUTH_FAILED, "token_expired")
            return None
        warn_at = expiry - TOKEN_WARN_BEFORE
        if now >= warn_at:
            if not conn.expiry_warned:
                conn.reply(None, "token_expiring", {"expires_at": int(conn.expires_at or 0)})
                conn.expiry_warned = True
        else:
            conn.expiry_warned = False  # a refresh moved the expiry
            due = min(due, warn_at)
        due = min(due, expiry + cfg.auth.expiry_grace)
    if conn.closing is not None:  # a write above found the queue full
        return None
    return due


def _expiry(conn: TimedConnection) -> float | None:
    """The token's expiry on the trio clock, or None."""
    expires_at = conn.expires_at
    if expires_at is None:
        return None
    return expires_at - conn.wall_offset


def _write_deadline(writer: FrameWriter | None, write_timeout: float) -> float | None:
    """When the writer's backlog will have waited `write_timeout` on a peer
    that takes nothing, or None without a backlog."""
    since = None if writer is None else writer.waiting_since
    return None if since is None else since + write_timeout
