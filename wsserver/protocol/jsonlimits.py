"""What client JSON may be: the checks every input makes before anything keeps it.

SPEC 3: nothing a client sends can make a later snapshot, journal line or
reply fail. Two kinds of JSON that parse would:

- nesting deeper than `limits.max_json_depth` (the stdlib's and orjson's
  encoders, `copy.deepcopy` and any recursive walk have their own, lower,
  limits): `too_deep`;
- a string holding a lone surrogate (`"\\ud800"` parses, but the text is no
  Unicode: it cannot be written as UTF-8, so a journal line, a snapshot or a
  reply holding it would fail): `lone_surrogate`.

Both are refused on every input (WebSocket messages, HTTP bodies, the
embedding API's publish).

Depth counts arrays and objects: a scalar is 0 deep, `{"a": 1}` 1, `{"a": [1]}`
2; a WebSocket message's envelope is its first level.

Invariants: no I/O and no recursion (a value of any depth that could be decoded
can be judged); the common case costs two `str.count` calls on the raw text.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["DEFAULT_MAX_DEPTH", "lone_surrogate", "too_deep"]

DEFAULT_MAX_DEPTH: Final = 32
"""`limits.max_json_depth` when a caller has no configuration at hand."""

_CONTAINERS: Final = (dict, list, tuple)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


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


def lone_surrogate(value: Any, *, text: str | bytes | None = None) -> bool:
    """Whether a string in `value` (a key or a value, at any depth) holds a lone
    surrogate, which is no Unicode character and cannot be written as UTF-8.

    `text`, the JSON `value` was decoded from, makes the common case free:
    valid UTF-8 text holds no surrogate, so only a `\\u` escape can make one,
    and a text without one is not walked. (A surrogate pair written as two
    escapes decodes to one character, which passes.) No recursion.
    """
    if isinstance(text, bytes):
        if b"\\u" not in text:
            return False
    elif text is not None and "\\u" not in text:
        return False
    search = _SURROGATE.search
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if search(item) is not None:
                return True
        elif isinstance(item, dict):
            for key, member in item.items():
                if isinstance(key, str) and search(key) is not None:
                    return True
                stack.append(member)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
