"""How the sender counts and logs an exchange's attempts (`net.webhooks.WebhookSender._report`):
failures counted by reason, a streak of failures logged once, its end logged
once, retries and deliveries counted."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from wsserver.core.webhook_commands import WebhookDelivery
from wsserver.net.webhooks import WebhookSender
from wsserver.ops.metrics import Metrics


def delivery(seq: int, attempt: int = 1) -> WebhookDelivery:
    event = {"id": f"n-{seq}", "event": "message", "time": 0, "node": "n", "body": b"{}"}
    return WebhookDelivery(seq, f"|{seq}", event, attempt)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def test_a_streak_of_failures_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    sender = WebhookSender(SimpleNamespace(metrics=metrics))  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="wsserver.webhooks")
    first = [delivery(1), delivery(2), delivery(3)]
    sender._report(first, [False, False, True], [500, 404, 204], None)
    sender._report([delivery(4, attempt=2), delivery(5)], [False, False], [], "network: OSError")
    messages = [r.getMessage() for r in caplog.records]
    # the 404 after the 500, and the exchange that broke, are the same streak; the
    # success between them ends it (logged), so the next failure starts a new one
    assert messages == [
        "webhook message (n-1) not delivered: HTTP 500; retrying with backoff",
        "webhook receiver answers 2xx again",
        "webhook message (n-4) not delivered: network: OSError; retrying with backoff",
    ]
    caplog.clear()
    sender._report([delivery(4, attempt=3), delivery(5, attempt=2), delivery(6)], [True, True, True], [204] * 3, None)
    assert [r.getMessage() for r in caplog.records] == ["webhook receiver answers 2xx again"]
    sender._report([delivery(7)], [True], [204], None)
    assert len(caplog.records) == 1  # no streak to end
    assert value(metrics, "wsserver_webhooks_failed_total", reason="http_5xx") == 1
    assert value(metrics, "wsserver_webhooks_failed_total", reason="http_4xx") == 1
    assert value(metrics, "wsserver_webhooks_failed_total", reason="network") == 2
    assert value(metrics, "wsserver_webhooks_retried_total") == 3  # the attempts > 1: 4 (twice), 5
    assert value(metrics, "wsserver_webhooks_sent_total") == 5  # 3, then 4, 5, 6, then 7
