"""The shared log's own RESP connection (`net.cluster.resp`) against a real
redis-server: a pipeline of commands in one round trip, Redis's error replies,
replies cut anywhere by the network, the URL's password and database, and a
Redis that goes away and comes back."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio

from tests.cluster_nodes import two_nodes, user
from tests.redis_server import RedisServer
from wsserver.net.cluster.log import WRITE_TIMEOUT
from wsserver.net.cluster.resp import RespClient, RespError, encode_command, parse
from wsserver.net.fastio import use_fast_io


def test_a_reply_cut_anywhere_is_read_whole_once_the_rest_arrives() -> None:
    wire = b"*2\r\n*1\r\n*2\r\n$3\r\nlog\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nr\r\n$2\r\n{}\r\n$-1\r\n:7\r\n-ERR no\r\n"
    whole = [[[b"log", [[b"1-0", [b"r", b"{}"]]]]], None]  # an XREAD's records, a nil
    for cut in range(wire.index(b":7")):  # every place the first reply can be cut
        with pytest.raises(Exception) as cut_short:
            parse(wire[:cut])
        assert cut_short.type.__name__ in ("_Incomplete", "IndexError")
    first, pos = parse(wire)
    assert first == whole
    number, pos = parse(wire, pos)
    error, pos = parse(wire, pos)
    assert number == 7 and isinstance(error, RespError) and str(error) == "ERR no" and pos == len(wire)


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert encode_command([b"XADD", "log", 5]) == b"*3\r\n$4\r\nXADD\r\n$3\r\nlog\r\n$1\r\n5\r\n"


@pytest.mark.parametrize("fast_io", [True, False])
async def test_a_pipeline_is_answered_in_order_and_an_error_reply_leaves_the_connection_usable(
    redis_server: RedisServer, fast_io: bool
) -> None:
    use_fast_io(fast_io)  # the plain socket's send() and recv(), or trio's stream
    client = RespClient(redis_server.url)
    try:
        xadds = [[b"XADD", b"s", b"*", b"r", text] for text in (b"one", b"two")]
        replies = await client.call([[b"MULTI"], *xadds, [b"EXEC"]])
        assert replies[:3] == [b"OK", b"QUEUED", b"QUEUED"] and len(replies[3]) == 2
        (found,) = await client.call([[b"XREAD", b"COUNT", 10, b"BLOCK", 100, b"STREAMS", b"s", b"0-0"]])
        assert [fields for _, fields in found[0][1]] == [[b"r", b"one"], [b"r", b"two"]]
        with pytest.raises(RespError, match="WRONGTYPE"):
            await client.call([[b"HGET", b"s", b"x"]])
        assert await client.call([[b"PING"]]) == [b"PONG"]
    finally:
        await client.aclose()


async def test_the_urls_password_and_database_are_used(redis_server: RedisServer) -> None:
    admin: Any = coredis.Redis.from_url(redis_server.url)
    async with admin:
        await admin.config_set({"requirepass": "s3cret"})
    client = RespClient(f"redis://:s3cret@127.0.0.1:{redis_server.port}/3")
    try:
        await client.call([[b"SET", b"k", b"in db 3"]])
    finally:
        await client.aclose()
    check: Any = coredis.Redis.from_url(f"redis://:s3cret@127.0.0.1:{redis_server.port}/3")
    async with check:
        assert await check.get("k") == b"in db 3"
    wrong = RespClient(f"redis://:nope@127.0.0.1:{redis_server.port}/0")
    with pytest.raises(RespError):
        await wrong.call([[b"PING"]])


async def test_a_call_fails_while_redis_is_gone_and_the_next_one_reconnects(redis_server: RedisServer) -> None:
    client = RespClient(redis_server.url)
    try:
        assert await client.call([[b"PING"]]) == [b"PONG"]
        redis_server.stop()
        with pytest.raises((OSError, trio.BrokenResourceError)):
            await client.call([[b"PING"]])
        redis_server.start()
        assert await client.call([[b"PING"]]) == [b"PONG"]
    finally:
        await client.aclose()


async def test_a_blocked_read_past_its_timeout_fails_and_the_connection_is_opened_again(
    redis_server: RedisServer,
) -> None:
    client = RespClient(redis_server.url)
    try:
        with pytest.raises(trio.TooSlowError):
            await client.call([[b"XREAD", b"BLOCK", 0, b"STREAMS", b"s", b"$"]], timeout=0.2)
        # the blocked read's reply can never be taken for this one
        assert await client.call([[b"PING"]]) == [b"PONG"]
    finally:
        await client.aclose()


async def _commandstats(redis_server: RedisServer) -> dict[str, int]:
    """Redis's count of calls per command so far."""
    admin: Any = coredis.Redis.from_url(redis_server.url)
    async with admin:
        info = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in info.items()}


async def test_a_message_across_nodes_costs_redis_one_write_and_one_read_per_node(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    count = 20
    with two_nodes(tmp_path, redis_server) as (a, b):
        async with user(a, 1) as alice, user(b, 2) as bob:
            before = await _commandstats(redis_server)
            for i in range(count):  # one after the other: no batching helps
                await alice.send("send_message", {"to_user_id": 2, "message": f"m{i}"})
                await alice.expect("message_sent")
                await bob.expect("new_message")
            after = await _commandstats(redis_server)
    calls = {name: after[name] - before.get(name, 0) for name in after}
    assert calls.get("xadd") == count and calls.get("exec") == count
    # each node wakes once per record at most (and once more per read that waited
    # BLOCK_MS in vain); a node that falls behind reads two records at once
    assert count <= calls.get("xread", 0) <= 2 * count + 10
    assert calls.get("eval", 0) + calls.get("evalsha", 0) == 0  # no script per read


async def test_a_message_a_frozen_redis_does_not_store_is_refused_and_its_retry_served_once_redis_answers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A Redis that stops answering (here SIGSTOP: connections stay open, nothing
    is read) must not leave the sender waiting for ever: the write fails after
    the log's write timeout and the sender hears `unavailable`."""

    async def send(cmid: str) -> dict[str, Any]:
        await alice.send("send_message", {"to_user_id": 2, "message": cmid, "client_msg_id": cmid})
        return await alice.expect("message_sent", "error", timeout=WRITE_TIMEOUT + 5)

    assert redis_server.proc is not None
    pid = redis_server.proc.pid
    with two_nodes(tmp_path, redis_server) as (a, b):
        async with user(a, 1) as alice, user(b, 2) as bob:
            assert (await send("c0"))["type"] == "message_sent"
            os.kill(pid, signal.SIGSTOP)
            try:
                refused = await send("c1")
            finally:
                os.kill(pid, signal.SIGCONT)
            assert refused["type"] == "error" and refused["data"]["code"] == "unavailable"
            with trio.fail_after(15):  # Redis answers again: the retry is served
                while (sent := await send("c1"))["type"] != "message_sent":
                    await trio.sleep(0.1)
            texts = [(await bob.expect("new_message"))["data"]["text"] for _ in range(2)]
            assert texts == ["c0", "c1"]  # once: the frozen write, if stored after all, is the same message
            first = sent["data"]["message_id"]
            await bob.send("sync", {"last_seq": 0})
            synced = [(await bob.expect("new_message"))["data"] for _ in range(2)]
            assert [m["text"] for m in synced] == ["c0", "c1"] and synced[1]["message_id"] == first
