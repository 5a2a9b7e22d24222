"""RFC 6455 behaviour of the server after the handshake, on real sockets with
hand-made client frames: ping/pong, fragmentation, the closing handshake in
both directions, and the close code of each framing violation (other
connections unaffected)."""

from __future__ import annotations

import base64
import json
import os
import struct
from typing import Any

import pytest
import trio
from wsproto.events import CloseConnection, Pong, TextMessage

from tests.conftest import MemoryClient, hub_of, token
from tests.test_frames import client_frame

CODE = "HG66OP88"


async def connect(server: Any, user_id: int = 1) -> MemoryClient:
    host, port = server.addresses[0]
    stream = await trio.open_tcp_stream(host, port)
    client = MemoryClient(stream)
    assert await client.handshake(f"/ws?token={token(server.config, user_id=user_id)}")
    assert (await client.recv())["type"] == "connected"
    return client


async def next_of(client: MemoryClient, kind: type) -> Any:
    with trio.fail_after(5):
        while True:
            event = await client.next_event()
            if isinstance(event, kind):
                return event


async def tcp_closed(client: MemoryClient) -> bool:
    """True when the server ends the TCP stream (EOF) within 5 s."""
    with trio.fail_after(5):
        while True:
            try:
                data = await client.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return True
            if not data:
                return True


async def test_ping_is_answered_with_a_pong_carrying_its_payload(live_server: Any) -> None:
    server = await live_server()
    client = await connect(server)
    await client.stream.send_all(client_frame(0x9, b"hello?"))
    pong = await next_of(client, Pong)
    assert bytes(pong.payload) == b"hello?"
    await client.stream.aclose()


async def test_fragmented_message_with_a_ping_between_its_fragments(live_server: Any) -> None:
    server = await live_server()
    client = await connect(server)
    body = json.dumps({"type": "ping", "id": "frag-1", "data": {"pad": "汉字" * 50}}).encode()
    cut = 7
    await client.stream.send_all(
        client_frame(0x1, body[:cut], fin=False)
        + client_frame(0x9, b"mid")
        + client_frame(0x0, body[cut:-5], fin=False)
        + client_frame(0x0, body[-5:])
    )
    pong = await next_of(client, Pong)
    assert bytes(pong.payload) == b"mid"
    reply = await client.recv()
    assert reply["type"] == "pong" and reply["id"] == "frag-1"
    await client.stream.aclose()


async def test_a_frame_in_the_same_packet_as_the_handshake_is_read(live_server: Any) -> None:
    server = await live_server()
    host, port = server.addresses[0]
    stream = await trio.open_tcp_stream(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?token={token(server.config)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    await stream.send_all(request + client_frame(0x1, b'{"type":"ping","id":"early"}'))
    received = b""
    with trio.fail_after(5):
        while b'"early"' not in received:
            received += await stream.receive_some(65536)
    assert received.startswith(b"HTTP/1.1 101 ")
    await stream.aclose()


@pytest.mark.parametrize(("payload", "echo"), [(struct.pack("!H", 1000) + b"bye", 1000), (b"", None)])
async def test_client_close_is_echoed_then_the_server_ends_tcp(
    live_server: Any, payload: bytes, echo: int | None
) -> None:
    server = await live_server()
    client = await connect(server)
    await client.stream.send_all(client_frame(0x8, payload))
    raw = b""
    with trio.fail_after(5):
        while len(raw) < 2 or len(raw) < 2 + raw[1]:
            raw += await client.stream.receive_some(65536)
    assert raw[0] == 0x88
    if echo is None:
        assert raw[:2] == b"\x88\x00"  # an empty close answers an empty close
    else:
        assert struct.unpack("!H", raw[2:4])[0] == echo
    assert await tcp_closed(client)
    await client.stream.aclose()
    with trio.fail_after(5):
        while hub_of(server).presence.sessions:
            await trio.sleep(0.02)


async def test_server_close_waits_for_the_clients_close_frame(live_server: Any) -> None:
    server = await live_server()
    client = await connect(server)
    # the hub closes the connection (as a kick would)
    conn_id = next(iter(hub_of(server).presence.sessions))
    hub_of(server).presence.sessions[conn_id].outlet.close(4003, "kicked")
    event = await next_of(client, CloseConnection)  # MemoryClient answers the close
    assert event.code == 4003
    assert await tcp_closed(client)
    await client.stream.aclose()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (bytes((0x81, 0x02)) + b"{}", 1002),  # not masked
        (client_frame(0x1, b"{}", rsv=0x20), 1002),
        (client_frame(0x0, b"{}"), 1002),
        (client_frame(0x9, b"x" * 126), 1002),
        (client_frame(0x1, b'{"type":"\xff"}'), 1007),
        (client_frame(0x8, struct.pack("!H", 1005)), 1002),
    ],
)
async def test_framing_violations_close_with_their_code_and_spare_others(
    live_server: Any, frame: bytes, code: int
) -> None:
    server = await live_server()
    bad = await connect(server, user_id=1)
    other = await connect(server, user_id=2)
    await bad.stream.send_all(frame)
    assert await bad.closed() == code
    await other.send({"type": "ping", "id": "still-here"})
    assert (await other.recv())["id"] == "still-here"
    await bad.stream.aclose()
    await other.stream.aclose()


async def test_large_message_in_many_reads_and_the_1009_limit(live_server: Any) -> None:
    server = await live_server(limits__max_message_bytes=100_000)
    client = await connect(server)
    body = json.dumps({"type": "ping", "id": "big", "data": {"pad": "x" * 90_000}}).encode()
    wire = client_frame(0x1, body)
    for i in range(0, len(wire), 1000):  # trickled in small writes
        await client.stream.send_all(wire[i : i + 1000])
    assert (await client.recv())["id"] == "big"
    await client.stream.send_all(client_frame(0x1, b"x" * 100_001))
    assert await client.closed() == 1009
    await client.stream.aclose()


async def test_echo_path_echoes_a_fragmented_text_message(live_server: Any) -> None:
    server = await live_server(server__echo_path="/echo")
    host, port = server.addresses[0]
    client = MemoryClient(await trio.open_tcp_stream(host, port))
    assert await client.handshake("/echo")
    await client.stream.send_all(client_frame(0x1, "汉".encode()[:2], fin=False) + client_frame(0x0, "汉".encode()[2:]))
    event = await next_of(client, TextMessage)
    assert event.data == "汉"
    await client.stream.aclose()
