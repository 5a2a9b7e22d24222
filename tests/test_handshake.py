"""The opening handshake (`wsserver.protocol.handshake`): the server's only one.
It accepts what the server always accepted and refuses the rest with the
statuses trio-websocket (wsproto) gave: checked against wsproto's server
handshake as the oracle, and on a real server."""

from __future__ import annotations

import base64
import os
from typing import Any

import h11
import pytest
import trio
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from tests.conftest import hub_of, token
from wsserver.net.http import RequestHead
from wsserver.protocol.handshake import Refused, accept_value, answer_upgrade, response_101

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
GOOD = {
    "host": ["example"],
    "upgrade": ["websocket"],
    "connection": ["keep-alive, Upgrade"],
    "sec-websocket-version": ["13"],
    "sec-websocket-key": [KEY],
}
VERSION_13 = (("Sec-WebSocket-Version", "13"),)


def values(headers: dict[str, list[str]]) -> Any:
    return lambda name: headers.get(name, [])


def test_the_rfc_example_key() -> None:
    assert accept_value(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert answer_upgrade("GET", values(GOOD)) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


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
    accept = answer_upgrade("GET", values(headers))
    assert isinstance(accept, str)
    client.receive_data(response_101(accept))
    events = list(client.events())
    assert len(events) == 1 and isinstance(events[0], AcceptConnection)
    assert events[0].subprotocol is None and events[0].extensions == []  # both declined


@pytest.mark.parametrize(
    ("method", "change", "answer"),
    [
        ("POST", {}, Refused(400)),
        ("GET", {"host": []}, Refused(400)),
        ("GET", {"upgrade": ["h2c"]}, Refused(400)),
        ("GET", {"connection": ["keep-alive"]}, Refused(400)),
        ("GET", {"sec-websocket-version": []}, Refused(400, VERSION_13)),
        ("GET", {"sec-websocket-version": [""]}, Refused(400, VERSION_13)),
        ("GET", {"sec-websocket-version": ["8"]}, Refused(426, VERSION_13)),
        ("GET", {"sec-websocket-version": ["13", "8"]}, Refused(426, VERSION_13)),
        ("GET", {"sec-websocket-version": ["13, 8"]}, Refused(426, VERSION_13)),
        ("GET", {"sec-websocket-key": []}, Refused(400)),
        ("GET", {"sec-websocket-key": [], "sec-websocket-version": ["8"]}, Refused(426, VERSION_13)),
        # accepted before (by trio-websocket, or by the stricter check): still accepted
        ("GET", {"sec-websocket-version": ["8", "13"]}, accept_value(KEY)),
        ("GET", {"sec-websocket-version": ["13", "13"]}, accept_value(KEY)),
        ("GET", {"sec-websocket-key": ["not base64!"]}, accept_value("not base64!")),
        ("GET", {"sec-websocket-key": [KEY, "AAAAAAAAAAAAAAAAAAAAAA=="]}, accept_value(f"{KEY}, AAAAAAAAAAAAAAAAAAAAAA==")),
        ("GET", {"host": ["a", "b"]}, accept_value(KEY)),
        ("GET", {"upgrade": ["h2c, WebSocket"]}, accept_value(KEY)),
        ("GET", {"connection": ["Upgrade", "keep-alive"]}, accept_value(KEY)),
    ],
)
def test_each_request_gets_the_answer_it_always_got(
    method: str, change: dict[str, list[str]], answer: str | Refused
) -> None:
    assert answer_upgrade(method, values({**GOOD, **change})) == answer


def wsproto_answer(request: bytes) -> str | Refused:
    """What trio-websocket's server handshake (wsproto) answered `request`."""
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.receive_data(request)
    except RemoteProtocolError as err:
        hint: Any = err.event_hint
        return Refused(hint.status_code, tuple((k.decode(), v.decode()) for k, v in hint.headers))
    (event,) = handshake.events()
    assert isinstance(event, Request)
    reply = handshake.send(AcceptConnection())
    for line in reply.split(b"\r\n"):
        name, _, value = line.partition(b": ")
        if name.lower() == b"sec-websocket-accept":
            return value.decode()
    raise AssertionError(reply)


def our_answer(request: bytes) -> str | Refused | None:
    """What the server answers `request` (its head read by h11, as the server
    does); None for a request h11 refuses before any handshake (a 400)."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request)
    head = RequestHead.from_h11(event)
    return answer_upgrade(head.method, head.header_values)


header = st.one_of(
    st.tuples(st.just("Host"), st.sampled_from(["example", "localhost:8765"])),
    st.tuples(st.just("Sec-WebSocket-Version"), st.sampled_from(["13", "8", "", "13, 8", "7"])),
    st.tuples(
        st.just("Sec-WebSocket-Key"),
        st.sampled_from([KEY, "not base64!", "", base64.b64encode(b"x" * 15).decode(), "k\xe9y"]),
    ),
    st.tuples(st.just("Sec-WebSocket-Protocol"), st.just("chat")),
    st.tuples(st.just("Sec-WebSocket-Extensions"), st.just("permessage-deflate")),
    st.tuples(st.just("Origin"), st.just("http://localhost")),
)


@settings(max_examples=400, deadline=None)
@given(
    version=st.sampled_from(["1.0", "1.1"]),
    upgrade=st.sampled_from(["websocket", "WebSocket"]),
    connection=st.sampled_from(["Upgrade", "upgrade", "keep-alive, Upgrade"]),
    headers=st.lists(header, max_size=7),
)
def test_the_answers_are_wsprotos(
    version: str, upgrade: str, connection: str, headers: list[tuple[str, str]]
) -> None:
    lines = [f"GET /ws HTTP/{version}", f"Upgrade: {upgrade}", f"Connection: {connection}"]
    lines += [f"{name}: {value}" for name, value in headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    ours = our_answer(request)
    assume(ours is not None)
    assert ours == wsproto_answer(request)


def test_the_property_test_sees_both_answers() -> None:
    """Guard against a vacuous property: accepted and refused requests occur."""
    good = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    assert our_answer(good + b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n\r\n") == accept_value(KEY)
    assert our_answer(good + b"Sec-WebSocket-Version: 8\r\n\r\n") == Refused(426, VERSION_13)


async def raw_upgrade(server: Any, version: str, lines: list[str]) -> tuple[bytes, bool]:
    """Send an upgrade by hand; what the server answered (up to 3 s or its
    end of stream) and whether it closed the connection."""
    host, port = server.addresses[0]
    stream = await trio.open_tcp_stream(host, port)
    head = f"GET /ws?token={token(server.config)} HTTP/{version}\r\n" + "".join(f"{line}\r\n" for line in lines)
    await stream.send_all((head + "\r\n").encode())
    data = b""
    closed = False
    with trio.move_on_after(3):
        while b'"connected"' not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    await stream.aclose()
    return data, closed


UPGRADE = ["Upgrade: websocket", "Connection: Upgrade"]
KEYED = [*UPGRADE, f"Sec-WebSocket-Key: {KEY}"]


@pytest.mark.parametrize(
    ("version", "lines", "answer"),
    [
        ("1.1", ["Host: x", *KEYED], b"HTTP/1.1 400 \r\nContent-Length: 0\r\nServer: wsserver\r\nSec-WebSocket-Version: 13\r\n"),
        ("1.1", ["Host: x", *KEYED, "Sec-WebSocket-Version:"], b"HTTP/1.1 400 \r\n"),
        ("1.1", ["Host: x", *KEYED, "Sec-WebSocket-Version: 8"], b"HTTP/1.1 426 \r\nContent-Length: 0\r\nServer: wsserver\r\nSec-WebSocket-Version: 13\r\n"),
        ("1.1", ["Host: x", *UPGRADE, "Sec-WebSocket-Version: 13"], b"HTTP/1.1 400 \r\nContent-Length: 0\r\nServer: wsserver\r\nConnection: close\r\n"),
        ("1.0", [*KEYED, "Sec-WebSocket-Version: 13"], b"HTTP/1.1 400 \r\n"),
        ("1.0", ["Host: x", *KEYED, "Sec-WebSocket-Version: 13"], b"HTTP/1.1 101 Switching Protocols\r\n"),
        ("1.1", ["Host: x", *UPGRADE, "Sec-WebSocket-Key: xx", "Sec-WebSocket-Version: 13"], b"HTTP/1.1 101 Switching Protocols\r\n"),
        ("1.1", ["Host: x", *KEYED, "Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 13"], b"HTTP/1.1 101 Switching Protocols\r\n"),
    ],
)
async def test_bad_upgrades_get_their_status_and_nothing_breaks(
    live_server: Any, version: str, lines: list[str], answer: bytes
) -> None:
    server = await live_server()
    data, closed = await raw_upgrade(server, version, lines)
    assert data.startswith(answer), data
    if b" 101 " in answer:
        assert b'"connected"' in data and not closed
        return
    assert closed and data.endswith(b"\r\n\r\n")  # no body, then the end of the stream
    assert b"Content-Type" not in data
    with trio.fail_after(5):
        while hub_of(server).presence.sessions:
            await trio.sleep(0.01)
    assert server.metrics.registry.get_sample_value("wsserver_handshakes_total", {"result": "http_malformed"}) == 1
    # and a good client right after is served
    key = base64.b64encode(os.urandom(16)).decode()
    data, closed = await raw_upgrade(server, "1.1", ["Host: x", *UPGRADE, f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"])
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept_value(key)}\r\n".encode() in data
