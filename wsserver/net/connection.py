"""One WebSocket connection: a nursery with a reader, a writer and a heartbeat.

- reader: takes frames from trio-websocket, applies the inbound limits, handles
  what concerns this connection only (heartbeat, ping, refresh, first-message
  auth) and hands the rest to the registry actor.
- writer (`wsserver.net.fastwrite.FrameWriter`): every byte to the socket
  goes through it, in order. A frame is written straight from `deliver()`
  when nothing is queued and the socket takes it (no scheduler trip);
  otherwise it is queued and the writer task joins queued frames into one
  write. trio-websocket's own frames (pongs, close) go through the same queue.
- heartbeat: WebSocket pings, the liveness timeout (4000), the auth timeout
  (4002) and token expiry (`token_expiring`, then 4001).

Every way of ending a connection goes through `close()`: it records the close
code once, drops the queued frames (a frame already half written is
finished first) and stops the tasks; the session's `finally` sends the close
frame through the writer, within `CLOSE_TIMEOUT`.

`deliver()`, called by the registry, never blocks: a full queue closes the
connection with 4008 (slow consumer), so a slow client costs at most
`limits.send_queue` frames of memory and never slows anyone else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from wsserver.auth import Identity
from wsserver.core.limits import AbuseCounter, TokenBucket
from wsserver.errors import AuthError, CloseCode, ErrorCode, ProtocolError
from wsserver.net.fastwrite import FrameWriter
from wsserver.net.http import ReplayStream
from wsserver.protocol.envelope import (
    Inbound,
    Wire,
    binary_frame,
    decode,
    encode,
    encode_error,
    field,
    id_key,
    text_frame,
)
from wsserver.protocol.i18n import text

if TYPE_CHECKING:
    from wsserver.net.server import Server

log = logging.getLogger("wsserver.connection")

CLOSE_TIMEOUT = 5.0  # seconds for the closing handshake
BINARY_ABUSE_LIMIT = 10  # binary frames on one connection before close 1008
TOKEN_WARN_BEFORE = 60.0  # seconds before `exp` that `token_expiring` is sent
LOCAL_TYPES = frozenset({"heartbeat", "ping", "pong", "client_ready", "refresh", "auth", "register"})


class Connection:
    """The trio side of one WebSocket connection; the hub's `Outlet` for it."""

    def __init__(
        self,
        server: Server,
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
        self.device_id = device_id
        self.echo = echo
        cfg = server.config
        self.send_queue = cfg.limits.send_queue
        self.writer: FrameWriter | None = None  # from run(); frames before it wait in _early
        self._early: list[bytes | Callable[[], None]] = []
        self.closing: tuple[int, str] | None = None
        self._scope: trio.CancelScope | None = None
        now = trio.current_time()
        self.started = now
        self.last_seen = now
        self._wall_offset = time.time() - now
        self.messages_in = 0
        self.messages_out = 0

    # -- Outlet --------------------------------------------------------------

    def deliver(self, frame: str | bytes) -> bool:
        """Send or queue one frame without blocking; a full queue closes with 4008."""
        if self.closing is not None:
            return False
        if isinstance(frame, Wire):
            data = frame.frame
        elif isinstance(frame, str):
            data = text_frame(frame.encode())
        else:
            data = binary_frame(frame)
        writer = self.writer
        queued = writer.frames if writer is not None else len(self._early)
        if queued >= self.send_queue:
            self.close(CloseCode.SLOW_CONSUMER, "slow_consumer")
            return False
        if writer is None:
            self._early.append(data)
        elif writer.broken:
            return False
        else:
            writer.write_nowait(data)
        self.messages_out += 1
        self.server.metrics.frame_out(frame)
        return True

    def close(self, code: int, reason: str) -> None:
        """Close with `code`; `reason` is a catalogue key. The first call wins."""
        if self.closing is not None:
            return
        self.closing = (int(code), reason)
        self._early.clear()
        if self.writer is not None:
            self.writer.drop_pending()
        if self._scope is not None:
            self._scope.cancel()

    def close_after_queued(self, code: int, reason: str) -> None:
        """Close once everything queued so far is written (e.g. `kicked`, then 4003)."""
        if self.closing is not None:
            return
        def close() -> None:
            self.close(code, reason)

        if self.writer is None:
            self._early.append(close)
        else:
            self.writer.call_when_written(close)

    # -- helpers -------------------------------------------------------------

    @property
    def last_seen_ms(self) -> int:
        """Wall-clock ms of the last frame or pong from the client (for the device list)."""
        return int((self.last_seen + self._wall_offset) * 1000)

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

    def _expiry(self) -> float | None:
        """Token expiry on the trio clock, or None."""
        ident = self.identity
        if ident is None or ident.expires_at is None:
            return None
        return ident.expires_at - self._wall_offset

    # -- the session ---------------------------------------------------------

    async def run(self, ws: WebSocketConnection, transport: ReplayStream) -> None:
        """Serve the connection until it closes, then send the close frame.

        The writer task outlives the reader and heartbeat so that the close
        frame goes out behind a frame already half written. When even that
        takes longer than `CLOSE_TIMEOUT` (a peer that stopped reading), the
        writer is cancelled and `transport` is closed without a close frame,
        which could only follow the partial frame as garbage.
        """
        writer = self.writer = FrameWriter(ws, transport)
        async with trio.open_nursery() as outer:
            outer.start_soon(writer.run)
            for item in self._early:
                if isinstance(item, bytes):
                    writer.write_nowait(item)
                else:
                    writer.call_when_written(item)
            self._early.clear()
            try:
                if self.closing is None:
                    async with trio.open_nursery() as nursery:
                        self._scope = nursery.cancel_scope
                        if self.closing is not None:  # closed while we were starting
                            nursery.cancel_scope.cancel()
                        nursery.start_soon(self._heartbeat, ws, nursery)
                        nursery.start_soon(self._reader, ws)
            finally:
                code, reason = self.closing or (CloseCode.NORMAL, "")
                # keep reading (and discarding) meanwhile, so a peer that is
                # still sending is not blocked and sees our close frame
                outer.start_soon(self._drain, ws)
                with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                    scope.shield = True
                    await ws.aclose(code, text(reason, self.locale) if reason else None)
                outer.cancel_scope.cancel()
        if transport.partial_write:
            with trio.CancelScope(shield=True):
                await transport.aclose()

    @staticmethod
    async def _drain(ws: WebSocketConnection) -> None:
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            pass

    async def _ping(self, ws: WebSocketConnection) -> None:
        """One WebSocket ping; its pong refreshes liveness."""
        try:
            with trio.move_on_after(self.server.config.heartbeat.timeout):
                await ws.ping()
                self.last_seen = trio.current_time()
        except ConnectionClosed:
            pass

    async def _heartbeat(self, ws: WebSocketConnection, nursery: trio.Nursery) -> None:
        last_ping = self.started
        warned = False
        while True:
            # Read on every tick: a reload changes [heartbeat] and [auth] timings live.
            cfg = self.server.config
            hb = cfg.heartbeat
            auth_deadline = self.started + cfg.auth.timeout
            next_ping = last_ping + hb.interval
            now = trio.current_time()
            if self.identity is None and not self.echo and now >= auth_deadline:
                self.close(CloseCode.AUTH_TIMEOUT, "auth_timeout")
                return
            if now - self.last_seen >= hb.timeout:
                self.close(CloseCode.HEARTBEAT_TIMEOUT, "heartbeat_timeout")
                return
            if now >= next_ping:
                nursery.start_soon(self._ping, ws)
                if hb.app_ping:
                    self.reply(None, "ping", None)
                last_ping = now
                next_ping = now + hb.interval
            expiry = self._expiry()
            deadlines = [next_ping, self.last_seen + hb.timeout]
            if self.identity is None and not self.echo:
                deadlines.append(auth_deadline)
            if expiry is not None:
                if now >= expiry + cfg.auth.expiry_grace:
                    self.close(CloseCode.AUTH_FAILED, "token_expired")
                    return
                warn_at = expiry - TOKEN_WARN_BEFORE
                if now >= warn_at:
                    if not warned:
                        assert self.identity is not None
                        self.reply(None, "token_expiring", {"expires_at": int(self.identity.expires_at or 0)})
                        warned = True
                else:
                    warned = False  # a refresh moved the expiry
                    deadlines.append(warn_at)
                deadlines.append(expiry + cfg.auth.expiry_grace)
            await trio.sleep_until(min(deadlines))

    async def _reader(self, ws: WebSocketConnection) -> None:
        assert self._scope is not None
        cfg = self.server.config
        limits = cfg.limits
        bucket = TokenBucket(limits.messages_per_second, limits.burst)
        abuse = AbuseCounter(max(1, limits.burst))
        binary = 0
        metrics = self.server.metrics
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed:
                self._scope.cancel()
                return
            now = trio.current_time()
            self.last_seen = now
            self.messages_in += 1
            metrics.frame_in(frame)
            if self.server.config.limits is not limits:  # a reload changed [limits]
                limits = self.server.config.limits
                bucket.rate, bucket.burst = limits.messages_per_second, limits.burst
                bucket.tokens = min(bucket.tokens, float(limits.burst))
                abuse.limit = max(1, limits.burst)
            if not bucket.take(now):
                metrics.message_dropped("rate_limited")
                self.send_error(ProtocolError(ErrorCode.RATE_LIMITED, "rate_limited"), None)
                if abuse.refused():
                    self.close(CloseCode.RATE_LIMIT, "rate_abuse")
                    return
                continue
            abuse.accepted()
            if self.echo:
                self.deliver(frame)
                continue
            if isinstance(frame, bytes):
                binary += 1
                self.send_error(
                    ProtocolError(ErrorCode.INVALID_MESSAGE, "binary_not_supported"), None
                )
                if binary >= BINARY_ABUSE_LIMIT:
                    self.close(CloseCode.POLICY, "binary_abuse")
                    return
                continue
            try:
                msg = decode(frame)
            except ProtocolError as err:
                self.send_error(err, None)
                continue
            metrics.message_in(msg.type)
            if self.identity is None:
                if not await self._first_message_auth(msg):
                    return
                if msg.type in ("auth", "register"):
                    continue
            await self._dispatch(msg)

    async def _dispatch(self, msg: Inbound) -> None:
        ident = self.identity
        assert ident is not None
        code = msg.activation_code
        if code is not None and code != ident.activation_code:
            self.send_error(
                ProtocolError(ErrorCode.FORBIDDEN, "activation_code_mismatch", field="activation_code"),
                msg,
            )
            return
        mtype = msg.type
        if mtype not in LOCAL_TYPES:
            registry = self.server.registry
            # no scheduler trip while the inbox has room; wait only when it is full
            if not registry.tell_nowait(self.server.hub.handle, self.conn_id, msg):
                await registry.tell(self.server.hub.handle, self.conn_id, msg)
            return
        if mtype == "heartbeat":
            extra: dict[str, Any] = {}
            ts = msg.raw.get("timestamp")
            extra["timestamp"] = ts if ts is not None else self.now_ms()
            if code is not None:
                extra["activation_code"] = code
            data = {"status": "ok", "message": text("heartbeat_ok", self.locale), "server_time": self.now_ms()}
            self.reply(msg, "heartbeat_ack", data, **extra)
        elif mtype == "ping":
            self.reply(msg, "pong", {"server_time": self.now_ms()})
        elif mtype == "refresh":
            self._refresh(msg)
        elif mtype in ("auth", "register"):
            self.send_error(ProtocolError(ErrorCode.CONFLICT, "already_authenticated"), msg)
        # pong and client_ready: liveness only, already counted

    def _refresh(self, msg: Inbound) -> None:
        ident = self.identity
        assert ident is not None
        try:
            if ident.is_device:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "refresh_not_jwt")
            token = field(msg.data, "token", str)
            try:
                fresh = self.server.verifier.verify(token)
            except AuthError as err:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, err.key, field="token") from None
            if id_key(fresh.user_id) != id_key(ident.user_id) or id_key(fresh.user_type) != id_key(
                ident.user_type
            ):
                raise ProtocolError(ErrorCode.FORBIDDEN, "refresh_user_mismatch", field="token")
        except ProtocolError as err:
            self.send_error(err, msg)
            return
        ident.expires_at = fresh.expires_at
        self.reply(
            msg,
            "token_refreshed",
            {"expires_at": None if fresh.expires_at is None else int(fresh.expires_at), "message": text("token_refreshed", self.locale)},
        )

    async def _first_message_auth(self, msg: Inbound) -> bool:
        """Authenticate from the first message; False when the connection is closing."""
        device_id = self.device_id
        device_info = None
        try:
            if msg.type in ("auth", "register"):
                token = field(msg.data, "token", str)
                identity = self.server.verifier.verify(token)
                if msg.type == "register":
                    device_id = field(msg.data, "device_id", (str, int), required=False)
                    device_id = None if device_id is None else str(device_id)
                    device_info = field(msg.data, "device_info", dict, required=False)
                    claimed = msg.data.get("user_id")
                    if claimed is not None and id_key(claimed) != id_key(identity.user_id):
                        raise ProtocolError(ErrorCode.UNAUTHORIZED, "token_invalid", field="user_id")
            elif isinstance(msg.activation_code, str) and msg.activation_code:
                identity = Identity(activation_code=msg.activation_code)
            else:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "auth_required")
        except AuthError as err:
            self._auth_failed(ProtocolError(ErrorCode.UNAUTHORIZED, err.key), msg)
            return False
        except ProtocolError as err:
            self._auth_failed(err, msg)
            return False
        server = self.server
        refusal = await server.registry.call(
            server.hub.authenticate, self.conn_id, identity, device_id, device_info, msg.id
        )
        if refusal is not None:
            if refusal.status == 401:
                server.metrics.auth_failed(refusal.key)
            code = ErrorCode.UNAUTHORIZED if refusal.status == 401 else ErrorCode.CONFLICT
            self.send_error(ProtocolError(code, refusal.key), msg)
            self.close_after_queued(refusal.close_code, refusal.key)
            return False
        self.identity = identity
        self.device_id = device_id
        return True

    def _auth_failed(self, err: ProtocolError, msg: Inbound) -> None:
        self.server.metrics.auth_failed(err.key)
        self.send_error(err, msg)
        self.close_after_queued(CloseCode.AUTH_FAILED, err.key)

