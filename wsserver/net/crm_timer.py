"""The CRM's day boundary: at each new day in `crm.timezone`, dashboards get
their zeroed "today" counters.

The hub says how long until its next midnight (`NextMidnight`) and does the
day's change itself (`Midnight`, `core.crm`); this task only sleeps until
then, on the trio clock. A push that fails is retried after the backoff
(`Background.supervised`) without sleeping to the next midnight first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from wsserver.core.commands import Midnight, NextMidnight

if TYPE_CHECKING:
    from wsserver.net.actor import HubActor
    from wsserver.ops.background import Background

__all__ = ["midnights"]


async def midnights(actor: HubActor, background: Background) -> None:
    """At each new day in `crm.timezone`, dashboards get their zeroed "today"
    counters; a push that fails is retried (`Background.supervised`)."""
    due = False

    async def midnight() -> None:
        nonlocal due
        if not due:
            wait_ms = await actor.call(NextMidnight())
            await trio.sleep(wait_ms / 1000 + 0.2)
            due = True
        await actor.call(Midnight())
        due = False

    await background.supervised("midnights", midnight)
