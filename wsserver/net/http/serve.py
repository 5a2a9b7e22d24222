"""Serving HTTP on a connection: answer its requests through a `Router`.

`serve_http` answers the request whose head was read (and then further
keep-alive requests) and returns when the connection should end; whoever
opened the stream closes it. Bodies are bounded (413 as soon as the limit is
crossed), every write waits at most ``write_timeout``, an exception in a
handler is a 500 for that request only (logged on ``wsserver.http``), and an
error that ends the connection is answered, then lingered on so that the
kernel does not reset the reply away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import h11
import trio

from wsserver.errors import ErrorCode, ProtocolError
from wsserver.net.http.request import (
    RECEIVE_SIZE,
    HttpRequest,
    RequestHead,
    next_event,
    receive_head,
)
from wsserver.net.http.response import SERVER_NAME, ConnectionGone, HttpError, HttpResponse
from wsserver.net.http.router import Router
from wsserver.ops.access import safe_path
from wsserver.ops.logging import clean

__all__ = ["RequestDoneCallback", "respond_and_close", "serve_http"]

logger = logging.getLogger("wsserver.http")

# After an error reply that ends the connection, how long to keep reading and
# discarding what the client still sends, so the kernel does not answer its
# unread bytes with a reset that would destroy the reply in flight.
_LINGER_SECONDS = 1.0


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
            while await stream.receive_some(RECEIVE_SIZE):
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
            event = await next_event(stream, conn)
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
        return err.response(locale)
    except Exception as exc:
        if isinstance(exc, ProtocolError) and exc.code == ErrorCode.UNAVAILABLE:
            # a cluster node that cannot reach Redis: nothing was stored (SPEC 11)
            return HttpError(503, "unavailable").response(locale)
        logger.exception(
            "handler failed: %s %s from %s",
            clean(head.method), safe_path(head.raw_path), clean(request.remote),
        )  # fmt: skip
        return HttpError(500, "internal").response(locale)


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
                    current = await receive_head(stream, conn, max_header_bytes=max_header_bytes)
            except ConnectionGone:
                return
            except HttpError as err:
                await respond_and_close(
                    stream, err.response(locale), conn=conn, write_timeout=write_timeout
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
            response = err.response(locale)
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
