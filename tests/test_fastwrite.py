"""The outbound byte path (`wsserver.net.fastwrite`) on real loopback sockets:
order, partial writes, trio-websocket's own frames never interleaved, dropping
a queue without tearing a frame."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from trio_websocket import wrap_server_stream
from wsproto.events import CloseConnection, Pong, TextMessage

from tests.conftest import MemoryClient
from wsserver.net.fastwrite import FrameWriter, raw_socket
from wsserver.net.http import ReplayStream
from wsserver.protocol.envelope import encode, text_frame


@pytest.fixture
async def pair() -> AsyncIterator[Any]:
    """(writer, ws, client) over a real TCP connection on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
        server_stream = await listeners[0].accept()
        transport = ReplayStream(server_stream, b"")
        client = MemoryClient(client_stream, auto_pong=True)

        async def handshake() -> None:
            assert await client.handshake("/ws")

        nursery.start_soon(handshake)
        request = await wrap_server_stream(nursery, transport)
        ws = await request.accept()
        writer = FrameWriter(ws, transport)
        nursery.start_soon(writer.run)
        yield writer, ws, client
        nursery.cancel_scope.cancel()
    for lst in listeners:
        await lst.aclose()
    await client_stream.aclose()
    await server_stream.aclose()


async def next_whole(client: MemoryClient) -> Any:
    """The next event, with a text message's fragments joined (wsproto hands out
    a large message in pieces as its bytes arrive)."""
    event = await client.next_event()
    if not isinstance(event, TextMessage):
        return event
    parts = [event.data]
    while not event.message_finished:
        event = await client.next_event()
        assert isinstance(event, TextMessage), event  # nothing between the pieces
        parts.append(event.data)
    return TextMessage(data="".join(parts))


async def texts(client: MemoryClient, n: int) -> list[str]:
    out = []
    with trio.fail_after(10):
        while len(out) < n:
            event = await next_whole(client)
            if isinstance(event, TextMessage):
                out.append(event.data)
    return out


async def test_frames_arrive_whole_and_in_order(pair: Any) -> None:
    writer, _, client = pair
    assert writer.sock is not None  # a plain TCP stream: direct sends are possible
    frames = [encode("n", {"i": i}, 0) for i in range(500)]
    for f in frames:
        writer.write_nowait(f.frame)
    assert [json.loads(t)["data"]["i"] for t in await texts(client, 500)] == list(range(500))


async def test_the_same_frame_bytes_go_to_many_writers(pair: Any) -> None:
    writer, _, client = pair
    wire = encode("hello", {"to": "everyone"}, 1)
    assert wire.frame is wire.frame  # built once
    writer.write_nowait(wire.frame)
    writer.write_nowait(wire.frame)
    assert await texts(client, 2) == [str(wire), str(wire)]


async def test_a_backlog_with_partial_writes_never_interleaves_with_pongs(pair: Any) -> None:
    writer, _ws, client = pair
    big = [text_frame(json.dumps({"i": i, "pad": "x" * 60_000}).encode()) for i in range(60)]
    for f in big:  # ~3.6 MB: more than the socket buffers take at once
        writer.write_nowait(f)
    assert writer.pending, "expected a backlog"
    # trio-websocket answers a ping (its own frame) while our backlog is queued
    from wsproto.events import Ping

    await client.stream.send_all(client.ws.send(Ping(payload=b"p1")))
    got, pongs = [], 0
    with trio.fail_after(20):
        while len(got) < 60 or pongs < 1:
            event = await next_whole(client)  # wsproto raises on a torn frame
            if isinstance(event, TextMessage):
                got.append(json.loads(event.data)["i"])
            elif isinstance(event, Pong):
                pongs += 1
    assert got == list(range(60)) and pongs == 1


async def test_dropping_the_queue_keeps_a_half_written_frame_whole(pair: Any) -> None:
    writer, ws, client = pair
    big = [text_frame(json.dumps({"i": i, "pad": "y" * 200_000}).encode()) for i in range(30)]
    for f in big:
        writer.write_nowait(f)
    queued = writer.frames
    assert queued > 1, "expected a backlog"
    writer.drop_pending()
    kept = writer.frames
    assert kept <= 1  # at most the half-written head survives
    got = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.aclose, 4008, "slow")  # the close frame waits behind the head
        with trio.fail_after(20):
            while True:
                event = await next_whole(client)
                if isinstance(event, TextMessage):
                    got.append(json.loads(event.data)["i"])
                elif isinstance(event, CloseConnection):
                    assert event.code == 4008
                    break
    assert got == list(range(len(got)))  # whole frames, in order, then the close
    assert len(got) == 30 - queued + kept


async def test_callbacks_run_after_the_frames_queued_before_them(pair: Any) -> None:
    writer, _, client = pair
    seen: list[int] = []
    big = text_frame(b'"' + b"z" * 3_000_000 + b'"')
    writer.write_nowait(big)
    writer.call_when_written(lambda: seen.append(len(writer.pending)))
    assert seen == []  # still waiting behind the big frame
    await texts(client, 1)
    with trio.fail_after(5):
        while not seen:
            await trio.sleep(0.01)
    assert seen == [0]


async def test_memory_streams_have_no_raw_socket() -> None:
    a, _b = trio.testing.memory_stream_pair()
    assert raw_socket(ReplayStream(a, b"")) is None
