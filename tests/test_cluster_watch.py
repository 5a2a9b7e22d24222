"""`watch_presence` counts every node (SPEC 11, 13): the `watching` answer and
each `presence` frame count a watched user's connections on all nodes, and a
change on another node reaches the watcher when that node's batch arrives.
Real nodes on a real redis-server; the copy's listener as a plain function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.cluster_nodes import Client, client, nodes
from tests.redis_server import RedisServer
from wsserver.core.cluster_members import OtherNodes


def entry(conn_id: str, user: str) -> dict[str, Any]:
    return {"conn_id": conn_id, "principal": ["user", "", user], "key": f"1||{user}", "user_id": int(user),
            "username": None, "user_type": None, "rooms": []}  # fmt: skip


def test_the_copy_tells_its_listener_each_principal_whose_count_changed_once() -> None:
    others, heard = OtherNodes(), []
    others.listener = heard.append
    others.load("b", 0, [entry("c1", "7")])
    assert heard == ["1||7"] and others.connections_in_group("1||7") == 1
    others.delta("b", 1, [["c2", entry("c2", "7")], ["c3", entry("c3", "8")], ["c3", None]])
    assert heard == ["1||7", "1||7"]  # 8 came and went within the batch: no change
    others.load("b", 1, [entry("c1", "7"), entry("c2", "7")])  # the same state again: silent
    assert heard == ["1||7", "1||7"]
    others.drop("b")
    assert heard == ["1||7", "1||7", "1||7"] and others.connections_in_group("1||7") == 0


async def presence(c: Client, devices: int) -> dict[str, Any]:
    """The next `presence` frame, which must say `devices`."""
    frame = await c.next("presence")
    assert frame["data"]["devices"] == devices, frame
    return frame


async def test_a_watcher_hears_of_the_watched_user_s_connections_on_every_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(a, 1, group_id=1) as watcher:
            async with client(b, 5, group_id=1):
                with trio.fail_after(5):
                    while True:  # until b's batch with user 5 reached a
                        now = await watcher.request("watch_presence", "watching", user_ids=[5])
                        if now["data"]["users"][0]["devices"] == 1:
                            break
                        await trio.sleep(0.05)
                assert now["data"]["users"] == [{"user_id": 5, "user_type": None, "online": True, "devices": 1}]
                async with client(a, 5, group_id=1):  # a second device, on the watcher's node
                    assert (await presence(watcher, 2))["data"]["online"] is True
                    async with client(b, 5, group_id=1):  # a third, on the other node
                        await presence(watcher, 3)
                    await presence(watcher, 2)  # it closed on b
                await presence(watcher, 1)  # closed on a
            gone = await presence(watcher, 0)
            assert gone["data"]["online"] is False
            async with client(b, 5, group_id=2):  # another group's user 5: not watched
                async with client(b, 5, group_id=1):
                    await presence(watcher, 1)
