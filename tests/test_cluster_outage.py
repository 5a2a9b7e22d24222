"""Cluster mode without Redis (SPEC 11): a durable request is refused at once with
`unavailable` (WebSocket) or 503 (HTTP), nothing stored; once Redis is back the
nodes take requests again and read the log on from where they were, without
a restart. Real `wsserver serve` nodes on a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from tests.cluster_nodes import Peer, two_nodes, user
from tests.conftest import http_request
from tests.hubprocess import API_KEY, Hub
from tests.redis_server import RedisServer


async def send(peer: Peer, text: str, cmid: str) -> dict[str, object]:
    await peer.send("send_message", {"to_user_id": 2, "message": text, "client_msg_id": cmid})
    return await peer.expect("message_sent", "error")


async def task_progress(hub: Hub) -> int:
    body = {"user_id": "u1", "task_id": "t1", "task_type": "batchgo", "status": "running", "progress": 1}
    status, _, _ = await http_request(
        hub.address, "POST", "/api/websocket/task/progress",
        headers=[("X-API-Key", API_KEY), ("Content-Type", "application/json")], body=json.dumps(body).encode(),
    )  # fmt: skip
    return status


async def test_without_redis_durable_requests_are_refused_and_served_again_once_it_returns(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with two_nodes(tmp_path, redis_server) as (a, b):
        async with user(a, 1) as alice, user(b, 2) as bob:
            assert (await send(alice, "before", "c0"))["type"] == "message_sent"
            assert (await bob.expect("new_message"))["data"]["text"] == "before"
            redis_server.stop()
            refused = await send(alice, "during", "c1")
            assert refused["type"] == "error" and refused["data"]["code"] == "unavailable"
            again = await send(alice, "during", "c1")  # refused at once from now on
            assert again["type"] == "error" and again["data"]["code"] == "unavailable"
            assert await task_progress(a) == 503
            status, _, body = await http_request(a.address, "GET", "/readyz")
            assert status == 503 and {"redis", "cluster.log"} & set(json.loads(body)["failing"])
            redis_server.start()
            with trio.fail_after(15):  # the client retries until the node takes it again
                while (reply := await send(alice, "after", "c2"))["type"] == "error":
                    assert reply["data"]["code"] == "unavailable"
                    await trio.sleep(0.1)
            got = (await bob.expect("new_message"))["data"]  # B reads the log on, no restart
            assert (got["text"], got["seq"]) == ("after", 2)
            assert await task_progress(a) == 200
            assert (await http_request(a.address, "GET", "/readyz"))[0] == 200
