"""The node's link to Redis: one coredis client, and whether Redis answers.

`Link` owns the client the node's cluster tasks share (`Cluster` holds it
open while they run) (the bus's publisher,
the node heartbeat, presence, `/api/nodes`); the Pub/Sub subscriber opens its
own connection from it. coredis connects on demand and again after a failure,
so reconnecting is each task's next command: there is no connection to
restore by hand. What `Link` keeps is the health: a command that fails with a
connection error marks Redis down (logged once, `/readyz` answers 503 naming
`redis`), the next one that succeeds marks it up again.

Invariants: `up` is False from a failed command until one succeeds; the
transitions are logged once each, never per command.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import coredis
import trio

from wsserver.ops.background import Background

__all__ = ["REDIS_ERRORS", "TASK", "Link"]

log = logging.getLogger("wsserver.cluster")

TASK = "redis"
"""The name `/readyz` reports while Redis does not answer."""

REDIS_ERRORS = (
    coredis.exceptions.RedisError,
    OSError,
    trio.TooSlowError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
)
"""What a command against an unreachable or failing Redis raises (coredis's
connections are anyio streams)."""


class Link:
    """One coredis client and Redis's health as this node sees it."""

    def __init__(self, url: str, background: Background) -> None:
        self.url = url
        self.client: Any = coredis.Redis.from_url(url)
        self.background = background
        self.up = False

    def mark_up(self) -> None:
        """A command succeeded."""
        if not self.up:
            self.up = True
            self.background.recovered(TASK)
            log.info("cluster: connected to Redis")

    def mark_down(self, exc: BaseException) -> None:
        """A command failed for want of Redis."""
        if self.up or TASK not in self.background.failing():
            self.up = False
            self.background.failed(TASK, exc)


async def receive_batch(receive: trio.MemoryReceiveChannel[Any], limit: int) -> list[Any]:
    """The next item of `receive` (waiting for it) and those queued behind it, at
    most `limit`: what a writer task sends to Redis in one round trip."""
    batch = [await receive.receive()]
    while len(batch) < limit:
        try:
            batch.append(receive.receive_nowait())
        except trio.WouldBlock:
            break
    return batch
