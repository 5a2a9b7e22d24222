"""The bus: ephemeral deliveries between nodes over one Redis Pub/Sub channel.

The hub's `ClusterBroker` hands `(route, frame)` to `Bus.outlet` (a bounded
memory channel, never blocking); the publisher task drains it and publishes
each hand-over as ONE Redis message on `<prefix>:bus`, several at a time in
one pipeline, in the order they were handed over (so per sender, in order).
The subscriber task receives every message of the channel and gives each
other node's delivery to the hub as a `Deliver` command; the frame is built
once per node (`Wire`) however many connections take it.

A bus message is `<header JSON>\\n<frame>`: the header `[origin node id,
route]` has no raw newline (JSON), the frame follows as it was encoded. A
route `["hb"]` is a node's heartbeat on the bus: the subscriber expects its
own within `2 * heartbeat + 1` seconds and otherwise opens its subscription
again (a Redis restart between two probes leaves a dead subscription that
coredis may take long to notice).

Invariants: nothing here blocks the hub; a hand-over that cannot be
published (Redis down) is dropped and counted, never retried (the frames are
ephemeral; durable ones travel by the shared log).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from wsserver.core.broker import Frame
from wsserver.core.cluster_broker import Route
from wsserver.core.cluster_commands import Deliver
from wsserver.net.cluster.link import REDIS_ERRORS, Link, Resubscriber, receive_batch
from wsserver.protocol.envelope import Wire, type_of

__all__ = ["HEARTBEAT", "OUTBOX_SIZE", "Bus", "decode", "encode_message"]

log = logging.getLogger("wsserver.cluster")

OUTBOX_SIZE = 8192
"""Hand-overs waiting for the publisher; a full outbox drops (the hub never waits)."""

BATCH = 256
"""At most this many hand-overs per pipeline."""

HEARTBEAT = "hb"


def encode_message(origin: str, route: Route | list[Any], frame: Frame) -> bytes:
    """One bus message: the header line, then the frame's bytes."""
    payload = frame if isinstance(frame, bytes) else frame.encode("utf-8")
    header = json.dumps([origin, route], separators=(",", ":"), ensure_ascii=False)
    return header.encode("utf-8") + b"\n" + payload


def decode(message: bytes) -> tuple[str, list[Any], bytes]:
    """`(origin, route, frame bytes)` of a bus message (ValueError when malformed)."""
    header, sep, payload = message.partition(b"\n")
    if not sep:
        raise ValueError("no header line")
    origin, route = json.loads(header)
    if not isinstance(origin, str) or not isinstance(route, list) or not route:
        raise ValueError("bad header")
    return origin, route, payload


class Bus:
    """The publisher and the subscriber of `<prefix>:bus` for one node."""

    def __init__(
        self,
        link: Link,
        prefix: str,
        node: Callable[[], str],
        deliver: Callable[[Deliver], Awaitable[None]],
        heartbeat: Callable[[], float],
    ) -> None:
        self.link = link
        self.channel = f"{prefix}:bus"
        self.node = node  # this node's id (known once the state is loaded)
        self.deliver = deliver  # the hub's door (`HubActor.tell`)
        self.heartbeat = heartbeat  # `cluster.heartbeat`, read on use
        self._send, self._receive = trio.open_memory_channel[tuple[Route, Frame]](OUTBOX_SIZE)
        self.dropped = 0  # hand-overs not published (Redis down)
        self.published = 0
        self.received = 0
        self._kept = Resubscriber(link, self.channel, heartbeat)
        self.subscribed = trio.Event()

    def outlet(self, route: Route, frame: Frame) -> bool:
        """The hub's hand-over (`core.cluster_broker.BusOutlet`): never blocks."""
        try:
            self._send.send_nowait((route, frame))
        except trio.WouldBlock:
            return False
        return True

    async def publish_heartbeat(self) -> None:
        """This node's probe of its own subscription (see the module docstring)."""
        await self.link.client.publish(self.channel, encode_message(self.node(), [HEARTBEAT], b""))

    # -- publisher ---------------------------------------------------------------

    async def publisher(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish the hand-overs in order, a pipeline per batch waiting."""
        task_status.started()
        receive = self._receive
        channel = self.channel
        while True:
            batch = await receive_batch(receive, BATCH)
            origin = self.node()
            messages = [encode_message(origin, route, frame) for route, frame in batch]
            try:
                if len(messages) == 1:
                    await self.link.client.publish(channel, messages[0])
                else:
                    async with self.link.client.pipeline(transaction=False) as pipe:
                        for message in messages:
                            pipe.publish(channel, message)
            except REDIS_ERRORS as exc:
                self.dropped += len(messages)
                self.link.mark_down(exc)
            else:
                self.published += len(messages)
                self.link.mark_up()

    # -- subscriber --------------------------------------------------------------

    async def subscriber(self) -> None:
        """Receive the channel's messages forever, subscribing again whenever the
        subscription fails or goes quiet (`watch`). `subscribed` is set once the
        first subscription is up."""
        await self._kept.keep(self._subscription)

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Cancel the subscription when this node's own heartbeat stopped coming."""
        task_status.started()
        kept = self._kept
        while True:
            await trio.sleep(max(0.05, kept.seen + kept.quiet_for() - trio.current_time()))
            kept.restart_if_quiet()

    async def _subscription(self) -> None:
        client = self.link.client
        async with client.pubsub(channels=[self.channel]) as sub:
            self.subscribed.set()
            me = self.node()
            async for message in sub:
                if message["type"] != "message":
                    continue
                try:
                    origin, route, payload = decode(message["data"])
                except ValueError as exc:
                    log.warning("cluster: malformed bus message ignored: %s", exc)
                    continue
                if origin == me:
                    if route[0] == HEARTBEAT:
                        self._kept.heard()
                    continue
                if route[0] == HEARTBEAT:
                    continue
                self.received += 1
                wire = Wire.from_json(payload)
                wire.mtype = type_of(wire)
                await self.deliver(Deliver(tuple(route), wire))
