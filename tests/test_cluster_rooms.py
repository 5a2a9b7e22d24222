"""Rooms and limits count every node (SPEC 11): a room's members in the
client's replies, `limits.max_room_members`, the presence events, a killed
node's users leaving their rooms, and the per-principal `reject` policy.
Real nodes on a real redis-server; the other nodes' copy
(`core.cluster_members.OtherNodes`) as plain functions."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from tests.cluster_nodes import Client, client, nodes
from tests.conftest import http_request
from tests.redis_server import RedisServer
from wsserver.core.cluster_members import OtherNodes


def entry(conn_id: str, user: str, *rooms: str) -> dict[str, Any]:
    return {
        "conn_id": conn_id,
        "principal": ["user", "", user],
        "user_id": int(user),
        "username": f"u{user}",
        "user_type": None,
        "rooms": [["1", r] for r in rooms],
    }


def test_another_node_s_batches_in_sequence_count_in_its_rooms_and_principals() -> None:
    others = OtherNodes()
    assert others.check(frozenset({"b"}), {"b": 0}) == ["b"]  # never loaded
    others.load("b", 0, [])
    others.delta("b", 1, [["c1", entry("c1", "7", "r")], ["c2", entry("c2", "7", "r")]])
    assert others.members(("1", "r")) == [{"user_id": 7, "username": "u7", "user_type": None, "connections": 2}]
    assert others.room_connections(("1", "r")) == 2 and others.connections_of(("user", "", "7")) == 2
    others.delta("b", 2, [["c2", entry("c2", "7")]])  # c2 left the room
    assert others.room_connections(("1", "r")) == 1 and others.in_room(("1", "r"), ("user", "", "7"))
    others.delta("b", 1, [["c2", entry("c2", "7", "r")]])  # an old batch again: ignored
    assert others.room_connections(("1", "r")) == 1
    others.delta("b", 3, [["c1", None], ["c2", None]])
    assert others.rooms == {} and others.principals == {}
    assert others.check(frozenset({"b"}), {"b": 3}) == []


def test_a_missing_batch_makes_the_node_loaded_again_and_the_batches_since_apply_after_the_load() -> None:
    others = OtherNodes()
    others.load("b", 5, [entry("c1", "7", "r")])
    others.delta("b", 7, [["c2", entry("c2", "8", "r")]])  # 6 went missing
    assert others.check(frozenset({"b"}), {"b": 7}) == ["b"]
    others.delta("b", 8, [["c3", entry("c3", "9", "r")]])  # kept until the load
    others.load("b", 7, [entry("c1", "7", "r"), entry("c2", "8", "r")])
    assert sorted(m["user_id"] for m in others.members(("1", "r"))) == [7, 8, 9]
    assert others.check(frozenset({"b"}), {"b": 8}) == []


def test_a_batch_lost_on_the_bus_is_noticed_by_the_next_check_and_a_dead_node_is_dropped() -> None:
    others = OtherNodes()
    others.load("b", 1, [entry("c1", "7", "r")])
    assert others.check(frozenset({"b"}), {"b": 2}) == []  # batch 2 may still be on its way
    assert others.check(frozenset({"b"}), {"b": 2}) == ["b"]  # it never came
    others.load("b", 2, [])
    assert others.check(frozenset({"b"}), {"b": 0}) == ["b"]  # Redis lost the number: read it again
    others.load("b", 0, [entry("c1", "7", "r")])
    assert others.check(frozenset(), {}) == [] and others.rooms == {} and others.nodes == {}


def test_a_whole_rewrite_makes_the_node_loaded_again() -> None:
    others = OtherNodes()
    others.load("b", 1, [])
    others.delta("b", 2, None)
    others.delta("b", 3, [["c1", entry("c1", "7", "r")]])
    assert others.check(frozenset({"b"}), {"b": 3}) == ["b"]
    others.load("b", 2, [])
    assert others.room_connections(("1", "r")) == 1


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5) -> None:
    with trio.fail_after(within):
        while not await check():
            await trio.sleep(0.05)


async def members_seen(c: Client, room: str) -> list[tuple[Any, int]]:
    reply = await c.request("room_members", "room_members", room=room)
    return sorted((m["user_id"], m["connections"]) for m in reply["data"]["members"])


async def test_room_joined_and_room_members_list_the_members_of_every_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(b, 1) as one_b, client(b, 1) as one_b2, client(a, 2) as two_a:
            await one_b.request("join_room", "room_joined", room="r")
            await one_b2.request("join_room", "room_joined", room="r")

            async def listed() -> bool:
                return await members_seen(two_a, "r") == [(1, 2)]

            await eventually(listed)
            joined = await two_a.request("join_room", "room_joined", room="r")
            members = sorted((m["user_id"], m["username"], m["connections"]) for m in joined["data"]["members"])
            assert members == [(1, None, 2), (2, None, 1)]

            async def both() -> bool:
                return await members_seen(one_b, "r") == [(1, 2), (2, 1)]

            await eventually(both)
            await one_b2.request("leave_room", "room_left", room="r")

            async def one_left() -> bool:
                return await members_seen(two_a, "r") == [(1, 1), (2, 1)]

            await eventually(one_left)


async def test_a_room_full_across_nodes_refuses_one_more_member_with_conflict(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    full = {"WSSERVER_LIMITS_MAX_ROOM_MEMBERS": "2"}
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3, extra=full) as (a, b):
        async with client(b, 1) as one, client(b, 2) as two, client(a, 3) as three:
            await one.request("join_room", "room_joined", room="r")
            await two.request("join_room", "room_joined", room="r")

            async def counted() -> bool:
                return len(await members_seen(three, "r")) == 2

            await eventually(counted)
            refused = await three.request("join_room", "error", room="r")
            assert refused["data"]["code"] == "conflict" and refused["data"]["field"] == "room"
            await two.request("leave_room", "room_left", room="r")

            async def room_again() -> bool:
                return len(await members_seen(three, "r")) == 1

            await eventually(room_again)
            await three.request("join_room", "room_joined", room="r")


async def test_presence_events_count_every_node(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(b, 1) as one_b, client(a, 1) as one_a, client(b, 2) as two:
            await two.request("join_room", "room_joined", room="r")
            await one_b.request("join_room", "room_joined", room="r")
            assert (await two.next("user_joined"))["data"]["user_id"] == 1

            async def seen(c: Client, expected: list[tuple[Any, int]]) -> None:
                async def check() -> bool:
                    return await members_seen(c, "r") == expected

                await eventually(check)

            await seen(one_a, [(1, 1), (2, 1)])
            # user 1's second connection (on another node) joins: not a new member
            await one_a.request("join_room", "room_joined", room="r")
            await seen(one_b, [(1, 2), (2, 1)])  # (what a handed to the bus before is here)
            await one_b.request("leave_room", "room_left", room="r")  # user 1 is still in (on a)
            assert [m["type"] for m in await drained(two)] == []
            await seen(one_a, [(1, 1), (2, 1)])
            # the last connection of user 1 in the room leaves, on a node where nobody else is in it
            await one_a.request("leave_room", "room_left", room="r")
            left = await two.next("user_left")
            assert left["data"] == {"room": "r", "user_id": 1, "username": None}


async def drained(c: Client) -> list[dict[str, Any]]:
    """The frames `c` has already received (a ping's pong marks the end)."""
    await c.send("ping")
    out = []
    while True:
        msg = await c.receive()
        if msg["type"] == "pong":
            return out
        out.append(msg)


async def test_a_killed_node_s_users_leave_their_rooms_once_on_every_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 3, heartbeat=0.3, node_ttl=2) as (a, b, c):
        async with (
            client(c, 7) as seven,
            client(c, 8) as eight_c,
            client(a, 8) as eight_a,
            client(a, 9) as nine_a,
            client(b, 10) as ten_b,
        ):
            for member in (seven, eight_c, eight_a, nine_a, ten_b):
                await member.request("join_room", "room_joined", room="r")

            async def everyone() -> bool:
                return await members_seen(ten_b, "r") == [(7, 1), (8, 2), (9, 1), (10, 1)]

            await eventually(everyone)
            await drained(nine_a)
            await drained(ten_b)
            c.kill()
            for watcher in (nine_a, ten_b):
                left = await watcher.next("user_left", within=6)
                assert left["data"] == {"room": "r", "user_id": 7, "username": None}

            async def forgotten() -> bool:
                return await members_seen(ten_b, "r") == [(8, 1), (9, 1), (10, 1)]

            await eventually(forgotten)
            # a second would come from the other survivor's next heartbeats: give it three
            await trio.sleep(1)
            for watcher in (nine_a, ten_b):
                assert [m for m in await drained(watcher) if m["type"] == "user_left"] == []


UPGRADE = [
    ("Connection", "Upgrade"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
]


async def test_reject_policy_refuses_a_connection_beyond_the_limit_counted_on_every_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    reject = {"WSSERVER_LIMITS_MAX_CONNECTIONS_PER_USER": "2", "WSSERVER_LIMITS_PER_USER_POLICY": "reject"}
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3, extra=reject) as (a, b):
        async with client(b, 4) as first, client(b, 4) as second, client(a, 5) as watcher:
            for c in (first, second):  # (in a room, so that a client of node a sees them)
                await c.request("join_room", "room_joined", room="r")

            async def counted(n: int) -> None:
                async def check() -> bool:
                    return await members_seen(watcher, "r") == ([(4, n)] if n else [])

                await eventually(check)

            await counted(2)
            status, _, body = await http_request(a.address, "GET", "/ws?token=" + a.token(4), headers=UPGRADE)
            assert status == 429 and json.loads(body)["code"] == 429, body
            await second.ws.aclose()  # (its close leaves the room and the count alike)
            await counted(1)
            async with client(a, 4) as third:  # one left on node b: room for one more
                await third.request("ping", "pong")


async def test_room_members_changed_while_redis_was_down_are_right_again_once_it_returns(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(b, 1) as one, client(b, 2) as two, client(a, 3) as watcher:
            await one.request("join_room", "room_joined", room="r")

            async def seen(expected: list[tuple[Any, int]], within: float = 5) -> None:
                async def check() -> bool:
                    return await members_seen(watcher, "r") == expected

                await eventually(check, within)

            await seen([(1, 1)])
            redis_server.stop()
            with trio.fail_after(5):
                while (await http_request(b.address, "GET", "/readyz"))[0] != 503:
                    await trio.sleep(0.05)
            # node b's changes meanwhile reach neither Redis nor the bus
            await one.request("leave_room", "room_left", room="r")
            await two.request("join_room", "room_joined", room="r")
            redis_server.start()
            await seen([(2, 1)], within=15)
