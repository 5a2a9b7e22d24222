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
* Every reply has ``Content-Length`` and ``Server: wsserver``; errors are
  ``{"code": <status>, "message": ..}`` with ``"field"`` when one field is to
  blame (``wsserver.protocol.replies``), the message a catalogue text
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

The package knows nothing of authentication, the hub or the WebSocket
protocol; ``wsserver.api`` registers handlers on a :class:`Router` and reads
their JSON bodies itself (``wsserver.api.bodies``). Its modules, one concept
each: ``request`` (the head: a strict fast path, else h11; ``HttpRequest``),
``response`` (``HttpResponse``, ``HttpError``, ``ConnectionGone``),
``router``, ``serve`` (the serve loop, bodies, refusals).
"""

from wsserver.net.http.request import (
    HttpRequest,
    RequestHead,
    parse_plain_upgrade,
    read_request_head,
)
from wsserver.net.http.response import JSON_CONTENT_TYPE, ConnectionGone, HttpError, HttpResponse
from wsserver.net.http.router import Handler, Router
from wsserver.net.http.serve import RequestDoneCallback, respond_and_close, serve_http

__all__ = [
    "JSON_CONTENT_TYPE",
    "ConnectionGone",
    "Handler",
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "RequestDoneCallback",
    "RequestHead",
    "Router",
    "parse_plain_upgrade",
    "read_request_head",
    "respond_and_close",
    "serve_http",
]
