"""The client's error tree: what a call on a `Client` or `SyncClient` can raise.

    ClientError                   base of everything the client raises on purpose
    ├── RequestError              the hub answered the request with an `error`
    │                             (`code`, `field`, `ref`, the hub's text)
    ├── RequestTimeout            no reply within the request's timeout (also a TimeoutError)
    ├── QueueFull                 the outbound queue already holds `queue_limit` frames
    ├── ConnectionLost            the connection dropped after the request went out, and
    │                             the request is not one that may be sent again
    └── ClientClosed              the client is disconnected for good (closed by the
                                  application, kicked, replaced, credentials refused,
                                  retries exhausted): `code` and `reason` say why

Errors of the network itself never reach the application: they end one
connection, and the client reconnects (`docs/CLIENTS.md`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ClientClosed",
    "ClientError",
    "ConnectionLost",
    "QueueFull",
    "RequestError",
    "RequestTimeout",
]


class ClientError(Exception):
    """Base class of the errors the client raises on purpose."""


class RequestError(ClientError):
    """The hub answered a request with `error`: `code` is its `data.code`
    (`forbidden`, `not_found`, `rate_limited`, ...), `field` the field it names."""

    def __init__(self, reply: dict[str, Any]) -> None:
        data = reply.get("data")
        data = data if isinstance(data, dict) else {}
        self.reply = reply
        self.code: str | None = data.get("code")
        self.field: str | None = data.get("field")
        self.ref: str | None = data.get("ref")
        self.text: str = str(reply.get("error") or "")
        where = f" ({self.field})" if self.field else ""
        super().__init__(f"{self.code}{where}: {self.text}")


class RequestTimeout(ClientError, TimeoutError):
    """No reply to a request within its timeout; the request is withdrawn
    (when it had not gone out yet, it never will)."""


class QueueFull(ClientError):
    """The outbound queue holds `queue_limit` frames already: the client has been
    disconnected for a while, or the application sends faster than the link."""


class ConnectionLost(ClientError):
    """The connection dropped after this request was written and before its reply.

    Only requests the hub de-duplicates are sent again by themselves
    (`send_message`, or `request(..., resend=True)`); for the others the
    application decides whether a repeat is safe.
    """

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection lost ({code}): {reason}" if code else f"connection lost: {reason}")


class ClientClosed(ClientError):
    """The client is disconnected for good; `code` is the close code that ended it
    (1000 when the application closed it, 4003 kicked, 4004 replaced, 4001
    refused), or the HTTP status of a refused handshake (401, 403, 404)."""

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"client closed ({code}): {reason}" if code else f"client closed: {reason}")
