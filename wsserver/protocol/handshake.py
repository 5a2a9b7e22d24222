"""The RFC 6455 opening handshake's server side, sans-IO: is a request head a
valid WebSocket upgrade, and the 101 that accepts it.

`net.server` answers a valid upgrade with `response_101()` itself (a few µs)
instead of running trio-websocket's handshake machinery (a second HTTP parse
in wsproto, a connection object and a reader task: ~400 µs per connection,
measured for issue 8). A request this module does not recognise as a valid
upgrade is handed to trio-websocket, which answers it as before; so only the
common, well-formed case takes the fast path.

Valid (RFC 6455 §4.2.1): `GET`, HTTP/1.1, a `Host`, `Upgrade: websocket`,
`Connection: upgrade` (as a token), `Sec-WebSocket-Version: 13`, and a
`Sec-WebSocket-Key` that is the base64 of 16 bytes. Extensions and
subprotocols offered are declined (the 101 names none; compression is never
negotiated), as trio-websocket's `accept()` did.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _tokens(value: str | None) -> set[str]:
    if not value:
        return set()
    return {t.strip().lower() for t in value.split(",")}


def accept_value(key: str) -> str:
    """`Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def upgrade_accept(
    method: str, http_version: str, header_values: Callable[[str], list[str]]
) -> str | None:
    """The `Sec-WebSocket-Accept` value when the request is a valid opening
    handshake; None when it is not (let trio-websocket answer it).

    `header_values(name)` returns every value of a header (lower-case name).
    """
    if method != "GET" or http_version != "1.1":
        return None
    if len(header_values("host")) != 1:
        return None
    upgrade = header_values("upgrade")
    if not any("websocket" in _tokens(v) for v in upgrade):
        return None
    if not any("upgrade" in _tokens(v) for v in header_values("connection")):
        return None
    if header_values("sec-websocket-version") != ["13"]:
        return None
    keys = header_values("sec-websocket-key")
    if len(keys) != 1:
        return None
    key = keys[0].strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return accept_value(key)


def response_101(accept: str) -> bytes:
    """The whole `101 Switching Protocols` response."""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept.encode("ascii") + b"\r\n\r\n"
    )
