"""The one JSON encoder of everything the server sends: WebSocket frames, HTTP
replies, refusal bodies, the OpenAPI document.

The rule for numbers that JSON cannot carry: NaN and the infinities are
written as `null`. Inputs refuse them at the door (`protocol.envelope`,
`api.bodies`), so only data of the server's own or of an embedding host (a
host handler's reply) can hold one; writing `null` keeps the frame or the
reply parseable for every recipient (a browser's `JSON.parse` rejects
`NaN`), and costs nothing on the per-message path, where orjson writes
`null` itself.

This module is sans-IO.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

__all__ = ["dumps"]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ascii_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS  # int keys become strings, as with json


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON of `obj`; NaN and infinities as `null`.

    orjson (much faster than the stdlib's C encoder: docs/BENCHMARKS.md); what it refuses
    goes to the stdlib, which decides: integers beyond 64 bits are encoded,
    text with lone surrogates is ASCII-escaped (so the result is valid UTF-8),
    and what is not JSON raises TypeError.
    """
    try:
        return orjson.dumps(obj)
    except TypeError:
        pass
    try:  # (a key that is not a string: the option that allows them slows every call)
        return orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:
        pass
    obj = _finite(obj)
    text = _encoder.encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ascii_encoder.encode(obj).encode("ascii")


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None, as orjson writes them (only the
    rare values orjson refuses come here)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
