"""Cluster mode's other durable parts (SPEC 11) over the shared log: activation
codes, the CRM and the latest task states, changed on one node and seen on
the other; two real `wsserver serve` nodes on one real redis-server."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.cluster_nodes import Peer, two_nodes, user
from tests.conftest import http_request, ws_connect
from tests.hubprocess import API_KEY, CODE, Hub
from tests.redis_server import RedisServer


@pytest.fixture
def nodes(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[Hub, Hub]]:
    with two_nodes(tmp_path, redis_server) as both:
        yield both


async def api(hub: Hub, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = [("X-API-Key", API_KEY)]
    raw = b""
    if body is not None:
        headers.append(("Content-Type", "application/json"))
        raw = json.dumps(body).encode()
    status, _, reply = await http_request(hub.address, method, path, headers=headers, body=raw)
    return status, json.loads(reply)["data"] if reply else None


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Until `check()` holds: the other node applies the log a moment later."""
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.02)


async def test_a_code_made_through_the_api_of_one_node_lets_a_desktop_in_on_the_other(
    nodes: tuple[Hub, Hub],
) -> None:
    a, b = nodes
    status, made = await api(a, "POST", "/api/activation-codes", {"code": "NEWDESK1", "group_id": 5})
    assert status == 201 and made["created"] is True

    async def listed_on_b() -> bool:
        return any(c["code"] == "NEWDESK1" for c in (await api(b, "GET", "/api/activation-codes"))[1]["codes"])

    await eventually(listed_on_b)
    async with ws_connect(f"{b.url}?activation_code=NEWDESK1") as ws:
        desk = Peer(ws)
        hello = await desk.expect("auth_success")
        assert hello["data"]["group_id"] == 5
        # disabled on A: the desktop on B is closed by B when B applies it
        await api(a, "POST", "/api/activation-codes", {"code": "NEWDESK1", "group_id": 5, "enabled": False})
        with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.get_message()
        assert closed.value.reason.code == 4001


async def test_crm_data_synced_on_one_node_is_on_the_dashboard_and_the_api_of_the_other(
    nodes: tuple[Hub, Hub],
) -> None:
    a, b = nodes
    async with user(b, "boss", group_id=7) as dashboard, ws_connect(f"{a.url}?activation_code={CODE}") as ws:
        desk = Peer(ws)
        await desk.expect("auth_success")
        await desk.send("sync_line_accounts", [
            {"line_account_id": "a1", "name": "Amy", "online_status": "online"},
            {"line_account_id": "a2", "online_status": "offline"},
        ])  # fmt: skip
        synced = (await desk.expect("sync_result"))["data"]
        assert synced["created_count"] == 2
        while True:  # the dashboard on B follows
            update = (await dashboard.expect("group_stats_update"))["data"]
            if update["total_accounts"] == 2:
                break
        await desk.send("incoming", {"line_account_id": "a1", "incoming_line_id": "x"})
        assert (await desk.expect("incoming_received"))["data"]["duplicate"] is False
        assert (await dashboard.expect("account_stats_update"))["data"]["line_id"] == "a1"
        await desk.send("customer_sync", {"customer_id": "c1", "name": "Zed"})
        first = (await desk.expect("customer_sync_received"))["data"]
        await desk.send("follow_up_sync", {"customer_id": "c1", "note": "call back"})
        follow = (await desk.expect("follow_up_sync_received"))["data"]
        assert first["customer_db_id"] == 1 and follow["follow_up_id"] == 1

    async def stats_agree() -> bool:
        on_a, on_b = (await api(a, "GET", "/api/groups/7/stats"))[1], (await api(b, "GET", "/api/groups/7/stats"))[1]
        return bool(on_a == on_b and on_b["total_incoming"] == 1 and on_b["online_accounts"] == 0)

    await eventually(stats_agree)
    stats = (await api(b, "GET", "/api/groups/7/stats"))[1]
    # the desktop left A: its accounts went offline on both nodes
    assert (stats["total_accounts"], stats["online_accounts"]) == (2, 0)


async def test_a_task_state_pushed_on_one_node_greets_the_user_on_the_other(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    status, _ = await api(a, "POST", "/api/websocket/task/progress",
                          {"user_id": "u1", "task_id": "t1", "task_type": "batchgo", "status": "running",
                           "progress": 40, "group_id": 1})  # fmt: skip
    assert status == 200

    async def listed_on_b() -> bool:
        return bool((await api(b, "GET", "/api/users/u1/tasks"))[1]["tasks"])

    await eventually(listed_on_b)
    async with user(b, "u1") as u1:
        frame = await u1.expect("batchgo_progress")
        assert frame["latest"] is True and frame["data"]["progress"] == 40


async def test_a_push_kept_through_one_node_waits_for_the_user_on_the_other(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    status, reply = await api(a, "POST", "/api/publish",
                              {"type": "notice", "data": {"n": 1}, "user_id": "u9", "persist": True})  # fmt: skip
    assert status == 200, reply
    async with user(b, "u9") as u9:
        frame = await u9.expect("notice")
        assert frame["data"] == {"n": 1} and frame["offline"] is True


async def test_a_push_kept_through_one_node_reaches_its_user_connected_to_the_other(nodes: tuple[Hub, Hub]) -> None:
    a, b = nodes
    async with user(b, "u8") as u8:
        status, reply = await api(a, "POST", "/api/publish",
                                  {"type": "notice", "data": {"n": 2}, "user_id": "u8", "persist": True})  # fmt: skip
        assert status == 200, reply
        frame = await u8.expect("notice")
        assert frame["data"] == {"n": 2} and frame["offline"] is True

    async def not_pushed_again() -> bool:  # once its "delivered" came back through the log
        async with user(b, "u8") as again:
            await again.send("sync", {"last_seq": 0})
            await again.expect("sync_done")  # after the mailbox push, if any
            return not [f for f in again.seen if f["type"] == "notice"]

    await eventually(not_pushed_again)


async def test_a_crm_retry_sent_to_the_other_node_is_answered_there_and_counts_once(
    nodes: tuple[Hub, Hub],
) -> None:
    a, b = nodes
    replies = []
    for hub in (a, b, a):  # the desktop lost each reply and tries again, on any node
        async with ws_connect(f"{hub.url}?activation_code={CODE}&device_id=pc-1") as ws:
            desk = Peer(ws)
            await desk.expect("auth_success")
            await desk.send("sync_line_accounts", [{"line_account_id": "a9"}], mid="s-1")
            await desk.expect("sync_result")
            await desk.send("incoming", {"line_account_id": "a9", "incoming_line_id": "U77"}, mid="in-1")
            reply = await desk.expect("incoming_received")
            assert reply["id"] == "in-1"
            replies.append(reply["data"])
    assert replies[0]["duplicate"] is False and replies == [replies[0]] * 3  # the first reply, each time

    async def counted_once() -> bool:
        on_a, on_b = (await api(a, "GET", "/api/groups/7/stats"))[1], (await api(b, "GET", "/api/groups/7/stats"))[1]
        return bool(on_a == on_b and on_b["total_incoming"] == 1 and on_b["duplicate_incoming"] == 0)

    await eventually(counted_once)
