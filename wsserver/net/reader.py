"""A connection's reader: the bytes of its socket to frames, and each message
through the inbound limits to its answer or to the hub.

`read(conn, transport, data)` is what `Connection.run` awaits, inside its
cancel scope, for the connection's life (its only long-lived task):

- frames are parsed by `protocol.frames.FrameParser` (masking, fragments,
  UTF-8, the size limit); a framing error closes with its code (1002, 1007,
  1009), a ping is answered with a pong through the writer, a close frame
  ends the reading (the connection answers it), and a pong is liveness only,
  as any frame is (`last_seen`);
- each message meets the rate limit (`limits.messages_per_second` and
  `burst`: `rate_limited`, then 4029 for a client that keeps on), binary
  frames are refused (1008 after `BINARY_ABUSE_LIMIT`), the echo path sends it
  back, and the rest is decoded (`protocol.envelope.decode`): what the
  connection answers alone (`net.local_messages`) is answered here,
  first-message auth waits for the hub, and everything else goes to the hub
  actor with `tell_nowait(Handle)`, no scheduler trip while its inbox has
  room (a full inbox: `tell`, and the reader waits: back-pressure);
- on a plain socket with the fast paths on the reads are
  `net.readiness.receive_raw`, and nothing of the last message stays
  referenced while the connection waits.

Kept apart from `net.connection`, which is the connection the hub delivers
to and closes, and the session around this task (the writer, the closing
handshake). Of the connection, the reader itself sets only its reading state
(`parser`, `rate_limits`, `bucket`, `abuse`, `binary_frames`,
`messages_in`, `last_seen`, and at the end `peer_close` or `eof`); the
answers of `net.local_messages` set what they say (the identity, the token's
expiry), and a close goes through `close()`, like every other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import trio

from wsserver.core.commands import Handle
from wsserver.core.limits import AbuseCounter, TokenBucket
from wsserver.errors import CloseCode, ErrorCode, ProtocolError
from wsserver.net.fastio import raw_socket
from wsserver.net.local_messages import LOCAL_TYPES, Peer, answer_local, first_message_auth
from wsserver.net.readiness import receive_raw
from wsserver.protocol.envelope import Inbound, decode
from wsserver.protocol.frames import Close, Event, FrameError, FrameParser, Ping, pong_frame

if TYPE_CHECKING:
    from wsserver.config import LimitsConfig

__all__ = ["RECEIVE_SIZE", "Reading", "read"]

BINARY_ABUSE_LIMIT = 10  # binary frames on one connection before close 1008
RECEIVE_SIZE = 65536  # bytes asked of the socket per read
FRAME_ERROR_KEYS = {
    CloseCode.PROTOCOL_ERROR: "protocol_error",
    CloseCode.INVALID_DATA: "invalid_utf8",
    CloseCode.TOO_BIG: "message_too_big",
}


class Reading(Peer, Protocol):
    """What the reader reads and changes of a connection (`net.connection.Connection`)."""

    echo: bool
    last_seen: float
    messages_in: int
    peer_close: tuple[int, str] | None
    eof: bool
    parser: FrameParser | None
    rate_limits: LimitsConfig | None
    bucket: TokenBucket | None
    abuse: AbuseCounter | None
    binary_frames: int

    def close(self, code: int, reason: str, /, **params: object) -> None: ...
    def deliver(self, frame: str | bytes, soon: bool = False) -> bool: ...
    def write_frame(self, data: bytes, soon: bool = False) -> bool: ...


async def read(conn: Reading, transport: trio.abc.Stream, data: bytes | bytearray) -> None:
    """Read `transport` until the connection closes, the peer's close frame
    comes (`peer_close`) or its stream ends (`eof`); `data` is what came after
    the handshake request in the same read."""
    parser = conn.parser = FrameParser(conn.server.config.limits.max_message_bytes)
    receive = transport.receive_some
    sock = raw_socket(transport)  # a plain TCP socket, fast paths on: read it directly
    events: list[Event] | None = None
    event: Event | None = None
    msg: Inbound | Literal[False] | None = None
    while True:
        if data:
            conn.last_seen = trio.current_time()
            try:
                events = parser.feed(data)
            except FrameError as err:
                conn.close(err.code, FRAME_ERROR_KEYS.get(err.code, "protocol_error"))
                return
            for event in events:
                if type(event) is str or type(event) is bytes:  # a message
                    msg = _on_message(conn, event)
                    if msg is None:
                        continue
                    if msg is False or not await _on_message_async(conn, msg):
                        return
                elif type(event) is Ping:
                    conn.write_frame(pong_frame(event.payload))
                elif type(event) is Close:
                    conn.peer_close = (event.code, event.reason)
                    return
                # a pong: liveness only (`last_seen` above)
        if sock is None:
            try:
                data = await receive(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
        else:
            # trio's receive_some is several coroutines and a context manager deep,
            # all re-created per wait and alive while the connection waits
            # (memory, and work for every GC collection): a plain recv().
            # Nothing of the last message stays referenced while waiting: it
            # would only be more for the GC to walk.
            events = event = msg = None
            data = await receive_raw(sock, RECEIVE_SIZE)
        if not data:
            conn.eof = True
            return


def _on_message(conn: Reading, frame: str | bytes) -> Inbound | Literal[False] | None:
    """One text or binary message: None when handled, False to stop reading,
    an `Inbound` to finish in `_on_message_async` (it has to wait)."""
    now = conn.last_seen
    conn.messages_in += 1
    server = conn.server
    metrics = server.metrics
    metrics.frame_in(frame)
    limits = server.config.limits
    bucket = conn.bucket
    abuse = conn.abuse
    if limits is not conn.rate_limits or bucket is None or abuse is None:  # first, or a reload
        conn.rate_limits = limits
        if bucket is None or abuse is None:
            bucket = conn.bucket = TokenBucket(limits.messages_per_second, limits.burst)
            abuse = conn.abuse = AbuseCounter(max(1, limits.burst))
        else:
            bucket.rate, bucket.burst = limits.messages_per_second, limits.burst
            bucket.tokens = min(bucket.tokens, float(limits.burst))
            abuse.limit = max(1, limits.burst)
    if not bucket.take(now):
        metrics.message_dropped("rate_limited")
        conn.send_error(ProtocolError(ErrorCode.RATE_LIMITED, "rate_limited"), None)
        if abuse.refused():
            conn.close(CloseCode.RATE_LIMIT, "rate_abuse")
            return False
        return None
    abuse.accepted()
    if conn.echo:
        conn.deliver(frame)
        return None
    if isinstance(frame, bytes):
        conn.binary_frames += 1
        conn.send_error(ProtocolError(ErrorCode.INVALID_MESSAGE, "binary_not_supported"), None)
        if conn.binary_frames >= BINARY_ABUSE_LIMIT:
            conn.close(CloseCode.POLICY, "binary_abuse")
            return False
        return None
    try:
        msg = decode(frame, limits.max_json_depth)
    except ProtocolError as err:
        conn.send_error(err, None)
        return None
    metrics.message_in(msg.type)
    if conn.identity is None:
        return msg
    return _dispatch(conn, msg)


async def _on_message_async(conn: Reading, msg: Inbound) -> bool:
    """The slow path of `_on_message`: first-message auth, or a full hub actor
    inbox. False when the connection is closing."""
    if conn.identity is None:
        if not await first_message_auth(conn, msg):
            return False
        if msg.type in ("auth", "register"):
            return True
        msg = _dispatch(conn, msg)  # type: ignore[assignment]
        if msg is None:
            return True
    await conn.server.actor.tell(Handle(conn.conn_id, msg))
    return True


def _dispatch(conn: Reading, msg: Inbound) -> Inbound | None:
    """Handle or forward an authenticated message; returns it when the
    hub actor's inbox is full (the caller waits for room)."""
    ident = conn.identity
    assert ident is not None
    code = msg.activation_code
    if code is not None and code != ident.activation_code:
        conn.send_error(
            ProtocolError(ErrorCode.FORBIDDEN, "activation_code_mismatch", field="activation_code"),
            msg,
        )
        return None
    mtype = msg.type
    if mtype not in LOCAL_TYPES:
        # no scheduler trip while the inbox has room
        if not conn.server.actor.tell_nowait(Handle(conn.conn_id, msg)):
            return msg
        return None
    answer_local(conn, msg)
    return None
