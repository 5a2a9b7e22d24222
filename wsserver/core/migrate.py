"""Durable state of an older format, brought to the current one at start-up.

`STATE_VERSION` is the format of the hub's durable state; snapshots carry it
as `"version"` (`storage.journal`). Format 1 keyed the message store by
`f"{group}|{user_type}|{user_id}"`, which lets ids containing `|` collide (and
a group or type `*` meet the wildcard of persisted pushes). Format 2 keys it
with `core.keys`. Only the message store changed; the other components'
state and records are the same in both.

A format-1 data directory is a format-1 snapshot and the journal after it, or
a journal without any snapshot (a format-2 server writes a snapshot as soon as
it starts on a new directory, and after a migration before it appends
anything, so a journal alone is always format 1).

How format-1 keys are read: exactly as the old server read them,
`key.split("|", 2)` (a `|` inside an id went to the user id). A `*` part is
the wildcard in a persisted push (sender `"system"`), and a real id in any
other message. Conversations, mailboxes and inboxes are keyed again from
their messages. A `seq` entry whose key has a `*` part goes to both readings
(seq only grows), a `truncated` count to the "any" reading, which every
principal that read the old mailbox still reads. A de-duplication entry whose message is gone and whose key
cannot be split unambiguously is dropped (it only answers retries within
`messages.dedup_window`).
"""

from __future__ import annotations

from typing import Any

from wsserver._version import OLDEST_STATE_VERSION, STATE_VERSION
from wsserver.core.keys import SYSTEM, Key, conversation_key, dedup_key, principal_key, push_key

__all__ = ["OLDEST_STATE_VERSION", "STATE_VERSION", "migrate"]


def migrate(
    state: dict[str, Any] | None, records: list[dict[str, Any]], version: int
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The hub's durable state (a snapshot's, or None) and the records after it,
    written in format `version`, in the current format."""
    if version != 1:
        raise ValueError(f"cannot read state of format {version} (this server reads 1 and {STATE_VERSION})")
    known: dict[int, Key] = {}
    if state is not None and "messages" in state:
        messages = migrate_messages_state(state["messages"])
        state = {**state, "messages": messages}
        known = {m["id"]: m["to_key"] for m in messages["messages"]}
    return state, migrate_message_records(records, known)


def _old_parts(key: str) -> tuple[str, str, str]:
    group, user_type, user_id = [*key.split("|", 2), "", ""][:3]
    return group, user_type, user_id


def _real(key: str) -> Key:
    """A format-1 key of a real principal (a `*` is an id like any other)."""
    return principal_key(*_old_parts(key))


def _push(key: str) -> Key:
    """A format-1 key of a push mailbox (a `*` group or type is any)."""
    group, user_type, user_id = _old_parts(key)
    return push_key(None if group == "*" else group, None if user_type == "*" else user_type, user_id)


def _readings(key: str) -> list[Key]:
    """Every format-2 key a format-1 map key may stand for."""
    real, push = _real(key), _push(key)
    return [real] if real == push else [real, push]


def _message_keys(msg: dict[str, Any]) -> None:
    """Re-key one stored message or `msg` record in place."""
    sender = msg.get("from_key")
    msg["to_key"] = (_push if sender == SYSTEM else _real)(msg["to_key"])
    if sender != SYSTEM and isinstance(sender, str):
        msg["from_key"] = _real(sender)


def migrate_messages_state(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 message-store state (`MessageStore.to_state()`) in format 2."""
    messages: list[dict[str, Any]] = state["messages"]
    for m in messages:
        _message_keys(m)
    by_id = {m["id"]: m for m in messages}

    def rekey_lists(old: dict[str, list[int]]) -> dict[Key, list[int]]:
        new: dict[Key, list[int]] = {}
        for key, ids in old.items():
            for i in ids:
                m = by_id.get(i)
                target = m["to_key"] if m is not None else _readings(key)[0]
                new.setdefault(target, []).append(i)
        for ids in new.values():
            ids.sort()
        return new

    seq: dict[Key, int] = {}
    for key, value in state["seq"].items():
        for new_key in _readings(key):
            seq[new_key] = max(seq.get(new_key, 0), value)
    truncated: dict[Key, int] = {}
    for key, value in state["truncated"].items():
        new_key = _readings(key)[-1]
        truncated[new_key] = truncated.get(new_key, 0) + value
    conversations: dict[str, list[int]] = {}
    for ids in state["conversations"].values():
        kept = [i for i in ids if i in by_id]
        if kept:
            first = by_id[kept[0]]
            ckey = conversation_key(first["from_key"], first["to_key"])
            conversations.setdefault(ckey, []).extend(kept)
    for ids in conversations.values():
        ids.sort()
    dedup: dict[str, list[int]] = {}
    for key, value in state["dedup"].items():
        found = by_id.get(value[0])
        if found is not None and found.get("cmid") is not None:
            dedup[dedup_key(found["from_key"], found["cmid"])] = value
        elif key.count("|") == 3:
            group, user_type, user_id, cmid = key.split("|")
            dedup[dedup_key(principal_key(group, user_type, user_id), cmid)] = value
    return {
        **state,
        "seq": seq,
        "mailbox": rekey_lists(state["mailbox"]),
        "truncated": truncated,
        "conversations": conversations,
        "inbox": rekey_lists(state["inbox"]),
        "dedup": dedup,
    }


def migrate_message_records(records: list[dict[str, Any]], known: dict[int, Key]) -> list[dict[str, Any]]:
    """The records of a format-1 journal in format 2 (message records re-keyed in place).

    `known` maps message ids to their format-2 recipient key (the migrated
    snapshot's messages); the records' messages are added as they come, so a
    `drop` goes to the mailboxes its messages are in. A `trunc_seen` of a key
    with a `*` part becomes one for each reading (one mailbox then, two now).
    """
    out: list[dict[str, Any]] = []
    for rec in records:
        kind = rec.get("t")
        if kind == "msg":
            _message_keys(rec)
            known[rec["id"]] = rec["to_key"]
        elif kind == "drop":  # one per mailbox its messages are in now
            fallback = _readings(rec["to"])[-1]
            boxes: dict[Key, list[int]] = {}
            for i in rec["ids"]:
                boxes.setdefault(known.get(i, fallback), []).append(i)
            out.extend({**rec, "to": key, "ids": ids} for key, ids in boxes.items())
            continue
        elif kind == "trunc_seen":
            readings = _readings(rec["to"])
            rec["to"] = readings[-1]
            out.extend({**rec, "to": key} for key in readings[:-1])
        out.append(rec)
    return out
