"""Durable direct messages: records, per-recipient sequence numbers, mailboxes,
receipts, de-duplication and bounded history, without I/O.

`MemoryMessageStore` keeps it all in this process (journaled and snapshotted
through the hub's commit log); it implements `core.stores.MessageStore`, what
the direct messages (`core.direct`) ask of their store.

The state is event-sourced. Every durable change is a plain JSON-able record
(`{"t": "msg" | "status" | "box" | "drop" | "trunc_seen", ...}`) that `apply()` folds
into the state; the hub applies a record at the moment it appends it to the
journal, and start-up replays the snapshot and the journal through the same
`apply()`. So "replay reproduces the state" holds by construction, and the
property tests check it.

Invariants:
- `next_id` only grows; a recipient's `seq` only grows (both survive restarts
  because they are derived from records).
- A mailbox holds the ids of messages sent while their recipient had no
  connection, in `seq` order, until a `delivered`/`read` receipt or a drop
  (limit or TTL). Dropped ids are counted in `truncated` until the recipient is
  told (`mailbox_truncated`). The limit drops when a `msg` or `box` record is
  applied; the send path then records a `drop` (reason `limit`) of the ids it
  pushed out, which changes nothing here (they are gone) and tells the
  record's followers (the `message_status` webhook event).
- A message is kept while it is in a mailbox or among the last
  `history_limit` messages of its conversation; then it is forgotten.
- Recipients are addressed inside a group: the key is (group, user_type,
  user_id) as strings, encoded injectively (`core.keys`), so a mailbox or a
  conversation never spans two groups, whatever characters the ids hold.
- Only durable records are visible: every reading method leaves out the
  messages whose record number `n` is above `durable()` (the journal's
  `durable_upto`). Records are applied when appended, before they are durable;
  a crash may still take those back, so nothing may show them yet.
- `mailbox_bytes` is the size of each mailbox's messages (UTF-8 length of a
  text, or of a push's JSON payload); derived, never in the snapshot.
- A `msg` record without an `id` (a cluster node's, `core.replicated`) gets
  its `id`, `seq` and de-duplication decided by `apply`, from the state, and
  written into the record: every node applying the same records in the same
  order decides the same. A single node's records carry the values the
  sender computed from the same state (the journal's format), so the two
  agree.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any

import attrs

from wsserver.core.keys import Key, conversation_key, dedup_key, principal_key, split_key
from wsserver.core.stored_messages import PARTIES, StoredMessages, message_size, party_text, thawed

__all__ = [
    "Key",
    "MemoryMessageStore",
    "RetentionPolicy",
    "principal_key",
]

STATUS_RANK = {"sent": 0, "delivered": 1, "read": 2}

_NOT_KEPT = frozenset(("t", "hook"))
"""A `msg` record's keys the stored message leaves out: its type, and the
webhooks' stamp (`CommitLog.stamp`: its `message` event's id), not the message's."""


def _everything() -> int:
    return sys.maxsize


@attrs.define(slots=True)
class RetentionPolicy:
    """How much is kept; from `[messages]`."""

    dedup_window_ms: int = 600_000
    mailbox_limit: int = 1000
    mailbox_ttl_ms: int = 604_800_000
    history_limit: int = 1000
    mailbox_max_bytes: int = 8_388_608


@attrs.define
class MemoryMessageStore:
    """All durable direct-message state, in memory. Mutated only through `apply()`."""

    policy: RetentionPolicy = attrs.field(factory=RetentionPolicy)
    next_id: int = 1
    messages: dict[int, dict[str, Any]] = attrs.field(factory=dict)
    seq: dict[Key, int] = attrs.field(factory=dict)
    mailbox: dict[Key, dict[int, None]] = attrs.field(factory=dict)  # ordered set of ids
    truncated: dict[Key, int] = attrs.field(factory=dict)
    conversations: dict[str, list[int]] = attrs.field(factory=dict)
    inbox: dict[Key, list[int]] = attrs.field(factory=dict)  # ids received, seq order
    # sender|cmid -> (id, time, seq): enough to answer a retry even after the
    # message itself was trimmed from history. An OrderedDict: pruning takes
    # the oldest entry over and over, and a plain dict finds its first entry
    # only by skipping every slot deleted before it (quadratic at replay).
    dedup: OrderedDict[str, tuple[int, int, int]] = attrs.field(factory=OrderedDict)
    # session_id -> ids of kept messages, ascending; derived (not in the snapshot)
    by_session: dict[str, list[int]] = attrs.field(factory=dict)
    # recipient -> bytes of its mailbox's messages; derived (not in the snapshot)
    mailbox_bytes: dict[Key, int] = attrs.field(factory=dict)
    # the number of the last durable record (the journal's `durable_upto`)
    durable: Callable[[], int] = _everything

    # -- reading -------------------------------------------------------------

    def next_seq(self, recipient: Key) -> int:
        """The `seq` the next message to `recipient` gets."""
        return self.seq.get(recipient, 0) + 1

    def stored(self, mid: int) -> dict[str, Any] | None:
        """A kept message by id, durable or not (the one just recorded)."""
        return self.messages.get(mid)

    def truncated_count(self, recipient: Key) -> int:
        """Messages dropped from `recipient`'s mailbox it was not told of yet."""
        return self.truncated.get(recipient, 0)

    def mailbox_size(self, recipient: Key) -> int:
        """Messages in `recipient`'s mailbox, durable or not."""
        return len(self.mailbox.get(recipient, ()))

    def mailbox_counts(self) -> tuple[int, int]:
        """(mailboxes, messages in them), for the statistics."""
        return len(self.mailbox), sum(len(b) for b in self.mailbox.values())

    def waiting_for(self, user_id: str, user_type: str | None, group: str | None) -> int:
        """Undelivered durable messages in the mailboxes of a user id, narrowed by
        user type and group when given (an operator's question: one pass over the
        mailboxes)."""
        n = 0
        for key in self.mailbox:
            g, t, uid = split_key(key)  # None: a persisted push's "any"
            if uid != user_id:
                continue
            if (user_type is not None and t is not None and t != user_type) or (
                group is not None and g is not None and g != group
            ):
                continue
            n += len(self.mailbox_messages(key))
        return n

    def find_duplicate(self, sender: Key, client_msg_id: str, now_ms: int) -> dict[str, Any] | None:
        """`{id, seq, time, cmid}` of the earlier message with this `client_msg_id`
        within the window (whether or not the message itself is still kept).

        It may not be durable yet: the caller answers it only once everything
        appended so far is (`Hub.after_commit`)."""
        hit = self.dedup.get(dedup_key(sender, client_msg_id))
        if hit is None or now_ms - hit[1] > self.policy.dedup_window_ms:
            return None
        return {"id": hit[0], "time": hit[1], "seq": hit[2], "cmid": client_msg_id}

    def message(self, mid: int) -> dict[str, Any] | None:
        """A kept message by id, if it is durable."""
        m = self.messages.get(mid)
        if m is None or m.get("n", 0) > self.durable():
            return None
        return m

    def mailbox_messages(self, recipient: Key) -> list[dict[str, Any]]:
        """Undelivered durable messages of `recipient`, in `seq` order."""
        box = self.mailbox.get(recipient, {})
        upto = self.durable()
        messages = self.messages
        return [m for i in box if (m := messages.get(i)) is not None and m.get("n", 0) <= upto]

    def since(self, recipient: Key, last_seq: int) -> list[dict[str, Any]]:
        """Kept durable messages received by `recipient` with `seq > last_seq`, in order."""
        out = []
        upto = self.durable()
        for i in self.inbox.get(recipient, ()):
            m = self.messages.get(i)
            if m is not None and m["seq"] > last_seq and m.get("n", 0) <= upto:
                out.append(m)
        return out

    def durable_seq(self, recipient: Key) -> int:
        """The highest `seq` of `recipient` whose message is durable (or forgotten).

        Messages not yet durable are the newest of the inbox, and a recipient's
        `seq` counts up by one per message, so it is one below the oldest of them.
        """
        seq = self.seq.get(recipient, 0)
        upto = self.durable()
        for i in reversed(self.inbox.get(recipient, ())):
            m = self.messages.get(i)
            if m is None:
                continue
            if m.get("n", 0) <= upto:
                break
            seq = m["seq"] - 1
        return seq

    def history(
        self, a: Key, b: Key, before_id: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` durable messages of the a–b conversation before `before_id`, oldest first."""
        ids = self.conversations.get(conversation_key(a, b), [])
        upto = self.durable()
        messages = self.messages
        ids = [
            i
            for i in ids
            if (before_id is None or i < before_id) and messages[i].get("n", 0) <= upto
        ]
        page = ids[-limit:] if limit else []
        return [messages[i] for i in page], len(ids) > len(page)

    def session_history(
        self, party: Key, session_id: str, before_id: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Like `history`, for the messages of one `session_id` that `party` sent or got."""
        upto = self.durable()
        messages = self.messages
        ids = [
            i
            for i in self.by_session.get(str(session_id), ())
            if party in (messages[i]["from_key"], messages[i]["to_key"])
            and (before_id is None or i < before_id)
            and messages[i].get("n", 0) <= upto
        ]
        page = ids[-limit:] if limit else []
        return [messages[i] for i in page], len(ids) > len(page)

    def mailbox_full(self, recipient: Key, size: int) -> bool:
        """Whether `size` more bytes would take `recipient`'s mailbox over its quota."""
        return self.mailbox_bytes.get(recipient, 0) + size > self.policy.mailbox_max_bytes

    def expired(self, recipient: Key, now_ms: int) -> list[int]:
        """Mailbox ids older than the mailbox TTL."""
        ttl = self.policy.mailbox_ttl_ms
        return [
            i
            for i in self.mailbox.get(recipient, {})
            if i in self.messages and now_ms - self.messages[i]["time"] > ttl
        ]

    # -- the only mutation -----------------------------------------------------
    #
    # A stored message dict is never changed once stored: a status change
    # stores a changed copy. `snapshot_view` relies on it.

    def apply(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one record into the state (at run time and at replay). For a
        `msg` record: the stored message, or, for a cluster's record that repeats
        a `client_msg_id`, the first one's `{id, time, seq, cmid, duplicate}`."""
        kind = rec["t"]
        if kind == "msg":
            if "id" not in rec:
                first = self._assign(rec)
                if first is not None:
                    return first
            self._apply_msg(rec)
            return self.messages.get(rec["id"])
        elif kind == "status":
            m = self.messages.get(rec["id"])
            if m is not None and STATUS_RANK[rec["status"]] > STATUS_RANK[m["status"]]:
                # a new dict, never a change in place: a snapshot view being
                # written meanwhile holds the old one (`snapshot_view`)
                m = dict(m)
                m["status"] = rec["status"]
                m[f"{rec['status']}_at"] = rec["time"]
                self.messages[m["id"]] = m
                self._unbox(m["to_key"], [m["id"]])
        elif kind == "drop":
            dropped = self._unbox(rec["to"], rec["ids"])
            if dropped:
                self.truncated[rec["to"]] = self.truncated.get(rec["to"], 0) + dropped
        elif kind == "trunc_seen":
            self.truncated.pop(rec["to"], None)
        elif kind == "box":
            m = self.messages.get(rec["id"])
            if m is not None and m["status"] == "sent":
                self._box(m["to_key"], rec["id"])
        else:
            raise ValueError(f"unknown record type {kind!r}")
        return None

    def _assign(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Decide a cluster `msg` record's id and seq into it, or answer the
        earlier message with its `client_msg_id` (the record is then dropped:
        `rec["dup"]` says so to anything else that folds it)."""
        cmid = rec.get("cmid")
        if cmid is not None:
            first = self.find_duplicate(rec["from_key"], cmid, rec["time"])
            if first is not None:
                rec["dup"] = True
                first["duplicate"] = True
                return first
        rec["id"] = self.next_id
        rec["seq"] = self.next_seq(rec["to_key"])
        return None

    def _apply_msg(self, rec: dict[str, Any]) -> None:
        mid = rec["id"]
        # the record without its "t" (nor another part's stamp: the webhooks' "hook"),
        # keys in the same order, parties as text; built with no container in it, so
        # the GC never tracks it (see below)
        msg: dict[str, Any] = {
            k: party_text(v) if type(v) is dict and k in PARTIES else v for k, v in rec.items() if k not in _NOT_KEPT
        }
        msg.setdefault("status", "sent")
        self.messages[mid] = msg
        if mid >= self.next_id:
            self.next_id = mid + 1
        to = msg["to_key"]
        seq = msg["seq"]
        self.seq[to] = max(self.seq.get(to, 0), seq)
        inbox = self.inbox.get(to)
        if inbox is None:
            self.inbox[to] = [mid]
        else:
            inbox.append(mid)
        session_id = msg.get("session_id")
        if session_id is not None:
            self.by_session.setdefault(str(session_id), []).append(mid)
        now_ms = msg["time"]
        cmid = msg.get("cmid")
        if cmid is not None:
            key = dedup_key(msg["from_key"], cmid)
            dedup = self.dedup
            dedup.pop(key, None)  # re-insert at the end: keeps time order
            dedup[key] = (mid, now_ms, seq)
        self._prune_dedup(now_ms)
        if rec.get("boxed"):
            self._box(to, mid)
        ckey = conversation_key(msg["from_key"], to)
        conv = self.conversations.get(ckey)
        if conv is None:
            conv = self.conversations[ckey] = []
        conv.append(mid)
        limit = self.policy.history_limit
        if limit and len(conv) > limit:
            old, conv[:] = conv[: len(conv) - limit], conv[len(conv) - limit :]
            self._forget(old)

    def _box(self, to: Key, mid: int) -> None:
        """Put a message into `to`'s mailbox, keeping seq (= id) order and the limit."""
        box = self.mailbox.setdefault(to, {})
        if mid in box:
            return
        self.mailbox_bytes[to] = self.mailbox_bytes.get(to, 0) + message_size(self.messages[mid])
        if box and mid < next(reversed(box)):
            box[mid] = None
            self.mailbox[to] = box = dict.fromkeys(sorted(box))
        else:
            box[mid] = None
        limit = self.policy.mailbox_limit
        if limit and len(box) > limit:
            over = list(box)[: len(box) - limit]
            self.truncated[to] = self.truncated.get(to, 0) + self._unbox(to, over)

    def _unbox(self, recipient: Key, ids: Iterable[int]) -> int:
        box = self.mailbox.get(recipient)
        if not box:
            return 0
        n = 0
        size = 0
        for i in ids:
            if box.pop(i, False) is None:
                n += 1
                m = self.messages.get(i)
                if m is not None:
                    size += message_size(m)
                self._forget_if_unkept(i)
        if not box:
            del self.mailbox[recipient]
            self.mailbox_bytes.pop(recipient, None)
        elif size:
            self.mailbox_bytes[recipient] -= size
        return n

    def _kept(self, mid: int) -> bool:
        m = self.messages.get(mid)
        if m is None:
            return False
        if mid in self.mailbox.get(m["to_key"], {}):
            return True
        conv = self.conversations.get(conversation_key(m["from_key"], m["to_key"]), [])
        return bool(conv) and mid >= conv[0] and mid in conv

    def _forget_if_unkept(self, mid: int) -> None:
        if not self._kept(mid):
            self._forget([mid])

    def _forget(self, ids: Iterable[int]) -> None:
        for mid in ids:
            m = self.messages.get(mid)
            if m is None or mid in self.mailbox.get(m["to_key"], {}):
                continue
            del self.messages[mid]
            if m.get("session_id") is not None:
                sid = str(m["session_id"])
                session = self.by_session.get(sid)
                if session is not None:
                    session.remove(mid)
                    if not session:
                        del self.by_session[sid]
            inbox = self.inbox.get(m["to_key"])
            if inbox and inbox[0] == mid:
                inbox.pop(0)
            elif inbox and len(inbox) > 2 * max(self.policy.history_limit, 1):
                inbox[:] = [i for i in inbox if i in self.messages]

    def _prune_dedup(self, now_ms: int) -> None:
        # Entries are inserted in time order, so expired ones sit at the front:
        # amortised O(1), and the same records always leave the same table.
        window = self.policy.dedup_window_ms
        dedup = self.dedup
        while dedup:
            first = next(iter(dedup))
            if now_ms - dedup[first][1] <= window:
                break
            del dedup[first]

    # -- snapshot --------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy of the state (for the snapshot)."""
        state = self._state_without_messages()
        state["messages"] = [thawed(m) for m in self.messages.values()]
        return state

    def snapshot_view(self) -> dict[str, Any]:
        """What `to_state()` gives, for the snapshot writer, without copying the
        messages: they go as the store's own dicts (never changed in place) in a
        `StoredMessages` list, made JSON objects as they are encoded
        (`storage.base.json_chunks`). Copying them in the hub actor stopped a
        large server for seconds (docs/BENCHMARKS.md, the snapshot's costs)."""
        state = self._state_without_messages()
        state["messages"] = StoredMessages(self.messages.values())
        return state

    def _state_without_messages(self) -> dict[str, Any]:
        return {
            "next_id": self.next_id,
            "messages": [],
            "seq": dict(self.seq),
            "mailbox": {k: list(v) for k, v in self.mailbox.items()},
            "truncated": dict(self.truncated),
            "conversations": {k: list(v) for k, v in self.conversations.items()},
            "inbox": {k: list(v) for k, v in self.inbox.items()},
            "dedup": {k: list(v) for k, v in self.dedup.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's (`from_state`), keeping the policy
        and the durability source."""
        loaded = self.from_state(state, self.policy, self.durable)
        for name in attrs.fields_dict(MemoryMessageStore):
            setattr(self, name, getattr(loaded, name))

    @classmethod
    def from_state(
        cls, state: dict[str, Any], policy: RetentionPolicy, durable: Callable[[], int] = _everything
    ) -> MemoryMessageStore:
        """Rebuild from `to_state()` output (taking over its message dicts)."""
        messages = state["messages"]
        by_session: dict[str, list[int]] = {}
        for m in messages:
            # The parties stay objects here: start-up costs less per message,
            # and run_server freezes everything loaded (tune_gc), so no
            # collection walks these messages anyway. `party()` reads both forms.
            sid = m.get("session_id")
            if sid is not None:
                by_session.setdefault(str(sid), []).append(m["id"])
        for ids in by_session.values():  # ascending ids, whatever the snapshot's order
            if any(a > b for a, b in pairwise(ids)):
                ids.sort()
        by_id = {m["id"]: m for m in messages}
        mailbox = {k: dict.fromkeys(v) for k, v in state["mailbox"].items()}
        mailbox_bytes = {
            k: sum(message_size(by_id[i]) for i in box if i in by_id) for k, box in mailbox.items()
        }
        return cls(
            policy=policy,
            by_session=by_session,
            mailbox_bytes=mailbox_bytes,
            durable=durable,
            next_id=state["next_id"],
            messages=by_id,
            seq=dict(state["seq"]),
            mailbox=mailbox,
            truncated=dict(state["truncated"]),
            conversations={k: list(v) for k, v in state["conversations"].items()},
            inbox={k: list(v) for k, v in state["inbox"].items()},
            dedup=OrderedDict((k, (v[0], v[1], v[2])) for k, v in state["dedup"].items()),
        )
