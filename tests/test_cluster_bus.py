"""Ephemeral delivery across nodes (SPEC 11): a publish of any target, a room
message, typing, each sent through one node, reaches the matching
connections on the others, in order per sender, as ONE Redis message per
publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import coredis
import trio

from tests.cluster_nodes import client, nodes
from tests.conftest import ws_connect
from tests.hubprocess import CODE
from tests.redis_server import RedisServer
from wsserver.net.cluster.bus import decode


async def until_all_listed(hub: Any, count: int) -> None:
    with trio.fail_after(10):
        while True:
            status, reply = await hub.api("GET", "/api/nodes")
            if status == 200 and len(reply["data"]["nodes"]) == count:
                return
            await trio.sleep(0.05)


async def test_a_publish_of_each_target_kind_through_one_node_reaches_clients_on_the_others(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 3, heartbeat=0.5, node_ttl=5) as (a, b, c):
        async with (
            client(b, 1, group_id=1, user_type="staff") as on_b,
            client(c, 2, group_id=1) as on_c,
            client(c, 3, group_id=2) as other_group,
        ):
            await on_b.request("join_room", "room_joined", room="lobby")
            await on_c.request("join_room", "room_joined", room="lobby")
            bodies: list[tuple[dict[str, Any], list[Any]]] = [
                ({"user_id": 1}, [on_b]),
                ({"user_ids": [1, 2]}, [on_b, on_c]),
                ({"group_id": 1}, [on_b, on_c]),
                ({"room": "lobby", "group_id": 1}, [on_b, on_c]),
                ({"all": True}, [on_b, on_c, other_group]),
                ({"all": True, "user_type": "staff"}, [on_b]),
            ]
            for i, (target, reached) in enumerate(bodies):
                status, reply = await a.api("POST", "/api/publish", {**target, "type": "note", "data": {"n": i}})
                assert status == 200, reply
                assert reply["data"]["delivered"] == 0  # this node's connections (none on a)
                for receiver in reached:
                    assert (await receiver.next("note"))["data"] == {"n": i}
            # what a client did not get never came: each got exactly its own
            status, _ = await a.api("POST", "/api/publish", {"all": True, "type": "end", "data": {}})
            for receiver, expected in ((on_b, []), (on_c, []), (other_group, [])):
                got = []
                while (msg := await receiver.receive())["type"] != "end":
                    got.append(msg)
                assert [m for m in got if m["type"] == "note"] == expected


async def test_room_messages_reach_members_on_another_node_in_order(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with client(a, 1) as sender, client(b, 2) as member:
            await member.request("join_room", "room_joined", room="r")
            await sender.request("join_room", "room_joined", room="r")
            for i in range(100):
                await sender.send("room_message", room="r", n=i)
            got = [(await member.next("room_message"))["data"]["n"] for _ in range(100)]
            assert got == list(range(100))


async def test_room_presence_events_and_typing_cross_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with client(a, 1) as one, client(b, 2) as two:
            await two.request("join_room", "room_joined", room="r")
            await one.request("join_room", "room_joined", room="r")
            joined = await two.next("user_joined")
            assert joined["data"]["user_id"] == 1
            await one.send("typing", to_user_id=2)
            typing = await two.next("typing")
            assert typing["data"]["from"]["user_id"] == 1 and typing["data"]["typing"] is True


async def test_one_api_publish_is_one_redis_message(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 3, heartbeat=0.5, node_ttl=5) as (a, b, c):
        async with client(b, 1) as on_b, client(c, 1) as on_c, client(c, 2) as two:
            redis: Any = coredis.Redis.from_url(redis_server.url)
            async with redis, redis.pubsub(channels=["wsserver:bus"]) as sub:
                for i in range(5):
                    status, reply = await a.api("POST", "/api/publish", {"user_ids": [1, 2], "type": "x", "data": i})
                    assert status == 200, reply
                for receiver in (on_b, on_c, two):
                    for i in range(5):
                        assert (await receiver.next("x"))["data"] == i
                publishes = []
                with trio.move_on_after(1.5):
                    async for message in sub:
                        if message["type"] == "message":
                            _origin, route, frame = decode(message["data"])
                            if route[0] not in ("hb", "m"):  # (heartbeats, presence batches)
                                publishes.append(frame)
                assert len(publishes) == 5


async def test_crm_announcements_reach_the_group_s_dashboards_on_other_nodes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with (
            client(b, "boss", group_id=7, role="admin") as admin,
            client(b, "clerk", group_id=7) as member,
            client(b, "stranger", group_id=8) as stranger,
            ws_connect(f"{a.url}?activation_code={CODE}") as desk,
        ):
            with trio.fail_after(5):
                assert json.loads(await desk.get_message())["type"] == "auth_success"
            for dash in (admin, member):
                await dash.next("group_stats_update")  # its greeting, from its own node
            accounts = [{"line_account_id": "a1", "online_status": "online"}]
            await desk.send_message(json.dumps({"type": "sync_line_accounts", "data": accounts}))
            with trio.fail_after(5):  # node A knows the account once its own record came back
                while json.loads(await desk.get_message())["type"] != "sync_result":
                    pass
            shown = [(await dash.next("group_stats_update"))["data"]["activation_code"] for dash in (admin, member)]
            assert shown[0] == CODE and shown[1] != CODE  # in clear for the admin only
            change = {"line_account_id": "a1", "online_status": "offline"}
            await desk.send_message(json.dumps({"type": "account_status_change", "data": change}))
            for dash in (admin, member):
                got = await dash.next("account_status_change")
                assert got["data"]["line_account_id"] == "a1" and got["data"]["online_status"] == "offline"
            status, _ = await a.api("POST", "/api/publish", {"group_id": 8, "type": "end", "data": {}})
            assert status == 200
            assert (await stranger.receive())["type"] == "end"  # group 8 heard nothing of group 7


async def test_a_publish_to_a_group_s_dashboards_devices_or_one_code_is_narrowed_on_the_other_nodes_too(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.5, node_ttl=5) as (a, b):
        async with client(b, "clerk", group_id=7) as dash, ws_connect(f"{b.url}?activation_code={CODE}") as desk:
            with trio.fail_after(5):
                assert json.loads(await desk.get_message())["type"] == "auth_success"

            async def notes_until_end(receive: Any) -> list[Any]:
                """The `note` frames' data before the next `end` (other types skipped)."""
                notes = []
                with trio.fail_after(5):
                    while (msg := await receive())["type"] != "end":
                        if msg["type"] == "note":
                            notes.append(msg["data"])
                return notes

            async def desk_frame() -> Any:
                return json.loads(await desk.get_message())

            for target, to_dash, to_desk in (
                ({"group_id": 7, "kind": "device"}, False, True),
                ({"group_id": 7, "kind": "dashboard"}, True, False),
                ({"activation_code": CODE}, False, True),
            ):
                status, reply = await a.api("POST", "/api/publish", {**target, "type": "note", "data": target})
                assert status == 200, reply
                status, _ = await a.api("POST", "/api/publish", {"group_id": 7, "type": "end", "data": {}})
                assert status == 200
                assert await notes_until_end(dash.receive) == ([target] if to_dash else []), target
                assert await notes_until_end(desk_frame) == ([target] if to_desk else []), target
