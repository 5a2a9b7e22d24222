"""The business events that report changes (SPEC 13: `message`,
`message_status`, `crm_*`), made from the changes' own records, without I/O.

The hub's components know nothing of webhooks: `RecordEvents` reads their
records and says which events they are.

- `message`: every direct message (not a backend push kept in a mailbox),
  with its ids, parties and text: its `msg` record is stamped when made and
  is its event when applied, so one journal line is both the message and its
  event, and a restart neither loses nor repeats it (`core.webhook_messages`;
  its lane is `recipient_lane`).
- the others are read the moment their record is made (`events`, a
  `CommitLog` follower, never at replay) and journaled as `hook` records
  right behind it, in the same command. `message_status`: a direct
  message's `delivered` and `read` receipts and `expired` when a mailbox's
  TTL or its limit drops it undelivered (a `drop` record with reason `ttl`
  or `limit`). Both message events go in the recipient's lane (the one of
  its `user_online`), so a message's event always comes before its
  receipts' events.
- `crm_incoming`, `crm_customer`, `crm_follow_up`: each CRM write as stored
  (a retry makes no record, so no event); `crm_account_status`: a status
  change, or `offline` when the last desktop connection went away. The CRM's
  events go in one lane per group (`crm_lane`), in the order they were made.
  The activation code, a credential, is never in an event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from wsserver.core.keys import SYSTEM, escape, split_key
from wsserver.core.stored_messages import party
from wsserver.core.stores import CrmStore, MessageStore
from wsserver.core.webhook_presence import lane_of

__all__ = ["RECORD_EVENTS", "RecordEvents", "crm_lane", "recipient_lane"]

Event = tuple[str, str, dict[str, Any]]  # (name, lane, data)

RECORD_EVENTS: dict[str, tuple[str, ...]] = {
    # event -> the record types it is made from when they are made (`events`)
    "message_status": ("status", "drop"),
    "crm_incoming": ("crm_incoming",),
    "crm_customer": ("crm_customer",),
    "crm_follow_up": ("crm_follow_up",),
    "crm_account_status": ("crm_status", "crm_offline"),
}


def crm_lane(group: str) -> str:
    """The lane of a group's CRM events: two unescaped `|`, which no user's lane
    (`core.webhooks.lane_of`: one) ever has."""
    return f"crm||{escape(group)}"


def recipient_lane(to_key: str) -> str:
    """The lane of a message's recipient (that of its `user_online`): its key
    without the group."""
    if "\\" not in to_key:  # nothing escaped (the common case): the parts after the group's
        return to_key[to_key.index("|") + 1 :]
    _, user_type, user_id = split_key(to_key)
    return lane_of(user_type or "", user_id)


class RecordEvents:
    """Records in, events out, for the events `enabled` names."""

    def __init__(
        self,
        enabled: frozenset[str],
        messages: MessageStore,
        crm: CrmStore | None,
        group_id: Callable[[str, Any], Any],
    ) -> None:
        self.enabled = enabled
        self.messages = messages
        self.crm = crm
        self.group_id = group_id
        kinds: dict[str, None] = {}
        for name, record_types in RECORD_EVENTS.items():
            if name in enabled and (crm is not None or not name.startswith("crm_")):
                kinds.update(dict.fromkeys(record_types))
        self.record_types: tuple[str, ...] = tuple(kinds)

    def events(self, rec: dict[str, Any]) -> Iterator[Event]:
        """The events one record is (none for most)."""
        kind = rec["t"]
        if kind == "status":
            yield from self._status(rec["id"], rec["status"], rec["time"])
        elif kind == "drop":
            reason = rec.get("reason")
            if reason in ("ttl", "limit"):
                for mid in rec["ids"]:
                    yield from self._status(mid, "expired", rec.get("time"), reason)
        elif kind.startswith("crm_") and not rec.get("retry"):  # a retry changed nothing
            yield from self._crm(kind, rec)

    # -- direct messages ----------------------------------------------------------------

    def undelivered_event(self, mid: int, m: dict[str, Any]) -> Event:
        """`message_undelivered` of stored message `mid`, `m` (its check fell due
        and it is still `sent`: `core.webhooks`)."""
        group, user_type, user_id = split_key(m["to_key"])
        to = party(m, "to")
        data = {
            "user_id": to.get("user_id", user_id),
            "user_type": to.get("user_type"),
            "group_id": self.group_id(group or "", None),
            "message_id": mid,
            "seq": m["seq"],
            "session_id": m.get("session_id"),
            "from": party(m, "from"),
            "text": m["text"],
            "message_type": m.get("message_type", "text"),
            "sent_at": m["time"],
            "status": m["status"],
        }
        return "message_undelivered", lane_of(user_type or "", user_id), data

    def _status(self, mid: int, status: str, time: int | None, reason: str | None = None) -> Iterator[Event]:
        if "message_status" not in self.enabled:
            return
        m = self.messages.stored(mid)
        if m is None or m.get("push") is not None or m["from_key"] == SYSTEM:
            return
        if status == "expired" and m["status"] != "sent":
            return  # delivered or read before its mailbox expired
        sender, to = party(m, "from"), party(m, "to")
        group, _, _ = split_key(m["to_key"])
        data = {
            "message_id": mid,
            "status": status,
            "time": time,
            "session_id": m.get("session_id"),
            "from_user_id": sender.get("user_id"),
            "to_user_id": to.get("user_id"),
            "to_user_type": to.get("user_type"),
            "group_id": self.group_id(group or "", None),
        }
        if reason is not None:  # expired: what dropped it, "ttl" or "limit"
            data["reason"] = reason
        yield "message_status", recipient_lane(m["to_key"]), data

    # -- the CRM ----------------------------------------------------------------------------

    def _crm(self, kind: str, rec: dict[str, Any]) -> Iterator[Event]:
        key = rec["g"]
        lane = crm_lane(key)
        head = {"group_id": self.group_id(key, None)}
        if kind == "crm_incoming" and "crm_incoming" in self.enabled and self.crm is not None:
            iid = rec.get("id")
            if iid is not None:
                found, _ = self.crm.page(key, "incoming", iid - 1, 1)
                if found:
                    yield "crm_incoming", lane, {**head, **found[0]}
        elif kind == "crm_customer" and "crm_customer" in self.enabled:
            customer = {**rec["fields"], "customer_id": rec["customer_id"], "customer_db_id": rec["db_id"]}
            yield "crm_customer", lane, {**head, **customer}
        elif kind == "crm_follow_up" and "crm_follow_up" in self.enabled:
            follow_up = {**rec["fields"], "customer_id": rec["customer_id"], "follow_up_id": rec["id"]}
            yield "crm_follow_up", lane, {**head, **follow_up}
        elif kind == "crm_status" and "crm_account_status" in self.enabled:
            status = {"line_account_id": rec["id"], "online_status": rec["status"], "time": rec["time"]}
            yield "crm_account_status", lane, {**head, **status}
        elif kind == "crm_offline" and "crm_account_status" in self.enabled:
            for acct in rec["ids"]:
                status = {"line_account_id": acct, "online_status": "offline", "time": rec["time"]}
                yield "crm_account_status", lane, {**head, **status, "reason": "disconnect"}
