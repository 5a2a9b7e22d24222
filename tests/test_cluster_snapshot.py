"""Cluster mode's compaction and recovery (SPEC 11): a node snapshots the shared
state into Redis and trims the log; a node that starts late catches up from
the snapshot and the log's tail; a node killed with -9 loses nothing it
acknowledged. Real `wsserver serve` nodes on a real redis-server."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import coredis
import trio

from tests.cluster_nodes import Peer, node, user
from tests.redis_server import RedisServer


async def send_acked(peer: Peer, texts: list[str], to: Any = 2) -> list[int]:
    ids = []
    for text in texts:
        await peer.send("send_message", {"to_user_id": to, "message": text})
        ids.append((await peer.expect("message_sent"))["data"]["message_id"])
    return ids


async def mailbox(peer: Peer, count: int) -> list[tuple[int, str]]:
    return [((m := (await peer.expect("new_message"))["data"])["seq"], m["text"]) for _ in range(count)]


async def snapshot_of(redis: RedisServer, older_than: bytes | None = None) -> tuple[bytes, int]:
    """The stored snapshot's log id (one after `older_than`) and the log's length then."""
    client: Any = coredis.Redis.from_url(redis.url)
    async with client:
        with trio.fail_after(10):
            while True:
                found = await client.hget("wsserver:snapshot", "id")
                if found is not None and found != older_than:
                    return found, await client.xlen("wsserver:log")
                await trio.sleep(0.05)


async def test_a_node_started_late_catches_up_from_the_snapshot_and_the_trimmed_log(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    fast = {"WSSERVER_STORAGE_SNAPSHOT_INTERVAL": "0.2"}
    with node(tmp_path, redis_server, "a", extra=fast) as a, node(tmp_path, redis_server, "b", extra=fast) as b:
        a.start()
        async with user(a, 1) as alice:
            await send_acked(alice, ["one", "two", "three"])
            first, _ = await snapshot_of(redis_server)
            await send_acked(alice, ["four", "five"])
            _, length = await snapshot_of(redis_server, older_than=first)
        assert length < 5  # the records up to the first snapshot are gone from the log
        b.start()
        async with user(b, 2) as bob:
            assert await mailbox(bob, 5) == [(1, "one"), (2, "two"), (3, "three"), (4, "four"), (5, "five")]


async def test_a_node_killed_with_minus_9_loses_nothing_it_acknowledged(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with node(tmp_path, redis_server, "a") as a:
        a.start()
        async with user(a, 1) as alice:
            await send_acked(alice, [f"m{i}" for i in range(10)])
        a.kill()
        a.start()
        async with user(a, 2) as bob:
            assert await mailbox(bob, 10) == [(i + 1, f"m{i}") for i in range(10)]
        # the data directory keeps only the node id
        assert sorted(p.name for p in a.data.iterdir()) == ["node_id"]


async def test_a_node_that_fell_behind_the_trimmed_log_reloads_the_snapshot_and_misses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    fast = {"WSSERVER_STORAGE_SNAPSHOT_INTERVAL": "0.2"}
    with node(tmp_path, redis_server, "a", extra=fast) as a, node(tmp_path, redis_server, "b", extra=fast) as b:
        a.start()
        b.start()
        async with user(a, 1) as alice:
            await send_acked(alice, ["one"])
            assert b.proc is not None
            b.proc.send_signal(signal.SIGSTOP)  # B stops reading (a long pause)
            try:
                snapshot = None
                for text in ("two", "three", "four", "five"):  # each trim is one snapshot behind
                    await send_acked(alice, [text])
                    snapshot, _ = await snapshot_of(redis_server, older_than=snapshot)
            finally:
                b.proc.send_signal(signal.SIGCONT)
        with trio.move_on_after(10):  # B finds the log trimmed past its position
            while not any("state reloaded from the snapshot" in line for line in b.log):
                await trio.sleep(0.05)
        assert any("state reloaded from the snapshot" in line for line in b.log), "".join(b.log)
        async with user(b, 2) as bob:
            await bob.send("sync", {"last_seq": 0})
            synced = [((m := (await bob.expect("new_message"))["data"])["seq"], m["text"]) for _ in range(10)]
        # the mailbox push, then the sync: each time all five, none missing
        assert sorted(set(synced)) == [(1, "one"), (2, "two"), (3, "three"), (4, "four"), (5, "five")]
        assert len(synced) == 10
