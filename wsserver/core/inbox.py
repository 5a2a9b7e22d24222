"""What a principal reads of its direct messages (SPEC 4.3), without I/O.

`Inbox` is the reading half of direct messaging (`core.direct` is the
sending half, and composes it): the mailbox pushed when a connection
authenticates, `sync` and `history`, and the server pushes kept in a mailbox
(`POST /api/publish` with `persist`). It reads the store that sending
writes, and builds the `new_message` data both halves send.

Invariants:

- Only durable messages are read (`MessageStore` hides the others), and a
  message whose `new_message` announcement has not run yet (`unannounced`)
  is left to that announcement, never pushed twice.
- A burst (mailbox push, one `sync` page) is at most half the outbound queue,
  so it never trips the slow-consumer limit.
"""

from __future__ import annotations

from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.expiry import announce_expired
from wsserver.core.keys import SYSTEM, Key, principal_key, push_key, split_key
from wsserver.core.session import Session
from wsserver.core.stored_messages import extra_value, message_size, party
from wsserver.core.stores import MessageStore
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode, id_key
from wsserver.protocol.messages import History, Sync, read, with_receiver

__all__ = ["MAX_SYNC_PAGE", "Inbox", "new_message_data", "own_key", "recipient_key", "sent_data"]

MAX_SYNC_PAGE = 500  # sync and the mailbox push on connect


def own_key(session: Session) -> Key:
    """The principal key of an authenticated user's connection."""
    ident = session.identity
    assert ident is not None
    return principal_key(ident.group_key, id_key(ident.user_type), id_key(ident.user_id))


def recipient_key(session: Session, to_id: Any, to_type: Any, to_group: Any) -> Key:
    """The principal a request names, in the sender's group unless an admin
    names another (`to_group_id`); `forbidden` for anyone else who does."""
    ident = session.identity
    assert ident is not None
    group = ident.group_key
    if to_group is not None and id_key(to_group) != group:
        if not ident.is_admin:
            raise ProtocolError(ErrorCode.FORBIDDEN, "group_forbidden", field="to_group_id")
        group = id_key(to_group)
    return principal_key(group, id_key(to_type), id_key(to_id))


def sent_data(m: dict[str, Any], *, duplicate: bool) -> dict[str, Any]:
    """`message_sent`'s data for a stored message (`duplicate`: the first one of a
    resent `client_msg_id`)."""
    data = {
        "message_id": m["id"],
        "client_msg_id": m.get("cmid"),
        "seq": m["seq"],
        "status": "sent",
        "time": m["time"],
    }
    if duplicate:
        data["duplicate"] = True
    return data


def new_message_data(m: dict[str, Any], *, offline: bool) -> dict[str, Any]:
    """The `data` of `new_message` for a stored message (seed 002's fields)."""
    sender = party(m, "from")
    receiver = party(m, "to")
    data = {
        "id": str(m["id"]),
        "message_id": m["id"],
        "seq": m["seq"],
        "session_id": m.get("session_id"),
        "from": sender,
        "from_user_id": sender["user_id"],
        "to_user_id": receiver.get("user_id"),
        "text": m["text"],
        "time": m["time"],
        "message_type": m.get("message_type", "text"),
        "reply_to_message_id": m.get("reply_to"),
        "status": m["status"],
        "offline": offline,
    }
    if sender.get("user_type") is not None:
        data["from_user_type"] = sender["user_type"]
    if receiver.get("user_type") is not None:
        data["to_user_type"] = receiver["user_type"]
    extra = m.get("extra")
    if extra:
        data["extra"] = extra_value(extra)
    return data


class Inbox:
    """The mailbox push, `sync`, `history` and kept server pushes."""

    def __init__(self, commit: CommitLog, broker: Broker, env: Env, store: MessageStore) -> None:
        self.commit = commit
        self.broker = broker
        self.env = env
        self.store = store
        # ids of messages whose `new_message` announcement has not run yet (the
        # sending half adds and removes them): a recipient connecting meanwhile
        # gets them from the announcement, not also from its mailbox
        # (durable_upto may pass a record before release())
        self.unannounced: set[int] = set()

    @property
    def page_size(self) -> int:
        """Messages sent in one burst (mailbox push, one `sync` page): half the
        outbound queue at most, so a burst never trips the slow-consumer limit."""
        return max(1, min(MAX_SYNC_PAGE, self.env.config.limits.send_queue // 2))

    # -- handlers ----------------------------------------------------------------

    def sync(self, session: Session, msg: Inbound) -> None:
        """`sync {last_seq, limit}`: the newer messages, then `sync_done`."""
        req = read(msg.data, Sync)
        last_seq = req.last_seq or 0
        limit = max(1, min(req.limit or self.page_size, self.page_size))
        me = own_key(session)
        broker = self.broker
        newer = self.store.since(me, last_seq)
        page = newer[:limit]
        now = self.env.now_ms()
        for m in page:
            broker.send(session, encode("new_message", new_message_data(m, offline=m["status"] == "sent"), now))
        more = len(newer) > len(page)
        upto = page[-1]["seq"] if more else max(last_seq, self.store.durable_seq(me))
        broker.reply(session, msg, "sync_done", {"last_seq": upto, "has_more": more})

    def history(self, session: Session, msg: Inbound) -> None:
        """`history`: a page of one conversation, with a peer or of a `session_id`."""
        req = read(with_receiver(msg.raw, msg.data, "with_user_id", "with_user_type"), History)
        me = own_key(session)
        if req.with_user_id is not None:
            other = recipient_key(session, req.with_user_id, req.with_user_type, req.to_group_id)
            page, more = self.store.history(me, other, req.before_message_id, req.limit)
        elif req.session_id is not None:
            page, more = self.store.session_history(me, str(req.session_id), req.before_message_id, req.limit)
        else:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="with_user_id")
        messages = [new_message_data(m, offline=False) for m in page]
        self.broker.reply(session, msg, "history", {"messages": messages, "has_more": more})

    # -- server pushes kept for a user ---------------------------------------------

    def persist_push(self, group_id: Any, user_type: Any, user_id: Any, mtype: str, data: Any) -> bool:
        """Keep a server push (`POST /api/publish` with `persist`) in a user's mailbox.

        Without `group_id` (or `user_type`) it waits for that user in any group
        (of any type). It is pushed on the user's next connect as the original
        message type with `message_id` and `offline: true`, and leaves the
        mailbox then (clients of pushes send no receipts).

        Returns False, queueing nothing, when the push would take that mailbox
        over `messages.mailbox_max_bytes`.
        """
        to = push_key(
            None if group_id is None else id_key(group_id),
            None if user_type is None else id_key(user_type),
            id_key(user_id),
        )
        push = {"type": mtype, "data": data}
        if self.store.mailbox_full(to, message_size({"push": push})):
            return False
        record = {
            "t": "msg",
            "id": self.store.next_id,
            "seq": self.store.next_seq(to),
            "from_key": SYSTEM,
            "to_key": to,
            "from": {"user_id": None, "user_type": None, "username": None},
            "to": {"user_id": user_id, "user_type": user_type, "group_id": group_id},
            "text": None,
            "push": push,
            "time": self.env.now_ms(),
            "boxed": True,
        }
        if self.commit.cluster is not None:  # decided when the shared log's record is applied
            del record["id"], record["seq"]
        self.commit.record(record)
        return True

    # -- on connect ------------------------------------------------------------------

    def _mailbox_keys(self, me: Key) -> list[Key]:
        """The mailboxes a principal reads: its own and the wildcard push boxes."""
        group, user_type, user_id = split_key(me)
        return [me, push_key(group, None, user_id), push_key(None, user_type, user_id), push_key(None, None, user_id)]

    def _housekeeping(self, rec: dict[str, Any]) -> bool:
        """Record what reading the mailbox changes; False when a cluster node
        cannot now (`unavailable`): it is done on a later connect instead (an
        expired message is dropped then, a push pushed again)."""
        try:
            self.commit.record(rec)
        except ProtocolError:
            return False
        return True

    def deliver_mailbox(self, session: Session) -> None:
        """(A connection authenticated.) Expire, report truncation, then push
        undelivered messages in seq order."""
        ident = session.identity
        if ident is None or ident.is_device:
            return
        me = own_key(session)
        broker = self.broker
        now = self.env.now_ms()
        keys = self._mailbox_keys(me)
        dropped = 0
        record = self._housekeeping
        for key in keys:
            expired = self.store.expired(key, now)
            if expired:
                gone = [m for i in expired if (m := self.store.stored(i)) is not None]
                if record({"t": "drop", "to": key, "ids": expired, "reason": "ttl"}):
                    announce_expired(self.commit, broker, gone, now)
            truncated = self.store.truncated_count(key)
            if truncated and record({"t": "trunc_seen", "to": key}):
                dropped += truncated
        if dropped:
            broker.send(session, encode("mailbox_truncated", {"dropped": dropped}, now))
        # only durable ones (the store hides the others); those not yet
        # announced are announced when they commit
        waiting = [
            m
            for key in keys
            for m in self.store.mailbox_messages(key)
            if m["id"] not in self.unannounced
        ]
        if len(keys) > 1:
            waiting.sort(key=lambda m: m["id"])
        page = waiting[: self.page_size]
        for m in page:
            push = m.get("push")
            if push is None:
                broker.send(session, encode("new_message", new_message_data(m, offline=True), now))
                continue
            extra = {"message_id": m["id"], "offline": True}
            broker.send(session, encode(push["type"], push["data"], now, extra=extra))
            record({"t": "status", "id": m["id"], "status": "delivered", "time": now})
        if len(waiting) > len(page):
            more = {"remaining": len(waiting) - len(page), "last_seq": page[-1]["seq"]}
            broker.send(session, encode("mailbox_more", more, now))
