"""Telling senders that their undelivered messages expired (SPEC 13).

When a mailbox drops a message nobody received (`messages.mailbox_limit`
pushed it out, or `messages.mailbox_ttl` passed), the sender's connections
get `message_status {message_id, status: "expired", timestamp}`, so a chat
client can mark it as never delivered. Server pushes kept for offline users
(`persist`) have no sender and are not reported.

The status is not stored: the message is gone from the mailbox, and `expired`
is no step in a message's `sent → delivered → read`. The messages the limit
pushes out are the oldest durable ones of the mailbox (a message still being
written when the limit drops it is not reported).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.commit import CommitLog
from wsserver.protocol.envelope import encode

__all__ = ["announce_expired"]


def announce_expired(commit: CommitLog, broker: Broker, dropped: Iterable[dict[str, Any]], now_ms: int) -> None:
    """`message_status expired` to the senders of `dropped`, once the drop is durable."""
    reports = [
        (m["from_key"], encode("message_status", {"message_id": m["id"], "status": "expired", "timestamp": now_ms}, now_ms))
        for m in dropped
        if m.get("push") is None
    ]
    if not reports:
        return

    def announce() -> None:
        for sender, frame in reports:
            broker.to_principal(sender, frame)

    commit.after_commit(announce)
