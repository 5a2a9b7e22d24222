"""Direct messages between principals (SPEC 4.3; seeds 002, 003, 004), without I/O.

`DirectMessaging` is a component of the hub: it handles the client message
types in `handlers`, turns them into records (`MessageStore.apply` is the
only mutation, through the commit log), and decides who hears what, found
through presence and sent through the broker. This module is the sending
half (messages, receipts, typing); what a principal reads (the mailbox push,
`sync`, `history`, kept server pushes) is `core.inbox.Inbox`, which this
component composes. Every frame that announces a durable change
(`message_sent`, `new_message`, `message_status`) is sent through
`CommitLog.after_commit`, i.e. only once the record is durable under
`storage.fsync`, so an acknowledged message survives `kill -9`. On a cluster
node the record goes through the shared log instead, and `core.direct_cluster`
answers and announces it when it is applied.

Sender identity (`from`, `from_user_id`, ...) always comes from the
connection's identity, never from the client's payload; the recipient is
echoed as the client named it (`to_user_id`, `to`, `receiver.id`).

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

from collections.abc import Callable
from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.commit import CommitLog
from wsserver.core.direct_cluster import ClusterDirect
from wsserver.core.env import Env
from wsserver.core.expiry import announce_expired
from wsserver.core.inbox import Inbox, new_message_data, own_key, recipient_key, sent_data
from wsserver.core.keys import Key, split_key
from wsserver.core.message_store import MemoryMessageStore, RetentionPolicy
from wsserver.core.presence import Presence
from wsserver.core.session import Handler, Session
from wsserver.core.stored_messages import message_size
from wsserver.core.stores import MessageStore
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.encoding import dumps
from wsserver.protocol.envelope import Inbound, encode
from wsserver.protocol.messages import (
    Receipt,
    Receiver,
    Seed003Data,
    Seed003Message,
    SendMessage,
    Typing,
    UserMessage,
    fault,
    read,
    with_receiver,
)
from wsserver.shapes import ShapeError, structurer

__all__ = ["DirectMessaging"]

MAX_TEXT = 65536
MAX_EXTRA = 1024  # bytes of a message's `extra` as JSON (SPEC 13: a small object)

Outgoing = SendMessage | UserMessage | Seed003Data
"""The part of a message request `send` reads (the same attributes in each)."""

# The shape and the field that names the recipient, per message type: one
# handler sends both (structured per message, so the generated functions are
# called directly).
_DIRECT: dict[str, tuple[Callable[[object], SendMessage | UserMessage], str]] = {
    "send_message": (structurer(SendMessage), "to_user_id"),
    "user_message": (structurer(UserMessage), "to"),
}
_RECEIPT = structurer(Receipt)
_TYPING = structurer(Typing)


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
        self.inbox = inbox = Inbox(commit, broker, env, store)
        self.deliver_mailbox = inbox.deliver_mailbox  # (a connection authenticated)
        self.persist_push = inbox.persist_push
        self.clustered = ClusterDirect(commit, presence, broker, env, store)
        handlers: dict[str, Handler] = {
            "send_message": self._send,
            "user_message": self._send,
            "message": self._seed003_message,
            "message_delivered": self._delivered,
            "message_read": self._read,
            "read": self._read,
            "typing": self._typing,
            "sync": inbox.sync,
            "history": inbox.history,
        }
        for mtype in ("message_delivered", "message_read", "read", "typing"):
            handlers[mtype] = self._acked(handlers[mtype])
        self.handlers: dict[str, Handler] = {t: _users_only(h) for t, h in handlers.items()}

    def _acked(self, handler: Handler) -> Handler:
        """`handler` (which sends its requester nothing) answering a request that
        carries an `id` with `ack {ok: true}`, once what it recorded is durable."""

        def acked(session: Session, msg: Inbound) -> None:
            handler(session, msg)
            if msg.id is not None:
                self.commit.after_commit(lambda: self.broker.reply(session, msg, "ack", {"ok": True}))

        return acked

    # -- durable state -------------------------------------------------------

    def _durable_upto(self) -> int:
        return self.commit.journal.durable_upto  # (not the property: every read asks)

    def apply(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one record into the store (the message a `msg` record stored)."""
        return self.store.apply(rec)

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

    def waiting_for(self, user_id: str, user_type: str | None, group: str | None) -> int:
        """Undelivered messages waiting for a user id (`MessageStore.waiting_for`)."""
        return self.store.waiting_for(user_id, user_type, group)

    # -- send ----------------------------------------------------------------

    def _send(self, session: Session, msg: Inbound) -> None:
        """`send_message`, and seed 004's `user_message {to, text}`."""
        structure, recipient_field = _DIRECT[msg.type]
        try:
            out = structure(msg.data)
        except ShapeError as err:
            raise fault(err) from None
        self.send(session, msg, out, out.to_user_id, out.to_user_type, recipient_field)

    def _seed003_message(self, session: Session, msg: Inbound) -> None:
        """Seed 003: `{"event":"message","receiver":{id,type},"data":{...}}`."""
        receiver: Receiver = read(msg.raw, Seed003Message).receiver
        out = read(msg.data, Seed003Data, "data")
        self.send(session, msg, out, receiver.id, receiver.type, "receiver.id")

    def send(
        self, session: Session, msg: Inbound, out: Outgoing, to_id: Any, to_type: Any, recipient_field: str
    ) -> None:
        """Store one message for the principal `to_id`/`to_type` (as the client
        named it, in its `recipient_field`) and announce it once it is durable."""
        to = recipient_key(session, to_id, to_type, out.to_group_id)
        commit, broker = self.commit, self.broker
        ident = session.identity
        assert ident is not None
        text = out.message
        if len(text) > MAX_TEXT:
            raise ProtocolError(ErrorCode.TOO_LARGE, "field_invalid", field="message")
        extra = None if out.extra is None else dumps(out.extra)
        if extra is not None and len(extra) > MAX_EXTRA:
            raise ProtocolError(ErrorCode.TOO_LARGE, "field_invalid", field="extra")
        cmid = out.client_msg_id
        me = own_key(session)
        now = self.env.now_ms()
        if cmid is not None:
            first = self.store.find_duplicate(me, str(cmid), now)
            if first is not None:
                reply = encode(
                    "message_sent", sent_data(first, duplicate=True), now, request_id=msg.id
                )
                commit.after_commit(lambda: broker.send(session, reply))
                return
        to_group, _, _ = split_key(to)
        assert to_group is not None  # a principal's key, not a push box
        recipient_live = bool(self.presence.connections_of(to))
        if not recipient_live and self.store.mailbox_full(to, message_size({"text": text})):
            raise ProtocolError(ErrorCode.RATE_LIMITED, "mailbox_full", field=recipient_field)
        record: dict[str, Any] = {
            "t": "msg",
            "id": self.store.next_id,
            "seq": self.store.next_seq(to),
            "from_key": me,
            "to_key": to,
            "from": ident.sender(),
            "to": {"user_id": to_id, "user_type": to_type, "group_id": to_group},
            "text": text,
            "session_id": out.session_id,
            "message_type": out.message_type,
            "reply_to": out.reply_to_message_id,
            "cmid": None if cmid is None else str(cmid),
            "time": now,
            "boxed": not recipient_live,
        }
        if extra is not None:  # as JSON text: a stored message holds plain values only
            record["extra"] = extra.decode()
        if commit.cluster is not None:
            self.clustered.send(session, msg, record)
            return
        # a full mailbox pushes its oldest out: their senders hear it
        limit = self.env.config.messages.mailbox_limit
        full = record["boxed"] and limit and self.store.mailbox_size(to) >= limit
        waiting = self.store.mailbox_messages(to) if full else []
        truncated = self.store.truncated_count(to) if waiting else 0
        commit.record(record)
        if waiting:
            pushed_out = waiting[: self.store.truncated_count(to) - truncated]
            if pushed_out:  # (out of the mailbox already: the record says so to followers)
                ids = [m["id"] for m in pushed_out]
                commit.record({"t": "drop", "to": to, "ids": ids, "reason": "limit", "time": now})
            announce_expired(commit, broker, pushed_out, now)
        m = self.store.stored(record["id"])
        assert m is not None  # just recorded
        sent = encode("message_sent", sent_data(m, duplicate=False), now, request_id=msg.id)
        unannounced = self.inbox.unannounced

        def announce() -> None:
            unannounced.discard(m["id"])
            broker.send(session, sent)
            frame = encode("new_message", new_message_data(m, offline=False), self.env.now_ms())
            # the recipient's connections now (they may have connected meanwhile)
            # and the sender's other tabs
            reached = broker.to_principal(to, frame)
            if to != me:  # the sender's other tabs (a note to self reached them above)
                broker.to_principal(me, frame, skip=session)
            if not reached and not m.get("boxed") and m["status"] == "sent":
                # the recipient was online at send time but left before this
                # announcement: keep it for the next connect after all
                commit.record({"t": "box", "id": m["id"]})

        unannounced.add(m["id"])
        commit.after_commit(announce)

    # -- receipts ------------------------------------------------------------

    def _receipt(self, session: Session, msg: Inbound, status: str) -> None:
        try:
            req = _RECEIPT(msg.data)
        except ShapeError as err:
            raise fault(err) from None
        if req.message_id is None:
            if req.up_to_message_id is None:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_missing", field="message_id")
            self._receipt_up_to(session, _int_id(req.up_to_message_id, "up_to_message_id"), status)
            return
        mid = _int_id(req.message_id, "message_id")
        m = self.store.message(mid)
        if m is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "not_found", field="message_id")
        if m["to_key"] != own_key(session):
            raise ProtocolError(ErrorCode.FORBIDDEN, "not_recipient", field="message_id")
        if STATUS_ORDER.index(status) <= STATUS_ORDER.index(m["status"]):
            return  # already there: receipts are idempotent
        now = self.env.now_ms()
        if self.commit.cluster is not None:
            self.clustered.receipt(session, msg, {"t": "status", "id": mid, "status": status, "time": now})
            return
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

    def _receipt_up_to(self, session: Session, up_to: int, status: str) -> None:
        """`{up_to_message_id}`: every message of that conversation addressed to
        the reader, up to that one, takes `status` (SPEC 13); the other party's
        connections (and for `read` the reader's other tabs) get one
        `message_status` naming them all in `message_ids`."""
        m = self.store.message(up_to)
        if m is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "not_found", field="up_to_message_id")
        me = own_key(session)
        if me not in (m["to_key"], m["from_key"]):
            raise ProtocolError(ErrorCode.FORBIDDEN, "not_recipient", field="up_to_message_id")
        other = m["from_key"] if m["to_key"] == me else m["to_key"]
        ids = _behind(self.store, me, other, up_to, status)
        if not ids:
            return  # nothing left to mark: idempotent
        now = self.env.now_ms()
        for mid in ids:
            self.commit.record({"t": "status", "id": mid, "status": status, "time": now})
        data = {"message_id": up_to, "up_to_message_id": up_to, "message_ids": ids, "status": status, "timestamp": now}
        frame = encode("message_status", data, now)
        presence = self.presence

        def announce() -> None:
            targets = {s.conn_id: s for s in presence.connections_of(other)}
            if status == "read":
                targets.update((s.conn_id, s) for s in presence.connections_of(me) if s is not session)
            self.broker.fan_out(targets.values(), frame)

        self.commit.after_commit(announce)

    def _delivered(self, session: Session, msg: Inbound) -> None:
        self._receipt(session, msg, "delivered")

    def _read(self, session: Session, msg: Inbound) -> None:
        self._receipt(session, msg, "read")

    # -- typing ------------------------------------------------------------------

    def _typing(self, session: Session, msg: Inbound) -> None:
        try:
            req = _TYPING(with_receiver(msg.raw, msg.data, "to_user_id", "to_user_type"))
        except ShapeError as err:
            raise fault(err) from None
        to = recipient_key(session, req.to_user_id, req.to_user_type, req.to_group_id)
        ident = session.identity
        assert ident is not None
        frame = encode(
            "typing",
            {
                "from": ident.sender(),
                "typing": req.typing,
            },
            self.env.now_ms(),
        )
        self.broker.signal_principal(to, frame)


STATUS_ORDER = ["sent", "delivered", "read"]


def _int_id(ref: int | str, field: str) -> int:
    """A message id of a receipt; a string must hold an integer."""
    try:
        return int(ref)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_type", field=field) from None


def _behind(store: MessageStore, me: Key, other: Key, up_to: int, status: str) -> list[int]:
    """The durable messages from `other` to `me` up to `up_to` (kept in the
    conversation or still in the mailbox) whose status is before `status`."""
    rank = STATUS_ORDER.index(status)
    page, _ = store.history(me, other, up_to + 1, 1 << 30)
    found = {m["id"]: m for m in page}
    for m in store.mailbox_messages(me):
        if m["from_key"] == other and m["id"] <= up_to:
            found[m["id"]] = m
    return sorted(
        mid
        for mid, m in found.items()
        if m["to_key"] == me and m["from_key"] == other and m["status"] in STATUS_ORDER[:rank]
    )


def _users_only(handler: Handler) -> Handler:
    """`handler` for JWT users only. A desktop client (activation code) is no
    person: one code is shared by every desktop of a group, so its messages
    would come from nobody, and its mailbox would be everybody's."""

    def guarded(session: Session, msg: Inbound) -> None:
        if session.identity is not None and session.identity.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "device_no_direct")
        handler(session, msg)

    return guarded
