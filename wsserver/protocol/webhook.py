"""The wire format of a webhook event (SPEC 6.2): its body and its headers.

An event is POSTed as compact UTF-8 JSON,
`{"id","event","time","node","data"}`, with three headers:

    X-Wsserver-Event      the event's name
    X-Wsserver-Timestamp  Unix seconds when this attempt was signed
    X-Wsserver-Signature  sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">,
                          keyed with `webhooks.secret`

Every attempt is signed again with its own timestamp, so a receiver that
refuses old timestamps (replays) still accepts a retry; it de-duplicates by
`id`, which stays the same across attempts. With an empty secret the
signature header is left out (unsigned events).

No I/O: the sender (`wsserver.net.webhooks`) posts what this builds.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from wsserver.protocol.encoding import dumps

__all__ = ["CONTENT_TYPE", "attempt_headers", "event_body", "event_headers", "signature"]

CONTENT_TYPE = "application/json; charset=utf-8"


def event_body(event: Mapping[str, Any]) -> bytes:
    """The body of one event: its `{"id","event","time","node","data"}` (an
    outbox's record holds more, its own bookkeeping, which is left out), as
    compact UTF-8 JSON (`protocol.encoding`, the server's one encoder: a lone
    surrogate is escaped, the body stays UTF-8). An event that carries its
    body, encoded when it was made (`"body"`), has no `"data"`: that is it."""
    body = event.get("body")
    if body is not None:
        return body  # type: ignore[no-any-return]
    return dumps({"id": event["id"], "event": event["event"], "time": event["time"], "node": event["node"], "data": event["data"]})


_BLOCK = 64  # SHA-256's block size (bytes)
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=4)
def _pads(secret: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 states that have taken the key's inner and outer pads (RFC 2104),
    copied for each signature: the key's set-up is done once."""
    key = secret.encode("utf-8")
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` keyed with `secret`.
    (HMAC built of two hash states: the same digest as `hmac`'s, a third
    cheaper, for every event and attempt.)"""
    inner_pad, outer_pad = _pads(secret)
    inner = inner_pad.copy()
    inner.update(b"%d." % timestamp)
    inner.update(body)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return "sha256=" + outer.hexdigest()


def event_headers(name: str, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The headers of one attempt to deliver an event signed at `timestamp` (Unix
    seconds); no signature header when `secret` is empty."""
    headers = {"Content-Type": CONTENT_TYPE, **attempt_headers(name, timestamp)}
    if secret:
        headers["X-Wsserver-Signature"] = signature(secret, timestamp, body)
    return headers


def attempt_headers(name: str, timestamp: int) -> dict[str, str]:
    """What `event_headers` says of every `name` event signed at `timestamp`
    besides its Content-Type and signature (a pipelined request's template says
    the Content-Type; these are encoded once per exchange)."""
    return {"X-Wsserver-Event": name, "X-Wsserver-Timestamp": str(timestamp)}
