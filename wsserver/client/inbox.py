"""Direct messages in, once each and in order, across reconnects (no I/O).

The hub numbers every message a principal receives with `seq` (its inbox's
counter, only growing). The client remembers the highest `seq` it handed to
the application (`last_seq`); after every (re)connect it asks for everything
after it (`sync {last_seq}`, paged until `has_more` is false). Meanwhile the
hub also pushes its mailbox (undelivered messages, `offline: true`) and new
messages as they come, so the same message may arrive up to three times.

Invariants:

- Messages addressed to this principal are handed out once each, in `seq`
  order: while a sync runs they are held back and sorted; a `seq` at or below
  `last_seq` is a repeat and is dropped.
- `new_message`s that are not addressed to this principal (what it sent
  itself, echoed to its other connections) carry the recipient's `seq` and do
  not move `last_seq`; they are de-duplicated by `message_id` over a bounded
  window of recent ids.
- `last_seq = None` means "never synced": the first sync hands out only the
  messages still undelivered (status `sent`, what the mailbox holds), and
  `last_seq` becomes the highest `seq` seen; with a number, everything after
  it is handed out.
- `ack` lists the message ids to confirm with `message_delivered` when the
  application wants receipts sent for it: what it was handed, and repeats
  still marked undelivered (their earlier receipt was lost).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import attrs

__all__ = ["Inbox", "Received"]

RECENT_IDS = 4096


@attrs.define
class Received:
    """What one inbound message (or the end of a sync) means for the application."""

    deliver: list[dict[str, Any]] = attrs.Factory(list)
    ack: list[Any] = attrs.Factory(list)


def _key(value: Any) -> str | None:
    return None if value is None else str(value)


class Inbox:
    """The `seq` bookkeeping of one client."""

    def __init__(self, last_seq: int | None = None) -> None:
        self.last_seq = last_seq
        self.syncing = False
        self._me: tuple[str | None, str | None] | None = None
        self._fresh = False
        self._held: dict[int, dict[str, Any]] = {}
        self._recent: OrderedDict[Any, None] = OrderedDict()

    # -- one connection ---------------------------------------------------------

    def start(self, *, sync: bool) -> None:
        """A connection opens; with `sync`, hold messages back until the sync ends."""
        self.syncing = sync
        self._fresh = self.last_seq is None
        self._held = {}

    def identify(self, user_id: Any, user_type: Any) -> None:
        """The principal the hub says this connection is (`connected`)."""
        self._me = (_key(user_id), _key(user_type))

    def sync_request(self) -> dict[str, Any]:
        return {"last_seq": self.last_seq or 0}

    def lost(self) -> None:
        """The connection ended: what was held comes again with the next sync."""
        self.syncing = False
        self._held = {}

    # -- messages ---------------------------------------------------------------

    def _mine(self, data: dict[str, Any]) -> bool:
        if self._me is None:
            return False
        user_id, user_type = self._me
        return _key(data.get("to_user_id")) == user_id and _key(data.get("to_user_type")) == user_type

    def _seen(self, message_id: Any) -> bool:
        """True when `message_id` was handed out recently; remembers it otherwise."""
        if message_id is None:
            return False
        if message_id in self._recent:
            return True
        self._recent[message_id] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        return False

    def receive(self, msg: dict[str, Any]) -> Received:
        """A `new_message` envelope arrived."""
        data = msg.get("data")
        if not isinstance(data, dict):
            return Received([msg])
        seq = data.get("seq")
        if not self._mine(data) or not isinstance(seq, int) or isinstance(seq, bool):
            return Received([] if self._seen(data.get("message_id")) else [msg])
        if self.syncing:
            held = self._held.get(seq)
            if held is None or _undelivered(msg):
                self._held[seq] = msg
            return Received()
        if self.last_seq is not None and seq <= self.last_seq:
            return Received(ack=[data.get("message_id")] if _undelivered(msg) else [])
        self.last_seq = seq
        return Received([msg], [data.get("message_id")])

    def sync_done(self, data: Any) -> tuple[int | None, Received]:
        """`sync_done` arrived: the cursor of the next page, or None and what the
        sync hands out."""
        if isinstance(data, dict) and data.get("has_more") and isinstance(data.get("last_seq"), int):
            return data["last_seq"], Received()
        return None, self.finish_sync()

    def finish_sync(self) -> Received:
        """End the sync (done, or refused): hand out what was held, in `seq` order."""
        self.syncing = False
        held, self._held = self._held, {}
        out = Received()
        floor = self.last_seq
        for seq in sorted(held):
            msg = held[seq]
            if floor is not None and seq <= floor:
                if _undelivered(msg):
                    out.ack.append(msg["data"].get("message_id"))
                continue
            if self._fresh and not _undelivered(msg):
                continue  # read or delivered elsewhere before this client's time
            out.deliver.append(msg)
            out.ack.append(msg["data"].get("message_id"))
        if held:
            self.last_seq = max(self.last_seq or 0, max(held))
        return out


def _undelivered(msg: dict[str, Any]) -> bool:
    data = msg.get("data")
    return isinstance(data, dict) and data.get("status", "sent") == "sent"
