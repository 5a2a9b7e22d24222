"""Shared presence across nodes (SPEC 11): online status, a user's connections,
rooms and members, stats, kick and the per-principal limit count every node;
a node killed with -9 stops counting within node_ttl and its users with no
other connection get `user_offline` once. Real nodes on a real redis-server;
the sans-IO parts as plain functions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.cluster_nodes import Client, client, nodes
from tests.hubprocess import Hub
from tests.redis_server import RedisServer
from tests.webhook_receiver import Receiver
from wsserver.core.cluster_presence import merge_members, over_limit, room_members


def test_the_oldest_connections_beyond_the_limit_are_the_ones_to_close() -> None:
    conns = [("b", "c2", 20.0), ("a", "c1", 10.0), ("a", "c3", 30.0)]
    assert over_limit(conns, 1) == [("a", "c1"), ("b", "c2")]
    assert over_limit(conns, 3) == []
    assert over_limit(conns, 0) == []  # 0: no limit


def test_room_members_of_several_nodes_are_one_entry_per_principal() -> None:
    entries = [
        {"principal": ["user", "", "1"], "user_id": 1, "rooms": [["1", "r"]]},
        {"principal": ["user", "", "2"], "user_id": 2, "rooms": [["1", "s"]]},
    ]
    remote = room_members(entries, "1", "r")
    assert remote == [{"user_id": 1, "username": None, "user_type": None, "connections": 1}]
    local = [{"user_id": 1, "username": None, "user_type": None, "connections": 2}]
    assert merge_members(local, remote)[0]["connections"] == 3


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5) -> None:
    with trio.fail_after(within):
        while not await check():
            await trio.sleep(0.05)


async def data(hub: Hub, method: str, target: str, body: Any = None) -> Any:
    status, reply = await hub.api(method, target, body)
    assert status == 200, reply
    return reply["data"]


async def closed_with(c: Client, within: float = 5) -> int:
    with trio.fail_after(within):
        try:
            while True:
                await c.ws.get_message()
        except ConnectionClosed as exc:
            assert exc.reason is not None
            return int(exc.reason.code)


async def test_api_reads_count_the_connections_of_every_node(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(b, 1) as one_b, client(a, 2) as two_a, client(b, 2) as two_b:
            for c in (one_b, two_a, two_b):
                await c.request("join_room", "room_joined", room="r")

            async def counted() -> bool:
                rooms = (await data(a, "GET", "/api/rooms?group_id=1"))["rooms"]
                return rooms == [{"room": "r", "group_id": 1, "members": 3, "connections": 3}]

            await eventually(counted)
            online = await data(a, "GET", "/api/users/1/online")
            assert online == {"user_id": "1", "is_online": True, "connections": 1, "mailbox": 0}
            assert (await data(a, "GET", "/api/users/2/online"))["connections"] == 2
            assert (await data(a, "GET", "/api/websocket/user/1/online"))["is_online"] is True
            conns = (await data(a, "GET", "/api/users/2/connections"))["connections"]
            assert sorted(c["conn_id"] for c in conns) == sorted(
                [two_a.greeting["data"]["conn_id"], two_b.greeting["data"]["conn_id"]]
            )
            members = await data(a, "GET", "/api/rooms/r/members?group_id=1")
            assert sorted((m["user_id"], m["connections"]) for m in members["members"]) == [(1, 1), (2, 2)]
            stats = await data(a, "GET", "/api/stats")
            assert stats["connections"]["total"] == 3 and stats["users"] == 2 and stats["nodes"] == 2
            seed = await data(a, "GET", "/api/websocket/stats")
            assert seed["total_connections"] == 3 and sorted(seed["connected_users"]) == [1, 2]


            async def reported() -> bool:  # (the other node's counts: as of its last report)
                listed = (await data(a, "GET", "/api/nodes"))["nodes"]
                return sorted((n["name"], n["connections"]) for n in listed) == [("n1", 1), ("n2", 2)]

            await eventually(reported)

            await one_b.request("leave_room", "room_left", room="r")

            async def left() -> bool:
                got = await data(a, "GET", "/api/rooms/r/members?group_id=1")
                return [m["user_id"] for m in got["members"]] == [2]

            await eventually(left)


async def test_a_kick_on_one_node_closes_the_user_s_connections_on_the_others(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(b, 5) as on_b, client(a, 6) as bystander:

            async def online() -> bool:
                return bool((await data(a, "GET", "/api/users/5/online"))["is_online"])

            await eventually(online)
            assert (await data(a, "POST", "/api/users/5/kick", {"reason": "bye"}))["kicked"] == 1
            assert (await on_b.next("kicked"))["data"]["reason"] == "bye"
            assert await closed_with(on_b) == 4003
            await bystander.request("ping", "pong")


async def test_the_oldest_connection_anywhere_gets_4004_over_the_per_user_limit(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    limit = {"WSSERVER_LIMITS_MAX_CONNECTIONS_PER_USER": "1"}
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3, extra=limit) as (a, b):
        async with client(b, 9) as old:

            async def online() -> bool:
                return bool((await data(a, "GET", "/api/users/9/online"))["is_online"])

            await eventually(online)
            async with client(a, 9) as new:
                assert await closed_with(old) == 4004
                await new.request("ping", "pong")

                async def one_left() -> bool:
                    return int((await data(b, "GET", "/api/users/9/online"))["connections"]) == 1

                await eventually(one_left)


async def test_a_killed_node_s_presence_vanishes_and_its_users_go_offline_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with trio.open_nursery() as nursery:
        rec = await nursery.start(Receiver().serve)
        hooks = {"WSSERVER_WEBHOOKS_URL": rec.url}
        with nodes(tmp_path, redis_server, 3, heartbeat=0.3, node_ttl=2, extra=hooks) as (a, b, c):
            async with client(c, 7) as seven, client(c, 8), client(a, 8) as eight:
                await seven.request("join_room", "room_joined", room="r")
                await eight.request("join_room", "room_joined", room="r")

                async def counted() -> bool:
                    return int((await data(a, "GET", "/api/stats"))["connections"]["total"]) == 3

                await eventually(counted)
                c.kill()

                async def gone() -> bool:
                    online = await data(b, "GET", "/api/users/7/online")
                    return online["is_online"] is False

                await eventually(gone, within=4)
                assert (await data(b, "GET", "/api/users/8/online"))["connections"] == 1

                async def left_the_room() -> bool:  # (the rooms are cleaned up after the presence)
                    rooms = (await data(b, "GET", "/api/rooms"))["rooms"]
                    return [(r["room"], r["connections"]) for r in rooms] == [("r", 1)]

                await eventually(left_the_room, within=4)
                await rec.wait_for(lambda: any(e["event"] == "user_offline" for e in rec.events), timeout=5)
                # a second would come from the other survivor's next heartbeats: give it three
                await trio.sleep(1)
                offline = [e for e in rec.events if e["event"] == "user_offline"]
                assert [(e["data"]["user_id"], e["data"]["reason"]) for e in offline] == [(7, "node_gone")]
        nursery.cancel_scope.cancel()
