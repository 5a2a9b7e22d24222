"""Direct messages on a cluster node: sent through the shared log, announced
by every node to its own connections (SPEC 11), without I/O.

`core.direct` decides a message or a receipt as on a single node (the
checks, the record); on a cluster node the record goes through the shared
log (`core.replicated`) and this module does the rest:

- The message's `id`, the recipient's `seq` and de-duplication by
  `client_msg_id` are decided when the record is applied
  (`MemoryMessageStore.apply`); the sender hears `message_sent` (with
  `duplicate`) from the origin's `applied` callback, or `error unavailable`
  when the log refused the record (nothing stored).
- Every node that applies a `msg` record delivers `new_message` to its own
  connections of the recipient and of the sender (but the sending
  connection); every node that applies a `status` record sends
  `message_status` to its own connections of the sender (and, for `read`, of
  the reader but the reading connection). Only local deliveries
  (`Broker.fan_out` to this node's sessions): durable frames never travel
  between nodes, each node derives them from the log.
- Whether a message waits in the mailbox (`boxed`) is decided by the origin
  from its presence at send time; if the recipient it saw has no connection
  left when the record comes back, the origin boxes it then (a `box`
  record), as a single node does when its announcement reaches nobody.
- A kept server push whose record is applied after its user connected to a
  node (the origin saw nobody) is pushed by that node as the mailbox push
  would, and marked delivered.
- Start-up replay has no live effects (`CommitLog.apply_log`).
"""

from __future__ import annotations

from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.inbox import new_message_data, sent_data
from wsserver.core.presence import Presence
from wsserver.core.replicated import REFUSED
from wsserver.core.session import Session
from wsserver.core.stored_messages import party
from wsserver.core.stores import MessageStore
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode

__all__ = ["ClusterDirect"]


class ClusterDirect:
    """The cluster side of direct messages: the origin's answers and every
    node's live effects of `msg` and `status` records."""

    def __init__(
        self, commit: CommitLog, presence: Presence, broker: Broker, env: Env, store: MessageStore
    ) -> None:
        self.commit = commit
        self.store = store
        self.presence = presence
        self.broker = broker
        self.env = env
        commit.on_applied(("msg",), self._msg_applied)
        commit.on_applied(("status",), self._status_applied)

    def _refused(self, session: Session, msg: Inbound) -> None:
        self.broker.send_error(session, ProtocolError(ErrorCode.UNAVAILABLE, "unavailable"), msg)

    def send(self, session: Session, msg: Inbound, record: dict[str, Any]) -> None:
        """Hand a `msg` record to the log; `message_sent` once it is applied."""
        del record["id"], record["seq"]  # decided at apply
        broker = self.broker

        def applied(m: Any) -> None:
            if m is REFUSED or m is None:
                self._refused(session, msg)
                return
            duplicate = bool(m.get("duplicate"))
            data = sent_data(m, duplicate=duplicate)
            broker.send(session, encode("message_sent", data, self.env.now_ms(), request_id=msg.id))
            if not duplicate and not m.get("boxed") and not self.presence.connections_of(m["to_key"]):
                # the recipient was here at send time but left before the log had
                # it: keep it for the next connect after all (as a single node does)
                try:
                    self.commit.record({"t": "box", "id": m["id"]})
                except ProtocolError:
                    pass  # Redis unreachable: the recipient finds it with `sync`

        self.commit.record(record, applied, session.conn_id)

    def receipt(self, session: Session, msg: Inbound, record: dict[str, Any]) -> None:
        """Hand a `status` record to the log; an error if the log refused it."""

        def applied(result: object) -> None:
            if result is REFUSED:
                self._refused(session, msg)

        self.commit.record(record, applied, session.conn_id)

    # -- every node's live effects ----------------------------------------------------

    def _msg_applied(self, rec: dict[str, Any], m: Any, conn: str | None) -> None:
        if m is None or m.get("duplicate"):
            return
        if m.get("push") is not None:
            self._push_applied(m)
            return
        presence = self.presence
        sessions = presence.sessions
        skip = sessions.get(conn) if conn is not None else None
        to, me = m["to_key"], m["from_key"]
        targets = presence.connections_of(to)
        if to != me:
            targets = targets + presence.connections_of(me)
        if not targets:
            return
        frame = encode("new_message", new_message_data(m, offline=False), self.env.now_ms())
        self.broker.fan_out(targets, frame, skip)

    def _push_applied(self, m: dict[str, Any]) -> None:
        """A kept server push reached the log after its user connected here (the
        origin saw nobody): pushed as the mailbox would, and marked delivered."""
        to = party(m, "to")
        sessions = [
            s
            for s in self.presence.user_sessions(to.get("user_id"), to.get("user_type"), to.get("group_id"))
            if s.identity is not None and not s.identity.is_device
        ]
        if not sessions:
            return
        push = m["push"]
        now = self.env.now_ms()
        self.broker.fan_out(sessions, encode(push["type"], push["data"], now, extra={"message_id": m["id"], "offline": True}))
        try:
            self.commit.record({"t": "status", "id": m["id"], "status": "delivered", "time": now})
        except ProtocolError:
            pass  # Redis unreachable: it stays in the mailbox for the next connect

    def _status_applied(self, rec: dict[str, Any], result: Any, conn: str | None) -> None:
        store_message = self.store.message(rec["id"])
        if store_message is None:
            return
        presence = self.presence
        skip = presence.sessions.get(conn) if conn is not None else None
        targets = {s.conn_id: s for s in presence.connections_of(store_message["from_key"])}
        if rec["status"] == "read":  # the reader's other tabs mark it read too
            for s in presence.connections_of(store_message["to_key"]):
                if s is not skip:
                    targets[s.conn_id] = s
        if not targets:
            return
        now = self.env.now_ms()
        frame = encode("message_status", {"message_id": rec["id"], "status": rec["status"], "timestamp": rec["time"]}, now)
        self.broker.fan_out(targets.values(), frame)
