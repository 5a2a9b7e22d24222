"""Opening one WebSocket to the hub, with trio-websocket, on a stream we watch.

Why not `open_websocket_url`: the client needs two things it does not give.
Liveness counts *any* data from the hub, the WebSocket pings the hub sends
every `heartbeat.interval` included, and trio-websocket answers those pings
without telling anyone; so the TCP stream is wrapped (`WatchedStream`) and
every chunk read marks the connection alive. And a hub that closes TCP during
the handshake must end the attempt at once, where trio-websocket would wait
for its connect timeout.

Invariants:

- `open_websocket` either returns an open WebSocket or raises one of
  `NETWORK_ERRORS`; the stream is closed on every failure.
- The caller owns the returned stream and closes it after the WebSocket ends
  (trio-websocket's client leaves it open when the hub closed first).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from wsserver.client.policy import Ended

__all__ = ["NETWORK_ERRORS", "HandshakeEOF", "Target", "WatchedStream", "ended_by", "open_websocket", "parse_url"]


class HandshakeEOF(Exception):
    """The hub (or something in between) closed the connection before the 101."""


NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    HandshakeEOF,
)


@attrs.frozen
class Target:
    """Where to connect: `resource` is the path with its query string."""

    secure: bool
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str, query: dict[str, str] | None = None) -> Target:
    """A `ws://` or `wss://` URL, with `query` added to its own parameters."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"the hub's URL must start with ws:// or wss://, not {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    secure = parts.scheme == "wss"
    params = parse_qsl(parts.query, keep_blank_values=True)
    params += [(k, v) for k, v in (query or {}).items() if v is not None]
    resource = urlunsplit(("", "", parts.path or "/", urlencode(params), ""))
    return Target(secure, parts.hostname, parts.port or (443 if secure else 80), resource)


class WatchedStream(trio.abc.Stream):
    """A stream that calls `on_data()` for every chunk it reads and sets
    `closed` once the peer has closed it (or it broke)."""

    def __init__(self, inner: trio.abc.Stream, on_data: Callable[[], None]) -> None:
        self.inner = inner
        self.on_data = on_data
        self.closed = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed.set()
            raise
        if data:
            self.on_data()
        else:
            self.closed.set()
        return data

    async def aclose(self) -> None:
        self.closed.set()
        await self.inner.aclose()


async def open_websocket(
    nursery: trio.Nursery,
    target: Target,
    headers: list[tuple[bytes, bytes]],
    on_data: Callable[[], None],
    *,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = 16 * 1024 * 1024,
) -> tuple[WatchedStream, WebSocketConnection]:
    """Connect and shake hands; trio-websocket's reader task runs in `nursery`
    (a refusal, `ConnectionRejected`, surfaces there)."""
    raw: trio.abc.Stream
    if target.secure:
        raw = await trio.open_ssl_over_tcp_stream(
            target.host, target.port, ssl_context=ssl_context or ssl.create_default_context(), https_compatible=True
        )
    else:
        raw = await trio.open_tcp_stream(target.host, target.port)
    stream = WatchedStream(raw, on_data)
    try:
        opened: list[WebSocketConnection] = []
        async with trio.open_nursery() as race:

            async def shake() -> None:
                opened.append(
                    await wrap_client_stream(
                        nursery,
                        cast(trio.SocketStream, stream),  # trio-websocket only reads, writes and closes it
                        target.host_header,
                        target.resource,
                        extra_headers=headers,
                        message_queue_size=64,
                        max_message_size=max_message_size,
                    )
                )
                race.cancel_scope.cancel()

            async def eof() -> None:
                await stream.closed.wait()
                race.cancel_scope.cancel()

            race.start_soon(shake)
            race.start_soon(eof)
        if not opened:
            raise HandshakeEOF("the connection closed during the WebSocket handshake")
        return stream, opened[0]
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


def ended_by(exc: BaseException) -> Ended | None:
    """How a connection ended, from what its nursery raised; None for anything
    that is not the network's doing (cancellation, a bug): that must propagate."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(exc)
    if not leaves or not all(isinstance(e, NETWORK_ERRORS) for e in leaves):
        return None
    first = leaves[0]
    if isinstance(first, ConnectionRejected):
        body = (first.body or b"")[:200].decode("utf-8", "replace")
        return Ended(None, f"HTTP {first.status_code} {body}".strip(), http_status=first.status_code)
    if isinstance(first, ConnectionClosed):
        reason = first.reason
        return Ended(reason.code if reason else None, (reason.reason or "") if reason else "")
    if isinstance(first, trio.TooSlowError):
        return Ended(None, "connect timeout")
    return Ended(None, f"{type(first).__name__}: {first}")
