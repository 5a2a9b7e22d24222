"""The RFC 6455 opening handshake's server side, sans-IO: the answer to an
upgrade request, and the 101 that accepts it.

`net.admission` hands every upgrade to a WebSocket path (a `GET` whose `Upgrade`
names `websocket` and whose `Connection` names `upgrade`) to `answer_upgrade()`,
the server's only handshake: a valid request gets its `Sec-WebSocket-Accept`
value (then `response_101()`), anything else a `Refused` status, answered with
an empty body and the connection closed.

What is valid is what the server accepted before this was its only handshake
(a stricter check here, and trio-websocket over wsproto for what that check
did not know; tests/test_handshake.py checks the decisions against wsproto's),
in wsproto's order of checks:

- `Connection` and `Upgrade` name `upgrade` and `websocket` in any of their
  values (as the stricter check took them), else 400;
- `Sec-WebSocket-Version`: its last value must be `13`, else 426 (400 when it
  is missing or empty) with `Sec-WebSocket-Version: 13` (RFC 6455 §4.4);
- `Sec-WebSocket-Key` present, else 400. Its form is not checked (wsproto never
  did): the accept value is computed over its values joined by ", ";
- a `Host`, else 400. HTTP/1.0 is accepted.

Extensions and subprotocols offered are declined (the 101 names none;
compression is never negotiated).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import attrs

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"  # the only version of the protocol (RFC 6455 §4.1)


@attrs.frozen
class Refused:
    """An upgrade request refused: the HTTP status and the headers that say why."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()


def _has_token(values: list[str], token: str) -> bool:
    """Whether any of the comma-separated header `values` is `token` (any case)."""
    return any(t.strip().lower() == token for value in values for t in value.split(","))


def accept_value(key: str) -> str:
    """`Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (header text, Latin-1)."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + GUID).digest()).decode("ascii")


def answer_upgrade(method: str, header_values: Callable[[str], list[str]]) -> str | Refused:
    """The `Sec-WebSocket-Accept` value of a valid opening handshake, or how to
    refuse it. `header_values(name)` returns every value of a header
    (lower-case name)."""
    if method != "GET" or not _has_token(header_values("connection"), "upgrade"):
        return Refused(400)
    versions = header_values("sec-websocket-version")
    version = versions[-1] if versions else ""
    if version != VERSION:
        return Refused(426 if version else 400, (("Sec-WebSocket-Version", VERSION),))
    keys = header_values("sec-websocket-key")
    if not keys or not _has_token(header_values("upgrade"), "websocket") or not header_values("host"):
        return Refused(400)
    return accept_value(", ".join(keys))


def response_101(accept: str) -> bytes:
    """The whole `101 Switching Protocols` response."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept.encode("ascii") + b"\r\n\r\n"
    )
