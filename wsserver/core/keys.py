"""The storage keys of direct messages: principals, conversations, de-duplication.

Ids are opaque (SPEC 2): any character may appear in a group id, user type or
user id, so a key is never a plain join of ids. Each part is escaped (`\\` ->
`\\\\`, `|` -> `\\|`) and the parts are joined with `|`.

Invariants:
- `principal_key` is injective: distinct (group, user_type, user_id) triples
  give distinct keys, and `split_key` gives the triple back.
- `WILDCARD` (`\\*`) stands for "any group" or "any user type" in the mailbox
  keys of persisted pushes. No escaped id can be that part (an escaped part has
  `\\` only before `\\` or `|`), so a real group or type named `*` is never the
  wildcard.
- A conversation key is its two party keys, sorted, joined with `|`: six parts
  for two principals, four for a push (`SYSTEM` has no `|`). A de-duplication
  key is the sender's key plus the escaped `client_msg_id` as a fourth part.
  Both split back into their parts unambiguously, so both are injective.
- Ids without `\\` and `|` give the same principal keys as format 1 did
  (`f"{group}|{user_type}|{user_id}"`), which keeps most data unchanged by the
  migration (`core.migrate`); conversation keys changed (format 1 joined
  them with `>`) and are rebuilt from their messages.
- Keys are `str`, never tuples: they are values inside stored message dicts,
  which must hold only plain values (see "stored messages and the cyclic GC" in
  `core.message_store`).
"""

from __future__ import annotations

from typing import Final

Key = str
"""An encoded principal key: three escaped parts joined with `|`."""

WILDCARD: Final = "\\*"
"""The group or user-type part of a push mailbox for "any group" / "any type"."""

SYSTEM: Final = "system"
"""The sender key of persisted pushes (no principal's key: it has no `|`)."""


def escape(part: str) -> str:
    """One id as a key part: `\\` and `|` escaped with a backslash."""
    if "\\" in part:
        part = part.replace("\\", "\\\\")
    if "|" in part:
        part = part.replace("|", "\\|")
    return part


def principal_key(group: str, user_type: str, user_id: str) -> Key:
    """The storage key of a principal inside a group (all parts in string form)."""
    key = f"{group}|{user_type}|{user_id}"
    # the common case: nothing to escape (one scan for each character)
    if "\\" not in key and key.count("|") == 2:
        return key
    return f"{escape(group)}|{escape(user_type)}|{escape(user_id)}"


def push_key(group: str | None, user_type: str | None, user_id: str) -> Key:
    """The mailbox key of a persisted push; None means any group / any type."""
    return "|".join(
        (
            WILDCARD if group is None else escape(group),
            WILDCARD if user_type is None else escape(user_type),
            escape(user_id),
        )
    )


def split_parts(key: str) -> list[str | None]:
    """The unescaped parts of a key joined with `|`; a `WILDCARD` part is None."""
    if "\\" not in key:
        return list(key.split("|"))
    parts: list[str | None] = []
    current: list[str] = []
    wild = False
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            nxt = key[i + 1]
            if nxt == "*":
                wild = True
            else:
                current.append(nxt)
            i += 2
            continue
        if c == "|":
            parts.append(None if wild and not current else "".join(current))
            current, wild = [], False
        else:
            current.append(c)
        i += 1
    parts.append(None if wild and not current else "".join(current))
    return parts


def split_key(key: Key) -> tuple[str | None, str | None, str]:
    """(group, user_type, user_id) of a principal or push key (None: any)."""
    if "\\" not in key:  # nothing escaped, no wildcard: the common case
        plain = key.split("|")
        if len(plain) == 3:
            return plain[0], plain[1], plain[2]
    parts = split_parts(key)
    if len(parts) != 3 or parts[2] is None:
        raise ValueError(f"not a principal key: {key!r}")
    return parts[0], parts[1], parts[2]


def conversation_key(a: Key, b: Key) -> str:
    """The key of the conversation between two parties (order-free)."""
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


def dedup_key(sender: Key, client_msg_id: str) -> str:
    """The de-duplication key of a sender's `client_msg_id`."""
    return f"{sender}|{escape(client_msg_id)}"
