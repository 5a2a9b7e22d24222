"""The opening handshake's fast path (`wsserver.protocol.handshake`) and what
the server answers to requests it does not recognise (trio-websocket's answer)."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from tests.conftest import http_request, hub_of, token
from wsserver.protocol.handshake import accept_value, response_101, upgrade_accept

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = {
    "host": ["example"],
    "upgrade": ["websocket"],
    "connection": ["keep-alive, Upgrade"],
    "sec-websocket-version": ["13"],
    "sec-websocket-key": [KEY],
}


def values(headers: dict[str, list[str]]) -> Any:
    return lambda name: headers.get(name, [])


def test_the_rfc_example_key() -> None:
    assert accept_value(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert upgrade_accept("GET", "1.1", values(GOOD)) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_wsproto_clients_accept_our_101_whatever_they_offer() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(
        Request(
            host="example",
            target="/ws",
            subprotocols=["chat"],
            extensions=[],
            extra_headers=[(b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits")],
        )
    )
    lines = request.decode().split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.lower(), []).append(value.strip())
    accept = upgrade_accept("GET", "1.1", values(headers))
    assert accept is not None
    client.receive_data(response_101(accept))
    events = list(client.events())
    assert len(events) == 1 and isinstance(events[0], AcceptConnection)
    assert events[0].subprotocol is None and events[0].extensions == []  # both declined


@pytest.mark.parametrize(
    ("method", "version", "change"),
    [
        ("POST", "1.1", {}),
        ("GET", "1.0", {}),
        ("GET", "1.1", {"host": []}),
        ("GET", "1.1", {"upgrade": ["h2c"]}),
        ("GET", "1.1", {"connection": ["keep-alive"]}),
        ("GET", "1.1", {"sec-websocket-version": ["8"]}),
        ("GET", "1.1", {"sec-websocket-version": ["13", "13"]}),
        ("GET", "1.1", {"sec-websocket-key": []}),
        ("GET", "1.1", {"sec-websocket-key": ["not base64!"]}),
        ("GET", "1.1", {"sec-websocket-key": [base64.b64encode(b"x" * 15).decode()]}),
        ("GET", "1.1", {"sec-websocket-key": [KEY, KEY]}),
    ],
)
def test_anything_else_is_not_the_fast_paths(method: str, version: str, change: dict[str, list[str]]) -> None:
    assert upgrade_accept(method, version, values({**GOOD, **change})) is None


UPGRADE = [("Upgrade", "websocket"), ("Connection", "Upgrade")]


@pytest.mark.parametrize(
    "extra",
    [
        [("Sec-WebSocket-Version", "13")],  # no key
        [("Sec-WebSocket-Version", "8"), ("Sec-WebSocket-Key", KEY)],  # an old version
    ],
)
async def test_malformed_upgrades_get_trio_websockets_answer_and_nothing_breaks(
    live_server: Any, extra: list[tuple[str, str]]
) -> None:
    server = await live_server()
    status, _headers, _body = await http_request(
        server.addresses[0], "GET", f"/ws?token={token(server.config)}", headers=UPGRADE + extra
    )
    assert 400 <= status < 500
    assert not hub_of(server).presence.sessions
    # and a good client right after is served
    host, port = server.addresses[0]
    stream = await trio.open_tcp_stream(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            f"GET /ws?token={token(server.config)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    data = b""
    with trio.fail_after(5):
        while b"connected" not in data:
            data += await stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept_value(key)}\r\n".encode() in data
    await stream.aclose()
