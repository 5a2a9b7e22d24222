"""How deep a JSON value nests: the check every input makes before anything keeps it.

SPEC 3: JSON nested deeper than `limits.max_json_depth` is refused on every
input (WebSocket messages, HTTP bodies, the embedding API's publish), so that
nothing a client sends can make a later snapshot, journal line or reply fail
(the stdlib's and orjson's encoders, `copy.deepcopy` and any recursive walk
have their own, lower, limits).

Depth counts arrays and objects: a scalar is 0 deep, `{"a": 1}` 1, `{"a": [1]}`
2; a WebSocket message's envelope is its first level.

Invariants: no I/O and no recursion (a value of any depth that could be decoded
can be judged); the common case costs two `str.count` calls on the raw text.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DEFAULT_MAX_DEPTH", "too_deep"]

DEFAULT_MAX_DEPTH: Final = 32
"""`limits.max_json_depth` when a caller has no configuration at hand."""

_CONTAINERS: Final = (dict, list, tuple)


def too_deep(value: Any, limit: int, *, text: str | bytes | None = None) -> bool:
    """Whether `value` nests arrays/objects (tuples too) more than `limit` deep.

    `text`, the JSON `value` was decoded from, makes the common case nearly
    free: a text with at most `limit` opening brackets cannot nest deeper (the
    brackets inside strings only make the count larger), so the value is
    walked only when the count says it might. The walk goes level by level and
    stops at the first level past `limit`, so it also ends on a value that
    contains itself.
    """
    if text is not None:
        if isinstance(text, str):
            opening = text.count("{") + text.count("[")
        else:
            opening = text.count(b"{") + text.count(b"[")
        if opening <= limit:
            return False
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        keep = below.append
        for container in level:
            for member in container.values() if isinstance(container, dict) else container:
                if isinstance(member, _CONTAINERS):
                    keep(member)
        level = below
    return False
