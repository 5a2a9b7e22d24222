"""Prometheus metrics of one server, rendered in the text format by prometheus-client.

Invariants:

- Each `Metrics` owns its `CollectorRegistry` (never the library's global one),
  so several servers in one process (tests, an embedding host) never clash.
- The hot path (every WebSocket frame in or out) only bumps plain ints and
  dicts; they become metric families when `/metrics` is scraped. The webhook
  sender's delivery histogram is plain counts too, bumped once per exchange.
- Hub state (connections by kind, mailboxes, rooms) is never read from here:
  the `/metrics` handler fetches it through the hub actor
  (`HubAdmin.stats`) and passes it to `render`.
- Label values are bounded, whatever clients send: an inbound message type
  has its own label only when the server handles it (the connection's own
  types, the hub's handlers, a type an embedding host registered), every
  other type counts as `"unknown"`; outbound types are the server's own, at
  most `MAX_TYPE_LABELS` of them (then `"other"`); HTTP methods outside a
  fixed set are `"other"`, and reasons and close codes come from the server's
  own catalogue.

Metric names (all prefixed `wsserver_`): `connections{kind}`, `principals`,
`rooms`, `groups`, `mailboxes`, `mailbox_messages`, `registry_queue_depth`,
`uptime_seconds`, `build_info{version}`, `handshakes_total{result}`,
`auth_failures_total{reason}`, `auth_throttled_total{via}`, `messages_in_total{type}`,
`messages_out_total{type}`, `bytes_in_total`, `bytes_out_total`,
`messages_dropped_total{reason}`, `closes_total{code}`,
`slow_consumer_closes_total`, `http_requests_total{method,status}`,
`background_failures_total{task}`, `webhooks_sent_total`,
`webhooks_failed_total{reason}`, `webhooks_retried_total`,
`webhooks_dropped_total{reason}`, `webhooks_queue`,
`redis_publish_rejected_total{reason}`, and the histograms
`http_request_duration_seconds`, `storage_fsync_seconds`,
`webhooks_delivery_seconds`, `session_duration_seconds` and
`publish_latency_seconds`; plus prometheus-client's process collector
(`process_cpu_seconds_total`, `process_resident_memory_bytes`,
`process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
`process_start_time_seconds`, unprefixed as everywhere).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from bisect import bisect_left
from collections.abc import Container, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wsserver._version import __version__
from wsserver.errors import CloseCode
from wsserver.protocol.envelope import Wire, type_of

__all__ = ["CONTENT_TYPE", "MAX_TYPE_LABELS", "Metrics", "frame_type"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of what `generate_latest` writes."""

MAX_TYPE_LABELS = 256
UNKNOWN_TYPE = "unknown"  # the label of every inbound type the server does not handle
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def frame_type(frame: str | bytes) -> str:
    """The `type` of a frame the server encoded (`{"type":"<name>",...`), read
    from its prefix without parsing; `"binary"` for bytes, `"other"` otherwise."""
    if isinstance(frame, bytes):
        return "binary"
    if isinstance(frame, Wire):
        return frame.mtype
    return type_of(frame)


def _size(frame: str | bytes) -> int:
    """UTF-8 size of a frame (a pure-ASCII str is measured without encoding)."""
    if isinstance(frame, bytes) or frame.isascii():
        return len(frame)
    return len(frame.encode())


class _TypeCounts:
    """Message counts by type with a bounded set of labels: with `known` tables,
    only the types in one of them, else `"unknown"`; without, the first
    `MAX_TYPE_LABELS` names that could be a type, else `"other"`."""

    __slots__ = ("counts", "known")

    def __init__(self, known: tuple[Container[str], ...] | None = None) -> None:
        self.counts: dict[str, int] = {}
        self.known = known

    def add(self, mtype: str) -> None:
        counts = self.counts
        if mtype in counts:  # the hot path: one lookup
            counts[mtype] += 1
            return
        known = self.known
        if known is not None:
            if not any(mtype in table for table in known):
                mtype = UNKNOWN_TYPE
        elif len(counts) >= MAX_TYPE_LABELS or not _TYPE_NAME.fullmatch(mtype):
            mtype = "other"
        counts[mtype] = counts.get(mtype, 0) + 1


class _Buckets:
    """A histogram kept as plain counts, so a batch of observations costs a
    bisect each rather than a locked library call; rendered at scrape."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.total = 0.0

    def observe_many(self, values: list[float]) -> None:
        bounds, counts = self.bounds, self.counts
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # the first bound >= value (`le`)
        self.total += sum(values)

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        cumulative = list(itertools.accumulate(self.counts))
        buckets = [(str(b), n) for b, n in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.total)


class _ScrapeCollector(Collector):
    """Turns the plain hot-path counters and the hub's view into metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        for name, doc, table in (
            ("wsserver_messages_in", "WebSocket messages received, by type.", m.types_in),
            (
                "wsserver_messages_out",
                "WebSocket messages written to clients, by type.",
                m.types_out,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=["type"])
            for mtype, n in sorted(table.counts.items()):
                family.add_metric([mtype], n)
            yield family
        yield CounterMetricFamily(
            "wsserver_bytes_in", "Bytes of WebSocket messages received.", value=m.bytes_in
        )
        yield CounterMetricFamily(
            "wsserver_bytes_out", "Bytes of WebSocket messages written.", value=m.bytes_out
        )
        yield m.webhooks_delivery.family(
            "wsserver_webhooks_delivery_seconds",
            "Time from a webhook event's making to its 2xx answer (retries included).",
        )
        view = m.scrape_view
        if view is None:
            return
        stats, queue_depth = view
        conns = stats["connections"]
        by_kind = GaugeMetricFamily(
            "wsserver_connections", "Open WebSocket connections, by kind.", labels=["kind"]
        )
        for kind in ("user", "device", "pending"):
            by_kind.add_metric([kind], conns[kind])
        yield by_kind
        gauges = (
            (
                "wsserver_principals",
                "Principals (users and desktop clients) online.",
                stats["principals"],
            ),
            ("wsserver_groups", "Groups with at least one connection.", stats["groups"]),
            ("wsserver_rooms", "Rooms with at least one member.", stats["rooms"]),
            (
                "wsserver_mailboxes",
                "Offline mailboxes holding messages.",
                stats["mailboxes"]["count"],
            ),
            (
                "wsserver_mailbox_messages",
                "Messages waiting in offline mailboxes.",
                stats["mailboxes"]["messages"],
            ),
            (
                "wsserver_registry_queue_depth",
                "Commands waiting for the hub actor.",
                queue_depth,
            ),
            ("wsserver_uptime_seconds", "Seconds since the server started.", stats["uptime"]),
        )
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=value)
        info = GaugeMetricFamily("wsserver_build_info", "The running version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


class Metrics:
    """The counters of one server and their Prometheus rendering.

    The net layer calls the recording methods; `render` produces the body of
    `GET /metrics` from them plus a hub view fetched through the hub actor.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._handshake_children: dict[str, Any] = {}
        self._close_children: dict[int, Any] = {}
        self.handshakes = Counter(
            "wsserver_handshakes",
            "WebSocket handshakes, by result (accepted, or why refused).",
            ["result"],
            registry=r,
        )
        self.auth_failures = Counter(
            "wsserver_auth_failures",
            "Refused credentials (handshake, first message or HTTP API), by reason.",
            ["reason"],
            registry=r,
        )
        self.throttled = Counter(
            "wsserver_auth_throttled",
            "Attempts refused because their client IP had too many failed credentials"
            " (via handshake, first_message or http).",
            ["via"],
            registry=r,
        )
        self.closes = Counter(
            "wsserver_closes", "WebSocket sessions ended, by close code.", ["code"], registry=r
        )
        self.slow_consumer_closes = Counter(
            "wsserver_slow_consumer_closes",
            "Connections closed 4008 because their outbound queue was full.",
            registry=r,
        )
        self.dropped = Counter(
            "wsserver_messages_dropped",
            "Inbound messages dropped, by reason.",
            ["reason"],
            registry=r,
        )
        self.background_failures = Counter(
            "wsserver_background_failures",
            "Failures of a background task (snapshots, timers, the storage writer), by task.",
            ["task"],
            registry=r,
        )
        self.http_requests = Counter(
            "wsserver_http_requests",
            "HTTP requests answered, by method and status.",
            ["method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "wsserver_http_request_duration_seconds",
            "Time to answer an HTTP request (after its body arrived).",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.fsync_seconds = Histogram(
            "wsserver_storage_fsync_seconds",
            "Time of one fsync of the journal, a snapshot or the data directory.",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.webhooks_sent = Counter(
            "wsserver_webhooks_sent", "Webhook events the receiver answered 2xx.", registry=r
        )
        self.webhooks_failed = Counter(
            "wsserver_webhooks_failed",
            "Failed webhook delivery attempts, by reason (http_4xx, http_5xx, http_other,"
            " timeout, network); each is retried after the backoff.",
            ["reason"],
            registry=r,
        )
        self.webhooks_retried = Counter(
            "wsserver_webhooks_retried", "Webhook delivery attempts that were retries.", registry=r
        )
        self.webhooks_dropped = Counter(
            "wsserver_webhooks_dropped",
            "Webhook events given up, by reason (max_age, queue_full).",
            ["reason"],
            registry=r,
        )
        self.webhooks_queue = Gauge(
            "wsserver_webhooks_queue", "Webhook events waiting to be delivered.", registry=r
        )
        # bumped a batch of deliveries at a time (`webhooks_sent`), rendered at scrape
        self.webhooks_delivery = _Buckets(
            (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 3600.0)
        )
        self.session_seconds = Histogram(
            "wsserver_session_duration_seconds",
            "How long a WebSocket session lasted, from its handshake to its close.",
            registry=r,
            buckets=(1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 7 * 86400.0),
        )
        self.publish_seconds = Histogram(
            "wsserver_publish_latency_seconds",
            "Time from an HTTP publish's arrival at the hub to its frame handed to every"
            " target socket (written, or queued behind what the socket still holds).",
            registry=r,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self.redis_publish_rejected = Counter(
            "wsserver_redis_publish_rejected",
            "Messages of the cluster's Redis publish channel refused, by reason (too_large,"
            " json, shape); each is logged with the field to blame.",
            ["reason"],
            registry=r,
        )
        # the process: CPU seconds, resident and virtual memory, open and maximum fds,
        # start time (read from /proc at each scrape; nothing where there is no /proc)
        ProcessCollector(registry=r)
        self.types_in = _TypeCounts(known=())  # `count_types_in` says which are known
        self.types_out = _TypeCounts()
        self.bytes_in = 0
        self.bytes_out = 0
        self.scrape_view: tuple[Mapping[str, Any], int] | None = None
        r.register(_ScrapeCollector(self))

    def count_types_in(self, *known: Container[str]) -> None:
        """Give inbound message types their own label when they are in one of the
        `known` tables (read live: a handler registered later counts from then
        on); every other type counts as `"unknown"`."""
        self.types_in.known = known

    # -- hot path --------------------------------------------------------------

    def frame_in(self, frame: str | bytes) -> None:
        """A frame arrived (before any parsing)."""
        self.bytes_in += _size(frame)

    def message_in(self, mtype: str) -> None:
        """A frame decoded to a message of `mtype`."""
        self.types_in.add(mtype)

    def frame_out(self, frame: str | bytes) -> None:
        """A frame was written to a client."""
        if isinstance(frame, Wire):
            self.bytes_out += frame.size
            self.types_out.add(frame.mtype)
            return
        self.bytes_out += _size(frame)
        self.types_out.add(frame_type(frame))

    # -- events ----------------------------------------------------------------

    def handshake(self, result: str) -> None:
        """A WebSocket handshake ended: `"accepted"` or the refusal's catalogue key."""
        child = self._handshake_children.get(result)
        if child is None:  # labels() takes a lock and builds a key: once per label
            child = self._handshake_children[result] = self.handshakes.labels(result)
        child.inc()

    def auth_failed(self, reason: str) -> None:
        """Credentials were refused; `reason` is a catalogue key."""
        self.auth_failures.labels(reason).inc()

    def auth_throttled(self, via: str) -> None:
        """An attempt was refused by the failed-credentials throttle (`via` is
        `handshake`, `first_message` or `http`)."""
        self.throttled.labels(via).inc()

    def message_dropped(self, reason: str) -> None:
        """An inbound message was dropped (e.g. `rate_limited`)."""
        self.dropped.labels(reason).inc()

    def session_closed(self, code: int, seconds: float | None = None) -> None:
        """A WebSocket session ended with `code`, `seconds` after its handshake."""
        if seconds is not None:
            self.session_seconds.observe(seconds)
        child = self._close_children.get(code)
        if child is None:
            child = self._close_children[code] = self.closes.labels(str(code))
        child.inc()
        if code == CloseCode.SLOW_CONSUMER:
            self.slow_consumer_closes.inc()

    def published(self, seconds: float) -> None:
        """An HTTP publish was handed to its target sockets `seconds` after it arrived."""
        self.publish_seconds.observe(seconds)

    def redis_publish_refused(self, reason: str) -> None:
        """A Redis publish channel message was refused (`api.channel.reason`)."""
        self.redis_publish_rejected.labels(reason).inc()

    def background_failed(self, task: str) -> None:
        """A background task failed (`ops.background`); `task` is one of the server's names."""
        self.background_failures.labels(task).inc()

    def webhooks_delivered(self, ages: list[float]) -> None:
        """Events were delivered (2xx), each `ages[i]` seconds after it was made
        (one call per exchange, not per event)."""
        if ages:
            self.webhooks_sent.inc(len(ages))
            self.webhooks_delivery.observe_many(ages)

    def webhook_failed(self, reason: str) -> None:
        """A delivery attempt failed (`http_4xx`, `http_5xx`, `http_other`,
        `timeout` or `network`)."""
        self.webhooks_failed.labels(reason).inc()

    def webhook_retried(self, n: int = 1) -> None:
        """`n` delivery attempts were retries."""
        self.webhooks_retried.inc(n)

    def webhook_dropped(self, reason: str, n: int) -> None:
        """`n` events were given up (`max_age` or `queue_full`)."""
        self.webhooks_dropped.labels(reason).inc(n)

    def webhook_queue(self, n: int) -> None:
        """Events waiting to be delivered now."""
        self.webhooks_queue.set(n)

    def http_request(self, method: str, status: int, seconds: float) -> None:
        """An HTTP request was answered."""
        method = method if method in _HTTP_METHODS else "other"
        self.http_requests.labels(method, str(status)).inc()
        self.http_duration.observe(seconds)

    def timed_fsync(self, fd: int) -> None:
        """`os.fsync(fd)`, timed into `wsserver_storage_fsync_seconds` (the storage's
        `fsync_fd`; runs in the storage's worker thread, which the histogram allows)."""
        started = time.perf_counter()
        try:
            os.fsync(fd)
        finally:
            self.fsync_seconds.observe(time.perf_counter() - started)

    # -- scrape ----------------------------------------------------------------

    def render(self, stats: Mapping[str, Any], queue_depth: int) -> bytes:
        """The text exposition, with `stats` (from `HubAdmin.stats`) as the hub's view."""
        self.scrape_view = (stats, queue_depth)
        try:
            return generate_latest(self.registry)
        finally:
            self.scrape_view = None
