"""`/metrics`: the Prometheus text format, parsed by prometheus-client's own parser,
with values that move after real traffic; and the `Metrics` recorder itself."""

from __future__ import annotations

import json
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import http_request, token, ws_connect
from tests.test_api import API_KEY, call, client, close_code, ok, recv
from wsserver.embed import HubHandle
from wsserver.ops.metrics import MAX_TYPE_LABELS, Metrics, frame_type

FAMILIES = {
    "wsserver_connections", "wsserver_principals", "wsserver_groups", "wsserver_rooms",
    "wsserver_mailboxes", "wsserver_mailbox_messages", "wsserver_registry_queue_depth",
    "wsserver_uptime_seconds", "wsserver_build_info", "wsserver_handshakes",
    "wsserver_auth_failures", "wsserver_messages_in", "wsserver_messages_out",
    "wsserver_bytes_in", "wsserver_bytes_out", "wsserver_messages_dropped", "wsserver_closes",
    "wsserver_slow_consumer_closes", "wsserver_http_requests",
    "wsserver_http_request_duration_seconds", "wsserver_storage_fsync_seconds",
}  # fmt: skip


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(
    server: Any, headers: list[tuple[str, str]] | None = None
) -> tuple[set[str], dict[Any, float]]:
    status, hdrs, body = await http_request(server.addresses[0], "GET", "/metrics", headers=headers)
    assert status == 200, body
    assert hdrs["content-type"].startswith("text/plain")
    text = body.decode()
    return {f.name for f in text_string_to_metric_families(text)}, parse(text)


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_parse_and_move_after_traffic(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    names, before = await scrape(server)
    assert names >= FAMILIES
    assert value(before, "wsserver_connections", kind="user") == 0
    assert value(before, "wsserver_build_info", version=__import__("wsserver").__version__) == 1

    async with client(server, 1, group_id=1, query="&device_id=d") as ws:
        await ws.send_message(json.dumps({"type": "ping"}))
        assert (await recv(ws))["type"] == "pong"
        await ok(server, "POST", "/api/publish", {"type": "data_update", "data": "x", "user_id": 1})
        assert (await recv(ws))["type"] == "data_update"
        _, during = await scrape(server)
        assert value(during, "wsserver_connections", kind="user") == 1
        assert value(during, "wsserver_principals") == 1 and value(during, "wsserver_groups") == 1
        await ok(server, "POST", "/api/users/1/kick", {"device_id": "d"})
        assert await close_code(ws) == 4003
    bad = token(server.config, user_id=2, ttl=-60)
    status, _, _ = await http_request(
        server.addresses[0], "GET", f"/ws?token={bad}",
        headers=[("Upgrade", "websocket"), ("Connection", "Upgrade"),
                 ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")],
    )  # fmt: skip
    assert status == 401

    with trio.fail_after(5):
        while True:  # the session's end is recorded once its task finishes
            _, after = await scrape(server)
            if value(after, "wsserver_closes_total", code="4003"):
                break
            await trio.sleep(0.01)
    assert value(after, "wsserver_handshakes_total", result="accepted") == 1
    assert value(after, "wsserver_handshakes_total", result="token_expired") == 1
    assert value(after, "wsserver_auth_failures_total", reason="token_expired") == 1
    assert value(after, "wsserver_messages_in_total", type="ping") == 1
    for mtype in ("connected", "pong", "data_update", "kicked"):
        assert value(after, "wsserver_messages_out_total", type=mtype) == 1, mtype
    assert value(after, "wsserver_bytes_in_total") > 0
    assert value(after, "wsserver_bytes_out_total") > value(before, "wsserver_bytes_out_total")
    assert value(after, "wsserver_connections", kind="user") == 0
    assert value(after, "wsserver_http_requests_total", method="POST", status="200") == 2
    assert value(after, "wsserver_http_requests_total", method="GET", status="200") >= 2  # scrapes
    assert value(after, "wsserver_http_request_duration_seconds_count") >= 4


async def test_journal_fsyncs_are_timed(live_server: Any) -> None:
    server = await live_server(storage__fsync="always")
    async with client(server, 1) as sender:
        await sender.send_message(
            json.dumps({"type": "send_message", "data": {"to_user_id": 2, "message": "hi"}})
        )
        assert (await recv(sender))["type"] == "message_sent"  # answered once durable
    _, samples = await scrape(server)
    assert value(samples, "wsserver_storage_fsync_seconds_count") >= 1
    assert value(samples, "wsserver_storage_fsync_seconds_sum") > 0


async def test_two_servers_in_one_process_keep_separate_metrics(live_server: Any, tmp_path: Any) -> None:
    one = await live_server()
    two = await live_server(storage__dir=str(tmp_path / "two"))  # a data directory has one server
    async with ws_connect(f"{one.url}/ws?token={token(one.config)}") as ws:
        await recv(ws)
        _, first = await scrape(one)
        _, second = await scrape(two)
    assert value(first, "wsserver_handshakes_total", result="accepted") == 1
    assert value(second, "wsserver_handshakes_total", result="accepted") == 0


async def test_metrics_can_require_api_credentials(live_server: Any) -> None:
    server = await live_server(metrics__require_auth=True, api__keys=[API_KEY])
    status, reply, _ = await call(server, "GET", "/metrics", key=None)
    assert (status, reply["code"]) == (401, 401)
    names, _ = await scrape(server, headers=[("X-API-Key", API_KEY)])
    assert "wsserver_connections" in names


async def test_client_invented_message_types_count_as_unknown(live_server: Any) -> None:
    server = await live_server()
    HubHandle(server).add_handler("order_placed", lambda ctx, data: None)  # as a host's hub.on()
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv(ws)
        for mtype in ("ping", "order_placed", "x-junk-1", "x-junk-2", "join_room"):
            await ws.send_message(json.dumps({"type": mtype, "data": "lobby"}))
        while (await recv(ws))["type"] != "room_joined":  # the last one: all are counted
            pass
    _, samples = await scrape(server)
    by_type = {
        dict(labels)["type"]: n
        for (name, labels), n in samples.items()
        if name == "wsserver_messages_in_total"
    }
    assert by_type == {"ping": 1, "order_placed": 1, "unknown": 2, "join_room": 1}


def test_frame_type_reads_the_encoded_prefix() -> None:
    assert frame_type('{"type":"new_message","data":1}') == "new_message"
    assert frame_type(b"\x00") == "binary"
    assert frame_type("hello") == "other"
    assert frame_type('{"type":"' + "x" * 100) == "other"


def test_type_labels_are_bounded_and_sane() -> None:
    metrics = Metrics()
    metrics.count_types_in({"ping"}, {"send_message": None})
    for i in range(MAX_TYPE_LABELS + 50):
        metrics.message_in(f"t{i}")
        metrics.frame_out(f'{{"type":"o{i}","data":1}}')
    metrics.message_in("Not A Type\n")
    metrics.message_in("ping")
    metrics.message_in("send_message")
    assert metrics.types_in.counts == {"unknown": MAX_TYPE_LABELS + 51, "ping": 1, "send_message": 1}
    counts = metrics.types_out.counts  # the server's own types: capped
    assert len(counts) == MAX_TYPE_LABELS + 1 and counts["other"] == 50
    metrics.session_closed(4008)
    metrics.session_closed(4008)
    metrics.http_request("BREW", 405, 0.001)
    samples = parse(metrics.render(_empty_stats(), 3).decode())
    assert value(samples, "wsserver_slow_consumer_closes_total") == 2
    assert value(samples, "wsserver_closes_total", code="4008") == 2
    assert value(samples, "wsserver_http_requests_total", method="other", status="405") == 1
    assert value(samples, "wsserver_registry_queue_depth") == 3
    assert value(samples, "wsserver_messages_in_total", type="unknown") == MAX_TYPE_LABELS + 51


def _empty_stats() -> dict[str, Any]:
    return {
        "connections": {"total": 0, "user": 0, "device": 0, "pending": 0},
        "users": 0, "principals": 0, "groups": 0, "rooms": 0,
        "messages": {"in": 0, "out": 0}, "mailboxes": {"count": 0, "messages": 0},
        "uptime": 1.0, "started_at": 0, "version": "x",
    }  # fmt: skip


async def test_metrics_show_the_process_session_durations_close_codes_and_publish_latency(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    host, port = server.addresses[0]
    async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id=1)}") as ws:
        await ws.get_message()
        status, _, _ = await http_request(
            (host, port), "POST", "/api/publish", headers=[("X-API-Key", API_KEY)],
            body=json.dumps({"type": "news", "data": {}, "user_id": 1}).encode(),
        )  # fmt: skip
        assert status == 200
        assert json.loads(await ws.get_message())["type"] == "news"
    with trio.fail_after(5):
        while True:  # the server logs the session once its socket is done
            _, _, body = await http_request((host, port), "GET", "/metrics")
            samples = parse(body.decode())
            if samples.get(("wsserver_session_duration_seconds_count", ())):
                break
            await trio.sleep(0.02)
    assert samples[("wsserver_session_duration_seconds_count", ())] == 1
    assert samples[("wsserver_closes_total", (("code", "1000"),))] == 1
    assert samples[("wsserver_publish_latency_seconds_count", ())] == 1
    assert 0 < samples[("wsserver_publish_latency_seconds_sum", ())] < 5
    assert samples[("process_cpu_seconds_total", ())] > 0
    assert samples[("process_resident_memory_bytes", ())] > 1_000_000
    assert samples[("process_open_fds", ())] >= 3


def test_an_exchange_s_deliveries_count_once_into_the_sent_total_and_the_delivery_histogram() -> None:
    metrics = Metrics()
    metrics.webhooks_delivered([0.001, 0.005, 0.2, 5000.0])  # one exchange of four 2xx
    metrics.webhooks_delivered([])  # an exchange that delivered nothing
    metrics.webhook_retried(2)
    seen = parse(metrics.render(_empty_stats(), 0).decode())
    assert seen[("wsserver_webhooks_sent_total", ())] == 4
    assert seen[("wsserver_webhooks_retried_total", ())] == 2
    buckets = {le: seen[("wsserver_webhooks_delivery_seconds_bucket", (("le", le),))] for le in ("0.005", "0.1", "0.25", "3600.0", "+Inf")}
    assert buckets == {"0.005": 2, "0.1": 2, "0.25": 3, "3600.0": 3, "+Inf": 4}  # `le`: at most the bound
    assert seen[("wsserver_webhooks_delivery_seconds_count", ())] == 4
    assert abs(seen[("wsserver_webhooks_delivery_seconds_sum", ())] - 5000.206) < 1e-9
