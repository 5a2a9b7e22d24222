"""Access log: one line per HTTP request and one per WebSocket session end.

Both go to the `wsserver.access` logger at INFO, as readable text plus the same
values as `extra` fields (which `log.format = "json"` writes as keys). The same
calls count the request or session in the server's `Metrics`, whatever the log
level: one place sees each request and each session end.

Invariants: no credential is ever written. The HTTP path is logged without its
query string (where `?token=` would be), the one path segment that is a
secret (`/api/activation-codes/<code>`) is replaced, header values are never
logged, and a desktop client's session is named by its group, never by its
activation code. The `RedactSecrets` filter of `wsserver.ops.logging` scrubs
whatever slips through anyway. Every value a client chose (method, path, user
id, group id, address) goes through `wsserver.ops.logging.clean`, in the text
and in the `extra` fields alike: one short line per request or session.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from wsserver.ops.logging import clean

if TYPE_CHECKING:
    from wsserver.ops.metrics import Metrics

__all__ = ["log_request", "log_session", "safe_path", "session_user"]

log = logging.getLogger("wsserver.access")

_SECRET_PREFIXES = ("/api/activation-codes/",)


def safe_path(raw_path: str) -> str:
    """The path as logged: no query, secret segments replaced, `clean`."""
    path = raw_path.partition("?")[0]
    for prefix in _SECRET_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            path = prefix + "[redacted]"
    return clean(path)


def log_request(
    metrics: Metrics,
    remote: str,
    method: str,
    raw_path: str,
    status: int,
    seconds: float,
    bytes_in: int,
    bytes_out: int,
) -> None:
    """One answered HTTP request: counted in `metrics`, and one line. (Bound to
    `metrics` and the client's address, it is `net.http.serve_http`'s
    `on_request_done`.)"""
    metrics.http_request(method, status, seconds)
    if not log.isEnabledFor(logging.INFO):
        return
    path = safe_path(raw_path)
    method, remote = clean(method), clean(remote)
    ms = round(seconds * 1000, 1)
    log.info(
        "http %s %s %d %.1fms in=%d out=%d from %s",
        method, path, status, ms, bytes_in, bytes_out, remote,
        extra={
            "kind": "http", "method": method, "path": path, "status": status,
            "duration_ms": ms, "bytes_in": bytes_in, "bytes_out": bytes_out, "remote": remote,
        },
    )  # fmt: skip


def session_user(identity: Any) -> str:
    """How a session's principal is named in the log (`clean`): the user id, or
    the group of a desktop client (never its activation code), or `-` before auth."""
    if identity is None:
        return "-"
    if identity.is_device:
        return clean(f"device@group:{identity.group_id}")
    return clean(identity.user_id)


def log_session(
    metrics: Metrics,
    conn_id: str,
    identity: Any,
    remote: str,
    seconds: float,
    messages_in: int,
    messages_out: int,
    close_code: int,
) -> None:
    """One ended WebSocket session: its close code counted in `metrics`, and one line."""
    metrics.session_closed(close_code, seconds)
    if not log.isEnabledFor(logging.INFO):
        return
    user = session_user(identity)
    remote = clean(remote)
    duration = round(seconds, 3)
    log.info(
        "ws %s user=%s from %s %.3fs in=%d out=%d close=%d",
        conn_id, user, remote, duration, messages_in, messages_out, close_code,
        extra={
            "kind": "ws", "conn_id": conn_id, "user": user, "remote": remote,
            "duration_s": duration, "messages_in": messages_in,
            "messages_out": messages_out, "close_code": close_code,
        },
    )  # fmt: skip
