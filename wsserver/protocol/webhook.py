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
import hmac
from collections.abc import Mapping
from typing import Any

from wsserver.protocol.encoding import dumps

__all__ = ["CONTENT_TYPE", "attempt_headers", "event_body", "event_headers", "signature"]

CONTENT_TYPE = "application/json; charset=utf-8"


def event_body(event: Mapping[str, Any]) -> bytes:
    """The body of one event: its `{"id","event","time","node","data"}` (an
    outbox's record holds more, its own bookkeeping, which is left out), as
    compact UTF-8 JSON (`protocol.encoding`, the server's one encoder: a lone
    surrogate is escaped, the body stays UTF-8)."""
    return dumps({"id": event["id"], "event": event["event"], "time": event["time"], "node": event["node"], "data": event["data"]})


@functools.lru_cache(maxsize=4)
def _keyed(secret: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed with `secret`, copied for each signature (the key's
    set-up is done once)."""
    return hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` keyed with `secret`."""
    mac = _keyed(secret).copy()
    mac.update(b"%d." % timestamp)
    mac.update(body)
    return "sha256=" + mac.hexdigest()


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
