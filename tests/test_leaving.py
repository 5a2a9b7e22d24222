"""A connection leaves the registry the moment its close is decided (4008, 4003,
4004, 4001), not when its socket is done: right after the decision it is in no
room, online for no one and counted nowhere, even when the client never
answers the close. Real server, real sockets, clients that stop reading."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from tests.conftest import MemoryClient, token
from tests.test_api import CODE, ok, start


@asynccontextmanager
async def silent_client(server: Any, target: str, room: str | None = None) -> AsyncIterator[MemoryClient]:
    """A client past its greeting (and in `room`) that then reads nothing more, so
    it never answers a close frame; its receive buffer is small: it stalls soon."""
    raw = trio.socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = MemoryClient(trio.SocketStream(raw))
    try:
        await raw.connect(server.addresses[0])
        assert await client.handshake(target)
        hello = await client.recv()
        assert hello["type"] in ("connected", "auth_success"), hello
        if room is not None:
            await client.send({"type": "join_room", "data": room})
            await client.recv_type("room_joined")
        yield client
    finally:
        await client.stream.aclose()


def user(server: Any, user_id: str) -> str:
    return f"/ws?token={token(server.config, user_id=user_id, group_id=1)}"


async def members(server: Any, room: str = "lobby") -> list[Any]:
    data = await ok(server, "GET", f"/api/rooms/{room}/members?group_id=1")
    return [m["user_id"] for m in data["members"]]


async def online(server: Any, user_id: str) -> int:
    return int((await ok(server, "GET", f"/api/users/{user_id}/online"))["connections"])


async def test_room_member_that_stops_reading_leaves_room_and_presence_as_it_is_closed_4008(
    live_server: Any,
) -> None:
    server = await start(live_server, limits__send_queue=8)
    async with silent_client(server, user(server, "stalled"), "lobby") as stalled:
        assert await members(server) == ["stalled"]
        body = {"type": "system", "data": {"pad": "x" * 20_000}, "room": "lobby", "group_id": 1}
        with trio.fail_after(30):
            while (await ok(server, "POST", "/api/publish", body))["delivered"] == 1:
                pass  # until its queue is full: the fan-out closes it 4008
        # at once, though its closing handshake cannot have ended: it reads nothing
        assert await members(server) == []
        assert await online(server, "stalled") == 0
        assert (await ok(server, "GET", "/api/rooms?group_id=1"))["rooms"] == []
        with trio.fail_after(10):
            assert await stalled.closed() == 4008


async def test_kicked_connection_that_never_answers_is_gone_at_once(live_server: Any) -> None:
    server = await start(live_server)
    async with silent_client(server, user(server, "kicked"), "lobby"):
        assert await ok(server, "POST", "/api/users/kicked/kick", {}) == {"kicked": 1}
        assert await members(server) == []
        assert await online(server, "kicked") == 0


async def test_connection_replaced_by_a_newer_one_leaves_its_rooms_at_once(live_server: Any) -> None:
    server = await start(live_server, limits__max_connections_per_user=1)
    async with silent_client(server, user(server, "u1"), "lobby"):
        async with silent_client(server, user(server, "u1")):
            assert await members(server) == []  # the old one (4004) left; the new one joined none
            assert await online(server, "u1") == 1


async def test_desktop_client_of_a_disabled_code_is_offline_at_once(live_server: Any) -> None:
    server = await start(live_server)
    async with silent_client(server, f"/ws?activation_code={CODE}"):
        body = {"code": CODE, "group_id": 1, "enabled": False}
        assert (await ok(server, "POST", "/api/activation-codes", body))["closed"] == 1
        codes = (await ok(server, "GET", "/api/activation-codes"))["codes"]
        assert [c["connections"] for c in codes if c["code"] == CODE] == [0]
        assert (await ok(server, "GET", "/api/stats"))["connections"]["device"] == 0
