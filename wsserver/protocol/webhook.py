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

import hashlib
import hmac
import json
from typing import Any

__all__ = ["CONTENT_TYPE", "event_body", "event_headers", "signature"]

CONTENT_TYPE = "application/json; charset=utf-8"


def event_body(event: dict[str, Any]) -> bytes:
    """The body of one event: `{"id","event","time","node","data"}` as compact UTF-8 JSON."""
    body = {
        "id": event["id"],
        "event": event["event"],
        "time": event["time"],
        "node": event["node"],
        "data": event["data"],
    }
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate (inputs refuse them): escaped, still JSON
        return json.dumps(body, separators=(",", ":")).encode()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` keyed with `secret`."""
    mac = hmac.new(secret.encode("utf-8"), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def event_headers(name: str, body: bytes, secret: str, timestamp: int) -> dict[str, str]:
    """The headers of one attempt to deliver an event signed at `timestamp` (Unix
    seconds); no signature header when `secret` is empty."""
    headers = {
        "Content-Type": CONTENT_TYPE,
        "X-Wsserver-Event": name,
        "X-Wsserver-Timestamp": str(timestamp),
    }
    if secret:
        headers["X-Wsserver-Signature"] = signature(secret, timestamp, body)
    return headers
