"""The HTTP listener's reply envelope (SPEC 6), as bytes.

Every JSON answer on the HTTP side has one of two forms: success
`{"code":0,"message":"success","data":..}` and error
`{"code":<HTTP status>,"message":<text>,"field"?:<the field to blame>}`.
The HTTP API answers in them, and so does the network layer (framing
errors, unknown paths, refused WebSocket handshakes, `/healthz`), which is
why the envelope lives here, where both reach it, and not in `api/`.

This module is sans-IO.
"""

from __future__ import annotations

from typing import Any

from wsserver.protocol.encoding import dumps

__all__ = ["error_body", "ok_body"]


def ok_body(data: Any, message: str = "success") -> bytes:
    """`{"code":0,"message":message,"data":data}`."""
    return dumps({"code": 0, "message": message, "data": data})


def error_body(status: int, message: str, field: str | None = None, **extra: Any) -> bytes:
    """`{"code":status,"message":message}`, with `"field"` when one is to blame and
    `extra` members (`/readyz`'s `failing`)."""
    body: dict[str, Any] = {"code": status, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return dumps(body)
