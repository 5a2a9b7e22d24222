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
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import coredis
import trio

from wsserver.ops.background import Background

__all__ = ["REDIS_ERRORS", "TASK", "Link", "Resubscriber"]

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


class Resubscriber:
    """A Pub/Sub subscription kept up: opened again after it fails (a pause of
    `min(1, heartbeat)`), and cancelled (so opened again) when nothing expected
    has come on it for `2 * heartbeat + 1` seconds. The subscription calls
    `heard()` for what proves it alive (a node's own heartbeat or probe)."""

    def __init__(self, link: Link, channel: str, heartbeat: Callable[[], float]) -> None:
        self.link = link
        self.channel = channel  # (for the log)
        self.heartbeat = heartbeat
        self.seen = 0.0
        self._scope: trio.CancelScope | None = None

    def heard(self) -> None:
        self.seen = trio.current_time()

    def quiet_for(self) -> float:
        """How long silence may last before the subscription counts as lost."""
        return 2 * self.heartbeat() + 1

    async def keep(self, subscription: Callable[[], Awaitable[None]]) -> None:
        """Run `subscription` forever, opening it again whenever it ends."""
        while True:
            self.heard()
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    await subscription()
                except REDIS_ERRORS as exc:
                    self.link.mark_down(exc)
            await trio.sleep(min(1.0, self.heartbeat()))

    def restart_if_quiet(self) -> None:
        """Cancel the subscription when it has been quiet too long."""
        quiet = self.quiet_for()
        if trio.current_time() - self.seen >= quiet and self._scope is not None:
            log.warning("cluster: nothing on %s for %.1f s, subscribing again", self.channel, quiet)
            self.heard()
            self._scope.cancel()
