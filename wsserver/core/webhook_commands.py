"""The commands of the webhook sender (`net.webhooks`, SPEC 6.2): what the sender
task asks of the outbox (`core.webhooks`), and the ping of `POST /api/webhooks/test`.
Kept apart from `core.commands`: one concern, one task sends them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import attrs

from wsserver.core.commands import Command

__all__ = [
    "WebhookBatch",
    "WebhookDelivery",
    "WebhookDone",
    "WebhookDoneMany",
    "WebhookDue",
    "WebhookPing",
    "WebhookStart",
]


class WebhookDelivery(NamedTuple):
    """One attempt at delivering an event: `event` is the outbox's record of it,
    read-only (its body is `protocol.webhook.event_body(event)`: `{id, event,
    time, node, data}`); `seq` and `lane` name it in the report of
    the attempt (`WebhookDoneMany`); `attempt` counts from 1. (A named tuple:
    one is made per event and attempt, far cheaper than a frozen class.)"""

    seq: int
    lane: str
    event: dict[str, Any]
    attempt: int


@attrs.frozen
class WebhookBatch:
    """What the sender may deliver now; `wait`, the seconds until something else
    falls due (a retry, a check, an expiry), None for "until woken"; the
    events `queued`, and the events `dropped` since the start, by reason.
    `hot`: a lane handed out holds more than `HOT_LANE` events, so the next
    round should go as soon as the sender is woken, without gathering."""

    deliveries: tuple[WebhookDelivery, ...]
    wait: float | None
    queued: int
    dropped: dict[str, int]
    hot: bool = False


@attrs.frozen
class WebhookStart(Command[None]):
    """The sender (re)starts: nothing is in flight any more, and principals the
    receiver still believes online but that have no connection get their
    `user_offline`. `wake` (non-blocking, run in the actor) is called when an
    event becomes deliverable while the sender waits."""

    wake: Callable[[], None]


@attrs.frozen
class WebhookDue(Command[WebhookBatch]):
    """Run what fell due (undelivered checks, expiries) and hand out up to `limit`
    events: the oldest waiting event of each principal with none in flight."""

    limit: int


@attrs.frozen
class WebhookDone(Command[None]):
    """The attempt at event `seq` of `lane` ended: `ok` (2xx) removes the event,
    anything else schedules a retry of it after the backoff."""

    seq: int
    lane: str
    ok: bool


@attrs.frozen
class WebhookDoneMany(Command[int]):
    """Several attempts ended (one pipelined exchange's): `ok[i]` (2xx) removes the
    event of `deliveries[i]`, anything else schedules a retry of it after the
    backoff. Reported at once, so that their acknowledgements take one record.
    Answers the events queued now (the metrics' gauge)."""

    deliveries: tuple[WebhookDelivery, ...]
    ok: tuple[bool, ...]


@attrs.frozen
class WebhookPing(Command["dict[str, Any]"]):
    """A `ping` event (`POST /api/webhooks/test`), made but not queued."""
