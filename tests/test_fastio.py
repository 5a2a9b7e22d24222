"""`net.fastio`: trio's internals still have the shape it relies on (this fails
loudly when a trio release changes them), and `server.fast_io` decides which
path every read, write, accept and close takes."""

from __future__ import annotations

import ast
import inspect
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

import wsserver
from tests.conftest import http_request, hub_of, token, ws_connect
from wsserver.net import fastio, readiness
from wsserver.net.fastio import RawFrameWriter
from wsserver.net.writer import FrameWriter


async def test_trio_internals_have_the_shape_fastio_relies_on() -> None:
    """If this fails, trio changed what net.fastio reaches into: adapt fastio
    (or keep trio below the pin in pyproject.toml) before releasing."""
    assert fastio.internals_problems() == []
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    try:
        assert isinstance(listener.socket._sock, socket.socket)  # type: ignore[attr-defined]
        client = await trio.open_tcp_stream(*listener.socket.getsockname()[:2])
        server = await listener.accept()
        for stream in (client, server):
            assert isinstance(stream, trio.SocketStream)
            assert isinstance(stream.socket._sock, socket.socket)  # type: ignore[attr-defined]
            assert stream.socket._sock.fileno() == stream.socket.fileno()  # type: ignore[attr-defined]
            assert fastio.raw_socket(stream) is stream.socket._sock  # type: ignore[attr-defined]
        assert fastio.listener_socket(listener) is listener.socket._sock  # type: ignore[attr-defined]
        await client.aclose()
        await server.aclose()
    finally:
        await listener.aclose()
    # what fastio awaits and calls below trio's streams
    assert inspect.iscoroutinefunction(trio.lowlevel.wait_readable)
    assert inspect.iscoroutinefunction(trio.lowlevel.wait_writable)
    assert inspect.iscoroutinefunction(trio.lowlevel.wait_task_rescheduled)
    assert trio.lowlevel.Abort.SUCCEEDED is not None


def test_a_changed_signature_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    async def wait_readable(fd: int, *, timeout: float) -> None: ...

    monkeypatch.setattr(trio.lowlevel, "wait_readable", wait_readable)
    assert fastio.internals_problems() == [
        "trio.lowlevel.wait_readable cannot be called with 1 positional argument(s)"
    ]


async def test_a_server_on_a_changed_trio_says_so_and_serves_on_the_plain_path(
    live_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fastio, "internals_problems", lambda: ["trio.lowlevel.x is missing"])
    with caplog.at_level(logging.ERROR, logger="wsserver.server"):
        server = await live_server(server__fast_io=True)
    assert [r.getMessage() for r in caplog.records if "fast_io" in r.getMessage()] == [
        f"server.fast_io: trio {trio.__version__} is not what net.fastio expects "
        "(trio.lowlevel.x is missing); using trio's plain I/O (slower)"
    ]
    status, _, body = await http_request(server.addresses[0], "GET", "/healthz")
    assert status == 200, body
    assert not server.flusher.running


@pytest.fixture
def fast_paths(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The fast paths taken meanwhile: raw reads, raw writers, the raw accept
    loop and raw closes."""
    taken: set[str] = set()
    recv, init, accept, forget = readiness._recv, RawFrameWriter.__init__, fastio.accept_plain, fastio.forget

    def spy_recv(sock: socket.socket, n: int) -> bytes | None:
        taken.add("read")
        return recv(sock, n)

    def spy_init(self: RawFrameWriter, *args: Any, **kwargs: Any) -> None:
        taken.add("write")
        init(self, *args, **kwargs)

    async def spy_accept(*args: Any) -> None:
        taken.add("accept")
        await accept(*args)

    def spy_forget(sock: socket.socket) -> None:
        taken.add("close")
        forget(sock)

    monkeypatch.setattr(readiness, "_recv", spy_recv)
    monkeypatch.setattr(RawFrameWriter, "__init__", spy_init)
    monkeypatch.setattr(fastio, "accept_plain", spy_accept)
    monkeypatch.setattr(fastio, "forget", spy_forget)  # what `fastio.close_stream` calls
    return taken


@pytest.mark.parametrize("fast_io", [True, False], ids=["fast_io", "plain"])
async def test_fast_io_decides_the_path_of_every_read_write_accept_and_close(
    live_server: Any, fast_paths: set[str], fast_io: bool
) -> None:
    server = await live_server(server__fast_io=fast_io)
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        with trio.fail_after(5):
            assert json.loads(await ws.get_message())["type"] == "connected"
            await ws.send_message(json.dumps({"type": "ping", "id": 1}))
            assert json.loads(await ws.get_message())["type"] == "pong"
        (session,) = hub_of(server).presence.sessions.values()
        writer = session.outlet.writer
        assert type(writer) is (RawFrameWriter if fast_io else FrameWriter)
    status, _, _ = await http_request(server.addresses[0], "GET", "/healthz")
    assert status == 200
    with trio.fail_after(5):
        while hub_of(server).presence.sessions or ("close" not in fast_paths and fast_io):
            await trio.sleep(0.01)
    assert server.flusher.running is fast_io
    assert (readiness._current.get() is not None) is (fast_io and readiness.HAVE_EPOLL)
    assert fast_paths == ({"read", "write", "accept", "close"} if fast_io else set())


def test_only_fastio_reaches_below_trios_streams() -> None:
    """The stdlib socket under a trio stream (`.socket._sock`) and trio's socket
    waits are used in net/fastio.py and its reads, net/readiness.py, only: the
    modules to check when trio changes."""
    root = Path(wsserver.__file__).parent
    below = {"wait_readable", "wait_writable", "notify_closing"}
    fast_io = {root / "net" / "fastio.py", root / "net" / "readiness.py"}
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path in fast_io:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "_sock":  # getattr(x.socket, "_sock")
                offenders.append(f"{path.relative_to(root)}:{node.lineno} _sock")
            if not isinstance(node, ast.Attribute):
                continue
            inner = node.value
            if (node.attr == "_sock" and isinstance(inner, ast.Attribute) and inner.attr == "socket") or (
                node.attr in below and isinstance(inner, ast.Attribute) and inner.attr == "lowlevel"
            ):
                offenders.append(f"{path.relative_to(root)}:{node.lineno} {node.attr}")
    assert offenders == []
