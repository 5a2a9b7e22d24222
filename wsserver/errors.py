"""The error tree and the close codes: one place for every answer to a bad input.

    WsServerError                 base of everything we raise on purpose
    ├── ProtocolError             a client message we cannot accept -> `error` message
    │                             (code: invalid_json, invalid_message, unknown_type,
    │                              unauthorized, forbidden, not_found, rate_limited,
    │                              too_large, conflict, internal)
    └── AuthError                 credentials refused -> HTTP 401 at the handshake,
                                  or `error` + close 4001 after a first-message auth

    wsserver.shapes.ShapeError    a value that breaks its shape's rules (a field's path);
                                  each boundary turns it into its own answer
    wsserver.net.http.HttpError   an HTTP answer (status, message, field) for the API
    wsserver.net.http.ConnectionGone  the peer left before a whole request head
    wsserver.config.ConfigError   a bad key or value, named by its dotted path

A `ProtocolError` never closes a connection by itself and never touches another
connection; closing is decided by the caller through `CloseCode`.
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """WebSocket close codes of SPEC section 3."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    PROTOCOL_ERROR = 1002  # RFC 6455 framing violated
    INVALID_DATA = 1007  # text or close reason not UTF-8
    POLICY = 1008  # origin, binary abuse
    TOO_BIG = 1009
    INTERNAL = 1011
    OVER_CAPACITY = 1013
    HEARTBEAT_TIMEOUT = 4000
    AUTH_FAILED = 4001  # auth failed or token expired
    AUTH_TIMEOUT = 4002
    KICKED = 4003
    REPLACED = 4004  # evicted by a newer connection of the same principal
    SLOW_CONSUMER = 4008
    RATE_LIMIT = 4029


class ErrorCode(enum.StrEnum):
    """The `data.code` values of an `error` message."""

    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    CONFLICT = "conflict"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"


class WsServerError(Exception):
    """Base class of the errors wsserver raises on purpose."""


class ProtocolError(WsServerError):
    """A client message that gets an `error` reply.

    `key` names an entry of the message catalogue (`wsserver.protocol.i18n`);
    `field` names the offending field when there is one; `params` fill the
    catalogue text.
    """

    def __init__(
        self,
        code: ErrorCode,
        key: str,
        *,
        field: str | None = None,
        **params: object,
    ) -> None:
        super().__init__(f"{code}: {key} {field or ''}".rstrip())
        self.code = code
        self.key = key
        self.field = field
        self.params = params

    def text_params(self) -> dict[str, object]:
        """What fills the catalogue text (the error's `error` and, when it closes
        the connection, the close frame's reason): `params` but a request `id`,
        and `field`."""
        params = {k: v for k, v in self.params.items() if k != "id"}
        if self.field is not None:
            params.setdefault("field", self.field)
        return params


class AuthError(WsServerError):
    """Credentials refused; `key` names the catalogue entry saying why."""

    def __init__(self, key: str, **params: object) -> None:
        super().__init__(key)
        self.key = key
        self.params = params
