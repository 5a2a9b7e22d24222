"""Direct messages the business backend sends on a user's behalf (SPEC 13:
`POST /api/messages`, seed 003's "the backend saves, then pushes"), without I/O.

There is one direct-message path: a `SendAs` command runs the `send_message`
handler of `core.direct` itself, for a sender session that exists only for
this command (`BackendSender`: never in presence, so it holds no place in any
limit and gets nothing but this message's own reply). So a backend's message
has everything a client's has: its `message_id` and the recipient's `seq`,
the journal before any announcement, `new_message` to the recipient's
connections and to the sender's own (all of them: the backend is none of
them), the mailbox when the recipient is offline, receipts back to the
sender's connections, `history`, de-duplication by `client_msg_id`, the
mailbox quota, and the webhook events.

The reply (`message_sent`'s data) is captured once the message is durable
(the handler sends it through `CommitLog.after_commit`); the API waits for
durability, then reads it.
"""

from __future__ import annotations

import json
from typing import Any

from wsserver.core.commands import SendAs
from wsserver.core.identity import Identity
from wsserver.core.session import Handler, Session
from wsserver.errors import ProtocolError
from wsserver.protocol.envelope import Inbound

__all__ = ["BackendSender", "send_as"]


class BackendSender:
    """The outlet of a backend's sender session: it keeps the reply, answers
    `SendAs`, and is never closed by anyone (it is in no index)."""

    def __init__(self, by_session: bool = False) -> None:
        self.error: tuple[str, str, str | None, dict[str, Any]] | None = None
        self.by_session = by_session  # sent by `session_id` alone: one message per recipient
        self.sent: list[dict[str, Any]] = []  # each `message_sent`'s data, in the order sent

    @property
    def reply(self) -> dict[str, Any] | None:
        """The first `message_sent`'s data (the one a client's request `id` gets);
        by session, with `messages`: every recipient's, in the session's order."""
        if not self.sent:
            return None
        if self.by_session:
            return {**self.sent[0], "messages": self.sent}
        return self.sent[0]

    def deliver(self, frame: str | bytes, soon: bool = False) -> bool:
        msg = json.loads(frame)
        if msg.get("type") == "message_sent":
            self.sent.append(msg["data"])
        return True

    def close(self, code: int, reason: str, /, **params: object) -> None:
        """Nothing to close."""

    def close_after_queued(self, code: int, reason: str, /, **params: object) -> None:
        """Nothing to close."""


def send_as(handler: Handler, cmd: SendAs, now: float) -> BackendSender:
    """Run the `send_message` `handler` for `cmd`'s sender; its answer."""
    outlet = BackendSender(by_session=cmd.data.get("to_user_id") is None)
    identity = Identity(user_id=cmd.user_id, user_type=cmd.user_type, username=cmd.username, group_id=cmd.group_id)
    session = Session("api", outlet, "", "", now, identity=identity)
    try:
        handler(session, Inbound("send_message", cmd.data, None, {"type": "send_message", "data": cmd.data}))
    except ProtocolError as err:
        outlet.error = (str(err.code), err.key, err.field, dict(err.params))
    return outlet
