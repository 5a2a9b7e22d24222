"""`net.readiness`, the fast path's reads: the edge-triggered read waits of plain
sockets, over real socket pairs."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from wsserver.net.readiness import HAVE_EPOLL, Readiness, forget, receive_raw

pytestmark = pytest.mark.skipif(not HAVE_EPOLL, reason="epoll is Linux-only; elsewhere trio's waits are used")


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


@pytest.fixture
def ab() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = pair()
    yield a, b
    a.close()
    b.close()


async def read_in_background(nursery: trio.Nursery, sock: socket.socket) -> list[bytes]:
    """Start a reader parked on `sock`; the list gets what it reads."""
    got: list[bytes] = []

    async def reader() -> None:
        got.append(await receive_raw(sock, 1024))

    nursery.start_soon(reader)
    await trio.testing.wait_all_tasks_blocked()
    assert not got
    return got


async def arrival(got: list[bytes]) -> list[bytes]:
    with trio.fail_after(5):
        while not got:
            await trio.sleep(0.001)
    return got


async def start(nursery: trio.Nursery) -> Readiness:
    readiness = Readiness()
    await nursery.start(readiness.run)
    return readiness


async def test_a_parked_reader_wakes_when_data_comes(ab: tuple[socket.socket, socket.socket]) -> None:
    a, b = ab
    async with trio.open_nursery() as nursery:
        readiness = await start(nursery)
        got = await read_in_background(nursery, a)
        b.send(b"hello")
        assert await arrival(got) == [b"hello"]
        assert readiness.is_drained(a)  # a short read: the next read parks at once
        nursery.cancel_scope.cancel()


async def test_after_a_short_read_data_that_came_meanwhile_is_not_missed(ab: tuple[socket.socket, socket.socket]) -> None:
    """A short read marks the socket drained; bytes that arrive before the next
    call still wake it (their edge clears the mark or wakes the parked task)."""
    a, b = ab
    async with trio.open_nursery() as nursery:
        readiness = await start(nursery)
        b.send(b"one")
        assert await receive_raw(a, 1024) == b"one"
        assert readiness.is_drained(a)
        b.send(b"two")  # arrives while nobody waits
        with trio.fail_after(5):
            assert await receive_raw(a, 1024) == b"two"
        # a full read (as much as asked) leaves the socket unmarked: more may wait
        b.send(b"abcdef")
        with trio.fail_after(5):
            assert await receive_raw(a, 3) == b"abc"
            assert not readiness.is_drained(a)
            assert await receive_raw(a, 3) == b"def"
        nursery.cancel_scope.cancel()


async def test_a_cancelled_wait_leaves_nothing_behind(ab: tuple[socket.socket, socket.socket]) -> None:
    a, b = ab
    async with trio.open_nursery() as nursery:
        readiness = await start(nursery)
        with trio.move_on_after(0.05) as scope:
            await receive_raw(a, 1024)
        assert scope.cancelled_caught
        assert not readiness._waiting
        b.send(b"later")
        with trio.fail_after(5):
            assert await receive_raw(a, 1024) == b"later"
        nursery.cancel_scope.cancel()


async def test_the_end_of_the_stream_and_forget(ab: tuple[socket.socket, socket.socket]) -> None:
    a, b = ab
    async with trio.open_nursery() as nursery:
        await start(nursery)
        b.close()
        with trio.fail_after(5):
            assert await receive_raw(a, 1024) == b""
        c, d = pair()
        got = await read_in_background(nursery, c)
        forget(c)  # about to close c: the parked reader is woken
        c.close()
        assert await arrival(got) == [b""]  # recv on the closed socket: the end
        d.close()
        nursery.cancel_scope.cancel()
    a.close()


async def test_a_reused_descriptor_number_is_registered_anew() -> None:
    async with trio.open_nursery() as nursery:
        await start(nursery)
        a, b = pair()
        b.send(b"x")
        assert await receive_raw(a, 1024) == b"x"  # a is now in the epoll set
        number = a.fileno()
        fresh, d = pair()  # made while `number` is taken: other numbers
        a.close()  # without forget(): the kernel drops it from the set by itself
        b.close()
        os.dup2(fresh.fileno(), number)  # the new socket under the old number
        c = socket.socket(fileno=number)
        fresh.close()
        c.setblocking(False)
        got = await read_in_background(nursery, c)
        d.send(b"new socket")
        assert await arrival(got) == [b"new socket"]
        c.close()
        d.close()
        nursery.cancel_scope.cancel()


async def test_two_readers_on_one_socket_is_an_error(ab: tuple[socket.socket, socket.socket]) -> None:
    a, _ = ab
    async with trio.open_nursery() as nursery:
        await start(nursery)
        nursery.start_soon(receive_raw, a, 1024)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await receive_raw(a, 1024)
        nursery.cancel_scope.cancel()


async def test_without_a_readiness_trio_waits(ab: tuple[socket.socket, socket.socket]) -> None:
    a, b = ab
    async with trio.open_nursery() as nursery:
        got = await read_in_background(nursery, a)
        b.send(b"plain")
        assert await arrival(got) == [b"plain"]


async def test_a_stopping_poller_releases_parked_readers(ab: tuple[socket.socket, socket.socket]) -> None:
    a, b = ab
    got: list[bytes] = []
    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as core:
            await start(core)

            async def reader() -> None:
                try:
                    got.append(await receive_raw(a, 1024))
                except BaseException:
                    got.append(b"error")
                    raise

            outer.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            core.cancel_scope.cancel()
        b.send(b"after")
        with trio.fail_after(5):
            while not got:
                await trio.sleep(0.001)
    assert got == [b"after"]  # woken, read again, now through trio's waits
    a.close()
    b.close()


async def _objects_per_parked_reader(with_readiness: bool) -> float:
    socks = [pair() for _ in range(100)]
    try:
        async with trio.open_nursery() as nursery:
            if with_readiness:
                await start(nursery)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            base = len(gc.get_objects())
            for a, _ in socks:
                nursery.start_soon(receive_raw, a, 1024)
            await trio.testing.wait_all_tasks_blocked()
            gc.collect()
            per_reader = (len(gc.get_objects()) - base) / len(socks)
            nursery.cancel_scope.cancel()
    finally:
        for a, b in socks:
            a.close()
            b.close()
    return per_reader


async def test_a_parked_reader_keeps_fewer_objects_alive_than_trios_wait() -> None:
    """What a waiting connection leaves for every young GC collection to walk:
    trio's `wait_readable` builds ~14 objects per wait, a parked read ~5 (the
    rest, the same on both sides, is each reader being a task of its own)."""
    ours = await _objects_per_parked_reader(True)
    trios = await _objects_per_parked_reader(False)
    assert trios - ours >= 6, (ours, trios)
