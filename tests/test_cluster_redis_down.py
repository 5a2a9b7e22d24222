"""Redis trouble (SPEC 11): while the cluster's Redis is unreachable `/readyz`
answers 503 naming it, API publishes answer 503, and connections stay open;
when it returns the nodes reconnect and resubscribe by themselves, and
delivery across nodes resumes. Real nodes, a real redis-server stopped and
started again."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from tests.cluster_clients import client, nodes
from tests.conftest import http_request
from tests.redis_server import RedisServer


async def test_nodes_survive_a_redis_outage_and_resume_delivery(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(a, 1) as on_a, client(b, 2) as on_b:
            status, _ = await a.api("POST", "/api/publish", {"user_id": 2, "type": "before", "data": {}})
            assert status == 200
            await on_b.next("before")

            redis_server.stop()
            with trio.fail_after(5):
                while True:
                    status, _, body = await http_request(a.address, "GET", "/readyz")
                    if status == 503:
                        break
                    await trio.sleep(0.05)
            assert "redis" in json.loads(body)["failing"]
            status, reply = await a.api("POST", "/api/publish", {"user_id": 2, "type": "during", "data": {}})
            assert status == 503 and "Redis" in reply["message"], reply
            status, _ = await b.api("GET", "/api/nodes")
            assert status == 503
            # the clients keep their connections, and their own node still answers them
            await on_a.request("ping", "pong")
            await on_b.request("ping", "pong")

            redis_server.start()
            with trio.fail_after(15):
                while True:
                    status, _ = await a.api("POST", "/api/publish", {"user_id": 2, "type": "after", "data": {}})
                    if status == 200:
                        with trio.move_on_after(0.5):
                            await on_b.next("after", within=1)
                            break
                    await trio.sleep(0.1)
            with trio.fail_after(5):
                while (await http_request(b.address, "GET", "/readyz"))[0] != 200:
                    await trio.sleep(0.05)
            # and the other way round: b's subscription came back too
            status, _ = await b.api("POST", "/api/publish", {"user_id": 1, "type": "back", "data": {}})
            assert status == 200
            await on_a.next("back")


async def test_a_node_started_while_redis_is_down_serves_and_joins_when_it_comes(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.stop()
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        status, _, body = await http_request(a.address, "GET", "/readyz")
        assert status == 503 and "redis" in json.loads(body)["failing"]
        async with client(a, 1) as on_a, client(b, 2) as on_b:
            await on_a.request("ping", "pong")
            redis_server.start()
            with trio.fail_after(15):
                while True:
                    status, reply = await a.api("GET", "/api/nodes")
                    if status == 200 and len(reply["data"]["nodes"]) == 2:
                        break
                    await trio.sleep(0.1)
            with trio.fail_after(15):
                while True:
                    status, _ = await a.api("POST", "/api/publish", {"user_id": 2, "type": "hi", "data": {}})
                    if status == 200:
                        with trio.move_on_after(0.5):
                            await on_b.next("hi", within=1)
                            break
                    await trio.sleep(0.1)
