"""Redis trouble (SPEC 11): while the cluster's Redis is unreachable `/readyz`
answers 503 naming it, API publishes answer 503, and connections stay open;
when it returns the nodes reconnect and resubscribe by themselves, and
delivery across nodes resumes. Real nodes, a real redis-server stopped and
started again."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import trio

from tests.cluster_nodes import Client, client, nodes
from tests.conftest import http_request
from tests.hubprocess import Hub
from tests.redis_server import RedisServer


async def test_nodes_survive_a_redis_outage_and_resume_delivery(tmp_path: Path, redis_server: RedisServer) -> None:
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        async with client(a, 1) as on_a, client(b, 2) as on_b:
            status, _ = await a.api("POST", "/api/publish", {"user_id": 2, "type": "before", "data": {}})
            assert status == 200
            await on_b.next("before")

            redis_server.stop()
            with trio.fail_after(5):
                while True:  # both the bus's link and the log's task notice; the bus's decides publishes
                    status, _, body = await http_request(a.address, "GET", "/readyz")
                    if status == 503 and "redis" in json.loads(body)["failing"]:
                        break
                    await trio.sleep(0.05)
            status, reply = await a.api("POST", "/api/publish", {"user_id": 2, "type": "during", "data": {}})
            assert status == 503 and "Redis" in reply["message"], reply
            status, _ = await b.api("GET", "/api/nodes")
            assert status == 503
            # the clients keep their connections, and their own node still answers them
            await on_a.request("ping", "pong")
            await on_b.request("ping", "pong")

            redis_server.start()
            # each node resubscribes by itself (what is published before it has is lost:
            # ephemeral); delivery resumes both ways
            await until_delivered(a, on_b, 2, "after")
            with trio.fail_after(5):
                while (await http_request(b.address, "GET", "/readyz"))[0] != 200:
                    await trio.sleep(0.05)
            await until_delivered(b, on_a, 1, "back")


async def until_delivered(origin: Hub, receiver: Client, user_id: int, mtype: str) -> None:
    """Publish through `origin` until `receiver` gets it."""
    with trio.fail_after(15):
        while True:
            status, _ = await origin.api("POST", "/api/publish", {"user_id": user_id, "type": mtype, "data": {}})
            if status == 200:
                with trio.move_on_after(0.5):
                    await receiver.next(mtype, within=1)
                    return
            await trio.sleep(0.1)


async def test_a_node_started_while_redis_is_down_waits_for_it_then_serves(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The durable state lives in Redis: a node cannot serve before it has read it,
    so it starts listening only once Redis answers (docs/CLUSTER.md)."""
    redis_server.stop()
    back = threading.Event()

    def redis_returns() -> None:
        redis_server.start()
        back.set()

    threading.Timer(1.5, redis_returns).start()
    with nodes(tmp_path, redis_server, 2, heartbeat=0.3, node_ttl=3) as (a, b):
        assert back.is_set()  # neither node listened before Redis came back
        async with client(a, 1) as on_a, client(b, 2) as on_b:
            await on_a.request("ping", "pong")
            await until_delivered(a, on_b, 2, "hi")
