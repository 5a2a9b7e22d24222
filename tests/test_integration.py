"""The real server on a free port, driven by a real WebSocket client (trio-websocket):
authentication paths, bad inputs, limits, rooms, the echo endpoint and health checks."""

from __future__ import annotations

import base64
import json
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.conftest import close_code, http_request, hub_of, recv, recv_type, token, ws_connect

CODE = "HG66OP88"
CODES = [{"code": CODE, "group_id": 1, "name": "desk"}, {"code": "OFF00001", "group_id": 2, "enabled": False}]


UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


async def rejected(server: Any, target: str, headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[str, Any]]:
    """Attempt a WebSocket upgrade that must be refused; (status, JSON body)."""
    status, hdrs, body = await http_request(server.addresses[0], "GET", target, headers=UPGRADE + (headers or []))
    assert status != 101
    assert hdrs["content-type"].startswith("application/json")
    return status, json.loads(body)


# -- authentication ------------------------------------------------------------


async def test_jwt_in_bearer_header_connects(live_server: Any) -> None:
    server = await live_server()
    t = token(server.config, user_id=7, group_id=3, username="amy")
    async with ws_connect(server.url + "/ws", extra_headers=[(b"Authorization", f"Bearer {t}".encode())]) as ws:
        msg = await recv(ws)
        assert msg["type"] == "connected"
        assert msg["data"]["user_id"] == 7 and msg["data"]["group_id"] == 3
        assert msg["data"]["message"] == "WebSocket连接成功" and msg["data"]["conn_id"]
        assert isinstance(msg["timestamp"], int)


async def test_jwt_in_query_connects_and_string_ids_echo_as_sent(live_server: Any) -> None:
    server = await live_server()
    t = token(server.config, user_id="u-7", group_id="g1")
    async with ws_connect(f"{server.url}/ws?token={t}") as ws:
        msg = await recv(ws)
        assert msg["data"]["user_id"] == "u-7" and msg["data"]["group_id"] == "g1"


async def test_first_message_auth_and_seed002_register(live_server: Any) -> None:
    server = await live_server()
    async with ws_connect(server.url + "/ws") as ws:
        await ws.send_message(json.dumps({"type": "auth", "data": {"token": token(server.config)}, "id": 1}))
        msg = await recv(ws)
        assert msg["type"] == "connected" and msg["id"] == 1
    reg = {
        "type": "register",
        "data": {
            "user_id": 123,
            "token": token(server.config, user_id=123),
            "device_id": "device-uuid",
            "device_info": {"device_name": "iPhone 13", "device_type": "mobile"},
        },
    }
    async with ws_connect(server.url + "/ws") as ws:
        await ws.send_message(json.dumps(reg))
        msg = await recv(ws)
        assert msg["type"] == "connected" and msg["data"]["device_id"] == "device-uuid"
        sessions = [s for s in hub_of(server).presence.sessions.values() if s.device_id == "device-uuid"]
        assert sessions and sessions[0].device_info["device_name"] == "iPhone 13"


async def test_register_for_another_user_id_than_the_token_fails_4001(live_server: Any) -> None:
    server = await live_server()
    reg = {"type": "register", "data": {"user_id": 999, "token": token(server.config, user_id=123)}}
    async with ws_connect(server.url + "/ws") as ws:
        await ws.send_message(json.dumps(reg))
        err = await recv(ws)
        assert err["type"] == "error" and err["data"]["code"] == "unauthorized"
        assert await close_code(ws) == 4001


@pytest.mark.parametrize("where", ["query", "header", "first_message"])
async def test_activation_code_connects_as_desktop_client(live_server: Any, where: str) -> None:
    server = await live_server(activation_codes=CODES)
    url, headers = server.url + "/ws", None
    if where == "query":
        url += f"?activation_code={CODE}"
    elif where == "header":
        headers = [(b"X-Activation-Code", CODE.encode())]
    async with ws_connect(url, extra_headers=headers) as ws:
        if where == "first_message":
            await ws.send_message(json.dumps({"type": "heartbeat", "activation_code": CODE, "timestamp": 1234567890}))
        msg = await recv(ws)
        assert msg["type"] == "auth_success"
        assert msg["data"] == {"group_id": 1, "activation_code": CODE, "message": "认证成功，请同步Line账号列表"}
        if where == "first_message":  # the first message is also handled
            ack = await recv(ws)
            assert ack["type"] == "heartbeat_ack"
            assert ack["timestamp"] == 1234567890 and ack["activation_code"] == CODE
            assert ack["data"]["status"] == "ok" and ack["data"]["message"] == "心跳正常"
            assert isinstance(ack["data"]["server_time"], int)


async def test_heartbeat_ack_without_client_timestamp_carries_server_time(live_server: Any) -> None:
    server = await live_server()
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv_type(ws, "connected")
        await ws.send_message(json.dumps({"type": "heartbeat"}))
        ack = await recv(ws)
        assert ack["type"] == "heartbeat_ack" and abs(ack["timestamp"] - ack["data"]["server_time"]) < 1000
        assert "activation_code" not in ack


@pytest.mark.parametrize("sent", [[], "1234567890", 1.5, True, -1, 2**53, {"t": 1}])
async def test_heartbeat_ack_echoes_only_an_integer_timestamp(live_server: Any, sent: Any) -> None:
    server = await live_server()
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv_type(ws, "connected")
        await ws.send_message(json.dumps({"type": "heartbeat", "timestamp": sent}))
        ack = await recv(ws)
        assert ack["type"] == "heartbeat_ack" and isinstance(ack["timestamp"], int)
        assert abs(ack["timestamp"] - ack["data"]["server_time"]) < 1000


def _unsigned_token() -> str:
    def b64(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'user_id': 1})}."


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("token=not-a-jwt", "令牌无效"),
        ("token=EXPIRED", "令牌已过期"),
        ("token=UNSIGNED", "不支持的签名算法"),
        ("token=WRONGKEY", "令牌无效"),
        ("activation_code=WRONG123", "激活码无效"),
        ("activation_code=OFF00001", "激活码已停用"),
    ],
)
async def test_bad_credentials_at_handshake_get_http_401_json(live_server: Any, query: str, why: str) -> None:
    server = await live_server(activation_codes=CODES)
    import jwt as pyjwt

    query = query.replace("EXPIRED", token(server.config, ttl=-100))
    query = query.replace("UNSIGNED", _unsigned_token())
    query = query.replace("WRONGKEY", pyjwt.encode({"user_id": 1}, "another-secret-0123456789abcdefghijkl", "HS256"))
    status, body = await rejected(server, f"/ws?{query}")
    assert status == 401
    assert body == {"code": 401, "message": why}


async def test_token_without_exp_is_refused_everywhere_a_token_is_taken(live_server: Any) -> None:
    import jwt as pyjwt

    server = await live_server(server__locale="en", api__keys=["k" * 24])
    secret = server.config.auth.jwt_secret
    forever = pyjwt.encode({"user_id": 1, "role": "admin"}, secret, "HS256")
    status, body = await rejected(server, f"/ws?token={forever}")
    assert (status, body["message"]) == (401, "the token has no expiry time (exp)")
    async with ws_connect(server.url + "/ws") as ws:
        await ws.send_message(json.dumps({"type": "auth", "data": {"token": forever}}))
        err = await recv(ws)
        assert err["data"]["code"] == "unauthorized" and err["error"] == "the token has no expiry time (exp)"
        assert await close_code(ws) == 4001
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv_type(ws, "connected")
        await ws.send_message(json.dumps({"type": "refresh", "data": {"token": forever}}))
        err = await recv_type(ws, "error")
        assert err["data"] == {"code": "unauthorized", "ref": "refresh", "field": "token"}
    api = [("Authorization", f"Bearer {forever}")]
    status, _, reply = await http_request(server.addresses[0], "GET", "/api/stats", headers=api)
    assert status == 401 and json.loads(reply)["message"] == "the token has no expiry time (exp)"


async def test_bad_token_in_first_message_gets_error_then_4001(live_server: Any) -> None:
    server = await live_server()
    async with ws_connect(server.url + "/ws") as ws:
        await ws.send_message(json.dumps({"type": "auth", "data": {"token": "nope"}, "id": "x"}))
        err = await recv(ws)
        assert err["type"] == "error" and err["data"] == {"code": "unauthorized", "ref": "auth"}
        assert err["id"] == "x"
        assert await close_code(ws) == 4001


async def test_wrong_activation_code_in_first_message_gets_error_then_4001(live_server: Any) -> None:
    server = await live_server(activation_codes=CODES)
    async with ws_connect(server.url + "/ws") as ws:
        await ws.send_message(json.dumps({"type": "heartbeat", "activation_code": "NOPE"}))
        err = await recv(ws)
        assert err["type"] == "error" and err["data"]["code"] == "unauthorized"
        assert await close_code(ws) == 4001


async def test_first_message_without_credentials_gets_error_then_4001(live_server: Any) -> None:
    server = await live_server()
    async with ws_connect(server.url + "/ws") as ws:
        await ws.send_message(json.dumps({"type": "ping"}))
        err = await recv(ws)
        assert err["data"]["code"] == "unauthorized"
        assert await close_code(ws) == 4001


async def test_no_auth_within_timeout_closes_4002(live_server: Any) -> None:
    server = await live_server(auth__timeout=0.3)
    async with ws_connect(server.url + "/ws") as ws:
        assert await close_code(ws) == 4002


async def test_activation_code_on_a_message_must_match_the_connection(live_server: Any) -> None:
    server = await live_server(activation_codes=[*CODES, {"code": "OTHER001", "group_id": 1}])
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as ws:
        await recv_type(ws, "auth_success")
        await ws.send_message(json.dumps({"type": "heartbeat", "activation_code": "OTHER001"}))
        err = await recv(ws)
        assert err["data"] == {"code": "forbidden", "ref": "heartbeat", "field": "activation_code"}


# -- bad inputs: an error each, the connection and its neighbours live on --------


async def test_bad_inputs_get_errors_and_leave_other_connections_alone(live_server: Any) -> None:
    server = await live_server()
    url = f"{server.url}/ws?token="
    async with ws_connect(url + token(server.config, user_id=1)) as bad, ws_connect(
        url + token(server.config, user_id=2)
    ) as good:
        await recv_type(bad, "connected")
        await recv_type(good, "connected")
        cases: list[tuple[Any, dict[str, Any]]] = [
            ("{not json", {"code": "invalid_json", "ref": None}),
            ("[1,2]", {"code": "invalid_message", "ref": None}),
            ('{"data": 1}', {"code": "invalid_message", "ref": None, "field": "type"}),
            ('{"type": 5}', {"code": "invalid_message", "ref": None, "field": "type"}),
            ('{"type": "no_such_thing", "id": "q"}', {"code": "unknown_type", "ref": "no_such_thing"}),
            (b"\x00\x01binary", {"code": "invalid_message", "ref": None}),
            ('{"type": "join_room", "data": "bad room!"}', {"code": "invalid_message", "ref": "join_room", "field": "room"}),
            ('{"type": "auth", "data": {"token": "x"}}', {"code": "conflict", "ref": "auth"}),
        ]
        for frame, expected in cases:
            await bad.send_message(frame)
            err = await recv(bad)
            assert err["type"] == "error", frame
            assert err["data"] == expected, frame
            assert isinstance(err["error"], str) and err["error"]
        await bad.send_message(json.dumps({"type": "ping", "id": "still-here"}))
        assert (await recv(bad))["id"] == "still-here"
        await good.send_message(json.dumps({"type": "ping"}))
        assert (await recv(good))["type"] == "pong"


async def test_english_locale_is_used_for_texts(live_server: Any) -> None:
    server = await live_server(server__locale="en")
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        assert (await recv(ws))["data"]["message"] == "WebSocket connected"
        await ws.send_message("nope")
        assert (await recv(ws))["error"] == "invalid JSON"


async def test_oversize_frame_closes_1009_and_spares_others(live_server: Any) -> None:
    server = await live_server(limits__max_message_bytes=1024)
    url = f"{server.url}/ws?token="
    async with ws_connect(url + token(server.config, user_id=1)) as big, ws_connect(
        url + token(server.config, user_id=2)
    ) as other:
        await recv_type(big, "connected")
        await recv_type(other, "connected")
        await big.send_message(json.dumps({"type": "ping", "data": "x" * 2000}))
        assert await close_code(big) == 1009
        await other.send_message(json.dumps({"type": "ping"}))
        assert (await recv(other))["type"] == "pong"


async def test_many_binary_frames_close_1008(live_server: Any) -> None:
    server = await live_server()
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv_type(ws, "connected")
        for _ in range(10):
            await ws.send_message(b"\x01")
        assert await close_code(ws) == 1008


async def test_flood_is_rate_limited_then_closed_4029(live_server: Any) -> None:
    server = await live_server(limits__messages_per_second=1, limits__burst=5)
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv_type(ws, "connected")
        for _ in range(12):
            await ws.send_message('{"type":"ping"}')
        codes = []
        try:
            with trio.fail_after(5):
                while True:
                    codes.append(json.loads(await ws.get_message())["type"])
        except ConnectionClosed as exc:
            assert exc.reason.code == 4029
        assert codes.count("pong") == 5 and "error" in codes


# -- connection limits ---------------------------------------------------------


async def test_disallowed_origin_gets_403(live_server: Any) -> None:
    server = await live_server(security__allowed_origins=["https://good.example"])
    t = token(server.config)
    status, body = await rejected(server, f"/ws?token={t}", [("Origin", "https://evil.example")])
    assert status == 403 and body["code"] == 403
    async with ws_connect(f"{server.url}/ws?token={t}", extra_headers=[(b"Origin", b"https://good.example")]) as ws:
        assert (await recv(ws))["type"] == "connected"


async def test_clients_without_origin_connect_when_an_origin_list_is_set(live_server: Any) -> None:
    # desktop (seed 000), Python (seed 002) and server clients send no Origin header
    server = await live_server(security__allowed_origins=["https://good.example"], activation_codes=CODES)
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        assert (await recv(ws))["type"] == "connected"
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as desk:
        assert (await recv(desk))["type"] == "auth_success"
    status, body = await rejected(server, f"/ws?activation_code={CODE}", [("Origin", "https://evil.example")])
    assert status == 403 and body["code"] == 403


async def test_total_connection_limit_answers_503(live_server: Any) -> None:
    server = await live_server(limits__max_connections=2)
    url = f"{server.url}/ws?token="
    async with ws_connect(url + token(server.config, user_id=1)) as a, ws_connect(
        url + token(server.config, user_id=2)
    ) as b:
        await recv(a)
        await recv(b)
        status, body = await rejected(server, "/ws?token=" + token(server.config, user_id=3))
        assert status == 503 and body["code"] == 503


async def test_sockets_that_never_authenticate_do_not_lock_users_out(live_server: Any) -> None:
    server = await live_server(limits__max_connections=5, limits__max_pending=100)
    async with AsyncExitStack() as stack:
        for _ in range(20):  # credential-less upgrades that never send a first message
            await stack.enter_async_context(ws_connect(server.url + "/ws"))
        async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
            assert (await recv(ws))["type"] == "connected"
        async with ws_connect(server.url + "/ws") as late:  # a first-message auth gets in too
            await late.send_message(json.dumps({"type": "auth", "data": {"token": token(server.config)}}))
            assert (await recv(late))["type"] == "connected"


async def test_unauthenticated_sockets_over_max_pending_get_503_users_still_connect(live_server: Any) -> None:
    server = await live_server(limits__max_pending=3)
    async with AsyncExitStack() as stack:
        for _ in range(3):
            await stack.enter_async_context(ws_connect(server.url + "/ws"))
        status, body = await rejected(server, "/ws")
        assert status == 503 and body["code"] == 503 and body["message"] == "等待认证的连接数已满"
        for user_id in (1, 2):
            async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id=user_id)}") as ws:
                assert (await recv(ws))["type"] == "connected"


async def test_per_user_limit_evicts_oldest_with_4004(live_server: Any) -> None:
    server = await live_server(limits__max_connections_per_user=2)
    url = f"{server.url}/ws?token={token(server.config, user_id=1)}"
    async with ws_connect(url) as first, ws_connect(url) as second:
        await recv(first)
        await recv(second)
        async with ws_connect(url) as third:
            assert (await recv(third))["type"] == "connected"
            assert await close_code(first) == 4004
            await second.send_message('{"type":"ping"}')
            assert (await recv_type(second, "pong"))["type"] == "pong"


async def test_per_user_limit_reject_policy_answers_429(live_server: Any) -> None:
    server = await live_server(limits__max_connections_per_user=1, limits__per_user_policy="reject")
    url = f"{server.url}/ws?token={token(server.config, user_id=1)}"
    async with ws_connect(url) as first:
        await recv(first)
        status, _ = await rejected(server, "/ws?token=" + token(server.config, user_id=1))
        assert status == 429


async def test_per_ip_limit_answers_429(live_server: Any) -> None:
    server = await live_server(limits__max_connections_per_ip=1)
    async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id=1)}") as ws:
        await recv(ws)
        status, _ = await rejected(server, f"/ws?token={token(server.config, user_id=2)}")
        assert status == 429


# -- rooms ---------------------------------------------------------------------


async def test_two_tabs_and_a_colleague_talk_in_a_room(live_server: Any) -> None:
    server = await live_server()
    url = f"{server.url}/ws?token="
    alice = url + token(server.config, user_id=1, group_id=1, username="alice")
    bob = url + token(server.config, user_id=2, group_id=1, username="bob")
    async with ws_connect(alice) as tab1, ws_connect(alice) as tab2, ws_connect(bob) as b:
        for ws in (tab1, tab2, b):
            await recv_type(ws, "connected")
            await ws.send_message(json.dumps({"type": "join_room", "content": "chat:room001"}))
            await recv_type(ws, "room_joined")
        await tab1.send_message(json.dumps({"type": "room_message", "data": {"room": "chat:room001", "text": "hi", "from": "forged"}, "id": 9}))
        ack = await recv_type(tab1, "room_message_ack")
        assert ack["id"] == 9 and ack["data"] == {"room": "chat:room001", "delivered": 2}
        for ws in (tab2, b):
            msg = await recv_type(ws, "room_message")
            assert msg["data"]["text"] == "hi"
            assert msg["data"]["from"] == {"user_id": 1, "username": "alice", "user_type": None}
        await b.send_message(json.dumps({"type": "room_members", "data": {"room": "chat:room001"}}))
        members = (await recv_type(b, "room_members"))["data"]["members"]
        assert sorted((m["user_id"], m["connections"]) for m in members) == [(1, 2), (2, 1)]


async def test_other_groups_room_is_not_reachable(live_server: Any) -> None:
    server = await live_server()
    url = f"{server.url}/ws?token="
    async with ws_connect(url + token(server.config, user_id=1, group_id=1)) as g1, ws_connect(
        url + token(server.config, user_id=2, group_id=2)
    ) as g2:
        await recv_type(g1, "connected")
        await recv_type(g2, "connected")
        await g1.send_message(json.dumps({"type": "join_room", "data": "chat:x"}))
        await recv_type(g1, "room_joined")
        await g2.send_message(json.dumps({"type": "join_room", "data": {"room": "chat:x", "group_id": 1}}))
        err = await recv(g2)
        assert err["data"] == {"code": "forbidden", "ref": "join_room", "field": "group_id"}
        await g2.send_message(json.dumps({"type": "room_message", "data": {"room": "chat:x", "text": "psst"}}))
        assert (await recv(g2))["data"]["code"] == "forbidden"
        await g2.send_message(json.dumps({"type": "join_room", "data": "chat:x"}))
        joined = await recv_type(g2, "room_joined")
        assert [m["user_id"] for m in joined["data"]["members"]] == [2]  # its own group's chat:x
        await g2.send_message(json.dumps({"type": "room_message", "data": {"room": "chat:x", "text": "g2 only"}}))
        assert (await recv_type(g2, "room_message_ack"))["data"]["delivered"] == 0
        with trio.move_on_after(0.3):
            msg = await recv(g1)
            raise AssertionError(f"group 1 received {msg}")


# -- echo endpoint, HTTP, shutdown ---------------------------------------------


async def test_echo_path_echoes_text_and_binary_without_auth(live_server: Any) -> None:
    server = await live_server(server__echo_path="/echo")
    async with ws_connect(server.url + "/echo") as ws:
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        await ws.send_message(b"\x00\xff")
        assert await ws.get_message() == b"\x00\xff"


async def test_echo_path_is_off_by_default(live_server: Any) -> None:
    server = await live_server()
    status, _ = await rejected(server, "/echo")
    assert status == 404


async def test_health_and_readiness(live_server: Any) -> None:
    server = await live_server()
    status, headers, body = await http_request(server.addresses[0], "GET", "/healthz")
    assert status == 200 and json.loads(body)["code"] == 0
    assert headers["content-type"].startswith("application/json")
    status, _, body = await http_request(server.addresses[0], "GET", "/readyz")
    assert status == 200 and json.loads(body)["data"]["status"] == "ready"
    status, _, body = await http_request(server.addresses[0], "GET", "/nope")
    assert status == 404 and json.loads(body)["code"] == 404
    status, _, _ = await http_request(server.addresses[0], "POST", "/healthz")
    assert status == 405


async def test_server_stop_closes_clients_with_1001(live_server: Any) -> None:
    server = await live_server()
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv(ws)
        server.stop()
        assert await close_code(ws) == 1001


async def test_api_listen_moves_the_api_to_its_own_listener(live_server: Any) -> None:
    server = await live_server(server__api_listen="127.0.0.1:0")
    assert server.api_addresses
    status, _, _ = await http_request(server.api_addresses[0], "GET", "/healthz")
    assert status == 200
    # the public listener keeps /healthz and WebSocket, but not /api/*
    status, _, _ = await http_request(server.addresses[0], "GET", "/api/anything")
    assert status == 404
    # the API listener never upgrades
    status, _, _ = await http_request(server.api_addresses[0], "GET", "/ws", headers=UPGRADE)
    assert status == 404
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        assert (await recv(ws))["type"] == "connected"


async def test_tls_listener_serves_wss(live_server: Any, tmp_path: Any) -> None:
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = await live_server(server__tls_cert=str(cert_path), server__tls_key=str(key_path))
    ctx = ssl.create_default_context(cafile=str(cert_path))
    port = server.addresses[0][1]
    from trio_websocket import open_websocket_url

    async with open_websocket_url(f"wss://localhost:{port}/ws?token={token(server.config)}", ssl_context=ctx) as ws:
        assert (await recv(ws))["type"] == "connected"
        await ws.aclose()
    with trio.CancelScope(shield=True):
        await ws._stream.aclose()


async def test_silent_tcp_connection_is_dropped_after_the_handshake_timeout(live_server: Any) -> None:
    server = await live_server(limits__handshake_timeout=0.3)
    stream = await trio.open_tcp_stream(*server.addresses[0])
    async with stream:
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
        with trio.fail_after(5):
            assert await stream.receive_some(1024) == b""  # closed by the server
    # a slow handshake after a complete head is dropped too: the server keeps serving
    status, _, _ = await http_request(server.addresses[0], "GET", "/healthz")
    assert status == 200
