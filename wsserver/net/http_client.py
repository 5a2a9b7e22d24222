"""A lean HTTP/1.1 client for the webhook sender: POST a body, read the status.

The sender makes one request per event, so the client's own cost is paid per
event; a general client (redirects, cookies, proxies, HTTP/2, decoding) costs
far more CPU per request than the request itself. This one does only what the
sender needs, with h11 (sans-IO) over trio streams:

- `Target` (sans-IO) is what a URL says: the origin to connect to, the
  request target and the `Host` header (and Basic credentials when the URL
  carries user info, as a general client would send them).
- `HttpPool` keeps up to `max_connections` connections per origin open
  between requests (keep-alive); a connection idle for `KEEPALIVE_EXPIRY`
  seconds is closed rather than reused (receivers commonly close idle ones
  after a few seconds). At most `max_connections` requests per origin run at
  once; more wait for a free one.
- A request on a kept-alive connection that turns out broken or closed by the
  peer (it closed while the connection was idle) is sent once more on a fresh
  connection before it counts as failed; a fresh connection that fails is a
  failure (the caller's backoff decides what comes next). A request may thus
  reach the receiver twice: webhook receivers de-duplicate by event id.
- A connection is reused only when both sides ended their message cleanly and
  the answer was read whole (at most `max_answer` bytes of it: a longer one
  closes the connection).
- https URLs go through `trio.SSLStream` with `default_tls_context()`.

Time limits are the caller's (a cancel scope around `request`): a cancelled
request closes its connection, which is never reused.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

import attrs
import h11
import trio

from wsserver._version import __version__

__all__ = ["KEEPALIVE_EXPIRY", "ConnectionBroken", "HttpPool", "Target", "default_tls_context", "open_stream"]

KEEPALIVE_EXPIRY = 5.0
"""Seconds a connection may stay idle in the pool and still be reused."""
USER_AGENT = f"wsserver/{__version__}"
READ_SIZE = 65536


class ConnectionBroken(Exception):
    """The connection broke or was closed by the peer before the answer was whole."""


@attrs.frozen
class Target:
    """What a URL says to a client: where to connect and what to ask (sans-IO)."""

    scheme: str
    host: str  # without the brackets of an IPv6 literal
    port: int
    path: bytes  # the request target: path and query
    host_header: bytes
    authorization: bytes | None = None  # Basic credentials from the URL's user info

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Target:
        """Parse an http:// or https:// URL (ValueError otherwise)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host_header = parts.netloc.rpartition("@")[2]
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        authorization = None
        if parts.username is not None:
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = b"Basic " + base64.b64encode(user_pass.encode())
        return cls(parts.scheme, parts.hostname, port, path.encode(), host_header.encode(), authorization)

    def request_headers(self, headers: Iterable[tuple[str, str]], length: int) -> list[tuple[bytes, bytes]]:
        """The request's headers: Host, ours, then the caller's."""
        out = [
            (b"Host", self.host_header),
            (b"User-Agent", USER_AGENT.encode()),
            (b"Content-Length", str(length).encode()),
        ]
        if self.authorization is not None:
            out.append((b"Authorization", self.authorization))
        out.extend((k.encode(), v.encode()) for k, v in headers)
        return out


def default_tls_context() -> ssl.SSLContext:
    """The stdlib's default client context (certificates and host names checked;
    the system's CA store, and `SSL_CERT_FILE` / `SSL_CERT_DIR` as OpenSSL reads
    them); certifi's bundle when the system store holds no CA (minimal images, a
    bare Python), so the pyz can reach public https receivers anywhere."""
    ctx = ssl.create_default_context()
    if not ctx.cert_store_stats()["x509_ca"]:
        try:
            import certifi
        except ImportError:  # pragma: no cover (a dependency: always bundled)
            return ctx
        ctx.load_verify_locations(cafile=certifi.where())
    return ctx


class _Connection:
    """One HTTP/1.1 connection: a stream and its h11 state."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    async def request(self, target: Target, method: bytes, body: bytes, headers: list[tuple[bytes, bytes]], max_answer: int) -> tuple[int, bool]:
        """Send one request and read its answer: (status, whether the connection
        may be reused). Raises `ConnectionBroken`."""
        conn = self.h11
        try:
            data = conn.send(h11.Request(method=method, target=target.path, headers=headers))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await self.stream.send_all(data)
            status = 0
            read = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    chunk = await self.stream.receive_some(READ_SIZE)
                    conn.receive_data(bytes(chunk))  # b"": the peer closed
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    read += len(event.data)
                    if read > max_answer:
                        return status, False
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionBroken("closed by the peer")
                # h11.InformationalResponse (1xx): go on; PAUSED cannot come before the end
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError, OSError) as exc:
            raise ConnectionBroken(f"{type(exc).__name__}: {exc}") from exc
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return status, True
        return status, False


class HttpPool:
    """Keep-alive connections per origin (see the module docstring). Use as an
    async context manager: leaving it closes the idle connections."""

    def __init__(self, max_connections: int, tls: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        self._tls = tls
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots: dict[tuple[str, str, int], trio.Semaphore] = {}
        self.opened = 0  # connections opened so far (for the tests and the curious)

    async def __aenter__(self) -> HttpPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the idle connections (at once, without a TLS goodbye: this runs
        when the sender is cancelled, where an await would stop the loop)."""
        idle = [c for conns in self._idle.values() for c in conns]
        self._idle.clear()
        for conn in idle:
            _close_now(conn)
        await trio.lowlevel.checkpoint()

    async def request(
        self,
        url: str | Target,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (),
        *,
        method: str = "POST",
        max_answer: int = 65536,
    ) -> int:
        """Send one request and return the answer's status. Raises
        `ConnectionBroken`, `OSError` (connect) or `trio.BrokenResourceError`
        (TLS handshake) when no answer came."""
        target = url if isinstance(url, Target) else Target.parse(url)
        slots = self._slots.get(target.origin)
        if slots is None:
            slots = self._slots[target.origin] = trio.Semaphore(self.max_connections)
        wire_headers = target.request_headers(headers, len(body))
        async with slots:
            conn = self._take(target.origin)
            if conn is not None:
                try:
                    return await self._on(conn, target, method.encode(), body, wire_headers, max_answer)
                except ConnectionBroken:
                    pass  # closed while idle: once more on a fresh connection
            conn = await self._open(target)
            return await self._on(conn, target, method.encode(), body, wire_headers, max_answer)

    async def _on(
        self, conn: _Connection, target: Target, method: bytes, body: bytes, headers: list[tuple[bytes, bytes]], max_answer: int
    ) -> int:
        """One request on `conn`, which goes back to the pool only when reusable."""
        reusable = False
        try:
            status, reusable = await conn.request(target, method, body, headers, max_answer)
        finally:
            if reusable:
                conn.idle_since = trio.current_time()
                self._idle.setdefault(target.origin, []).append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)
        return status

    def _take(self, origin: tuple[str, str, int]) -> _Connection | None:
        """The most recently used idle connection still fresh enough, if any."""
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since <= KEEPALIVE_EXPIRY:
                return conn
            _close_now(conn)
        return None

    async def _open(self, target: Target) -> _Connection:
        if target.scheme == "https" and self._tls is None:
            self._tls = default_tls_context()
        stream = await open_stream(target, self._tls)
        self.opened += 1
        return _Connection(stream)


async def open_stream(target: Target, tls_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """A TCP stream to `target`, TLS (handshake done) for https with `tls_context`."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
    if target.scheme == "https":
        assert tls_context is not None
        tls = trio.SSLStream(stream, tls_context, server_hostname=target.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        stream = tls
    return stream


def _close_now(conn: _Connection) -> None:
    """Close an idle connection's socket without waiting (no TLS goodbye)."""
    stream: object = conn.stream
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
