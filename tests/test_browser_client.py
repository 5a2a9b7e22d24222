"""The browser client (`wsserver/static/client.js`) in a real headless Chromium
against a real hub process: states, pushes, direct messages and receipts, kill -9
and restart, the queue, the close codes that end it, tokens, liveness."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext
from websockets.sync.server import ServerConnection, serve

from tests.browser import (
    FAST,
    api,
    browser_fixture,  # noqa: F401  (the fixtures)
    connections,
    context_fixture,  # noqa: F401
    hub_fixture,  # noqa: F401
    open_client,
    open_page,
    until,
    wait_state,
)
from tests.hubprocess import Hub
from wsserver.client import SyncClient

CONNECTED = ["connected", None]


def test_a_client_connects_receives_a_push_and_sends_a_direct_message(context: BrowserContext, hub: Hub) -> None:
    page = open_page(context, hub)
    info = {"device_name": "Chromium", "device_type": "web"}
    open_client(page, "a", hub.url, token=hub.token(1), deviceId="tab-1", deviceInfo=info, **FAST)
    open_client(page, "b", hub.url, token=hub.token(2), **FAST)
    wait_state(page, "a", "connected")
    wait_state(page, "b", "connected")
    assert page.evaluate("states('a')") == [CONNECTED]
    assert page.evaluate("clients.a.user.user_id") == 1
    [device] = connections(hub, 1)
    assert (device["device_id"], device["device_info"]) == ("tab-1", info)  # seed 002's register

    assert api(hub, "POST", "/api/publish", {"type": "news", "data": {"n": 1}, "user_id": 1})["delivered"] == 1
    page.wait_for_function("received('a', 'news').length === 1")
    assert page.evaluate("received('a', 'news')") == [{"n": 1}]

    sent = page.evaluate("clients.a.sendMessage(2, 'hello')")
    assert sent["status"] == "sent" and isinstance(sent["message_id"], int) and sent["client_msg_id"]
    page.wait_for_function("received('b', 'new_message').length === 1")
    [message] = page.evaluate("received('b', 'new_message')")
    assert (message["text"], message["message_id"], message["from_user_id"]) == ("hello", sent["message_id"], 1)
    assert page.evaluate("clients.b.lastSeq") == message["seq"]

    page.evaluate(f"clients.b.markRead({sent['message_id']})")
    page.wait_for_function("received('a', 'message_status').length === 1")
    assert page.evaluate("received('a', 'message_status')[0].status") == "read"

    # a request's reply resolves it and is not handed out as a message; an error rejects
    assert page.evaluate("clients.a.request('ping').then(m => m.type)") == "pong"
    assert page.evaluate("received('a', 'pong')") == []
    refused = page.evaluate("clients.a.request('join_room', {room: 'no spaces'}).catch(e => [e.name, e.code, e.field])")
    assert refused == ["RequestError", "invalid_message", "room"]


def test_after_kill_9_it_reconnects_with_growing_jittered_delays_and_syncs_what_it_missed_once(
    context: BrowserContext, hub: Hub
) -> None:
    page = open_page(context, hub)
    # a seeded random source (Park-Miller), so the delays are known to differ and grow
    page.evaluate(
        """a => { let s = 7; const random = () => (s = (s * 16807) % 2147483647) / 2147483647;
                  open_client('r', a.url, {token: a.token, random, backoffBase: 50, backoffCap: 800}); }""",
        {"url": hub.url, "token": hub.token(2)},
    )
    sender = SyncClient(hub.url, hub.token(1), backoff_base=0.05, backoff_cap=0.3)
    sender.start()
    try:
        for i in range(3):
            sender.send_message(to_user_id=2, message=f"m{i}").result(timeout=10)
        page.wait_for_function("received('r', 'new_message').length === 3")
        context.set_offline(True)  # new connections fail at once until it is back online
        hub.kill()
        page.wait_for_function("states('r').filter(s => s[0] === 'reconnecting').length >= 7")
        hub.start()
        # sent while the browser is away: to the user's other device (only `sync` brings
        # those to the browser), then to nobody (kept in the mailbox, pushed on connect)
        phone = SyncClient(hub.url, hub.token(2), device_id="phone", backoff_base=0.05, backoff_cap=0.3)
        up = threading.Event()
        phone.on_connect(up.set)
        phone.start()
        try:
            assert up.wait(10)
            for i in range(3, 6):
                sender.send_message(to_user_id=2, message=f"m{i}").result(timeout=10)
        finally:
            phone.stop()
        until(lambda: not connections(hub, 2), what="the phone to leave")
        for i in range(6, 8):
            sender.send_message(to_user_id=2, message=f"m{i}").result(timeout=10)
        context.set_offline(False)  # `online`: it tries at once
        page.wait_for_function("received('r', 'new_message').length >= 8 && clients.r.state === 'connected'")
        # once more: the mailbox pushes m6 and m7 again (never acknowledged); they are repeats now
        hub.kill()
        hub.start()
        page.wait_for_function("states('r').filter(s => s[0] === 'connected').length === 3")
        page.evaluate("clients.r.request('ping')")  # nothing more is on its way
    finally:
        sender.stop()
    texts = page.evaluate("received('r', 'new_message').map(d => d.text)")
    assert texts == [f"m{i}" for i in range(8)]
    assert page.evaluate("clients.r.lastSeq") == 8
    changes = page.evaluate("events.filter(e => e.c === 'r' && e.k === 'state')")
    assert changes[0]["state"] == changes[-1]["state"] == "connected"
    waits = [c for c in changes if c["state"] == "reconnecting"][:7]
    delays = [c["delay"] for c in waits]
    ceilings = [min(800, 50 * 2**n) for n in range(7)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == 7  # jitter
    assert sum(delays[4:]) > sum(delays[:3])  # grows
    assert [c["attempt"] for c in waits] == list(range(1, 8))
    assert [c["state"] for c in changes].count("connected") == 3
    assert waits[0]["code"] == 1006  # no close frame: the hub was killed
    for (a, b) in itertools.pairwise(waits):  # each attempt waited its delay
        assert b["t"] - a["t"] >= a["delay"] - 5, (a, b)


def test_a_message_sent_while_the_hub_is_down_is_delivered_once(context: BrowserContext, hub: Hub) -> None:
    page = open_page(context, hub)
    open_client(page, "a", hub.url, token=hub.token(1), **FAST)
    open_client(page, "b", hub.url, token=hub.token(2), **FAST)
    wait_state(page, "a", "connected")
    wait_state(page, "b", "connected")
    hub.kill()
    wait_state(page, "a", "reconnecting")
    page.evaluate("window.sent = clients.a.sendMessage(2, 'queued while down'); 0")  # queued; not awaited
    page.evaluate("clients.a.send('client_ready')")
    hub.start()
    sent = page.evaluate("sent")
    page.wait_for_function("received('b', 'new_message').length >= 1")
    page.evaluate("clients.b.request('ping')")
    assert page.evaluate("received('b', 'new_message').map(d => [d.text, d.message_id])") == [
        ["queued while down", sent["message_id"]]
    ]
    assert "duplicate" not in sent


def test_kicked_or_replaced_it_ends_disconnected_and_does_not_come_back(context: BrowserContext, tmp_path: Path) -> None:
    with Hub(tmp_path, env={"WSSERVER_LIMITS_MAX_CONNECTIONS_PER_USER": "1"}) as hub:
        hub.start()
        page = open_page(context, hub)
        open_client(page, "a", hub.url, token=hub.token(5), **FAST)
        wait_state(page, "a", "connected")
        api(hub, "POST", "/api/users/5/kick", {"reason": "bye"})
        wait_state(page, "a", "disconnected")
        assert page.evaluate("states('a')") == [CONNECTED, ["disconnected", 4003]]
        assert page.evaluate("received('a', 'kicked')") == [{"reason": "bye"}]
        assert page.evaluate("(() => { try { clients.a.send('ping') } catch (e) { return [e.name, e.code] } })()") == [
            "ClientClosed", 4003
        ]
        assert page.evaluate("clients.a.sendMessage(1, 'x').catch(e => e.name)") == "ClientClosed"

        open_client(page, "old", hub.url, token=hub.token(6), **FAST)
        wait_state(page, "old", "connected")
        open_client(page, "new", hub.url, token=hub.token(6), **FAST)
        wait_state(page, "old", "disconnected")
        wait_state(page, "new", "connected")
        assert page.evaluate("states('old')") == [CONNECTED, ["disconnected", 4004]]
        page.wait_for_timeout(1000)  # more than the backoff cap: neither comes back
        assert not connections(hub, 5)
        assert len(connections(hub, 6)) == 1
        assert page.evaluate("states('a').length + states('old').length") == 4


def test_tokens_a_refused_one_asks_get_token_once_and_token_expiring_refreshes(context: BrowserContext, hub: Hub) -> None:
    page = open_page(context, hub)
    page.evaluate(
        """a => {
          window.asked = {};
          const ask = (name, token) => () => { asked[name] = (asked[name] || 0) + 1; return Promise.resolve(token); };
          open_client('fresh', a.url, {token: 'not-a-jwt', getToken: ask('fresh', a.good), backoffBase: 100, backoffCap: 400});
          open_client('stale', a.url, {token: 'not-a-jwt', getToken: ask('stale', 'still-not-a-jwt'), backoffBase: 100, backoffCap: 400});
          open_client('none', a.url, {token: 'not-a-jwt', backoffBase: 100, backoffCap: 400});
          open_client('expiring', a.url, {token: a.expiring, getToken: ask('expiring', a.good2), backoffBase: 100, backoffCap: 400});
        }""",
        {"url": hub.url, "good": hub.token(7), "good2": hub.token(8), "expiring": hub.token(8, ttl=30)},
    )
    wait_state(page, "fresh", "connected")
    assert page.evaluate("states('fresh')") == [["reconnecting", 4001], CONNECTED]
    wait_state(page, "stale", "disconnected")
    assert page.evaluate("states('stale')") == [["reconnecting", 4001], ["disconnected", 4001]]
    wait_state(page, "none", "disconnected")
    assert page.evaluate("states('none')") == [["disconnected", 4001]]
    # `token_expiring` comes 60 s before exp: at once for a token with 30 s left
    page.wait_for_function("received('expiring', 'token_refreshed').length === 1")
    assert page.evaluate("received('expiring', 'token_refreshed')[0].expires_at") > 3000
    assert page.evaluate("asked") == {"fresh": 1, "stale": 1, "expiring": 1}
    assert page.evaluate("states('expiring')") == [CONNECTED]


def test_an_offline_wait_of_20_s_ends_at_once_when_the_browser_is_back_online_or_the_tab_visible(
    context: BrowserContext, hub: Hub
) -> None:
    page = open_page(context, hub)
    page.evaluate(
        "a => { open_client('a', a.url, {token: a.token, backoffBase: 20000, backoffCap: 20000, random: () => 0.99}) }",
        {"url": hub.url, "token": hub.token(1)},
    )
    wait_state(page, "a", "connected")
    for wake in ("context.set_offline", "document.dispatchEvent(new Event('visibilitychange'))"):
        hub.kill()
        wait_state(page, "a", "reconnecting")
        hub.start()
        started = page.evaluate("performance.now()")
        if wake == "context.set_offline":
            context.set_offline(True)
            context.set_offline(False)
        else:
            page.evaluate(wake)
        wait_state(page, "a", "connected", timeout=5_000)
        assert page.evaluate("performance.now()") - started < 5_000
    waits = page.evaluate("events.filter(e => e.c === 'a' && e.state === 'reconnecting').map(e => e.delay)")
    assert len(waits) == 2 and min(waits) > 15_000  # it would have waited that long


@pytest.fixture
def silent_hub() -> Iterator[dict[str, Any]]:
    """A WebSocket server that says `connected` and then nothing, whatever it is sent."""
    seen: dict[str, Any] = {"connections": 0, "second": threading.Event()}

    def handler(ws: ServerConnection) -> None:
        ws.recv()  # the auth message
        ws.send(json.dumps({"type": "connected", "data": {"user_id": 1}}))
        seen["connections"] += 1
        if seen["connections"] == 2:
            seen["second"].set()
        for _ in ws:  # probes are never answered
            pass

    with serve(handler, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        seen["url"] = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/ws"
        yield seen
        server.shutdown()
        thread.join()


def test_liveness_a_silent_link_is_replaced_and_an_answering_hub_keeps_it(
    context: BrowserContext, hub: Hub, silent_hub: dict[str, Any]
) -> None:
    page = open_page(context, hub)
    open_client(page, "silent", silent_hub["url"], token="t", liveness=300, probeTimeout=300, **FAST)
    open_client(page, "live", hub.url, token=hub.token(1), liveness=200, probeTimeout=300, **FAST)
    assert silent_hub["second"].wait(10)
    changes = page.evaluate("events.filter(e => e.c === 'silent' && e.k === 'state')")
    assert changes[0]["state"] == "connected"
    assert (changes[1]["state"], changes[1]["reason"]) == ("reconnecting", "no data from the hub")
    wait_state(page, "live", "connected")
    page.wait_for_timeout(1500)  # several probes, each answered by the hub's pong
    assert page.evaluate("states('live')") == [CONNECTED]
    assert page.evaluate("received('live', 'pong')") == []  # probes are the client's own
