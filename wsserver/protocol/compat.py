"""The seeds' outbound forms (SPEC 13, "Wire compatibility"): `?compat=003`, `?compat=004`.

A connection opened with `?compat=<form>` receives every server message in
that seed's form instead of the native one (section 3's `{type, data, id?,
timestamp}`):

- `003`: `event` for `type` (`new_message` is seed 003's `message`,
  `connected`/`disconnected` its `connect`/`disconnect`, a read
  `message_status` its `read`), `sender` (and for a direct message
  `receiver`) objects `{id, type, name}` taken from `data.from`
  (`data.to_user_id`), and `timestamp` as ISO-8601 UTC text with milliseconds.
- `004`: `content` for `data`, `timestamp` in Unix seconds (an integer).

Invariants:

- Encode once per form: the native message is encoded once (`Wire`); a form
  is made from that text on its first delivery to a connection of the form
  and kept on the `Wire`, so a fan-out to many connections of a form encodes
  it once more, not once per receiver. A native connection never gets here.
- A form carries everything the native message carries (only names and units
  change), and the frame's coalescing key (`protocol.coalesce`) with it.
- Binary frames pass unchanged; a frame that is no JSON object (never made by
  the server) passes unchanged too.

This module is sans-IO: no trio, no sockets.
"""

from __future__ import annotations

from time import gmtime, strftime
from typing import Any

import orjson

from wsserver.protocol.coalesce import KeyedFrame
from wsserver.protocol.encoding import dumps
from wsserver.protocol.envelope import Wire

__all__ = ["FORMS", "form_of"]

FORMS = ("003", "004")
"""The values `?compat=` takes."""

_EVENTS_003 = {"new_message": "message", "connected": "connect", "disconnected": "disconnect"}


def _iso(ms: Any) -> Any:
    """Unix milliseconds as ISO-8601 UTC text (`2026-12-06T21:08:50.123Z`)."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return ms
    return strftime("%Y-%m-%dT%H:%M:%S", gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _party(user_id: Any, user_type: Any, name: Any) -> dict[str, Any]:
    return {"id": user_id, "type": user_type, "name": name}


def _to_003(msg: dict[str, Any]) -> dict[str, Any]:
    mtype = msg.pop("type", None)
    data = msg.get("data")
    event = _EVENTS_003.get(mtype, mtype) if isinstance(mtype, str) else mtype
    if mtype == "message_status" and isinstance(data, dict) and data.get("status") == "read":
        event = "read"
    out: dict[str, Any] = {"event": event}
    if "timestamp" in msg:
        out["timestamp"] = _iso(msg.pop("timestamp"))
    if isinstance(data, dict):
        sender = data.get("from")
        if isinstance(sender, dict):
            out["sender"] = _party(sender.get("user_id"), sender.get("user_type"), sender.get("username"))
        if mtype == "new_message":
            out["receiver"] = _party(data.get("to_user_id"), data.get("to_user_type"), None)
    out.update(msg)
    return out


def _to_004(msg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in msg.items():
        if key == "data":
            out["content"] = value
        elif key == "timestamp" and isinstance(value, int) and not isinstance(value, bool):
            out["timestamp"] = value // 1000
        else:
            out[key] = value
    return out


_CONVERT = {"003": _to_003, "004": _to_004}
_CACHE = {"003": "_form003", "004": "_form004"}


def form_of(frame: str | bytes, form: str) -> str | bytes:
    """`frame` as a connection of `form` receives it; made once per `Wire`."""
    if isinstance(frame, bytes):
        return frame
    attr = _CACHE[form]
    if isinstance(frame, Wire):
        done = frame.__dict__.get(attr)
        if done is not None:
            return done  # type: ignore[no-any-return]
    try:
        msg = orjson.loads(str(frame))  # (orjson reads no subclass of str)
    except orjson.JSONDecodeError:
        return frame
    if not isinstance(msg, dict):
        return frame
    mtype = msg.get("type")
    wire = Wire.from_json(dumps(_CONVERT[form](msg)), mtype if isinstance(mtype, str) else "other")
    if isinstance(frame, Wire):
        native = frame.frame
        if native.__class__ is KeyedFrame:
            assert isinstance(native, KeyedFrame)
            keyed = KeyedFrame(wire.frame)
            keyed.key = native.key
            keyed.replaces = native.replaces
            wire.frame = keyed
        setattr(frame, attr, wire)
    return wire
