"""Shared test helpers: configs, a sans-IO WebSocket client over memory streams,
and a real server on a free port."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from tests.redis_server import redis_server  # noqa: F401 (a fixture: a real redis-server)
from wsserver.config import Config, load_config
from wsserver.core.hub import Hub
from wsserver.embed import install_http_api
from wsserver.net.server import Server
from wsserver.tokens import mint_token

# TEST_WSSERVER_FAST_IO=0 runs every test server on trio's plain I/O
# (`server.fast_io = false`); .ci/run runs the whole suite a second time so.
FAST_IO = os.environ.get("TEST_WSSERVER_FAST_IO", "1") != "0"


def make_config(tmp_path: Any, **overrides: Any) -> Config:
    """A config for tests: loopback, port 0, data in tmp_path; `a__b=v` means `a.b=v`.
    `server.fast_io` follows TEST_WSSERVER_FAST_IO unless overridden."""
    base: dict[str, Any] = {
        "server.host": "127.0.0.1",
        "server.port": 0,
        "server.fast_io": FAST_IO,
        "storage.dir": str(tmp_path),
        "auth.jwt_secret": "test-secret-0123456789abcdef-0123456789",
    }
    base.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(None, env={}, overrides=base)


def make_server(config: Config, **kwargs: Any) -> Server:
    """A server as the entry points build it: with the HTTP API installed."""
    server = Server(config, **kwargs)
    install_http_api(server)
    return server


def hub_of(server: Server) -> Hub:
    """The hub a server's actor owns, for tests that look at its state: the one
    place a test reaches past the actor's command door."""
    return server.actor._hub


def token(config: Config, ttl: float = 3600, **claims: Any) -> str:
    """A JWT the server accepts."""
    claims.setdefault("user_id", 1)
    return mint_token(config, claims, ttl)


class MemoryClient:
    """A WebSocket client built on wsproto, for memory streams and the autojump clock.

    `auto_pong=False` makes it a client that never answers pings (a dead peer).
    """

    def __init__(self, stream: trio.abc.Stream, *, auto_pong: bool = True) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.auto_pong = auto_pong
        self.close_code: int | None = None
        self.reject_status: int | None = None
        self.reject_body = b""

    async def _pump(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            self.events.append(CloseConnection(code=1006))
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, Ping) and self.auto_pong:
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                try:  # complete the closing handshake, as a browser does
                    await self.stream.send_all(self.ws.send(event.response()))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            self.events.append(event)

    async def read_some(self) -> None:
        """One read of whatever has arrived (at least one byte), kept as events."""
        await self._pump()

    async def next_event(self) -> Event:
        while not self.events:
            await self._pump()
        return self.events.popleft()

    async def handshake(self, target: str = "/ws", headers: list[tuple[str, str]] | None = None) -> bool:
        """True when accepted; else `reject_status` and `reject_body` are set."""
        await self.stream.send_all(
            self.ws.send(Request(host="test", target=target, extra_headers=headers or []))
        )
        while True:
            event = await self.next_event()
            if isinstance(event, AcceptConnection):
                return True
            if isinstance(event, RejectConnection):
                self.reject_status = event.status_code
                if not event.has_body:
                    return False
            if isinstance(event, RejectData):
                self.reject_body += event.data
                if event.body_finished:
                    return False

    async def send(self, message: Any) -> None:
        if isinstance(message, bytes):
            data = self.ws.send(BytesMessage(data=message))
        else:
            text = message if isinstance(message, str) else json.dumps(message)
            data = self.ws.send(TextMessage(data=text))
        await self.stream.send_all(data)

    async def recv(self) -> dict[str, Any]:
        """The next JSON message; fails on a close."""
        while True:
            event = await self.next_event()
            if isinstance(event, TextMessage):
                return json.loads(event.data)  # type: ignore[no-any-return]
            if isinstance(event, CloseConnection):
                self.close_code = event.code
                raise AssertionError(f"closed with {event.code} {event.reason}")

    async def recv_type(self, mtype: str) -> dict[str, Any]:
        """Skip messages until one of `mtype`."""
        while True:
            msg = await self.recv()
            if msg["type"] == mtype:
                return msg

    async def idle(self, seconds: float) -> None:
        """Read (answering pings) for `seconds`, asserting that no message arrives."""
        with trio.move_on_after(seconds):
            msg = await self.recv()
            raise AssertionError(f"unexpected message while idle: {msg}")

    async def closed(self) -> int:
        """Read until the close frame (or EOF) and return the close code."""
        while True:
            event = await self.next_event()
            if isinstance(event, CloseConnection):
                self.close_code = event.code
                return event.code


@pytest.fixture
async def memory_server(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """(Tests also request pytest-trio's `autojump_clock`: only a clock among the
    test's own arguments is used.) A factory: `server = await memory_server(**config_overrides)`; then
    `client = await server.connect(...)` opens a MemoryClient on a memory stream."""
    async with trio.open_nursery() as nursery:

        async def factory(**overrides: Any) -> Server:
            config = make_config(tmp_path, **overrides)
            server = make_server(config)
            await server.start_core(nursery)

            async def connect(
                target: str = "/ws",
                headers: list[tuple[str, str]] | None = None,
                *,
                lockstep: bool = False,
                auto_pong: bool = True,
                expect_accept: bool = True,
            ) -> MemoryClient:
                pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
                client_stream, server_stream = pair()
                nursery.start_soon(server.listeners.handle_stream, server_stream, False)
                client = MemoryClient(client_stream, auto_pong=auto_pong)
                accepted = await client.handshake(target, headers)
                assert accepted == expect_accept, (client.reject_status, client.reject_body)
                return client

            server.connect = connect  # type: ignore[attr-defined]
            return server

        yield factory
        nursery.cancel_scope.cancel()


@pytest.fixture
async def live_server(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    """A factory for real servers on 127.0.0.1 with a free port:
    `server = await live_server(**config_overrides)`; `server.url` is its ws:// base."""
    async with trio.open_nursery() as nursery:

        async def factory(**overrides: Any) -> Server:
            config = make_config(tmp_path, **overrides)
            server: Server = await nursery.start(make_server(config).serve)
            host, port = server.addresses[0]
            server.url = f"ws://{host}:{port}"  # type: ignore[attr-defined]
            server.http = f"http://{host}:{port}"  # type: ignore[attr-defined]
            return server

        yield factory
        nursery.cancel_scope.cancel()


async def http_request(
    address: tuple[str, int],
    method: str,
    target: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request over a real socket with h11; returns (status, headers, body)."""
    import h11

    stream = await trio.open_tcp_stream(*address)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        hdrs = [("Host", "test"), ("Connection", "close"), *(headers or [])]
        if body:
            hdrs.append(("Content-Length", str(len(body))))
        data = conn.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        if body:
            data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        status, resp_headers, chunks = 0, {}, []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if event is h11.PAUSED:  # after a 101: the upgrade was accepted, no HTTP body follows
                return status, resp_headers, b""
            if isinstance(event, h11.Response | h11.InformationalResponse):
                status = event.status_code
                resp_headers = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status, resp_headers, b"".join(chunks)


@asynccontextmanager
async def ws_connect(url: str, extra_headers: list[tuple[bytes, bytes]] | None = None) -> AsyncIterator[Any]:
    """`trio_websocket.open_websocket_url`, plus closing the client's socket at the end:
    trio-websocket's client leaves it open when the server closed first (a client-side
    leak that would otherwise show up as a ResourceWarning)."""
    async with open_websocket_url(url, extra_headers=extra_headers) as ws:
        yield ws
    with trio.CancelScope(shield=True):
        await ws._stream.aclose()


# --------------------------------------------------------------------------- reading a client


async def recv(ws: Any, timeout: float = 5) -> dict[str, Any]:
    """The next message a trio-websocket client receives, decoded."""
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def recv_type(ws: Any, mtype: str, timeout: float = 5) -> dict[str, Any]:
    """The next message of type `mtype`, skipping the others."""
    while True:
        msg = await recv(ws, timeout)
        if msg["type"] == mtype:
            return msg


async def close_code(ws: Any, timeout: float = 10) -> int:
    """Read until the server closes the connection; its close code."""
    with trio.fail_after(timeout):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            return int(exc.reason.code)


LISTENING = re.compile(r"listening on ([0-9.]+):(\d+)")


class ServerProcess:
    """`python -m wsserver serve` as a child process, with its stderr collected
    (on trio's plain I/O too under TEST_WSSERVER_FAST_IO=0)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        plain = {} if FAST_IO else {"WSSERVER_SERVER_FAST_IO": "false"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wsserver", *args],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **plain, **(env or {})},
        )
        self.log = ""

    async def address(self) -> tuple[str, int]:
        """Read stderr until `listening on HOST:PORT`."""
        assert self.proc.stderr is not None
        with trio.fail_after(20):
            while True:
                line = await trio.to_thread.run_sync(self.proc.stderr.readline)
                if not line:
                    raise AssertionError(f"server exited: {self.log}")
                self.log += line.decode()
                m = LISTENING.search(line.decode())
                if m:
                    return m.group(1), int(m.group(2))

    async def wait(self) -> int:
        _out, err = await trio.to_thread.run_sync(lambda: self.proc.communicate(timeout=20))
        self.log += err.decode()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def spawn() -> Any:
    procs: list[ServerProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> ServerProcess:
        p = ServerProcess(args, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
