"""The outbound byte path (`wsserver.net.fastwrite`) on real loopback sockets:
order, partial writes, control frames never interleaved with a half-written
frame, dropping a queue without tearing a frame, a writer task only while
there is a backlog."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Pong, Request, TextMessage

from tests.conftest import MemoryClient
from wsserver.net import fastwrite
from wsserver.net.fastwrite import FrameWriter, raw_socket
from wsserver.protocol.envelope import encode, text_frame
from wsserver.protocol.frames import close_frame, pong_frame


async def server_handshake(stream: trio.abc.Stream) -> None:
    """Answer one client's opening handshake with wsproto (the frames are ours)."""
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        ws.receive_data(await stream.receive_some(65536))
        for event in ws.events():
            if isinstance(event, Request):
                await stream.send_all(ws.send(AcceptConnection()))
                return


@pytest.fixture
async def pair() -> AsyncIterator[Any]:
    """(writer, client) over a real TCP connection on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        client_stream = await trio.open_tcp_stream("127.0.0.1", port)
        server_stream = await listeners[0].accept()
        client = MemoryClient(client_stream, auto_pong=True)

        async def handshake() -> None:
            assert await client.handshake("/ws")

        nursery.start_soon(handshake)
        await server_handshake(server_stream)
        writer = FrameWriter(server_stream, nursery.start_soon)
        yield writer, client
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
    writer, client = pair
    assert writer.sock is not None  # a plain TCP stream: direct sends are possible
    frames = [encode("n", {"i": i}, 0) for i in range(500)]
    for f in frames:
        writer.write_nowait(f.frame)
    assert [json.loads(t)["data"]["i"] for t in await texts(client, 500)] == list(range(500))


async def test_the_same_frame_bytes_go_to_many_writers(pair: Any) -> None:
    writer, client = pair
    wire = encode("hello", {"to": "everyone"}, 1)
    assert wire.frame is wire.frame  # built once
    writer.write_nowait(wire.frame)
    writer.write_nowait(wire.frame)
    assert await texts(client, 2) == [str(wire), str(wire)]


@pytest.mark.parametrize("vectored", [True, False], ids=["sendmsg", "send (Windows)"])
async def test_a_backlog_with_partial_writes_never_interleaves_with_control_frames(
    pair: Any, vectored: bool, monkeypatch: Any
) -> None:
    monkeypatch.setattr(fastwrite, "HAVE_SENDMSG", vectored)
    writer, client = pair
    big = [text_frame(json.dumps({"i": i, "pad": "x" * 60_000}).encode()) for i in range(60)]
    for i, f in enumerate(big):  # ~3.6 MB: more than the socket buffers take at once
        writer.write_nowait(f)
        if i % 20 == 10:
            writer.write_nowait(pong_frame(b"p%d" % i))  # a pong, as the reader sends them
    assert writer.pending, "expected a backlog"
    assert not writer.idle  # a writer task runs while there is a backlog
    got, pongs = [], []
    with trio.fail_after(20):
        while len(got) < 60 or len(pongs) < 3:
            event = await next_whole(client)  # wsproto raises on a torn frame
            if isinstance(event, TextMessage):
                got.append(json.loads(event.data)["i"])
            elif isinstance(event, Pong):
                pongs.append((len(got), bytes(event.payload)))
    assert got == list(range(60))
    # each pong arrives exactly where it was queued, between whole frames
    assert pongs == [(11, b"p10"), (31, b"p30"), (51, b"p50")]
    with trio.fail_after(5):
        while not writer.idle:
            await trio.sleep(0.01)
    assert writer.frames == 0 and not writer.pending  # the writer task ended with the backlog


async def test_dropping_the_queue_keeps_a_half_written_frame_whole(pair: Any) -> None:
    writer, client = pair
    big = [text_frame(json.dumps({"i": i, "pad": "y" * 200_000}).encode()) for i in range(30)]
    for f in big:
        writer.write_nowait(f)
    queued = writer.frames
    assert queued > 1, "expected a backlog"
    writer.drop_pending()
    kept = writer.frames
    assert kept <= 1  # at most the half-written head survives
    writer.write_nowait(close_frame(4008, "slow"))  # the close frame waits behind the head
    got = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.flush)
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
    assert not writer.torn


async def test_callbacks_run_after_the_frames_queued_before_them(pair: Any) -> None:
    writer, client = pair
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


async def test_memory_streams_have_no_raw_socket_and_write_through_the_task() -> None:
    a, b = trio.testing.memory_stream_pair()
    assert raw_socket(a) is None
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(a, nursery.start_soon)
        assert writer.sock is None
        frames = [text_frame(b'"%d"' % i) for i in range(5)]
        for f in frames:
            writer.write_nowait(f)
        assert writer.frames == 5 and not writer.idle
        await writer.flush()
        assert writer.idle and writer.frames == 0
        received = b""
        while len(received) < sum(map(len, frames)):
            received += await b.receive_some(65536)
        assert received == b"".join(frames)


async def test_a_broken_socket_marks_the_writer_broken_and_runs_its_markers(pair: Any) -> None:
    writer, client = pair
    big = text_frame(b'"' + b"q" * 5_000_000 + b'"')
    writer.write_nowait(big)
    assert not writer.idle
    seen: list[str] = []
    writer.call_when_written(lambda: seen.append("marker"))
    await client.stream.aclose()  # the peer goes away with our data unread
    with trio.fail_after(10):
        await writer.flush()
    assert writer.broken and seen == ["marker"]
    writer.write_nowait(text_frame(b"1"))  # ignored, never raises
    assert writer.frames == 0
