"""The webhook sender: trio tasks that deliver the outbox's events over HTTP.

The hub only appends events (`core.webhooks`); the sender asks it for what is
due (`WebhookDue`), POSTs each event outside the hub actor, and reports every
attempt (`WebhookDoneMany`: a 2xx removes the event, anything else schedules
a retry after the backoff). The hub decides the order and the retries; here
is only the waiting on the network:

- One task per connection to the receiver (`CONNECTIONS` of them, through
  `net.http_pipeline`): each takes what is queued, up to `webhooks.pipeline`
  events, writes their requests at once on its kept-alive connection
  (HTTP/1.1 pipelining), reads the answers in order and reports them to the
  hub in one command. At most `CONNECTIONS` × `webhooks.pipeline` events are
  in flight, one per principal (the hub hands out a principal's next event
  only after its previous one ended), so the order per principal holds
  whatever connection an event takes, and a receiver that hangs holds this
  many requests and nothing else: the hub never waits on it.
- Each exchange is bounded by `webhooks.timeout` as a whole (connect, send,
  the answers, and the one resend of the unanswered requests on a fresh
  connection when one broke or sent something malformed); at most
  `MAX_ANSWER_BYTES` of an answer's body are read.
- Each attempt is signed afresh (`protocol.webhook`).
- Between rounds the main task sleeps until the hub wakes it (new durable
  events, a check that falls due sooner, a failed attempt, an answer that
  left room in flight for lanes that wait) or until the next retry, check or
  expiry is due, and then `GATHER` seconds more, so that a busy hub's events
  go out in batches of many (an event waits that much longer before it is
  sent; the rounds are at most 1/`GATHER` a second). A lane gets one event
  per round: while a lane handed out holds many more (`HOT_LANE`), the next
  round goes as soon as the sender is woken, so that a busy principal is not
  held to the rounds' pace.

It runs only when `webhooks.url` is set, under `Background.keep_running`
("webhooks"): a failure of the task itself is logged, counted and retried,
and `/readyz` names it meanwhile; a restart tells the hub (`WebhookStart`),
which hands out again what was in flight. A receiver that fails is not a
failure of the task: it is counted in the metrics
(`wsserver_webhooks_failed_total{reason}`) and logged once per streak.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from wsserver.core.webhook_commands import (
    WebhookBatch,
    WebhookDelivery,
    WebhookDoneMany,
    WebhookDue,
    WebhookStart,
)
from wsserver.net.http_client import ConnectionBroken, HttpPool, Target
from wsserver.net.http_pipeline import PipelinedClient, RequestTemplate
from wsserver.protocol.webhook import attempt_headers, event_body, event_headers, signature

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.net.actor import HubActor
    from wsserver.ops.metrics import Metrics

__all__ = ["CONNECTIONS", "MAX_ANSWER_BYTES", "WebhookSender", "encode_requests"]

log = logging.getLogger("wsserver.webhooks")

CONNECTIONS = 16
"""Connections to the receiver at most, each carrying up to `webhooks.pipeline`
requests at once (each event of another principal)."""
MAX_ANSWER_BYTES = 65536
"""Bytes of a receiver's answer read at most (only its status counts)."""
MIN_WAIT = 0.01
"""Seconds the task sleeps at least between two rounds that found nothing to send."""
GATHER = 0.04
"""Seconds the task waits, once woken, before it asks for what is due: the events
made meanwhile go in the same round, pipelined in few exchanges, instead of a
round (a hub command, a write, a read, a report) for every event or two."""


class WebhookHost(Protocol):
    """What the sender uses of its server (`net.server.Server`)."""

    @property
    def config(self) -> Config: ...
    @property
    def actor(self) -> HubActor: ...
    @property
    def metrics(self) -> Metrics: ...


class WebhookSender:
    """Delivers the hub's webhook events (see the module docstring)."""

    def __init__(self, host: WebhookHost) -> None:
        self.host = host
        self.in_flight = 0
        self._woken = trio.Event()
        self._asked = self._gauged = 0  # hub commands answering the queue's length: sent, gauged
        self._dropped: dict[str, int] = {}  # totals already counted in the metrics
        self._failing = False  # in a streak of failed attempts (logged once)
        self._scope: trio.CancelScope | None = None  # the running round's, for `stop()`
        self._stopped = False
        self._target: tuple[str, Target] | None = None  # webhooks.url, parsed once

    def wake(self) -> None:
        """(Called by the hub, in the actor.) Something became deliverable."""
        self._woken.set()

    def stop(self) -> None:
        """Stop delivering (shutdown: before the last snapshot, so that no answer
        arrives for the journal once it is closed). Unanswered events stay queued."""
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver events until cancelled or stopped."""
        with trio.CancelScope() as self._scope:
            if self._stopped:
                self._scope.cancel()
            await self._run(task_status)

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        actor = self.host.actor
        cfg = self.host.config.webhooks
        target = Target.parse(cfg.url)
        capacity = CONNECTIONS * cfg.pipeline
        queue: deque[WebhookDelivery] = deque()
        ready = trio.lowlevel.ParkingLot()  # connection tasks waiting for work
        client = PipelinedClient(target, CONNECTIONS, max_answer=MAX_ANSWER_BYTES)
        async with client, trio.open_nursery() as nursery:
            self.in_flight = 0
            self._woken = trio.Event()
            for _ in range(CONNECTIONS):
                nursery.start_soon(self._connection, client, RequestTemplate.of(target), queue, ready)
            await actor.call(WebhookStart(self.wake))
            task_status.started()
            while True:
                self._woken = trio.Event()
                asked = self._ask()
                batch = await actor.call(WebhookDue(capacity - self.in_flight))
                self._count(batch, asked)
                if batch.deliveries:
                    self.in_flight += len(batch.deliveries)
                    queue.extend(batch.deliveries)
                    # as many connections as the queue fills, the rest stay parked
                    ready.unpark(count=-(-len(queue) // cfg.pipeline))
                wait = math.inf if batch.wait is None else max(batch.wait, MIN_WAIT)
                with trio.move_on_after(wait):
                    await self._woken.wait()
                if not batch.hot:
                    await trio.sleep(GATHER)  # let what else comes now join this round

    def _ask(self) -> int:
        """Number a hub command that answers the queue's length: the hub runs them
        in the order they were sent, their answers may come back in another."""
        self._asked += 1
        return self._asked

    def _gauge(self, asked: int, queued: int) -> None:
        """Set the queue gauge to the answer of command `asked`, unless a later one
        set it already."""
        if asked > self._gauged:
            self._gauged = asked
            self.host.metrics.webhook_queue(queued)

    def _count(self, batch: WebhookBatch, asked: int) -> None:
        metrics = self.host.metrics
        self._gauge(asked, batch.queued)
        for reason, total in batch.dropped.items():
            new = total - self._dropped.get(reason, 0)
            if new > 0:
                metrics.webhook_dropped(reason, new)
                log.warning("webhook events dropped (%s): %d", reason, new)
            self._dropped[reason] = total

    async def _connection(
        self, client: PipelinedClient, template: RequestTemplate, queue: deque[WebhookDelivery], ready: trio.lowlevel.ParkingLot
    ) -> None:
        """One connection's task: deliver what is queued, up to `webhooks.pipeline`
        events per exchange, until cancelled."""
        depth = self.host.config.webhooks.pipeline
        while True:
            while not queue:
                await ready.park()
            take = min(depth, len(queue))
            deliveries = [queue.popleft() for _ in range(take)]
            await self._deliver(client, template, deliveries)

    async def _deliver(self, client: PipelinedClient, template: RequestTemplate, deliveries: list[WebhookDelivery]) -> None:
        """One exchange: the deliveries' requests pipelined on one connection, the
        outcome of each reported to the hub at once."""
        cfg = self.host.config.webhooks
        requests = encode_requests(template, deliveries, cfg.secret, int(time.time()))
        statuses: list[int] = []
        error: str | None = "timeout"
        with trio.move_on_after(cfg.timeout):
            error = await client.exchange(requests, statuses)
        self.in_flight -= len(deliveries)
        ok = [200 <= status < 300 for status in statuses]
        if len(ok) < len(deliveries):
            ok += [False] * (len(deliveries) - len(ok))
        asked = self._ask()
        self._gauge(asked, await self.host.actor.call(WebhookDoneMany(tuple(deliveries), tuple(ok))))
        self._report(deliveries, ok, statuses, error)

    def _report(self, deliveries: list[WebhookDelivery], ok: list[bool], statuses: list[int], error: str | None) -> None:
        """Count and log the attempts of one exchange (the metrics bumped once per
        exchange, not per event)."""
        metrics = self.host.metrics
        now_ms = time.time() * 1000
        ages: list[float] = []
        retries = 0
        for n, (_, _, event, attempt) in enumerate(deliveries):
            if attempt > 1:
                retries += 1
            if ok[n]:
                ages.append(max(0.0, (now_ms - event["time"]) / 1000))
                if self._failing:
                    self._recovered()
                continue
            status = statuses[n] if n < len(statuses) else None
            reason = _status_reason(status) if status is not None else (error or "network").partition(":")[0]
            metrics.webhook_failed(reason)
            if not self._failing:
                self._failing = True
                log.warning(
                    "webhook %s (%s) not delivered: %s; retrying with backoff",
                    event["event"], event["id"], error if status is None else f"HTTP {status}",
                )  # fmt: skip
        metrics.webhooks_delivered(ages)
        if retries:
            metrics.webhook_retried(retries)

    def _recovered(self) -> None:
        """An attempt succeeded: a streak of failures (logged once) ends."""
        if self._failing:
            self._failing = False
            log.info("webhook receiver answers 2xx again")

    async def post(self, client: HttpPool, event: dict[str, Any]) -> tuple[int | None, str | None]:
        """POST one signed event: (the receiver's status, None), or (None, why not:
        `"timeout"` or `"network: <what>"`)."""
        cfg = self.host.config.webhooks
        if self._target is None or self._target[0] != cfg.url:
            self._target = (cfg.url, Target.parse(cfg.url))
        body = event_body(event)
        headers = event_headers(event["event"], body, cfg.secret, int(time.time()))
        with trio.move_on_after(cfg.timeout):
            try:
                status = await client.request(self._target[1], body, headers.items(), max_answer=MAX_ANSWER_BYTES)
            except (ConnectionBroken, OSError, trio.BrokenResourceError) as exc:
                return None, f"network: {_why(exc)}"
            return status, None
        return None, "timeout"

    async def ping(self, event: dict[str, Any]) -> dict[str, Any]:
        """Send one event now, outside the outbox (`POST /api/webhooks/test`):
        `{id, status, ok, error, elapsed_ms}`."""
        started = trio.current_time()
        async with HttpPool(1) as client:
            status, error = await self.post(client, event)
        return {
            "id": event["id"],
            "status": status,
            "ok": status is not None and 200 <= status < 300,
            "error": error,
            "elapsed_ms": round((trio.current_time() - started) * 1000, 1),
        }


def encode_requests(template: RequestTemplate, deliveries: Sequence[WebhookDelivery], secret: str, timestamp: int) -> list[bytes]:
    """(Sans-IO.) The whole request of each delivery, signed at `timestamp` (Unix
    seconds) with `secret` (unsigned when empty): the headers an event name's
    requests share are encoded once."""
    requests: list[bytes] = []
    append, finish = requests.append, template.finish
    heads: dict[str, bytes] = {}  # by event name: the template and the headers its requests share
    for _, _, event, _ in deliveries:
        name = event["event"]
        body = event_body(event)
        head = heads.get(name)
        if head is None:
            head = heads[name] = template.prefix(attempt_headers(name, timestamp).items())
        if secret:
            append(finish(head + b"X-Wsserver-Signature: %s\r\n" % signature(secret, timestamp, body).encode("ascii"), body))
        else:
            append(finish(head, body))
    return requests


def _status_reason(status: int | None) -> str:
    """The metrics' reason for a non-2xx answer."""
    if status is not None and 400 <= status < 500:
        return "http_4xx"
    if status is not None and 500 <= status < 600:
        return "http_5xx"
    return "http_other"


def _why(exc: BaseException) -> str:
    """What broke, for the log and the ping's answer (the cause's class name)."""
    cause = exc.__cause__ if isinstance(exc, ConnectionBroken) and exc.__cause__ else exc
    return type(cause).__name__
