"""The Redis publish channel: `PUBLISH <prefix>:publish <body>` is a publish.

A backend with access to the cluster's Redis may publish without the HTTP
API (SPEC 13, seed 004's path): the body is what `POST /api/publish` takes.
Every node subscribes to `<prefix>:publish` and hands each message's bytes to
the handler the API installed (`api.channel`), which checks and runs it as
the route does. Who delivers what (docs/CLUSTER.md):

- a publish without `persist`: every node delivers to its OWN connections
  only (never on the bus), so each connection gets it once, in the order
  Redis delivered the channel, with no coordination and no Redis command
  per message;
- a `persist` publish must be stored once: the node that wins `claim` (a
  `SET NX` on the body's hash, kept `CLAIM_TTL` seconds) runs it as the
  HTTP route does (its own connections, then the shared log for the users
  connected elsewhere or nowhere); the others do nothing with it.

Like the bus, the subscription probes itself: every `heartbeat` the node
publishes on its own probe channel `<prefix>:publish:probe:<node id>`,
subscribed next to the publish channel, and opens the subscription again
when its probe stopped arriving (a Redis restart can leave a dead
subscription that coredis notices late).

Invariants: nothing here blocks the hub (the handler reaches it through its
actor); a message is handled whole before the next one (the channel's
order); a handler's failure is logged and never ends the subscription.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress

import trio
from coredis.tokens import PureToken

from wsserver.net.cluster.link import REDIS_ERRORS, Link, Resubscriber

__all__ = ["CLAIM_TTL", "ChannelHandler", "PublishChannel", "claim_key"]

log = logging.getLogger("wsserver.cluster")

CLAIM_TTL = 10.0
"""Seconds a `persist` publish's claim is kept: the nodes all see a message
within it, and the same body published again within it is the same publish."""

Claim = Callable[[], Awaitable[bool]]
ChannelHandler = Callable[[bytes, Claim], Awaitable[None]]
"""The API's handler of one message: its bytes, and the claim it awaits when
only one node may run it (True: this node won)."""


def claim_key(prefix: str, body: bytes) -> str:
    """The Redis key a `persist` publish of `body` is claimed under."""
    return f"{prefix}:publish:claim:{hashlib.sha256(body).hexdigest()}"


class PublishChannel:
    """One node's subscription to `<prefix>:publish` (see the module docstring)."""

    def __init__(
        self,
        link: Link,
        prefix: str,
        node: Callable[[], str],
        heartbeat: Callable[[], float],
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.channel = f"{prefix}:publish"
        self.node = node  # this node's id (known once the state is loaded)
        self.heartbeat = heartbeat  # `cluster.heartbeat`, read on use
        self.handler: ChannelHandler | None = None  # the API's, once installed
        self.received = 0
        self._kept = Resubscriber(link, self.channel, heartbeat)
        self.subscribed = trio.Event()

    def _probe_channel(self) -> str:
        return f"{self.channel}:probe:{self.node()}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The subscriber and its probe, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._kept.keep, self._subscription)
            nursery.start_soon(self._probe)
            task_status.started()

    async def _probe(self) -> None:
        """Publish this node's probe every heartbeat; cancel the subscription
        when the probe has not come back for `2 * heartbeat + 1` seconds."""
        while True:
            beat = self.heartbeat()
            with trio.move_on_after(beat), suppress(*REDIS_ERRORS):  # the subscription notices
                await self.link.client.publish(self._probe_channel(), b"")
            await trio.sleep(beat)
            self._kept.restart_if_quiet()

    async def _subscription(self) -> None:
        probe = self._probe_channel()
        async with self.link.client.pubsub(channels=[self.channel, probe]) as sub:
            self.subscribed.set()
            async for message in sub:
                if message["type"] != "message":
                    continue
                channel = message["channel"]
                if (channel.decode("utf-8", "replace") if isinstance(channel, bytes) else channel) == probe:
                    self._kept.heard()
                    continue
                self.received += 1
                await self._handle(message["data"])

    async def _handle(self, data: bytes | str) -> None:
        body = data if isinstance(data, bytes) else data.encode("utf-8")
        handler = self.handler
        if handler is None:
            return  # no API installed on this server: nothing takes publishes

        async def claim() -> bool:
            won = await self.link.client.set(
                claim_key(self.prefix, body), self.node(), condition=PureToken.NX, px=int(CLAIM_TTL * 1000)
            )
            return bool(won)

        try:
            await handler(body, claim)
        except REDIS_ERRORS as exc:  # the claim or the durable store: Redis went away
            self.link.mark_down(exc)
            log.warning("cluster: a PUBLISH on %s was not run: Redis does not answer (%s)", self.channel, exc)
        except Exception:
            log.exception("cluster: a PUBLISH on %s failed", self.channel)

