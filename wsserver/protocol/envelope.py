"""The wire envelope: decode a client's text frame, encode a server message once.

Inbound: one JSON object per text frame, `{"type", "data", "id", "timestamp"}`
with the seeds' aliases (`event` for `type`, `content` for `data`) and an
optional top-level `activation_code` (seed 000).

Outbound: every server message has `type` and `timestamp` (int ms); replies
echo the client's `id`. `encode()` returns the final text; the caller sends
that same string to every recipient, so a broadcast is encoded once. The
encoder is `protocol.encoding.dumps` (NaN and infinities are written `null`).

This module is sans-IO: no trio, no sockets.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs

from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.encoding import dumps
from wsserver.protocol.frames import binary_frame, text_frame  # noqa: F401 (re-exported)
from wsserver.protocol.i18n import text
from wsserver.protocol.jsonlimits import DEFAULT_MAX_DEPTH, lone_surrogate, too_deep
from wsserver.shapes import ID

_is_id = ID.holds  # a request `id`: a string or an integer, never a bool


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: a browser's JSON.parse would fail on the
    # frame we forward, breaking every recipient instead of just the sender.
    raise ValueError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e400 would be re-encoded as Infinity
        raise ValueError(f"{literal} is out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)

RequestId = str | int


class Wire(str):
    """An encoded server message. It is a `str` (the JSON text) that also carries
    its WebSocket frame, built once however many connections send it (server
    frames are unmasked, so the same bytes go to every recipient), and, for the
    metrics, its `mtype` and UTF-8 `size`.

    `Wire.from_json` (what `encode` makes) sets all three at once; a Wire made
    from a plain `str` computes them on first use.
    """

    frame: bytes
    mtype: str
    size: int

    @classmethod
    def from_json(cls, payload: bytes, mtype: str = "other") -> Wire:
        """A Wire of UTF-8 JSON bytes, its frame built from them at once."""
        wire = cls(payload.decode("utf-8"))
        wire.frame = text_frame(payload)
        wire.mtype = mtype
        wire.size = len(payload)
        return wire

    def __getattr__(self, name: str) -> Any:
        if name == "frame":
            self.frame = text_frame(self.encode())
            return self.frame
        if name == "size":
            self.size = len(self.encode())
            return self.size
        if name == "mtype":
            self.mtype = type_of(self)
            return self.mtype
        raise AttributeError(name)


_TYPE_PREFIX = '{"type":"'


def type_of(text: str) -> str:
    """The `type` of an encoded message, read from its prefix; "other" if none."""
    if text.startswith(_TYPE_PREFIX):
        end = text.find('"', 9, 9 + 65)
        if end > 9:
            return text[9:end]
    return "other"


@attrs.frozen(slots=True)
class Inbound:
    """One decoded client message. `raw` is the whole object as sent."""

    type: str
    data: Any
    id: RequestId | None
    raw: dict[str, Any]

    @property
    def activation_code(self) -> Any:
        """The top-level `activation_code` of seed 000, or None."""
        return self.raw.get("activation_code")


def decode(frame: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Inbound:
    """Parse one text frame into an `Inbound`.

    Raises `ProtocolError` with `invalid_json` for text that is not JSON (or
    holds a lone surrogate, which no reply or journal line could carry) and
    `invalid_message` for JSON that is not an object with a string `type`, or
    that nests deeper than `max_depth` (`limits.max_json_depth`; SPEC 3).
    """
    try:
        obj = _decoder.decode(frame)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_JSON, "invalid_json") from None
    except RecursionError:  # deeper than the decoder itself goes
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "too_deep", limit=max_depth) from None
    # Per message, so cheapest first: a frame nests at most half its length deep
    # (heartbeats and pings stop there), then `too_deep`'s bracket count, inlined.
    if (
        len(frame) > 2 * max_depth
        and frame.count("{") + frame.count("[") > max_depth
        and too_deep(obj, max_depth)
    ):
        # before anything reads it: nothing may keep a value this deep (SPEC 3)
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "too_deep", limit=max_depth, id=_echoable_id(obj))
    if "\\u" in frame and lone_surrogate(obj):  # only an escape can make one
        raise ProtocolError(ErrorCode.INVALID_JSON, "lone_surrogate")
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "not_object")
    request_id = obj.get("id")
    if request_id is not None and not _is_id(request_id):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "bad_id", field="id")
    mtype = obj.get("type", obj.get("event"))
    if mtype is None:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "missing_type", field="type", id=request_id)
    if not isinstance(mtype, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "bad_type", field="type", id=request_id)
    data = obj["data"] if "data" in obj else obj.get("content")
    return Inbound(type=mtype, data=data, id=request_id, raw=obj)


def _echoable_id(obj: Any) -> RequestId | None:
    """The `id` of a refused message when it is one a reply may echo."""
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if _is_id(rid) else None


def encode(
    mtype: str,
    data: Any,
    now_ms: int,
    *,
    request_id: RequestId | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """Encode one server message; `extra` adds top-level fields (seed 000's echoes)."""
    msg: dict[str, Any] = {"type": mtype, "data": data}
    if request_id is not None:
        msg["id"] = request_id
    msg["timestamp"] = now_ms
    if extra:
        msg.update(extra)
    return Wire.from_json(dumps(msg), mtype)


def encode_error(
    err: ProtocolError,
    ref: str | None,
    now_ms: int,
    *,
    locale: str = "zh-CN",
    request_id: RequestId | None = None,
) -> str:
    """Encode an `error` message for `err`, in reply to a message of type `ref`."""
    data: dict[str, Any] = {"code": str(err.code), "ref": ref}
    if err.field is not None:
        data["field"] = err.field
    msg: dict[str, Any] = {
        "type": "error",
        "error": text(err.key, locale, **err.text_params()),
        "data": data,
    }
    rid = request_id if request_id is not None else err.params.get("id")
    if rid is not None:
        msg["id"] = rid
    msg["timestamp"] = now_ms
    return Wire.from_json(dumps(msg), "error")


def id_key(value: Any) -> str:
    """The comparison form of a user or group id: ids are compared as strings."""
    return "" if value is None else str(value)
