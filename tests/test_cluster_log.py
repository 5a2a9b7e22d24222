"""Cluster mode's durable state (SPEC 11): two real `wsserver serve` nodes on one
real redis-server share direct messages through the log (`<prefix>:log`):
ids and seqs decided once, de-duplication across nodes, receipts, mailboxes,
`sync` and `history` the same on every node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.cluster_nodes import Peer, two_nodes, user
from tests.hubprocess import Hub
from tests.redis_server import RedisServer


@pytest.fixture
def nodes(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Hub, Hub]]:
    with two_nodes(tmp_path, redis_server) as both:
        yield both


async def test_a_message_sent_on_one_node_reaches_the_recipient_on_the_other(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    async with user(a, 1) as alice, user(b, 2) as bob:
        await alice.send("send_message", {"to_user_id": 2, "message": "hi", "client_msg_id": "c1"}, mid=7)
        sent = await alice.expect("message_sent")
        got = (await bob.expect("new_message"))["data"]
        assert sent["id"] == 7
        assert sent["data"]["message_id"] == got["message_id"] == 1
        assert sent["data"]["seq"] == got["seq"] == 1
        assert got["text"] == "hi" and got["from_user_id"] == 1
        # the receipt goes back across the nodes
        await bob.send("message_read", {"message_id": got["message_id"]})
        status = (await alice.expect("message_status"))["data"]
        assert status["message_id"] == 1 and status["status"] == "read"


async def test_a_mailbox_filled_on_one_node_is_pushed_on_connect_to_the_other(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    async with user(a, 1) as alice:
        for text in ("one", "two"):
            await alice.send("send_message", {"to_user_id": 2, "message": text})
            await alice.expect("message_sent")
    async with user(b, 2) as bob:
        first = (await bob.expect("new_message"))["data"]
        second = (await bob.expect("new_message"))["data"]
        assert [first["text"], second["text"]] == ["one", "two"]
        assert [first["seq"], second["seq"]] == [1, 2]
        assert first["offline"] is True


async def test_sync_and_history_are_the_same_on_both_nodes(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    async with user(a, 1) as alice:
        for i in range(3):
            await alice.send("send_message", {"to_user_id": 2, "message": f"m{i}"})
            await alice.expect("message_sent")
    views = []
    for hub in (a, b):
        async with user(hub, 2) as bob:
            for _ in range(3):
                await bob.expect("new_message")  # the mailbox push
            await bob.send("sync", {"last_seq": 0})
            synced = [(await bob.expect("new_message"))["data"] for _ in range(3)]
            done = (await bob.expect("sync_done"))["data"]
            history = await bob.request("history", {"with_user_id": 1}, "history")
            views.append(([(m["message_id"], m["seq"], m["text"]) for m in synced], done, history["messages"]))
    assert views[0][0] == [(1, 1, "m0"), (2, 2, "m1"), (3, 3, "m2")]
    assert views[0] == views[1]


async def test_two_senders_on_two_nodes_give_one_recipient_gapless_distinct_seqs(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    per_sender = 20
    async with user(a, 1) as alice, user(b, 3) as carol, user(b, 2) as bob:

        async def burst(peer: Peer, name: str) -> None:
            for i in range(per_sender):
                await peer.send("send_message", {"to_user_id": 2, "message": f"{name}{i}"})
            for _ in range(per_sender):
                await peer.expect("message_sent")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(burst, alice, "a")
            nursery.start_soon(burst, carol, "c")
        got = [(await bob.expect("new_message"))["data"] for _ in range(2 * per_sender)]
    seqs = sorted(m["seq"] for m in got)
    assert seqs == list(range(1, 2 * per_sender + 1))
    assert len({m["message_id"] for m in got}) == 2 * per_sender
    # each sender's own messages keep their order
    for name in ("a", "c"):
        mine = [m["text"] for m in sorted(got, key=lambda m: m["seq"]) if m["text"].startswith(name)]
        assert mine == [f"{name}{i}" for i in range(per_sender)]


async def test_a_client_msg_id_resent_on_the_other_node_is_a_duplicate_of_the_first(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    async with user(a, 1) as first:
        await first.send("send_message", {"to_user_id": 2, "message": "once", "client_msg_id": "same"})
        original = (await first.expect("message_sent"))["data"]
    async with user(b, 1) as again:
        await again.send("send_message", {"to_user_id": 2, "message": "once", "client_msg_id": "same"})
        repeat = (await again.expect("message_sent"))["data"]
    assert repeat["duplicate"] is True
    assert repeat["message_id"] == original["message_id"] and repeat["seq"] == original["seq"]
    async with user(b, 2) as bob:
        await bob.expect("new_message")
        await bob.send("sync", {"last_seq": 0})
        await bob.expect("new_message")
        assert (await bob.expect("sync_done"))["data"]["last_seq"] == 1
