"""The accept loop of plain TCP listeners (`Listeners.accept_plain`, `fastio.accept_plain`): failures of
`accept()` that concern one connection or the process's capacity do not stop
the listener; anything else does; many waiting connections are all served."""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any

import pytest
import trio

from tests.conftest import http_request, make_config
from wsserver.net import fastio
from wsserver.net import listeners as listeners_module
from wsserver.net.server import Server


class FlakyListener:
    """A real listening socket whose `accept()` first fails with `errors`."""

    def __init__(self, sock: socket.socket, errors: list[int]) -> None:
        self.sock = sock
        self.errors = list(errors)
        self.failed: list[int] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        if self.errors:
            code = self.errors.pop(0)
            self.failed.append(code)
            raise OSError(code, os.strerror(code))
        return self.sock.accept()


@pytest.fixture
def listening() -> Any:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    yield sock
    sock.close()


async def test_a_peer_that_left_and_a_full_descriptor_table_do_not_stop_the_listener(
    tmp_path: Any, listening: socket.socket, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    monkeypatch.setattr(listeners_module, "ACCEPT_BACKOFF", 0.01)
    server = Server(make_config(tmp_path))
    flaky = FlakyListener(listening, [errno.ECONNABORTED, errno.EMFILE])
    async with trio.open_nursery() as nursery:
        await server.start_core(nursery)
        nursery.start_soon(server.listeners.accept_plain, flaky, nursery, False)
        with caplog.at_level(logging.ERROR, logger="wsserver.server"), trio.fail_after(10):
            status, _, body = await http_request(listening.getsockname(), "GET", "/healthz")
        assert status == 200, body
        assert flaky.failed == [errno.ECONNABORTED, errno.EMFILE]
        assert [r.getMessage() for r in caplog.records if "accept" in r.getMessage()] == [
            f"accept: [Errno {errno.EMFILE}] {os.strerror(errno.EMFILE)}; waiting 10 ms"
        ]
        nursery.cancel_scope.cancel()


async def test_an_unexpected_accept_failure_stops_the_listener(tmp_path: Any, listening: socket.socket) -> None:
    server = Server(make_config(tmp_path))
    flaky = FlakyListener(listening, [errno.EBADF])
    client = socket.create_connection(listening.getsockname())  # makes the listener readable
    try:
        async with trio.open_nursery() as nursery:
            await server.start_core(nursery)
            with pytest.raises(OSError) as caught, trio.fail_after(10):
                await server.listeners.accept_plain(flaky, nursery, False)
            assert caught.value.errno == errno.EBADF
            nursery.cancel_scope.cancel()
    finally:
        client.close()


async def test_more_waiting_connections_than_one_batch_are_all_served(
    tmp_path: Any, listening: socket.socket, monkeypatch: Any
) -> None:
    monkeypatch.setattr(fastio, "ACCEPT_BATCH", 4)
    server = Server(make_config(tmp_path))
    async with trio.open_nursery() as nursery:
        await server.start_core(nursery)
        nursery.start_soon(server.listeners.accept_plain, listening, nursery, False)
        statuses: list[int] = []

        async def one() -> None:
            status, _, _ = await http_request(listening.getsockname(), "GET", "/healthz")
            statuses.append(status)

        with trio.fail_after(20):
            async with trio.open_nursery() as clients:
                for _ in range(30):
                    clients.start_soon(one)
        assert statuses == [200] * 30
        nursery.cancel_scope.cancel()
