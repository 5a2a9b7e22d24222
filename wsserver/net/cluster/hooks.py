"""Which node of a cluster sends the webhook events: the holder of a lease in Redis.

Every node holds the same outbox (its `hook*` records go through the shared
log, `core.webhooks`), so exactly one node must send it, else the receiver
would get each event once per node. The sender is the node holding

    <prefix>:hooks:sender    string: the node id, with an expiry (PX)

taken with one script (`_LEASE`: set when absent, prolonged when this node's
own) at start and every `cluster.heartbeat`, for `cluster.node_ttl`. A node
that holds it runs the sender (`net.webhooks.WebhookSender.run`), which
starts with a fresh schedule (every lane with events ready); a node that
cannot prolong it (Redis unreachable, or another node took it after it
lapsed) stops sending at once. A killed sender's lease lapses within
`node_ttl` and the next node to ask (each asks every heartbeat) takes it over and resumes where the
recorded answers (`hook_upto`) stopped: at least once, each event with its
id. A graceful stop gives the lease up at once (`release`): another node
takes it at its next heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from wsserver.config import ClusterConfig
from wsserver.net.cluster.link import REDIS_ERRORS, Link

__all__ = ["HookLease"]

log = logging.getLogger("wsserver.cluster")

_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

Run = Callable[..., Awaitable[None]]


class HookLease:
    """Runs `sender` (a `keep_running`-style task) while this node holds the lease."""

    def __init__(self, link: Link, prefix: str, node: Callable[[], str], config: Callable[[], ClusterConfig]) -> None:
        self.link = link
        self.key = f"{prefix}:hooks:sender"
        self.node = node
        self.config = config
        self.sender: Run | None = None  # set by the server when webhooks.url is set
        self.holding = False
        self._scope: trio.CancelScope | None = None  # the running sender's

    async def acquire(self) -> bool:
        """Take or prolong the lease; whether this node holds it (False while
        Redis does not answer)."""
        ttl_ms = int(self.config().node_ttl * 1000)
        try:
            got = await self.link.client.eval(_LEASE, [self.key], [self.node(), ttl_ms])
        except REDIS_ERRORS:
            return False
        return bool(got == 1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ask for the lease every `cluster.heartbeat`; send while holding it."""
        task_status.started()
        sender = self.sender
        if sender is None:
            return
        async with trio.open_nursery() as nursery:
            while True:
                holding = await self.acquire()
                if holding and self._scope is None:
                    log.info("cluster: this node sends the webhook events")
                    self._scope = await nursery.start(self._send, sender)
                elif not holding and self._scope is not None:
                    log.info("cluster: this node no longer sends the webhook events")
                    self._stop_sending()
                self.holding = holding
                await trio.sleep(self.config().heartbeat)

    def _stop_sending(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    async def _send(self, sender: Run, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await sender()

    async def release(self) -> None:
        """(A graceful stop.) Stop sending and give the lease up, so that another
        node takes it at its next heartbeat."""
        self._stop_sending()
        if not self.holding:
            return
        with trio.move_on_after(2):
            try:
                await self.link.client.eval(_RELEASE, [self.key], [self.node()])
            except REDIS_ERRORS as exc:
                log.warning("cluster: could not give up the webhook sender's lease (%s)", exc)
        self.holding = False
