"""The HTTP side of the shared listener: read a request head, then serve JSON or hand off.

One TCP listener serves both WebSocket upgrades and the small JSON HTTP API.
The listener reads the request head (:func:`read_request_head`) and then either

* calls :func:`serve_http` with the same ``h11.Connection`` to answer this and
  any further keep-alive requests through a :class:`Router`, or
* answers a WebSocket upgrade itself (``wsserver.protocol.handshake``) and
  hands the bytes that followed the head to the connection's frame parser.

Invariants:

* No byte read from the socket is lost: :func:`read_request_head` returns all
  of them.
* A request with both ``Content-Length`` and ``Transfer-Encoding`` gets 400
  and ends the connection (RFC 9112 §6.1), like every error that comes before
  a request's body is known to be read: no request after it is served.
* Memory per connection is bounded: a request head is at most
  ``max_header_bytes`` (else 431) and a body at most ``max_body_bytes`` (else
  413, answered as soon as the limit is crossed, before reading the rest).
* Every reply is JSON with ``Content-Length``, ``Content-Type`` and
  ``Server: wsserver``; errors are ``{"code": <status>, "message": ..}`` with
  ``"field"`` when one field is to blame, the message a catalogue text
  (``wsserver.protocol.i18n``) in the locale the caller passes.
* An exception in a handler becomes a 500 for that request only, is logged on
  the ``wsserver.http`` logger, and the connection keeps serving.
* Log lines carry the raw path without its query string (queries may hold
  tokens; the raw form is printable ASCII, so a decoded ``%0A`` cannot forge a
  line), and never header values.
* Whoever opened the stream closes it: :func:`serve_http` returns when the
  connection should end and leaves ``aclose`` to its caller.
* Every write waits at most ``write_timeout`` seconds for a peer that does not
  read (a client pipelining requests and never reading its replies): then the
  connection ends as if the peer had gone, and no further request is served.
* ``HEAD`` is served as ``GET`` without the body, and is listed in ``Allow``
  wherever ``GET`` is.

This module knows nothing of authentication, the hub or the WebSocket
protocol; ``wsserver.api`` registers handlers on a :class:`Router`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Container, Mapping
from typing import Any, TypeVar, overload
from urllib.parse import parse_qsl, unquote

import attrs
import h11
import trio

from wsserver.net.fastio import raw_socket, receive_raw
from wsserver.ops.access import safe_path
from wsserver.ops.logging import clean
from wsserver.protocol.i18n import text
from wsserver.protocol.jsonlimits import lone_surrogate

__all__ = [
    "ConnectionGone",
    "Handler",
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "RequestDoneCallback",
    "RequestHead",
    "Router",
    "error_reply",
    "json_reply",
    "optional",
    "read_request_head",
    "require",
    "respond_and_close",
    "serve_http",
]

logger = logging.getLogger("wsserver.http")

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
SERVER_NAME = "wsserver"

# How much to ask the socket for at once; a head larger than the limit is
# refused after at most one extra read of this size.
_RECEIVE_SIZE = 64 * 1024
# After an error reply that ends the connection, how long to keep reading and
# discarding what the client still sends, so the kernel does not answer its
# unread bytes with a reset that would destroy the reply in flight.
_LINGER_SECONDS = 1.0

T = TypeVar("T")


class ConnectionGone(Exception):
    """The peer closed or reset the connection before a complete request head."""


class HttpError(Exception):
    """An HTTP error answer: ``status``, a catalogue ``key``, the ``field`` to blame.

    Raised by the parser, the router and handlers; :func:`serve_http` turns it
    into :func:`error_reply`, which writes the text in the server's locale
    (``key`` names an entry of ``wsserver.protocol.i18n``, filled with
    ``params`` and ``field``; a tuple param is listed with the catalogue's
    "or"). ``headers`` are added to the reply (``Allow`` for 405,
    ``WWW-Authenticate`` for 401, ...).
    """

    def __init__(
        self,
        status: int,
        key: str,
        field: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        **params: object,
    ) -> None:
        super().__init__(status, key, field)
        self.status = status
        self.key = key
        self.field = field
        self.headers = headers
        self.params = params

    def render(self, locale: str) -> str:
        """The human text in ``locale``."""
        params = {
            name: text("list_or", locale).join(map(str, value)) if isinstance(value, tuple) else value
            for name, value in self.params.items()
        }
        if self.field is not None:
            params.setdefault("field", self.field)
        return text(self.key, locale, **params)

    @property
    def message(self) -> str:
        """The English text, for logs and Python callers (replies use :meth:`render`)."""
        return self.render("en")

    def __str__(self) -> str:
        return f"{self.status} {self.message}" + (f" ({self.field})" if self.field else "")


# --------------------------------------------------------------------------- request head


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


async def _next_event(
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
            data = await receive_raw(sock, _RECEIVE_SIZE)
        else:
            try:
                data = await stream.receive_some(_RECEIVE_SIZE)
            except trio.BrokenResourceError:
                data = b""
        if received is not None:
            received += data
        conn.receive_data(bytes(data))


async def _receive_head(
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
        event = await _next_event(stream, conn, sink)
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
        first = await receive_raw(sock, _RECEIVE_SIZE)
        head = parse_plain_upgrade(first)
        if head is not None and head.size <= max_header_bytes and head.path in upgrade_paths:
            return head, None, first
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
    received = bytearray(first)
    if first:
        conn.receive_data(first)
    head = await _receive_head(stream, conn, max_header_bytes=max_header_bytes, received=received)
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


# --------------------------------------------------------------------------- requests and replies


def _dumps(data: object) -> bytes:
    """Compact UTF-8 JSON; raises on NaN/Infinity rather than emit invalid JSON."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8", "backslashreplace")  # a lone surrogate as its JSON escape


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid JSON constant {name}")


@attrs.frozen
class HttpRequest:
    """One complete request as a handler sees it.

    ``params`` are the route's ``{name}`` segments, ``remote`` the client IP.
    """

    head: RequestHead
    body: bytes
    params: dict[str, str] = attrs.field(factory=dict)
    remote: str = ""

    def json(self) -> object:
        """The body parsed as UTF-8 JSON; ``HttpError(400)`` otherwise."""
        try:
            text = self.body.decode("utf-8")
            value = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HttpError(400, "http_invalid_json") from None
        if lone_surrogate(value, text=text):  # no reply or journal line could carry it
            raise HttpError(400, "http_lone_surrogate")
        return value

    def json_object(self) -> dict[str, object]:
        """The body as a JSON object; ``HttpError(400)`` when it is anything else."""
        data = self.json()
        if not isinstance(data, dict):
            raise HttpError(400, "http_not_object")
        return data


def _type_names(type_: type | tuple[type, ...]) -> tuple[str, ...]:
    """JSON's names of ``type_`` (the same in every locale)."""
    names = {
        str: "string", int: "integer", float: "number", bool: "boolean",
        dict: "object", list: "array", type(None): "null",
    }  # fmt: skip
    types = type_ if isinstance(type_, tuple) else (type_,)
    return tuple(names.get(t, t.__name__) for t in types)


def _check_type(value: object, field: str, type_: type | tuple[type, ...]) -> object:
    """``value`` if it is a ``type_`` in JSON's sense (a bool is not a number), else 400."""
    types = type_ if isinstance(type_, tuple) else (type_,)
    ok = isinstance(value, types) and (not isinstance(value, bool) or bool in types)
    if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise HttpError(400, "http_field_type", field, expected=_type_names(type_))
    return value


@overload
def require(data: Mapping[str, object], field: str, type_: type[T]) -> T: ...
@overload
def require(data: Mapping[str, object], field: str, type_: tuple[type, ...]) -> object: ...
def require(data: Mapping[str, object], field: str, type_: type | tuple[type, ...]) -> object:
    """``data[field]`` checked against ``type_``; ``HttpError(400)`` naming the field otherwise.

    A missing key and a JSON ``null`` are both "missing". ``bool`` never passes
    for ``int``/``float``; an integer passes for ``float``. Pass a tuple such
    as ``(str, int)`` for IDs that may be either.
    """
    value = data.get(field)
    if value is None:
        raise HttpError(400, "field_missing", field)
    return _check_type(value, field, type_)


@overload
def optional(data: Mapping[str, object], field: str, type_: type[T], default: T) -> T: ...
@overload
def optional(
    data: Mapping[str, object], field: str, type_: tuple[type, ...], default: object
) -> object: ...
def optional(
    data: Mapping[str, object], field: str, type_: type | tuple[type, ...], default: object
) -> object:
    """Like :func:`require`, but a missing key or ``null`` gives ``default``."""
    value = data.get(field)
    if value is None:
        return default
    return _check_type(value, field, type_)


@attrs.frozen
class HttpResponse:
    """A complete reply; :func:`serve_http` adds ``Content-Length`` and ``Server``
    (an empty ``content_type`` sends no ``Content-Type``: a reply without a body)."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(data: object, message: str = "success", status: int = 200) -> HttpResponse:
    """A success reply ``{"code":0,"message":message,"data":data}``."""
    return HttpResponse(status, _dumps({"code": 0, "message": message, "data": data}))


def error_reply(err: HttpError, locale: str = "zh-CN") -> HttpResponse:
    """An error reply ``{"code":status,"message":..}`` plus ``"field"`` when set;
    the message in ``locale`` (``server.locale``)."""
    body: dict[str, object] = {"code": err.status, "message": err.render(locale)}
    if err.field is not None:
        body["field"] = err.field
    return HttpResponse(err.status, _dumps(body), headers=err.headers)


# --------------------------------------------------------------------------- routing

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@attrs.frozen
class _Route:
    # One pattern: a literal segment is a str, a parameter is ("name",).
    segments: tuple[str | tuple[str], ...]
    handlers: dict[str, Handler]

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: literal segments (0) beat parameters (1), leftmost first."""
        return tuple(0 if isinstance(s, str) else 1 for s in self.segments)

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, segments, strict=True):
            if isinstance(want, str):
                if want != got:
                    return None
            else:
                params[want[0]] = got
        return params


class Router:
    """Maps ``(method, path)`` to a handler and the path's ``{name}`` parameters.

    A pattern such as ``/api/users/{user_id}/online`` matches a path with the
    same number of segments; ``{name}`` captures one percent-decoded segment.
    Among the patterns that match both path and method, the one whose literal
    segments come first wins, whatever the registration order (so
    ``/api/rooms/stats`` beats ``/api/rooms/{room}``). A path that matches only
    with other methods is a 405 with ``Allow``; no match at all is a 404.
    ``HEAD`` is answered by the ``GET`` handler.
    """

    def __init__(self) -> None:
        # Keyed by shape (parameters as None): patterns that differ only in
        # parameter names would be ambiguous, so they are one route.
        self._routes: dict[tuple[str | None, ...], _Route] = {}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` on ``pattern``.

        A duplicate, or the same shape with other parameter names, is a ValueError.
        """
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        segments: list[str | tuple[str]] = []
        for part in pattern[1:].split("/"):
            param = _PARAM.fullmatch(part)
            if param:
                if (param[1],) in segments:
                    raise ValueError(f"duplicate parameter {param[1]!r} in {pattern!r}")
                segments.append((param[1],))
            elif "{" in part or "}" in part:
                raise ValueError(f"bad route segment {part!r} in {pattern!r}")
            else:
                segments.append(part)
        shape = tuple(s if isinstance(s, str) else None for s in segments)
        route = self._routes.setdefault(shape, _Route(tuple(segments), {}))
        if route.segments != tuple(segments):
            raise ValueError(f"{pattern!r} conflicts with another pattern's parameter names")
        method = method.upper()
        if method in route.handlers:
            raise ValueError(f"route already registered: {method} {pattern}")
        route.handlers[method] = handler

    def resolve(self, method: str, raw_path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and parameters for ``method`` on ``raw_path`` (not yet decoded).

        Raises ``HttpError(404)`` or ``HttpError(405)`` (with an ``Allow`` header).
        """
        try:
            segments = [unquote(s, errors="strict") for s in raw_path[1:].split("/")]
        except UnicodeDecodeError:
            raise HttpError(400, "http_bad_target") from None
        lookup = "GET" if method == "HEAD" else method
        best: tuple[_Route, dict[str, str]] | None = None
        allowed: set[str] = set()
        for route in self._routes.values():
            params = route.match(segments)
            if params is None:
                continue
            allowed.update(route.handlers)
            if lookup in route.handlers and (
                best is None or route.specificity < best[0].specificity
            ):
                best = (route, params)
        if best is not None:
            return best[0].handlers[lookup], best[1]
        if not allowed:
            raise HttpError(404, "not_found")
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ", ".join(sorted(allowed))
        raise HttpError(405, "http_method", headers=(("Allow", allow),))


# --------------------------------------------------------------------------- serving

RequestDoneCallback = Callable[[str, str, int, float, int, int], None]
"""``(method, raw_path, status, duration_seconds, bytes_in, bytes_out)``; no query string."""


async def _send_response(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    response: HttpResponse,
    *,
    head_only: bool = False,
    close: bool = False,
    write_timeout: float = 30.0,
) -> int:
    """Write ``response`` through ``conn`` within ``write_timeout`` seconds; returns
    the body bytes sent."""
    headers = [("Content-Type", response.content_type)] if response.content_type else []
    headers += [("Content-Length", str(len(response.body))), ("Server", SERVER_NAME), *response.headers]
    if close:
        headers.append(("Connection", "close"))
    body = b"" if head_only else response.body
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await _send_within(stream, data, write_timeout)
    return len(body)


async def _send_within(stream: trio.abc.Stream, data: bytes, write_timeout: float) -> None:
    """``stream.send_all(data)``, or ``trio.BrokenResourceError`` when the peer has
    not taken it within ``write_timeout`` seconds: a peer that does not read is
    treated as gone (the stream, a write cut short, is only good for closing)."""
    with trio.move_on_after(write_timeout) as scope:
        await stream.send_all(data)
    if scope.cancelled_caught:
        raise trio.BrokenResourceError(f"the peer did not read the reply within {write_timeout} s")


async def _linger(stream: trio.abc.Stream, write_timeout: float = 30.0) -> None:
    """Half-close and discard input for a moment (at most ``write_timeout``), so an
    error reply is not reset away."""
    with trio.move_on_after(min(_LINGER_SECONDS, write_timeout)):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while await stream.receive_some(_RECEIVE_SIZE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def respond_and_close(
    stream: trio.abc.Stream,
    response: HttpResponse,
    *,
    conn: h11.Connection | None = None,
    write_timeout: float = 30.0,
) -> None:
    """Answer with ``Connection: close`` and end the exchange (the caller still closes).

    For refusals before :func:`serve_http` runs: a 400/431 from
    :func:`read_request_head`, or a 401/403/429/503 to a WebSocket upgrade.
    Pass the ``conn`` from :func:`read_request_head` when there is one; a peer
    that has already gone, or does not read within ``write_timeout``, is
    ignored.
    """
    if conn is None or conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        conn = h11.Connection(h11.SERVER)
    try:
        await _send_response(stream, conn, response, close=True, write_timeout=write_timeout)
    except trio.BrokenResourceError:
        return
    await _linger(stream, write_timeout)


async def _read_body(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    head: RequestHead,
    max_body_bytes: int,
    write_timeout: float = 30.0,
) -> bytes:
    """The request body, or ``HttpError(413)`` once it exceeds ``max_body_bytes``.

    Raises ``HttpError(400)`` for broken framing and :class:`ConnectionGone`
    when the peer leaves mid-body.
    """
    length = head.header("content-length")
    if length is not None and int(length) > max_body_bytes:  # h11 validated the digits
        raise HttpError(413, "http_body_too_large")
    if conn.they_are_waiting_for_100_continue:
        continue_ = conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
        await _send_within(stream, continue_, write_timeout)
    body = bytearray()
    while True:
        try:
            event = await _next_event(stream, conn)
        except h11.RemoteProtocolError:
            if conn.trailing_data[1]:
                raise ConnectionGone("peer closed mid-body") from None
            raise HttpError(400, "http_bad_body") from None
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > max_body_bytes:
                raise HttpError(413, "http_body_too_large")
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:  # pragma: no cover - h11 only yields Data/EndOfMessage in a body
            raise ConnectionGone("unexpected event in body")


async def _dispatch(router: Router, request: HttpRequest, locale: str) -> HttpResponse:
    """Run the routed handler; every failure becomes an error reply in ``locale``."""
    head = request.head
    try:
        handler, params = router.resolve(head.method, head.raw_path)
        return await handler(attrs.evolve(request, params=params))
    except HttpError as err:
        return error_reply(err, locale)
    except Exception:
        logger.exception(
            "handler failed: %s %s from %s",
            clean(head.method), safe_path(head.raw_path), clean(request.remote),
        )  # fmt: skip
        return error_reply(HttpError(500, "internal"), locale)


async def serve_http(
    stream: trio.abc.Stream,
    head: RequestHead,
    conn: h11.Connection,
    router: Router,
    *,
    remote: str,
    max_body_bytes: int,
    max_header_bytes: int = 16 * 1024,
    idle_timeout: float = 30.0,
    write_timeout: float = 30.0,
    locale: str = "zh-CN",
    on_request_done: RequestDoneCallback | None = None,
) -> None:
    """Serve ``head``'s request and then further keep-alive requests on ``conn``.

    Returns when the client closes or asks to close, after an error that ends
    the connection (400, 413, 431), when no complete request arrives within
    ``idle_timeout`` seconds (a request's body too must arrive within that
    time), or when a reply is not taken within ``write_timeout`` seconds. Never closes ``stream``; the caller does. ``on_request_done`` gets
    ``(method, raw_path, status, duration_seconds, bytes_in, bytes_out)``: the
    path as sent minus its query, and request/response body byte counts.
    Error texts are written in ``locale``.
    """
    current: RequestHead | None = head
    while True:
        if current is None:
            try:
                with trio.move_on_after(idle_timeout):
                    current = await _receive_head(stream, conn, max_header_bytes=max_header_bytes)
            except ConnectionGone:
                return
            except HttpError as err:
                await respond_and_close(
                    stream, error_reply(err, locale), conn=conn, write_timeout=write_timeout
                )
                return
            if current is None:
                return  # idle
        started = trio.current_time()
        close = False
        body = b""
        try:
            with trio.move_on_after(idle_timeout) as body_scope:
                body = await _read_body(stream, conn, current, max_body_bytes, write_timeout)
            if body_scope.cancelled_caught:
                return
            request = HttpRequest(head=current, body=body, remote=remote)
            response = await _dispatch(router, request, locale)
        except (ConnectionGone, trio.BrokenResourceError):  # gone, or not reading a 100
            return
        except HttpError as err:  # 400 / 413 while reading the body: framing is lost
            response = error_reply(err, locale)
            close = True
        try:
            sent = await _send_response(
                stream,
                conn,
                response,
                head_only=current.method == "HEAD",
                close=close,
                write_timeout=write_timeout,
            )
        except trio.BrokenResourceError:
            return
        if on_request_done is not None:
            duration = trio.current_time() - started
            try:
                on_request_done(
                    current.method, current.raw_path, response.status, duration, len(body), sent
                )
            except Exception:
                logger.exception("on_request_done failed")
        if close:
            await _linger(stream, write_timeout)
            return
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return  # MUST_CLOSE: the client sent Connection: close, or spoke HTTP/1.0
        conn.start_next_cycle()
        current = None
