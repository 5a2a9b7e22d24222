"""A plain RESP2 connection to Redis on a trio stream, for the shared log's two
hot commands (`net.cluster.log`: the writer's MULTI/XADD/EXEC, the reader's
XREAD BLOCK with the snapshot's `trimmed`).

coredis (everything else of the cluster, and the log's start-up, snapshots
and health) spends most of a node's CPU per command on its own machinery
(argument validation, a request object, a connection pool, a reader and a
writer task per connection); at thousands of records a second that was most
of the log's cost. Here one `call` is one write of every command of a
pipeline and the parse of their replies, in the calling task; on a plain TCP
connection (`net.fastio.raw_socket`: not TLS, the fast paths on) the write is
the socket's own `send()` and a read `net.readiness.receive_raw`, without
trio's stream layers.

The URL is read by coredis's own parser (`redis://`, `rediss://` with its
TLS options, `unix://`, user, password, database), so both clients of a node
reach the same Redis the same way.

Invariants:

- One `call` at a time per connection (each owner task has its own).
- A call that fails in any way (an I/O error, a timeout, a cancellation, a
  reply that does not parse) closes the connection: a reply left half-read
  can never be taken for the next command's. The next call connects again.
- An error reply (`-ERR ...`) is returned as a `RespError` in its place;
  `call` raises the first one after reading every reply (the connection
  stays usable).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from typing import Any

import trio

from wsserver.net.fastio import raw_socket
from wsserver.net.readiness import forget, receive_raw

__all__ = ["Arg", "RespClient", "RespError", "encode_command", "parse"]

Arg = bytes | str | int


class RespError(Exception):
    """An error reply of Redis (`-ERR ...`), or a reply that does not parse."""


class _Incomplete(Exception):
    """The buffer ends inside a reply: read more."""


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if not isinstance(arg, bytes):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def parse(buf: bytes, pos: int = 0) -> tuple[Any, int]:
    """The reply starting at `buf[pos]` and the position after it: bytes for
    simple and bulk strings, int, None for nil, lists for arrays, `RespError`
    for an error reply. Raises `_Incomplete` when `buf` ends inside it."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        start = end + 2
        if len(buf) < start + n + 2:
            raise _Incomplete
        return buf[start : start + n], start + n + 2
    if kind == 42:  # * array
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(n):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 43:  # + simple string
        return buf[pos + 1 : end], end + 2
    if kind == 58:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 45:  # - error
        return RespError(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    raise RespError(f"not a RESP2 reply: {buf[pos : pos + 20]!r}")


class RespClient:
    """A lazily (re)connected RESP2 connection to the Redis at `url`."""

    def __init__(self, url: str) -> None:
        import coredis

        pool: Any = coredis.ConnectionPool.from_url(url)
        location = pool.location
        kwargs = pool.connection_kwargs
        self._path: str | None = getattr(location, "path", None)
        self._host: str = getattr(location, "host", "")
        self._port: int = getattr(location, "port", 6379)
        self._ssl: Any = kwargs.get("ssl_context")
        self._hello: list[list[Arg]] = []
        if kwargs.get("password"):
            user = kwargs.get("username")
            self._hello.append(["AUTH", user, kwargs["password"]] if user else ["AUTH", kwargs["password"]])
        if kwargs.get("db"):
            self._hello.append(["SELECT", kwargs["db"]])
        self._stream: trio.abc.Stream | None = None
        self._sock: socket.socket | None = None  # the plain socket under a TCP stream (`fastio`)
        self._buf = b""

    async def _connect(self) -> trio.abc.Stream:
        stream: trio.abc.Stream
        if self._path is not None:
            stream = await trio.open_unix_socket(self._path)
        else:
            stream = await trio.open_tcp_stream(self._host, self._port)
            if self._ssl is not None:
                stream = trio.SSLStream(stream, self._ssl, server_hostname=self._host)
                await stream.do_handshake()
        self._stream = stream
        self._sock = raw_socket(stream)
        self._buf = b""
        if self._hello:
            for reply in await self._exchange(self._hello):
                if isinstance(reply, RespError):
                    raise reply
        return stream

    async def call(self, commands: Sequence[Sequence[Arg]], timeout: float = math.inf) -> list[Any]:
        """Send `commands` in one write and return their replies, in order;
        raises `RespError` (the first error reply), `trio.TooSlowError` after
        `timeout` seconds, or what the stream raised (then the connection is
        closed, and the next call opens another)."""
        try:
            with trio.fail_after(timeout):
                if self._stream is None:
                    await self._connect()
                replies = await self._exchange(commands)
        except BaseException:
            await self.aclose()
            raise
        for reply in replies:
            if isinstance(reply, RespError):
                raise reply
        return replies

    async def _exchange(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        stream, sock = self._stream, self._sock
        assert stream is not None
        data = b"".join([encode_command(c) for c in commands])
        if sock is None:
            await stream.send_all(data)
        else:  # a plain socket: the kernel takes a pipeline at once, trio's layers only cost
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                await stream.send_all(data[sent:])
        replies: list[Any] = []
        buf, pos = self._buf, 0
        while len(replies) < len(commands):
            try:
                reply, pos = parse(buf, pos)
            except (_Incomplete, IndexError):
                chunk = bytes(await stream.receive_some(1 << 20)) if sock is None else await receive_raw(sock, 1 << 20)
                if not chunk:
                    raise trio.BrokenResourceError("Redis closed the connection") from None
                buf = buf[pos:] + chunk
                pos = 0
                continue
            replies.append(reply)
        self._buf = buf[pos:]
        return replies

    async def aclose(self) -> None:
        """Close the connection (a later call opens another)."""
        stream, sock = self._stream, self._sock
        self._stream, self._sock, self._buf = None, None, b""
        if sock is not None:
            forget(sock)  # `receive_raw` may have parked it in the server's epoll set
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

