"""`wsserver serve --workers N` (SPEC 11): N processes on one port, each a node
of the cluster at `cluster.redis_url`: clients land on several of them, a
publish reaches them all, SIGTERM stops them all; without a Redis URL it is
refused."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from tests.cluster_nodes import client
from tests.hubprocess import ROOT, Hub, cluster_env
from tests.redis_server import RedisServer


def test_workers_without_a_redis_url_are_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wsserver", "serve", "--workers", "2", "--data-dir", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--workers needs cluster.redis_url" in done.stderr


async def test_two_workers_share_one_port_as_two_nodes(tmp_path: Path, redis_server: RedisServer) -> None:
    hub = Hub(tmp_path / "w")  # its config, port and tokens; started here with --workers
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsserver", "serve", "--workers", "2", "--config", str(hub.config_path),
         "--port", str(hub.port), "--data-dir", str(hub.data)],
        env={**hub.env, **cluster_env(redis_server.url, "", heartbeat=0.3, node_ttl=3)},
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with trio.fail_after(20):
            while True:
                try:
                    status, reply = await hub.api("GET", "/api/nodes")
                except OSError:
                    status = 0
                if status == 200 and len(reply["data"]["nodes"]) == 2:
                    break
                await trio.sleep(0.1)
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(client(hub, i)) for i in range(12)]
            with trio.fail_after(10):
                while True:
                    _, reply = await hub.api("GET", "/api/nodes")
                    counts = [n["connections"] for n in reply["data"]["nodes"]]
                    if sum(counts) == len(clients):
                        break
                    await trio.sleep(0.1)
            assert all(counts), counts  # both workers took clients
            status, reply = await hub.api("POST", "/api/publish", {"all": True, "type": "hello", "data": {}})
            assert status == 200
            for c in clients:
                await c.next("hello")
        proc.terminate()
        assert proc.wait(30) == 0
        assert sorted(p.name for p in hub.data.iterdir() if p.name.startswith("worker-")) == ["worker-1", "worker-2"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
