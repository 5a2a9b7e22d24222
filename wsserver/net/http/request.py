"""Reading a request: its head, the first bytes of every connection on the
listener, and the request as a handler sees it (`HttpRequest`).

A plain WebSocket upgrade (what browsers send) is parsed by a strict fast
path (`parse_plain_upgrade`); anything else goes through h11, exactly as it
came. No byte read from the socket is lost: `read_request_head` returns all
of them (what follows an upgrade's head is the first WebSocket frames).
A head is at most ``max_header_bytes`` (else 431); a head with both
``Content-Length`` and ``Transfer-Encoding`` is a 400 (RFC 9112 6.1).
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any
from urllib.parse import parse_qsl, unquote

import attrs
import h11
import trio

from wsserver.net.fastio import raw_socket
from wsserver.net.http.response import ConnectionGone, HttpError
from wsserver.net.readiness import receive_raw

__all__ = [
    "RECEIVE_SIZE",
    "HttpRequest",
    "RequestHead",
    "next_event",
    "parse_plain_upgrade",
    "read_request_head",
    "receive_head",
]

# How much to ask the socket for at once; a head larger than the limit is
# refused after at most one extra read of this size.
RECEIVE_SIZE = 64 * 1024


def _split_tokens(values: list[str]) -> set[str]:
    """Comma-separated header tokens from all values, lower-cased."""
    return {token.strip().lower() for value in values for token in value.split(",")}


@attrs.frozen
class RequestHead:
    """The request line and headers of one HTTP request.

    ``target`` is the raw request target; ``path`` is its percent-decoded path
    and ``query`` its decoded query (first value of a repeated key wins).
    Header names are lower-case; values are decoded as Latin-1.
    """

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: tuple[tuple[str, str], ...]
    http_version: str = "1.1"
    size: int = 0  # the head's bytes, when the fast path parsed it (else 0)

    @classmethod
    def from_h11(cls, request: h11.Request) -> RequestHead:
        """Build from an h11 ``Request``; raise ``HttpError(400)`` on bad percent-encoding."""
        headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers
        )
        return cls.from_parts(
            request.method.decode("ascii"),
            request.target.decode("latin-1"),
            headers,
            request.http_version.decode("ascii"),
            0,
        )

    @classmethod
    def from_parts(
        cls, method: str, target: str, headers: tuple[tuple[str, str], ...], http_version: str, size: int
    ) -> RequestHead:
        """Build from a parsed request line and headers; ``HttpError(400)`` on bad
        percent-encoding."""
        raw_path, _, raw_query = target.partition("?")
        try:
            path = unquote(raw_path, errors="strict")
            query: dict[str, str] = {}
            for key, value in parse_qsl(raw_query, keep_blank_values=True, errors="strict"):
                query.setdefault(key, value)
        except UnicodeDecodeError:
            raise HttpError(400, "http_bad_target") from None
        return cls(method, target, path, query, headers, http_version, size)

    @property
    def raw_path(self) -> str:
        """The target's path exactly as sent (not decoded), for routing by segment."""
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def is_websocket_upgrade(self) -> bool:
        """True for ``GET`` with ``Upgrade: websocket`` and an ``upgrade`` Connection token."""
        return (
            self.method == "GET"
            and "websocket" in _split_tokens(self.header_values("upgrade"))
            and "upgrade" in _split_tokens(self.header_values("connection"))
        )


async def next_event(
    stream: trio.abc.Stream, conn: h11.Connection, received: bytearray | None = None
) -> Any:
    """The next h11 event, reading from ``stream`` as needed.

    Bytes read are appended to ``received`` when given. A reset counts as EOF.
    Raises ``h11.RemoteProtocolError`` on a protocol violation.
    """
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        sock = raw_socket(stream)
        data: bytes | bytearray
        if sock is not None:
            data = await receive_raw(sock, RECEIVE_SIZE)
        else:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except trio.BrokenResourceError:
                data = b""
        if received is not None:
            received += data
        conn.receive_data(bytes(data))


async def receive_head(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    *,
    max_header_bytes: int,
    received: bytearray | None = None,
) -> RequestHead:
    """Read the next request head on ``conn``.

    Raises ``HttpError(431)`` when the head exceeds ``max_header_bytes``,
    ``HttpError(400)`` when it is malformed or has both ``Content-Length`` and
    ``Transfer-Encoding``, ``ConnectionGone`` when the peer ends the
    connection first.
    """
    buffered_before = len(conn.trailing_data[0])
    sink = bytearray() if received is None else received
    start = len(sink)
    try:
        event = await next_event(stream, conn, sink)
    except h11.RemoteProtocolError as exc:
        if conn.trailing_data[1]:
            raise ConnectionGone("peer closed before a complete request head") from None
        if exc.error_status_hint == 431:
            raise HttpError(431, "http_head_too_large") from None
        raise HttpError(400, "http_malformed") from None
    if isinstance(event, h11.ConnectionClosed):
        raise ConnectionGone("peer closed before a request")
    if not isinstance(event, h11.Request):  # pragma: no cover - h11 yields Request first
        raise HttpError(400, "http_malformed")
    # h11 only limits heads that arrive in pieces; a whole head in one read
    # is measured here.
    head_size = buffered_before + len(sink) - start - len(conn.trailing_data[0])
    if head_size > max_header_bytes:
        raise HttpError(431, "http_head_too_large")
    head = RequestHead.from_h11(event)
    if head.header("content-length") is not None and head.header("transfer-encoding") is not None:
        # RFC 9112 6.1: the body's end is ambiguous (request smuggling), so is
        # whatever follows it: refuse and close instead of choosing one.
        raise HttpError(400, "http_length_and_chunked")
    return head


async def read_request_head(
    stream: trio.abc.Stream, *, max_header_bytes: int, upgrade_paths: Container[str] = ()
) -> tuple[RequestHead, h11.Connection | None, bytes]:
    """Read the first request head of a new connection.

    Returns the head, the h11 connection (pass it to :func:`serve_http`) and
    every byte read so far (what follows the head belongs to a WebSocket
    upgrade's first frames). Raises ``HttpError(431)`` for a head over
    ``max_header_bytes``, ``HttpError(400)`` for a malformed one and
    :class:`ConnectionGone` when the peer leaves first. Apply the handshake
    timeout around the call.

    The fast path: a WebSocket upgrade to one of ``upgrade_paths`` whose
    whole head came in the first read and is plain (:func:`parse_plain_upgrade`)
    is taken without h11; the connection is then None, and the bytes after the
    head are ``raw[head.size:]``. Anything else goes through h11 as it came.
    """
    first = b""
    sock = raw_socket(stream)
    if upgrade_paths and sock is not None:
        first = await receive_raw(sock, RECEIVE_SIZE)
        head = parse_plain_upgrade(first)
        if head is not None and head.size <= max_header_bytes and head.path in upgrade_paths:
            return head, None, first
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
    received = bytearray(first)
    if first:
        conn.receive_data(first)
    head = await receive_head(stream, conn, max_header_bytes=max_header_bytes, received=received)
    return head, conn, bytes(received)


# What the fast path takes (RFC 9110/9112): tchar names, field values of visible
# characters, spaces and tabs (no controls, no obs-fold), a request target of
# visible ASCII.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_TARGET = re.compile(rb"/[\x21-\x7e]*")


def parse_plain_upgrade(data: bytes) -> RequestHead | None:
    """The head of a plain WebSocket upgrade at the start of ``data``, or None.

    "Plain" is what browsers and WebSocket libraries send: ``GET <origin-form>
    HTTP/1.1``, CRLF line ends, one ``Host``, an ``Upgrade: websocket`` and a
    ``Connection`` with ``upgrade``, no body headers. Whatever else (a bare LF,
    obs-fold, a duplicate Host, an odd character, a head not yet complete)
    gives None and goes to h11, which answers it as before; for a head this
    accepts, the result is what h11 would have produced (tests/test_http.py).
    ``size`` of the result is the head's length including its blank line.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or not data.startswith(b"GET /"):
        return None
    lines = data[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or _TARGET.fullmatch(parts[1]) is None:
        return None
    headers: list[tuple[str, str]] = []
    hosts = 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            return None
        value = value.strip(b" \t")
        if _FIELD_VALUE.fullmatch(value) is None:
            return None
        key = name.decode("ascii").lower()
        if key == "host":
            hosts += 1
        elif key in ("content-length", "transfer-encoding"):
            return None
        headers.append((key, value.decode("latin-1")))
    if hosts != 1:
        return None
    try:
        head = RequestHead.from_parts("GET", parts[1].decode("ascii"), tuple(headers), "1.1", end + 4)
    except HttpError:
        return None  # h11's path gives the 400
    return head if head.is_websocket_upgrade else None


@attrs.frozen
class HttpRequest:
    """One complete request as a handler sees it.

    ``params`` are the route's ``{name}`` segments, ``remote`` the client IP.
    """

    head: RequestHead
    body: bytes
    params: dict[str, str] = attrs.field(factory=dict)
    remote: str = ""
