"""How a stored direct message is kept: plain values only, so the cyclic GC never tracks it.

A stored message is a dict of plain values, except its "from" and "to" parties.
A dict that holds a container (a dict, a tuple) is tracked by the cyclic GC,
and CPython 3.11 untracks dicts only in full collections: every stored message
would be walked by each young collection after it was stored, and by every
full one until then (a large share of a server's CPU under direct-message
load, and long pauses: docs/BENCHMARKS.md). So each party is kept as its
compact JSON text (a str from orjson's output; bytes from the stdlib encoder
for what orjson refuses, e.g. integers over 64 bits, which orjson would read
back as floats):
the message dict then holds only plain values and is never tracked at all.
Not orjson's bytes themselves: each holds the whole buffer orjson wrote into
(orjson 3.13; docs/BENCHMARKS.md), the str only its own size.
Records and snapshots keep the parties as JSON objects.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["PARTIES", "StoredMessages", "extra_value", "message_size", "party", "party_text", "party_value", "thawed"]


PARTIES = frozenset(("from", "to"))


def party_text(value: dict[str, Any]) -> str | bytes:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


def party_value(text: str | bytes) -> dict[str, Any]:
    return json.loads(text) if type(text) is bytes else orjson.loads(text)  # type: ignore[no-any-return]


def extra_value(extra: Any) -> Any:
    """A message's `extra` as its sender gave it: a stored message (and its
    record) keeps it as JSON text, plain like everything it holds."""
    return orjson.loads(extra) if isinstance(extra, str) else extra


def thawed(msg: dict[str, Any]) -> dict[str, Any]:
    """A stored message as its JSON object (the parties as objects again)."""
    out = dict(msg)
    for side in ("from", "to"):
        value = out.get(side)
        if isinstance(value, (bytes, str)):
            out[side] = party_value(value)
    return out


class StoredMessages(list):  # type: ignore[type-arg]
    """Stored message dicts in a snapshot view: `json_item` makes each the JSON
    object `to_state()` would hold (`storage.base.json_chunks` calls it)."""

    json_item = staticmethod(thawed)


def message_size(msg: dict[str, Any]) -> int:
    """The bytes a stored message counts against its mailbox's quota: the UTF-8
    length of its text, or of a persisted push's JSON payload."""
    text = msg.get("text")
    if type(text) is str:
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    push = msg.get("push")
    if push is None:
        return 0
    data = push.get("data") if isinstance(push, dict) else push
    try:
        return len(orjson.dumps(data))
    except (TypeError, orjson.JSONEncodeError):
        return len(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def party(msg: dict[str, Any], side: str) -> dict[str, Any]:
    """The "from" or "to" party of a stored message, as a dict."""
    value = msg.get(side)
    if isinstance(value, (bytes, str)):
        return party_value(value)
    return value if isinstance(value, dict) else {}

