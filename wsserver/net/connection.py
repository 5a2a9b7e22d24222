"""One WebSocket connection after its handshake: one task, a writer, a timer.

- the reader (`run`, the connection's only long-lived task; what it does is
  `wsserver.net.reader.read`): reads the socket, parses frames
  (`wsserver.protocol.frames`), applies the inbound limits, answers what
  concerns this connection only (heartbeat, ping, refresh, first-message
  auth: `wsserver.net.local_messages`) and hands the rest to the hub actor
  (`Handle`).
- writer (`wsserver.net.writer.FrameWriter`, on a plain socket
  `wsserver.net.fastio.RawFrameWriter`): every byte to the socket goes through
  it, in order. A frame is written straight from `deliver()` when nothing is
  queued and the socket takes it (no scheduler trip, fast path only);
  otherwise it is queued and a writer task, started in the connection's
  nursery only while there is a backlog, joins queued frames into one write.
- timer (`tick`, run by the server's `Heartbeats` task; what it does is
  `wsserver.net.heartbeat.tick_connection`): WebSocket pings, the liveness
  timeout (4000), the auth timeout (4002), token expiry (`token_expiring`,
  then 4001) and the write timeout (4008: a backlog the peer has taken
  nothing of for `limits.write_timeout`; the writer asks for a tick in time
  when its backlog starts). No task per connection: an idle connection is
  one coroutine, a socket and a few small objects.

Every way of ending a connection goes through `close()`: it records the close
code and the reason's text once, drops the queued frames (a frame already half
written is finished first), queues `disconnected {code, reason}` (SPEC 13), stops the reader and has the hub forget the
connection at once (`forget`: rooms, presence, per-user and per-IP counts; a
closing connection receives nothing more and is no longer online, however long
its closing handshake takes); `run` then sends the close frame through the
writer and waits for the peer's, within `CLOSE_TIMEOUT`. A close frame from the
peer is answered with the same code; the hub forgets the connection as soon as
the reader has it, before that answer is written.

`deliver()`, called by the hub actor, never blocks: a full queue closes the
connection with 4008 (slow consumer), so a slow client costs at most
`limits.send_queue` frames of memory and never slows anyone else; a peer
that stops reading while little is sent to it is closed with 4008 by the
write timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from wsserver.core.identity import Identity
from wsserver.core.limits import AbuseCounter, TokenBucket
from wsserver.errors import CloseCode, ProtocolError
from wsserver.net.fastio import frame_writer
from wsserver.net.heartbeat import tick_connection
from wsserver.net.reader import RECEIVE_SIZE, read
from wsserver.net.writer import FrameWriter
from wsserver.protocol.envelope import Inbound, Wire, encode, encode_error
from wsserver.protocol.frames import (
    ABNORMAL,
    NO_STATUS,
    Close,
    FrameError,
    FrameParser,
    binary_frame,
    close_frame,
    text_frame,
)
from wsserver.protocol.i18n import text

if TYPE_CHECKING:
    from wsserver.config import LimitsConfig
    from wsserver.net.host import ConnectionHost

log = logging.getLogger("wsserver.connection")

CLOSE_TIMEOUT = 5.0  # seconds for the closing handshake


class Connection:
    """The trio side of one WebSocket connection; the hub's `Outlet` for it."""

    __slots__ = (
        "_close_queued",
        "_early",
        "_forgotten",
        "_scope",
        "abuse",
        "binary_frames",
        "bucket",
        "closing",
        "conn_id",
        "device_id",
        "echo",
        "eof",
        "expires_at",
        "expiry_warned",
        "identity",
        "ip",
        "last_ping",
        "last_seen",
        "messages_in",
        "messages_out",
        "parser",
        "peer_close",
        "rate_limits",
        "send_queue",
        "server",
        "started",
        "timer_due",
        "wall_offset",
        "writer",
    )

    def __init__(
        self,
        server: ConnectionHost,
        conn_id: str,
        ip: str,
        *,
        identity: Identity | None = None,
        device_id: str | None = None,
        echo: bool = False,
    ) -> None:
        self.server = server
        self.conn_id = conn_id
        self.ip = ip
        self.identity = identity
        # the token's expiry (Unix seconds): this connection's own, a refresh moves it
        self.expires_at = None if identity is None else identity.expires_at
        self.device_id = device_id
        self.echo = echo
        self.send_queue = server.config.limits.send_queue
        self.writer: FrameWriter | None = None  # from run(); frames before it wait in _early
        self._early: list[bytes | Callable[[], None]] | None = []
        self.closing: tuple[int, str] | None = None  # our close: code, the reason's text
        self.peer_close: tuple[int, str] | None = None  # the peer's close frame
        self.eof = False  # the peer's TCP stream ended without a close frame
        self._scope: trio.CancelScope | None = None
        now = trio.current_time()
        self.started = now
        self.last_seen = now
        self.last_ping = now  # the timer's: its last ping
        self.expiry_warned = False  # the timer's: `token_expiring` sent for this expiry
        self.timer_due: float | None = None
        self.wall_offset = time.time() - now  # wall clock minus trio clock
        self.messages_in = 0
        self.messages_out = 0
        # the reader's (`net.reader`): the frame parser, the [limits] the rate
        # limit was made from (a reload replaces it), the rate limit, its abuse
        # count, the binary frames so far
        self.parser: FrameParser | None = None
        self.rate_limits: LimitsConfig | None = None
        self.bucket: TokenBucket | None = None
        self.abuse: AbuseCounter | None = None
        self.binary_frames = 0
        self._close_queued = False
        self._forgotten = False  # the hub was told this connection is gone

    # -- Outlet --------------------------------------------------------------

    def deliver(self, frame: str | bytes, soon: bool = False) -> bool:
        """Send or queue one frame without blocking; a full queue closes with 4008.
        `soon`: part of a large fan-out, written by the server's flusher."""
        if self.closing is not None:
            return False
        if isinstance(frame, Wire):  # one frame, built once, for many connections
            data = frame.frame
        elif isinstance(frame, str):
            data = text_frame(frame.encode())
        else:
            data = binary_frame(frame)
        if not self.write_frame(data, soon):
            return False
        self.messages_out += 1
        self.server.metrics.frame_out(frame)
        return True

    def write_frame(self, data: bytes, soon: bool = False) -> bool:
        """Send or queue one whole frame; False (and close 4008) when the queue is full."""
        writer = self.writer
        if writer is None:
            early = self._early
            assert early is not None
            if len(early) >= self.send_queue:
                self.close(CloseCode.SLOW_CONSUMER, "slow_consumer")
                return False
            early.append(data)
            return True
        if writer.frames >= self.send_queue:
            self.close(CloseCode.SLOW_CONSUMER, "slow_consumer")
            return False
        if writer.broken:
            return False
        if soon:
            writer.write_soon(data)
        else:
            writer.write_nowait(data)
        return True

    def close(self, code: int, reason: str, /, **params: object) -> None:
        """Close with `code`; `reason` is a catalogue key whose text, filled with
        `params`, is the close frame's reason. The first call wins.

        The hub forgets the connection now, not when the socket is done: a peer
        that stops reading could otherwise stay in its rooms and online for the
        whole closing handshake."""
        if self.closing is not None:
            return
        self.closing = (int(code), text(reason, self.locale, **params) if reason else "")
        if self._early:
            self._early.clear()
        if self.writer is not None:
            self.writer.drop_pending()
        self._say_disconnected()
        if self._scope is not None:
            self._scope.cancel()
        self.forget()

    def _say_disconnected(self) -> None:
        """`disconnected {code, reason}` (seed 001's connection-management message,
        SPEC 13) ahead of the close frame of a close the server starts; not on
        the echo path, and not to a peer that closed or vanished first."""
        if self.echo or self.peer_close is not None or self.eof or self.closing is None:
            return
        code, reason = self.closing
        frame = self.outbound(encode("disconnected", {"code": code, "reason": reason}, self.now_ms()))
        data = frame.frame if isinstance(frame, Wire) else text_frame(frame.encode())
        writer = self.writer
        if writer is None:
            if self._early is not None:
                self._early.append(data)
        elif not writer.broken:
            writer.write_nowait(data)

    def outbound(self, frame: str) -> str:
        """A frame as this connection sends it (native here; `net.compat`'s form)."""
        return frame

    def close_after_queued(self, code: int, reason: str, /, **params: object) -> None:
        """Close once everything queued so far is written (e.g. `kicked`, then 4003).
        The hub forgets the connection now: the close is decided."""
        if self.closing is not None:
            return

        def close() -> None:
            self.close(code, reason, **params)

        if self.writer is None:
            assert self._early is not None
            self._early.append(close)
        else:
            self.writer.call_when_written(close)
        self.forget()

    def forget(self) -> None:
        """Have the hub forget this connection, once: when its close is decided, or
        when the reader ends (the peer closed or vanished), before any waiting on
        the closing handshake. From inside the hub actor (a fan-out finding the
        queue full) the command runs in the same batch, before the actor answers
        anyone else."""
        if not self._forgotten:
            self._forgotten = True
            self.server.forget_connection(self.conn_id)

    @property
    def end_code(self) -> int:
        """The close code this session ended with (ours, else the peer's; 1006 if none)."""
        if self.closing is not None:
            return self.closing[0]
        if self.peer_close is not None:
            return self.peer_close[0]
        return ABNORMAL

    # -- helpers -------------------------------------------------------------

    @property
    def last_seen_ms(self) -> int:
        """Wall-clock ms of the last frame or pong from the client (for the device list)."""
        return int((self.last_seen + self.wall_offset) * 1000)

    @property
    def locale(self) -> str:
        return self.server.config.server.locale

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def reply(self, msg: Inbound | None, mtype: str, data: Any, **extra: Any) -> None:
        """Send a message to this connection only, echoing the request `id`."""
        self.deliver(
            encode(mtype, data, self.now_ms(), request_id=msg.id if msg else None, extra=extra or None)
        )

    def send_error(self, err: ProtocolError, msg: Inbound | None) -> None:
        """Send an `error` to this connection only."""
        self.deliver(
            encode_error(
                err,
                msg.type if msg else None,
                self.now_ms(),
                locale=self.locale,
                request_id=msg.id if msg else None,
            )
        )

    # -- the timer (the server's Heartbeats task) -------------------------------

    def tick(self, now: float) -> float | None:
        """(The server's `Heartbeats` task.) Pings, liveness, auth, token and write
        deadlines (`net.heartbeat.tick_connection`); the next deadline, or None
        once the connection is closing."""
        return tick_connection(self, now, self.server.config)

    @property
    def reading(self) -> bool:
        """True once `run` reads the socket (before, the timer has nothing to do)."""
        return self._scope is not None

    def _writer_waits(self, since: float) -> None:
        """(FrameWriter, as a backlog starts waiting on the peer.) Have the timer
        look at it when the write timeout would expire, if before its next tick."""
        due = self.timer_due
        when = since + self.server.config.limits.write_timeout
        if due is not None and when < due:
            self.server.heartbeats.schedule(self, when)

    # -- the session ---------------------------------------------------------

    async def run(self, transport: trio.abc.Stream, received: bytes = b"", preamble: bytes = b"") -> None:
        """Serve the connection until it closes, then complete the closing handshake.

        `received` is what the client sent after its handshake request in the
        same read; `preamble` (the 101 response, when the server has not sent it
        yet) is written first, in one write with the frames queued before now. The writer's task, when one is running, outlives the reader so
        that the close frame goes out behind a frame already half written. When
        even that takes longer than `CLOSE_TIMEOUT` (a peer that stopped
        reading), it is cancelled and no close frame is sent: it could only
        follow the partial frame as garbage; the caller closes the transport.
        """
        heartbeats = self.server.heartbeats
        async with trio.open_nursery() as nursery:
            writer = self.writer = frame_writer(
                transport, nursery.start_soon, self._writer_waits, self.server.flusher
            )
            early, self._early = self._early, None
            head = [preamble] if preamble else []
            while early and isinstance(early[0], bytes):
                head.append(early.pop(0))  # type: ignore[arg-type]
            if head:
                writer.write_nowait(b"".join(head))
            for item in early or ():
                if isinstance(item, bytes):
                    writer.write_nowait(item)
                else:
                    writer.call_when_written(item)
            del early, head
            try:
                with trio.CancelScope() as scope:
                    self._scope = scope
                    if self.closing is not None:  # closed while we were starting
                        scope.cancel()
                    # the first deadlines, computed here: scheduling "now" would wake
                    # the timer task once per new connection for nothing
                    due = self.tick(trio.current_time())
                    if due is not None:
                        heartbeats.schedule(self, due)
                    await read(self, transport, received)
            finally:
                self.timer_due = None  # the timer forgets this connection
                writer.on_wait = None  # and the writer: no reference cycle once it ends
                self.forget()  # and so does the hub, now: the rest is the socket's
                if not self._closed_at_once():
                    with trio.CancelScope(shield=True) as shielded:
                        shielded.deadline = trio.current_time() + CLOSE_TIMEOUT
                        await self._close_handshake(transport, nursery)
                nursery.cancel_scope.cancel()

    def _closed_at_once(self) -> bool:
        """The common endings that need no waiting: the peer vanished, or it sent
        its close frame and our answer went out whole at once."""
        if self.eof:
            return True
        writer = self.writer
        if self.peer_close is None or self.closing is not None or writer is None or not writer.idle:
            return False
        code = self.peer_close[0]
        writer.write_nowait(close_frame(None if code == NO_STATUS else code, ""))
        self._close_queued = True
        return writer.idle  # else _close_handshake waits for the rest to be written

    async def _close_handshake(self, transport: trio.abc.Stream, nursery: trio.Nursery) -> None:
        writer = self.writer
        assert writer is not None
        if self.eof:
            return  # the peer is gone; nothing to say
        if self.peer_close is not None:
            # answer the peer's close frame with its code (ours if we closed first)
            if not self._close_queued:
                code, reason = self.closing or self.peer_close
                if self.closing is None:
                    reason = ""
                writer.write_nowait(close_frame(None if code == NO_STATUS else code, reason))
            await writer.flush()
            return
        # We close first. Keep reading (and discarding) meanwhile, so a peer that
        # is still sending is not blocked and sees our close frame; the close
        # frame waits behind a frame already half written.
        peer_closed = trio.Event()
        nursery.start_soon(self._drain, transport, peer_closed)
        if self.closing is None:
            # A close decided behind queued frames (`close_after_queued`, e.g. an
            # error, then 4001): its code is known once they are written.
            await writer.flush()
        code, reason = self.closing or (CloseCode.NORMAL, "")
        writer.write_nowait(close_frame(code, reason))
        await writer.flush()
        if not writer.broken:
            await peer_closed.wait()

    async def _drain(self, transport: trio.abc.Stream, peer_closed: trio.Event) -> None:
        """Read until the peer's close frame (or the end of its stream), discarding data."""
        parser = self.parser or FrameParser(self.server.config.limits.max_message_bytes)
        try:
            while not parser.closed:
                data = await transport.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                for event in parser.feed(data):
                    if type(event) is Close:
                        self.peer_close = (event.code, event.reason)
        except (FrameError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        peer_closed.set()
