"""Direct messages between principals (SPEC 4.3; seeds 002, 003, 004), without I/O.

`DirectMessaging` is a component of the hub: it handles the client message
types in `handlers`, turns them into records (`MessageStore.apply` is the
only mutation, through the commit log), and decides who hears what, found
through presence and sent through the broker. Every frame that announces a
durable change (`message_sent`, `new_message`, `message_status`) is sent
through `CommitLog.after_commit`, i.e. only once the record is durable under
`storage.fsync`, so an acknowledged message survives `kill -9`.

Sender identity (`from`, `from_user_id`, ...) always comes from the
connection's identity, never from the client's payload.

Isolation: a message lives in the sender's group (an admin may name
`to_group_id`); it reaches only connections of that group. Principals are
keyed with `core.keys`, injectively, whatever characters their ids hold.

Visibility: `sync`, `history` and receipts read the store, which shows only
durable messages (`MessageStore.durable`).

Quota: a message for a recipient with no connection (it goes to the mailbox)
or a persisted push that would take the mailbox over
`messages.mailbox_max_bytes` is refused (`rate_limited`), nothing stored.
"""

from __future__ import annotations

from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.keys import SYSTEM, Key, principal_key, push_key, split_key
from wsserver.core.message_store import (
    MemoryMessageStore,
    RetentionPolicy,
    message_size,
    party,
)
from wsserver.core.presence import Presence
from wsserver.core.session import Handler, Session
from wsserver.core.stores import MessageStore
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode, field, id_key

__all__ = ["DirectMessaging"]

MAX_TEXT = 65536
MAX_PAGE = 100  # history
MAX_SYNC_PAGE = 500  # sync and the mailbox push on connect


def _bad(name: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, "field_type", field=name)


def _id_value(data: Any, name: str, *, required: bool = True) -> Any:
    """A user id or user type: a non-empty string or an integer."""
    value = field(data, name, (str, int), required=required)
    if value == "":
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_invalid", field=name)
    return value


class DirectMessaging:
    """The direct-message handlers of a hub and their durable store."""

    record_types: tuple[str, ...] = ("msg", "status", "box", "drop", "trunc_seen")

    def __init__(
        self,
        commit: CommitLog,
        presence: Presence,
        broker: Broker,
        env: Env,
        store: MessageStore | None = None,
    ) -> None:
        self.commit = commit
        self.presence = presence
        self.broker = broker
        self.env = env
        if store is None:
            cfg = env.config.messages  # retention is fixed at start (a restart key)
            store = MemoryMessageStore(
                RetentionPolicy(
                    dedup_window_ms=int(cfg.dedup_window * 1000),
                    mailbox_limit=cfg.mailbox_limit,
                    mailbox_ttl_ms=int(cfg.mailbox_ttl * 1000),
                    history_limit=cfg.history_limit,
                    mailbox_max_bytes=cfg.mailbox_max_bytes,
                ),
                durable=self._durable_upto,
            )
        self.store: MessageStore = store
        handlers: dict[str, Handler] = {
            "send_message": self._send_message,
            "user_message": self._user_message,
            "message": self._seed003_message,
            "message_delivered": self._delivered,
            "message_read": self._read,
            "read": self._read,
            "typing": self._typing,
            "sync": self._sync,
            "history": self._history,
        }
        self.handlers: dict[str, Handler] = {t: _users_only(h) for t, h in handlers.items()}
        # ids of messages whose `new_message` announcement has not run yet: a
        # recipient connecting meanwhile gets them from the announcement, not
        # also from its mailbox (durable_upto may pass a record before release())
        self._unannounced: set[int] = set()

    # -- durable state -------------------------------------------------------

    def _durable_upto(self) -> int:
        return self.commit.journal.durable_upto  # (not the property: every read asks)

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold one record into the store."""
        self.store.apply(rec)

    def to_state(self) -> dict[str, Any]:
        """The snapshot of the message store."""
        return self.store.to_state()

    def snapshot_view(self) -> dict[str, Any]:
        """`to_state()` for the snapshot writer, without copying the messages."""
        return self.store.snapshot_view()

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the store's state with a snapshot's."""
        self.store.load_state(state)

    def mailbox_counts(self) -> tuple[int, int]:
        """(mailboxes, messages in them), for the statistics."""
        return self.store.mailbox_counts()

    # -- addressing ----------------------------------------------------------

    def own_key(self, session: Session) -> Key:
        ident = session.identity
        assert ident is not None
        return principal_key(ident.group_key, id_key(ident.user_type), id_key(ident.user_id))

    def _target_group(self, session: Session, data: dict[str, Any]) -> str:
        ident = session.identity
        assert ident is not None
        group = data.get("to_group_id")
        if group is None or id_key(group) == ident.group_key:
            return ident.group_key
        if not ident.is_admin:
            raise ProtocolError(ErrorCode.FORBIDDEN, "group_forbidden", field="to_group_id")
        return id_key(group)

    def _recipient(self, session: Session, data: dict[str, Any], id_field: str, type_field: str) -> Key:
        to_id = _id_value(data, id_field)
        to_type = _id_value(data, type_field, required=False)
        return principal_key(self._target_group(session, data), id_key(to_type), id_key(to_id))

    # -- frames --------------------------------------------------------------

    def _new_message(self, m: dict[str, Any], *, offline: bool) -> dict[str, Any]:
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
        if m.get("extra"):
            data["extra"] = m["extra"]
        return data

    def _sent_reply(self, m: dict[str, Any], *, duplicate: bool) -> dict[str, Any]:
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

    # -- send ----------------------------------------------------------------

    def _send_message(self, session: Session, msg: Inbound) -> None:
        data = msg.data
        if not isinstance(data, dict):
            raise _bad("data")
        text = data.get("message", data.get("text"))
        if text is None:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="message")
        self.send(session, msg, self._recipient(session, data, "to_user_id", "to_user_type"), data, text)

    def _user_message(self, session: Session, msg: Inbound) -> None:
        """Seed 004: `user_message {to, text}`."""
        data = msg.data
        if not isinstance(data, dict):
            raise _bad("data")
        text = data.get("text", data.get("message"))
        if text is None:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="text")
        self.send(session, msg, self._recipient(session, data, "to", "to_user_type"), data, text)

    def _seed003_message(self, session: Session, msg: Inbound) -> None:
        """Seed 003: `{"event":"message","receiver":{id,type},"data":{...}}`."""
        receiver = msg.raw.get("receiver")
        if not isinstance(receiver, dict):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="receiver")
        data = msg.data if isinstance(msg.data, dict) else {"text": msg.data}
        text = data.get("text", data.get("content", data.get("message")))
        if text is None:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="data.text")
        addressed = {"to_user_id": receiver.get("id"), "to_user_type": receiver.get("type")}
        if "to_group_id" in data:
            addressed["to_group_id"] = data["to_group_id"]
        try:
            to = self._recipient(session, addressed, "to_user_id", "to_user_type")
        except ProtocolError as err:
            err.field = {"to_user_id": "receiver.id", "to_user_type": "receiver.type"}.get(
                err.field or "", err.field
            )
            raise
        self.send(session, msg, to, data, text)

    def send(self, session: Session, msg: Inbound, to: Key, data: dict[str, Any], text: Any) -> None:
        """Store one message for `to` and announce it once it is durable."""
        commit, broker = self.commit, self.broker
        ident = session.identity
        assert ident is not None
        if not isinstance(text, str):
            raise _bad("message" if "message" in data else "text")
        if len(text) > MAX_TEXT:
            raise ProtocolError(ErrorCode.TOO_LARGE, "field_invalid", field="message")
        cmid = data.get("client_msg_id")
        if cmid is not None and (not isinstance(cmid, str | int) or isinstance(cmid, bool)):
            raise _bad("client_msg_id")
        message_type = data.get("message_type", "text")
        if not isinstance(message_type, str):
            raise _bad("message_type")
        session_id = data.get("session_id")
        if session_id is not None and not isinstance(session_id, str | int):
            raise _bad("session_id")
        reply_to = data.get("reply_to_message_id")
        if reply_to is not None and (not isinstance(reply_to, int) or isinstance(reply_to, bool)):
            raise _bad("reply_to_message_id")
        me = self.own_key(session)
        now = self.env.now_ms()
        if cmid is not None:
            first = self.store.find_duplicate(me, str(cmid), now)
            if first is not None:
                reply = encode(
                    "message_sent", self._sent_reply(first, duplicate=True), now, request_id=msg.id
                )
                commit.after_commit(lambda: broker.send(session, reply))
                return
        to_group, to_type, to_id = split_key(to)
        assert to_group is not None and to_type is not None  # a principal's key, not a push box
        recipient_live = bool(self.presence.connections_of(to))
        if not recipient_live and self.store.mailbox_full(to, message_size({"text": text})):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "mailbox_full", field=_recipient_field(data))
        record: dict[str, Any] = {
            "t": "msg",
            "id": self.store.next_id,
            "seq": self.store.next_seq(to),
            "from_key": me,
            "to_key": to,
            "from": {
                "user_id": ident.user_id,
                "user_type": ident.user_type,
                "username": ident.username,
            },
            "to": {
                "user_id": _echo_id(data, ("to_user_id", "to"), to_id, msg),
                "user_type": _echo_type(data, to_type, msg),
                "group_id": to_group,
            },
            "text": text,
            "session_id": session_id,
            "message_type": message_type,
            "reply_to": reply_to,
            "cmid": None if cmid is None else str(cmid),
            "time": now,
            "boxed": not recipient_live,
        }
        commit.record(record)
        m = self.store.stored(record["id"])
        assert m is not None  # just recorded
        sent = encode("message_sent", self._sent_reply(m, duplicate=False), now, request_id=msg.id)

        def announce() -> None:
            self._unannounced.discard(m["id"])
            broker.send(session, sent)
            frame = encode("new_message", self._new_message(m, offline=False), self.env.now_ms())
            # the recipient's connections now (they may have connected meanwhile)
            # and the sender's other tabs
            reached = broker.to_principal(to, frame)
            if to != me:  # the sender's other tabs (a note to self reached them above)
                broker.to_principal(me, frame, skip=session)
            if not reached and not m.get("boxed") and m["status"] == "sent":
                # the recipient was online at send time but left before this
                # announcement: keep it for the next connect after all
                commit.record({"t": "box", "id": m["id"]})

        self._unannounced.add(m["id"])
        commit.after_commit(announce)

    # -- receipts ------------------------------------------------------------

    def _receipt(self, session: Session, msg: Inbound, status: str) -> None:
        data = msg.data
        if isinstance(data, int | str) and not isinstance(data, bool):
            data = {"message_id": data}
        mid = field(data, "message_id", (int, str))
        try:
            mid = int(mid)
        except ValueError:
            raise _bad("message_id") from None
        m = self.store.message(mid)
        if m is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "not_found", field="message_id")
        if m["to_key"] != self.own_key(session):
            raise ProtocolError(ErrorCode.FORBIDDEN, "not_recipient", field="message_id")
        if STATUS_ORDER.index(status) <= STATUS_ORDER.index(m["status"]):
            return  # already there: receipts are idempotent
        now = self.env.now_ms()
        self.commit.record({"t": "status", "id": mid, "status": status, "time": now})
        frame = encode("message_status", {"message_id": mid, "status": status, "timestamp": now}, now)
        presence = self.presence

        def announce() -> None:
            targets = {s.conn_id: s for s in presence.connections_of(m["from_key"])}
            if status == "read":  # the reader's other tabs mark it read too
                for s in presence.connections_of(m["to_key"]):
                    if s is not session:
                        targets[s.conn_id] = s
            self.broker.fan_out(targets.values(), frame)

        self.commit.after_commit(announce)

    def _delivered(self, session: Session, msg: Inbound) -> None:
        self._receipt(session, msg, "delivered")

    def _read(self, session: Session, msg: Inbound) -> None:
        self._receipt(session, msg, "read")

    # -- typing, sync, history -------------------------------------------------

    def _typing(self, session: Session, msg: Inbound) -> None:
        data = msg.data
        if not isinstance(data, dict):
            raise _bad("data")
        to = self._recipient(session, data, "to_user_id", "to_user_type")
        typing = data.get("typing", True)
        if not isinstance(typing, bool):
            raise _bad("typing")
        ident = session.identity
        assert ident is not None
        frame = encode(
            "typing",
            {
                "from": {"user_id": ident.user_id, "user_type": ident.user_type, "username": ident.username},
                "typing": typing,
            },
            self.env.now_ms(),
        )
        self.broker.to_principal(to, frame)

    @property
    def page_size(self) -> int:
        """Messages sent in one burst (mailbox push, one `sync` page): half the
        outbound queue at most, so a burst never trips the slow-consumer limit."""
        return max(1, min(MAX_SYNC_PAGE, self.env.config.limits.send_queue // 2))

    def _sync(self, session: Session, msg: Inbound) -> None:
        data = msg.data if msg.data is not None else {}
        last_seq = field(data, "last_seq", int, required=False) or 0
        limit = field(data, "limit", int, required=False) or self.page_size
        limit = max(1, min(limit, self.page_size))
        me = self.own_key(session)
        broker = self.broker
        newer = self.store.since(me, last_seq)
        page = newer[:limit]
        now = self.env.now_ms()
        for m in page:
            broker.send(session, encode("new_message", self._new_message(m, offline=m["status"] == "sent"), now))
        more = len(newer) > len(page)
        upto = page[-1]["seq"] if more else max(last_seq, self.store.durable_seq(me))
        broker.reply(session, msg, "sync_done", {"last_seq": upto, "has_more": more})

    def _history(self, session: Session, msg: Inbound) -> None:
        data = msg.data
        if not isinstance(data, dict):
            raise _bad("data")
        limit = field(data, "limit", int, required=False)
        limit = MAX_PAGE if limit is None else limit
        if not 1 <= limit <= MAX_PAGE:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_invalid", field="limit")
        before = field(data, "before_message_id", int, required=False)
        me = self.own_key(session)
        if data.get("with_user_id") is not None:
            other = self._recipient(session, data, "with_user_id", "with_user_type")
            page, more = self.store.history(me, other, before, limit)
        elif data.get("session_id") is not None:
            sid = field(data, "session_id", (str, int))
            page, more = self.store.session_history(me, sid, before, limit)
        else:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="with_user_id")
        messages = [self._new_message(m, offline=False) for m in page]
        self.broker.reply(session, msg, "history", {"messages": messages, "has_more": more})

    # -- on connect ------------------------------------------------------------

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
        self.commit.record(
            {
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
        )
        return True

    def _mailbox_keys(self, me: Key) -> list[Key]:
        """The mailboxes a principal reads: its own and the wildcard push boxes."""
        group, user_type, user_id = split_key(me)
        return [me, push_key(group, None, user_id), push_key(None, user_type, user_id), push_key(None, None, user_id)]

    def deliver_mailbox(self, session: Session) -> None:
        """(A connection authenticated.) Expire, report truncation, then push
        undelivered messages in seq order."""
        ident = session.identity
        if ident is None or ident.is_device:
            return
        me = self.own_key(session)
        commit, broker = self.commit, self.broker
        now = self.env.now_ms()
        keys = self._mailbox_keys(me)
        dropped = 0
        for key in keys:
            expired = self.store.expired(key, now)
            if expired:
                commit.record({"t": "drop", "to": key, "ids": expired, "reason": "ttl"})
            truncated = self.store.truncated_count(key)
            if truncated:
                dropped += truncated
                commit.record({"t": "trunc_seen", "to": key})
        if dropped:
            broker.send(session, encode("mailbox_truncated", {"dropped": dropped}, now))
        # only durable ones (the store hides the others); those not yet
        # announced are announced when they commit
        waiting = [
            m
            for key in keys
            for m in self.store.mailbox_messages(key)
            if m["id"] not in self._unannounced
        ]
        if len(keys) > 1:
            waiting.sort(key=lambda m: m["id"])
        page = waiting[: self.page_size]
        for m in page:
            push = m.get("push")
            if push is None:
                broker.send(session, encode("new_message", self._new_message(m, offline=True), now))
                continue
            extra = {"message_id": m["id"], "offline": True}
            broker.send(session, encode(push["type"], push["data"], now, extra=extra))
            commit.record({"t": "status", "id": m["id"], "status": "delivered", "time": now})
        if len(waiting) > len(page):
            more = {"remaining": len(waiting) - len(page), "last_seq": page[-1]["seq"]}
            broker.send(session, encode("mailbox_more", more, now))


STATUS_ORDER = ["sent", "delivered", "read"]


def _users_only(handler: Handler) -> Handler:
    """`handler` for JWT users only. A desktop client (activation code) is no
    person: one code is shared by every desktop of a group, so its messages
    would come from nobody, and its mailbox would be everybody's."""

    def guarded(session: Session, msg: Inbound) -> None:
        if session.identity is not None and session.identity.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "device_no_direct")
        handler(session, msg)

    return guarded


def _recipient_field(data: dict[str, Any]) -> str:
    """The request field that named the recipient (for errors about it)."""
    for name in ("to_user_id", "to"):
        if name in data:
            return name
    return "receiver.id"


def _echo_id(data: dict[str, Any], names: tuple[str, ...], fallback: str, msg: Inbound) -> Any:
    """The recipient id as the client wrote it (ids are echoed as they came)."""
    for name in names:
        if data.get(name) is not None:
            return data[name]
    receiver = msg.raw.get("receiver")
    if isinstance(receiver, dict) and receiver.get("id") is not None:
        return receiver["id"]
    return fallback


def _echo_type(data: dict[str, Any], fallback: str, msg: Inbound) -> Any:
    if data.get("to_user_type") is not None:
        return data["to_user_type"]
    receiver = msg.raw.get("receiver")
    if isinstance(receiver, dict) and receiver.get("type") is not None:
        return receiver["type"]
    return fallback or None
