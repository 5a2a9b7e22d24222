"""Failed credentials are throttled per client IP (SPEC 2): after `auth.max_failures`
failures within `auth.failure_window`, every attempt from that IP gets 429 (or close
4029), whatever it presents, until the window has passed. Real sockets, except for
the window's end, which runs on the autojump clock over memory streams."""

from __future__ import annotations

import json
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MemoryClient, http_request, token, ws_connect
from tests.test_integration import close_code, recv, rejected

CODE = "HG66OP88"
CODES = [{"code": CODE, "group_id": 1}]
API_KEY = "test-api-key-0123456789"


async def wrong_codes(server: Any, n: int) -> None:
    for i in range(n):
        status, body = await rejected(server, f"/ws?activation_code=WRONG{i:03d}")
        assert status == 401, body


async def connect_from(server: Any, source: str, target: str) -> MemoryClient:
    """A WebSocket client on a real socket bound to the `source` address."""
    host, port = server.addresses[0]
    stream = await trio.open_tcp_stream(host, port, local_address=source)
    client = MemoryClient(stream)
    with trio.fail_after(5):
        assert await client.handshake(target), (client.reject_status, client.reject_body)
    return client


def samples(body: bytes, name: str) -> dict[str, float]:
    """The samples of one metric family, by their first label value."""
    for family in text_string_to_metric_families(body.decode()):
        if family.name == name:
            return {next(iter(s.labels.values()), ""): s.value for s in family.samples if s.name.endswith("_total")}
    return {}


async def test_guessing_activation_codes_is_stopped_at_the_handshake_even_a_right_code(live_server: Any) -> None:
    server = await live_server(activation_codes=CODES, api__keys=[API_KEY])
    await wrong_codes(server, 10)
    status, body = await rejected(server, f"/ws?activation_code={CODE}")  # the right one, too late
    assert status == 429 and body == {"code": 429, "message": "认证失败次数过多，请稍后再试"}
    status, _ = await rejected(server, f"/ws?token={token(server.config)}")
    assert status == 429
    # the HTTP API answers the same IP 429, even with the right key
    status, _, reply = await http_request(server.addresses[0], "GET", "/api/stats", headers=[("X-API-Key", API_KEY)])
    assert status == 429 and json.loads(reply)["code"] == 429
    # another client address is not affected
    desk = await connect_from(server, "127.0.0.2", f"/ws?activation_code={CODE}")
    assert (await desk.recv())["type"] == "auth_success"
    await desk.stream.aclose()
    status, _, reply = await http_request(server.addresses[0], "GET", "/metrics")
    assert samples(reply, "wsserver_auth_failures")["activation_code_invalid"] == 10
    assert samples(reply, "wsserver_auth_throttled") == {"handshake": 2, "http": 1}


async def test_wrong_api_keys_are_throttled_and_so_are_the_ips_websockets(live_server: Any) -> None:
    server = await live_server(activation_codes=CODES, api__keys=[API_KEY], auth__max_failures=3)
    address = server.addresses[0]
    for bad in ([("X-API-Key", "guess")], [("Authorization", "Bearer not-a-jwt")], [("X-API-Key", "guess-2")]):
        status, _, _ = await http_request(address, "GET", "/api/stats", headers=bad)
        assert status == 401
    status, _, _ = await http_request(address, "GET", "/api/stats", headers=[("X-API-Key", API_KEY)])
    assert status == 429
    status, _ = await rejected(server, f"/ws?activation_code={CODE}")
    assert status == 429
    status, _, _ = await http_request(address, "GET", "/healthz")  # open routes stay open
    assert status == 200


async def test_requests_without_credentials_are_not_failures(live_server: Any) -> None:
    server = await live_server(activation_codes=CODES, api__keys=[API_KEY], auth__max_failures=2)
    for _ in range(5):
        status, _, _ = await http_request(server.addresses[0], "GET", "/api/stats")
        assert status == 401
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as desk:
        assert (await recv(desk))["type"] == "auth_success"


async def test_first_message_auth_from_a_throttled_ip_is_closed_4029(live_server: Any) -> None:
    server = await live_server(activation_codes=CODES, auth__max_failures=3)
    async with ws_connect(server.url + "/ws") as early:  # admitted before the IP was throttled
        for i in range(3):  # failed first-message auths count too
            async with ws_connect(server.url + "/ws") as ws:
                await ws.send_message(json.dumps({"type": "heartbeat", "activation_code": f"WRONG{i}"}))
                assert (await recv(ws))["data"]["code"] == "unauthorized"
                assert await close_code(ws) == 4001
        await early.send_message(json.dumps({"type": "heartbeat", "activation_code": CODE}))
        err = await recv(early)
        assert err["type"] == "error" and err["data"] == {"code": "rate_limited", "ref": "heartbeat"}
        assert await close_code(early) == 4029


async def test_max_failures_zero_turns_the_throttle_off(live_server: Any) -> None:
    server = await live_server(activation_codes=CODES, auth__max_failures=0)
    await wrong_codes(server, 15)
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as desk:
        assert (await recv(desk))["type"] == "auth_success"


async def test_the_ip_gets_in_again_once_the_window_has_passed(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(activation_codes=CODES)  # max_failures 10 in 60 s
    for i in range(10):
        client = await server.connect(f"/ws?activation_code=WRONG{i}", expect_accept=False)
        assert client.reject_status == 401
    client = await server.connect(f"/ws?activation_code={CODE}", expect_accept=False)
    assert client.reject_status == 429
    await trio.sleep(59)
    client = await server.connect(f"/ws?activation_code={CODE}", expect_accept=False)
    assert client.reject_status == 429
    await trio.sleep(1)
    desk = await server.connect(f"/ws?activation_code={CODE}")
    assert (await desk.recv())["type"] == "auth_success"
