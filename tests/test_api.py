"""The HTTP API (SPEC 6) over real HTTP against a running server, with real
WebSocket clients receiving what it pushes: seed 001's endpoints and payloads,
/api/publish, device management, rooms, authentication and every error status."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from tests.conftest import (
    MemoryClient,
    close_code,
    http_request,
    make_config,
    make_server,
    token,
    ws_connect,
)
from wsserver.api.table import ROUTES
from wsserver.core.broker import FANOUT_SOON
from wsserver.net.server import Server
from wsserver.ops.access import safe_path
from wsserver.protocol.i18n import text

API_KEY = "test-api-key-0123456789"
CODE = "HG66OP88"

SYSTEM_NOTIFICATION_FIELDS = {"title", "message", "level", "action", "action_url"}
TASK_PROGRESS_FIELDS = {
    "task_id", "task_type", "status", "progress", "total", "completed", "failed",
    "message", "start_time", "end_time",
}  # fmt: skip


# --------------------------------------------------------------------------- helpers


async def start(live_server: Any, **overrides: Any) -> Any:
    overrides.setdefault("api__keys", [API_KEY])
    overrides.setdefault("activation_codes", [{"code": CODE, "group_id": 1}])
    return await live_server(**overrides)


async def call(
    server: Any,
    method: str,
    target: str,
    body: Any = None,
    *,
    key: str | None = API_KEY,
    headers: list[tuple[str, str]] | None = None,
    address: tuple[str, int] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One API request; (status, JSON reply, headers). Authenticated by API key unless `key=None`."""
    hdrs = list(headers or [])
    if key is not None:
        hdrs.append(("X-API-Key", key))
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    if raw:
        hdrs.append(("Content-Type", "application/json"))
    status, resp_headers, data = await http_request(
        address or server.addresses[0], method, target, headers=hdrs, body=raw
    )
    assert resp_headers["content-type"].startswith("application/json"), resp_headers
    return status, json.loads(data), resp_headers


async def ok(server: Any, method: str, target: str, body: Any = None) -> Any:
    """The `data` of a successful reply."""
    status, reply, _ = await call(server, method, target, body)
    assert status == 200, reply
    assert reply["code"] == 0 and reply["message"] == success_text(target)
    return reply["data"]


def success_text(target: str) -> str:
    """The `message` of a success reply: seed 001's own texts on its endpoints (SPEC 13)."""
    if not target.startswith("/api/websocket/"):
        return "success"
    if target.startswith("/api/websocket/stats"):
        return "获取成功"
    if target.endswith("/online"):
        return "检查完成"
    return "发送成功"


# pushed on their own to a group's dashboards by the CRM (SPEC 4.4), not by the API
UNSOLICITED = frozenset({"group_stats_update"})


async def recv(ws: Any) -> dict[str, Any]:
    """The next message, skipping the CRM's unsolicited counters."""
    with trio.fail_after(5):
        while True:
            msg = json.loads(await ws.get_message())
            if msg["type"] not in UNSOLICITED:
                return msg  # type: ignore[no-any-return]


async def nothing_more(ws: Any) -> None:
    """Assert that nothing is queued for `ws`: a ping's pong is the next message."""
    await ws.send_message(json.dumps({"type": "ping"}))
    msg = await recv(ws)
    assert msg["type"] == "pong", msg


async def close_reason(ws: Any) -> tuple[int, str]:
    """The close frame's code and reason."""
    with trio.fail_after(5):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            return int(exc.reason.code), str(exc.reason.reason or "")


@asynccontextmanager
async def client(
    server: Any, user_id: Any = "user_123", *, query: str = "", ua: str | None = None, **claims: Any
) -> AsyncIterator[Any]:
    """A WebSocket client of a JWT user, past its `connected` greeting (`ws.hello`)."""
    t = token(server.config, user_id=user_id, **claims)
    headers = [(b"User-Agent", ua.encode())] if ua else None
    async with ws_connect(f"{server.url}/ws?token={t}{query}", extra_headers=headers) as ws:
        ws.hello = await recv(ws)
        assert ws.hello["type"] == "connected"
        yield ws


@asynccontextmanager
async def desktop(server: Any) -> AsyncIterator[Any]:
    """A seed-000 desktop client (activation code of group 1)."""
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as ws:
        assert (await recv(ws))["type"] == "auth_success"
        yield ws


# --------------------------------------------------------------------------- seed 001


async def test_notification_reaches_every_tab_of_the_user_with_seed_fields(
    live_server: Any,
) -> None:
    server = await start(live_server)
    async with client(server) as tab1, client(server) as tab2, client(server, "other") as other:
        data = await ok(
            server,
            "POST",
            "/api/websocket/notification",
            {
                "user_id": "user_123",
                "title": "系统通知",
                "message": "您有新的消息",
                "level": "info",
            },
        )
        assert data == {"user_id": "user_123", "type": "system_notification", "delivered": 2, "queued": 0}
        for tab in (tab1, tab2):
            msg = await recv(tab)
            assert msg["type"] == "system_notification" and isinstance(msg["timestamp"], int)
            assert msg["data"] == {
                "title": "系统通知", "message": "您有新的消息", "level": "info",
                "action": "", "action_url": "",
            }  # fmt: skip
        await nothing_more(other)


async def test_notification_to_an_offline_user_delivers_nothing(live_server: Any) -> None:
    server = await start(live_server)
    body = {
        "user_id": "nobody",
        "title": "t",
        "message": "m",
        "level": "warning",
        "action": "去看看",
        "action_url": "/x",
    }
    assert (await ok(server, "POST", "/api/websocket/notification", body))["delivered"] == 0


async def test_batchgo_open_url_pushes_urls_and_delay(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server) as ws:
        body = {
            "user_id": "user_123",
            "task_id": "batch_001",
            "urls": ["https://example1.com", "https://example2.com"],
            "delay": 1000,
        }
        assert (await ok(server, "POST", "/api/websocket/batchgo/open-url", body))["delivered"] == 1
        msg = await recv(ws)
        assert msg["type"] == "batchgo_open_url"
        assert msg["data"] == {"task_id": "batch_001", "urls": body["urls"], "delay": 1000}


@pytest.mark.parametrize(
    ("task_type", "status", "pushed"),
    [
        ("batchgo", "started", "batchgo_start"),
        ("batchgo", "running", "batchgo_progress"),
        ("siterank", "completed", "siterank_complete"),
        ("chengelink", "failed", "chengelink_complete"),
    ],
)
async def test_task_progress_pushes_start_progress_or_complete(
    live_server: Any, task_type: str, status: str, pushed: str
) -> None:
    server = await start(live_server)
    async with client(server) as ws:
        body = {
            "user_id": "user_123", "task_id": "task_001", "task_type": task_type, "status": status,
            "progress": 65.5, "total": 20, "completed": 13, "failed": 0, "message": "处理中...",
        }  # fmt: skip
        data = await ok(server, "POST", "/api/websocket/task/progress", body)
        assert data["type"] == pushed and data["delivered"] == 1
        msg = await recv(ws)
        assert msg["type"] == pushed
        assert set(msg["data"]) == TASK_PROGRESS_FIELDS
        assert msg["data"]["task_id"] == "task_001" and msg["data"]["status"] == status
        assert msg["data"]["progress"] == 65.5 and msg["data"]["completed"] == 13
        assert msg["data"]["start_time"] == 0 and msg["data"]["end_time"] == 0


async def test_token_insufficient_and_plan_expiring_or_expired(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server) as ws:
        body = {
            "user_id": "user_123",
            "current_balance": 50,
            "required_tokens": 100,
            "task_type": "batchgo",
        }
        await ok(server, "POST", "/api/websocket/token/insufficient", body)
        msg = await recv(ws)
        assert msg["type"] == "token_insufficient"
        assert set(msg["data"]) == {"current_balance", "required_tokens", "task_type", "message"}
        assert msg["data"]["current_balance"] == 50 and msg["data"]["required_tokens"] == 100
        assert "50" in msg["data"]["message"] and "100" in msg["data"]["message"]

        body = {"user_id": "user_123", "plan_name": "pro", "days_left": 3, "expires_at": 1694592000}
        assert (await ok(server, "POST", "/api/websocket/plan/expiring", body))[
            "type"
        ] == "plan_expiring"
        msg = await recv(ws)
        assert msg["type"] == "plan_expiring"
        assert set(msg["data"]) == {
            "plan_name",
            "days_left",
            "expires_at",
            "message",
            "upgrade_url",
        }
        assert msg["data"]["days_left"] == 3 and msg["data"]["expires_at"] == 1694592000
        assert "pro" in msg["data"]["message"]

        body.update(days_left=0, message="已过期", upgrade_url="https://x/upgrade")
        await ok(server, "POST", "/api/websocket/plan/expiring", body)
        msg = await recv(ws)
        assert msg["type"] == "plan_expired"
        assert (
            msg["data"]["message"] == "已过期" and msg["data"]["upgrade_url"] == "https://x/upgrade"
        )


async def test_websocket_stats_and_user_online(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server, "user_001"), client(server, "user_001"), client(server, 2):
        data = await ok(server, "GET", "/api/websocket/stats")
        assert data["total_connections"] == 3
        assert sorted(map(str, data["connected_users"])) == ["2", "user_001"]
        assert 2 in data["connected_users"]  # ids echo as they came in the token
        online = await ok(server, "GET", "/api/websocket/user/user_001/online")
        assert online == {"user_id": "user_001", "is_online": True}
    offline = await ok(server, "GET", "/api/websocket/user/user_001/online")
    assert offline == {"user_id": "user_001", "is_online": False}


async def test_broadcast_reaches_every_user_and_desktop_client(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server, "a") as a, client(server, "b", group_id=7) as b, desktop(server) as d:
        body = {"title": "系统公告", "message": "新功能上线啦！", "level": "success"}
        data = await ok(server, "POST", "/api/websocket/broadcast", body)
        assert data == {"type": "system_notification", "delivered": 3}
        for ws in (a, b, d):
            msg = await recv(ws)
            assert msg["type"] == "system_notification"
            assert msg["data"]["title"] == "系统公告" and msg["data"]["level"] == "success"
        # the {type, data} form, narrowed to one group
        data = await ok(
            server,
            "POST",
            "/api/websocket/broadcast",
            {"type": "system", "data": {"x": 1}, "group_id": 7},
        )
        assert data["delivered"] == 1
        assert (await recv(b))["data"] == {"x": 1}
        await nothing_more(a)


async def test_websocket_test_pushes_a_test_notification(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server) as ws:
        data = await ok(server, "GET", "/api/websocket/test?user_id=user_123")
        assert data["delivered"] == 1 and data["user_id"] == "user_123"
        msg = await recv(ws)
        assert (
            msg["type"] == "system_notification" and set(msg["data"]) == SYSTEM_NOTIFICATION_FIELDS
        )
        assert msg["data"]["title"] == "测试通知"
    status, reply, _ = await call(server, "GET", "/api/websocket/test")
    assert status == 400 and reply["field"] == "user_id"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/websocket/notification", {"title": "t", "message": "m"}, "user_id"),
        ("/api/websocket/notification", {"user_id": "u", "message": "m"}, "title"),
        (
            "/api/websocket/notification",
            {"user_id": "u", "title": "t", "message": "m", "level": "loud"},
            "level",
        ),
        ("/api/websocket/batchgo/open-url", {"user_id": "u", "task_id": "t"}, "urls"),
        ("/api/websocket/batchgo/open-url", {"user_id": "u", "task_id": "t", "urls": [1]}, "urls"),
        (
            "/api/websocket/task/progress",
            {"user_id": "u", "task_id": "t", "status": "running"},
            "task_type",
        ),
        (
            "/api/websocket/task/progress",
            {"user_id": "u", "task_id": "t", "task_type": "Bad Type", "status": "x"},
            "task_type",
        ),
        (
            "/api/websocket/task/progress",
            {"user_id": "u", "task_id": "t", "task_type": "b", "status": "x", "total": "20"},
            "total",
        ),
        (
            "/api/websocket/token/insufficient",
            {"user_id": "u", "current_balance": 5},
            "required_tokens",
        ),
        (
            "/api/websocket/plan/expiring",
            {"user_id": "u", "plan_name": "pro", "days_left": True},
            "days_left",
        ),
        ("/api/websocket/broadcast", {"type": "Nope", "data": 1}, "type"),
        ("/api/users/u/kick", {"reason": 5}, "reason"),
    ],
)
async def test_missing_or_wrong_field_is_400_naming_it(
    live_server: Any, path: str, body: Any, field: str
) -> None:
    server = await start(live_server)
    status, reply, _ = await call(server, "POST", path, body)
    assert status == 400 and reply["code"] == 400
    assert reply["field"] == field and field in reply["message"]


# --------------------------------------------------------------------------- /api/publish


async def test_publish_to_a_user_reaches_all_tabs_of_every_user_type_and_group(
    live_server: Any,
) -> None:
    server = await start(live_server)
    async with (
        client(server, 42, user_type=1) as as_user,
        client(server, "42", user_type=2, group_id=9) as as_merchant,
        client(server, 43) as other,
    ):
        data = await ok(
            server,
            "POST",
            "/api/publish",
            {"type": "new_feedback", "data": {"id": 5}, "user_id": 42},
        )
        assert data == {"delivered": 2, "queued": 0}
        for ws in (as_user, as_merchant):
            msg = await recv(ws)
            assert msg["type"] == "new_feedback" and msg["data"] == {"id": 5}
        await nothing_more(other)
        # user_type and group_id narrow a user target
        data = await ok(
            server,
            "POST",
            "/api/publish",
            {"type": "status_change", "data": 1, "user_id": 42, "user_type": 2},
        )
        assert data["delivered"] == 1
        assert (await recv(as_merchant))["type"] == "status_change"
        data = await ok(
            server,
            "POST",
            "/api/publish",
            {"type": "status_change", "data": 2, "user_id": "42", "group_id": 9},
        )
        assert data["delivered"] == 1
        assert (await recv(as_merchant))["data"] == 2
        await nothing_more(as_user)


async def test_publish_to_users_group_room_and_everyone(live_server: Any) -> None:
    server = await start(live_server)
    async with (
        client(server, 1, group_id=1) as u1,
        client(server, 2, group_id=1) as u2,
        client(server, 3, group_id=2) as u3,
        desktop(server) as desk,
    ):
        data = await ok(
            server,
            "POST",
            "/api/publish",
            {"type": "data_update", "data": "a", "user_ids": [1, 3, 99]},
        )
        assert data == {"delivered": 2, "queued": 0}
        assert (await recv(u1))["data"] == "a" and (await recv(u3))["data"] == "a"

        data = await ok(
            server, "POST", "/api/publish", {"type": "notification", "data": "g", "group_id": 1}
        )
        assert data["delivered"] == 3  # both users and the desktop client of group 1
        for ws in (u1, u2, desk):
            assert (await recv(ws))["data"] == "g"
        await nothing_more(u3)

        await u2.send_message(json.dumps({"type": "join_room", "data": "chat:room001"}))
        assert (await recv(u2))["type"] == "room_joined"
        data = await ok(
            server,
            "POST",
            "/api/publish",
            {"type": "system", "data": "r", "room": "chat:room001", "group_id": 1},
        )
        assert data["delivered"] == 1
        assert (await recv(u2))["data"] == "r"
        data = await ok(
            server,
            "POST",
            "/api/publish",
            {"type": "system", "data": "r", "room": "chat:room001", "group_id": 2},
        )
        assert data["delivered"] == 0  # another group's room of the same name

        data = await ok(
            server, "POST", "/api/publish", {"type": "system", "data": "all", "all": True}
        )
        assert data["delivered"] == 4
        for ws in (u1, u2, u3, desk):
            assert (await recv(ws))["data"] == "all"


async def test_publish_encodes_the_frame_once_for_all_recipients(
    live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wsserver.core.admin as admin

    server = await start(live_server)
    calls = []
    real = admin.encode

    def counting(*args: Any, **kwargs: Any) -> str:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(admin, "encode", counting)
    async with client(server, 1) as a, client(server, 1) as b, client(server, 2) as c:
        data = await ok(
            server, "POST", "/api/publish", {"type": "system", "data": {"n": 1}, "all": True}
        )
        assert data["delivered"] == 3 and calls == ["system"]
        frames = [await recv(ws) for ws in (a, b, c)]
        assert frames[0] == frames[1] == frames[2]


async def test_a_large_fan_out_reaches_everyone_in_order_with_a_direct_push_between(
    live_server: Any,
) -> None:
    # FANOUT_SOON or more receivers: the server's flusher writes the frames
    server = await start(live_server)
    n = FANOUT_SOON + 8
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(server, i + 1)) for i in range(n)]
        for k in range(20):
            data = await ok(server, "POST", "/api/publish", {"type": "system", "data": {"k": k}, "all": True})
            assert data["delivered"] == n
            if k == 9:  # a delivery to one user queues behind what the flusher still holds
                await ok(server, "POST", "/api/publish", {"type": "system", "data": {"k": "d"}, "user_id": 1})
        for i, ws in enumerate(clients):
            expected: list[Any] = list(range(20))
            if i == 0:
                expected[10:10] = ["d"]
            assert [(await recv(ws))["data"]["k"] for _ in expected] == expected
            await nothing_more(ws)


async def test_in_a_large_fan_out_only_the_connection_that_stops_reading_is_closed_4008(
    live_server: Any,
) -> None:
    server = await start(live_server, limits__send_queue=64)
    n, count, pad = FANOUT_SOON + 8, 300, "x" * 2000  # ~600 KB to each connection
    # A client that takes the handshake, then reads nothing more (small receive buffer).
    raw = trio.socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await raw.connect(server.addresses[0])
    stalled = MemoryClient(trio.SocketStream(raw))
    assert await stalled.handshake(f"/ws?token={token(server.config, user_id='stalled')}")
    got: dict[int, list[int]] = {i: [] for i in range(n)}

    async def read_all(ws: Any, into: list[int]) -> None:
        while len(into) < count:
            msg = await recv(ws)
            into.append(msg["data"]["k"])

    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client(server, i + 1)) for i in range(n)]
        with trio.fail_after(60):
            async with trio.open_nursery() as readers:
                for i, ws in enumerate(clients):
                    readers.start_soon(read_all, ws, got[i])
                for k in range(count):
                    body = {"type": "system", "data": {"k": k, "pad": pad}, "all": True}
                    await ok(server, "POST", "/api/publish", body)
        assert all(got[i] == list(range(count)) for i in range(n))  # the readers: everything, in order
    with trio.fail_after(10):
        assert await stalled.closed() == 4008
    await stalled.stream.aclose()


async def test_connection_that_stops_reading_is_closed_4008_after_write_timeout_before_its_queue_fills(
    live_server: Any,
) -> None:
    server = await start(live_server, limits__write_timeout=0.5)
    raw = trio.socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await raw.connect(server.addresses[0])
    stalled = MemoryClient(trio.SocketStream(raw))
    assert await stalled.handshake(f"/ws?token={token(server.config, user_id='stalled')}")
    # 40 frames (the queue holds 1024), more bytes than the sockets' buffers
    body = {"type": "system", "data": {"pad": "x" * 65000}, "user_id": "stalled"}
    for _ in range(40):
        await ok(server, "POST", "/api/publish", body)
    await trio.sleep(2.0)  # it reads nothing for four write timeouts
    with trio.fail_after(10):
        assert await stalled.closed() == 4008
    await stalled.stream.aclose()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": 1, "all": True}, "type"),
        ({"type": "Bad", "all": True}, "type"),
        ({"type": "a" * 65, "all": True}, "type"),
        ({"type": "x y", "all": True}, "type"),
        ({"type": "ok"}, "user_id"),
        ({"type": "ok", "user_id": 1, "all": True}, "all"),
        ({"type": "ok", "user_id": 1, "user_ids": [2]}, "user_ids"),
        ({"type": "ok", "all": True, "group_id": 1}, "group_id"),
        ({"type": "ok", "user_ids": []}, "user_ids"),
        ({"type": "ok", "user_ids": [True]}, "user_ids"),
        ({"type": "ok", "user_id": True}, "user_id"),
        ({"type": "ok", "user_id": ""}, "user_id"),
        ({"type": "ok", "all": "yes"}, "all"),
        ({"type": "ok", "room": "bad room!", "group_id": 1}, "room"),
        ({"type": "ok", "group_id": 1, "persist": True}, "persist"),
        ({"type": "ok", "user_id": 1, "persist": "true"}, "persist"),
    ],
)
async def test_publish_bad_body_is_400_naming_the_field(
    live_server: Any, body: Any, field: str
) -> None:
    server = await start(live_server)
    status, reply, _ = await call(server, "POST", "/api/publish", body)
    assert (status, reply["code"], reply.get("field")) == (400, 400, field), reply


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"[1,2]",
        b'{"type":"x","all":true,"data":1e400}',
        b'{"type":"x","all":true,"data":NaN}',
    ],
)
async def test_publish_invalid_json_is_400(live_server: Any, raw: bytes) -> None:
    server = await start(live_server)
    status, reply, _ = await call(server, "POST", "/api/publish", raw)
    assert status == 400 and reply["code"] == 400


async def test_publish_persist_queues_for_offline_users_only(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server, 1, group_id=1):
        body = {
            "type": "notification",
            "data": {"text": "hi"},
            "user_ids": [1, 2],
            "group_id": 1,
            "persist": True,
        }
        data = await ok(server, "POST", "/api/publish", body)
        assert data == {"delivered": 1, "queued": 1}
    stats = await ok(server, "GET", "/api/stats")
    assert stats["mailboxes"]["count"] == 1 and stats["mailboxes"]["messages"] == 1
    async with client(server, 2, group_id=1) as late:  # the offline user comes online
        msg = await recv(late)
        assert msg["type"] == "notification" and msg["data"] == {"text": "hi"}
        assert msg["offline"] is True


async def test_nodes_lists_the_one_node_of_an_embedded_hub_with_its_live_counts(live_server: Any) -> None:
    server = await start(live_server, cluster__node_name="edge-1")
    before = int(time.time() * 1000)
    async with client(server, 1, group_id=1), client(server, 1, group_id=1), client(server, 2, group_id=1):
        data = await ok(server, "GET", "/api/nodes")
    (node,) = data["nodes"]
    node_file = (server.config.storage.dir + "/node_id")
    with open(node_file, encoding="utf-8") as f:
        assert node["node_id"] == f.read().strip()  # the id webhook events carry
    assert node["name"] == "edge-1"
    assert node["connections"] == 3 and node["users"] == 2
    assert node["version"] == (await ok(server, "GET", "/api/stats"))["version"]
    assert node["uptime"] >= 0 and node["last_seen"] >= before
    status, _reply, _ = await call(server, "GET", "/api/nodes", key=None)
    assert status == 401


# --------------------------------------------------------------------------- devices and kick


async def test_device_list_shows_each_connection_with_device_info(live_server: Any) -> None:
    server = await start(live_server)
    before = int(time.time() * 1000)
    async with (
        client(server, 5, query="&device_id=laptop", ua="Mozilla/5.0 test") as laptop,
        ws_connect(f"{server.url}/ws") as phone,
    ):
        await phone.send_message(json.dumps({"type": "register", "data": {
            "user_id": 5, "token": token(server.config, user_id=5), "device_id": "phone-1",
            "device_info": {"device_name": "iPhone 13", "device_type": "mobile"},
        }}))  # fmt: skip
        assert (await recv(phone))["type"] == "connected"
        await laptop.send_message(json.dumps({"type": "ping"}))
        await recv(laptop)
        data = await ok(server, "GET", "/api/users/5/connections")
        assert data["user_id"] == "5"
        conns = data["connections"]
        assert [c["device_id"] for c in conns] == ["laptop", "phone-1"]
        first, second = conns
        assert first["conn_id"] == laptop.hello["data"]["conn_id"]
        assert first["user_agent"] == "Mozilla/5.0 test" and first["ip"] == "127.0.0.1"
        assert first["device_info"] is None
        assert second["device_info"] == {"device_name": "iPhone 13", "device_type": "mobile"}
        now = int(time.time() * 1000)
        for c in conns:
            assert before - 1000 <= c["connected_at"] <= c["last_seen"] <= now + 1000
            assert {
                "conn_id",
                "device_id",
                "device_info",
                "ip",
                "user_agent",
                "connected_at",
                "last_seen",
            } <= set(c)
        online = await ok(server, "GET", "/api/users/5/online")
        assert online == {"user_id": "5", "is_online": True, "connections": 2, "mailbox": 0}
    assert (await ok(server, "GET", "/api/users/5/connections"))["connections"] == []


async def test_user_online_counts_the_messages_waiting_in_the_user_s_mailbox(live_server: Any) -> None:
    server = await start(live_server)
    for note in ("one", "two"):
        body = {"type": "notification", "data": {"text": note}, "user_id": 9, "group_id": 1, "persist": True}
        assert (await ok(server, "POST", "/api/publish", body))["queued"] == 1
    async with client(server, 3, group_id=1) as sender:  # and a direct message from user 3
        await sender.send_message(json.dumps({"type": "send_message", "data": {"to_user_id": 9, "message": "hi"}}))
        assert (await recv(sender))["type"] == "message_sent"
    online = await ok(server, "GET", "/api/users/9/online")
    assert online == {"user_id": "9", "is_online": False, "connections": 0, "mailbox": 3}
    assert (await ok(server, "GET", "/api/users/9/online?group_id=1"))["mailbox"] == 3
    assert (await ok(server, "GET", "/api/users/9/online?group_id=2"))["mailbox"] == 0
    assert (await ok(server, "GET", "/api/users/3/online"))["mailbox"] == 0


async def test_kick_by_device_sends_kicked_then_closes_4003(live_server: Any) -> None:
    server = await start(live_server)
    async with (
        client(server, 5, query="&device_id=a") as a,
        client(server, 5, query="&device_id=b") as b,
    ):
        data = await ok(
            server, "POST", "/api/users/5/kick", {"device_id": "a", "reason": "账号在其他设备登录"}
        )
        assert data == {"kicked": 1}
        msg = await recv(a)
        assert msg["type"] == "kicked" and msg["data"] == {"reason": "账号在其他设备登录"}
        assert await close_reason(a) == (4003, "账号在其他设备登录")  # the kick's own reason
        await nothing_more(b)
        assert (await ok(server, "GET", "/api/users/5/online"))["connections"] == 1


async def test_a_long_kick_reason_is_cut_to_fit_the_close_frame(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server, 7) as ws:
        reason = "账号在其他设备登录" * 10  # 270 bytes of UTF-8; a close reason holds 123
        assert await ok(server, "POST", "/api/users/7/kick", {"reason": reason}) == {"kicked": 1}
        assert (await recv(ws))["data"]["reason"] == reason  # the message carries it whole
        code, cut = await close_reason(ws)
        assert code == 4003 and reason.startswith(cut) and len(cut.encode()) == 123


async def test_kick_by_conn_id_and_kick_all(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server, 6) as a, client(server, 6) as b, client(server, 6) as c:
        conn_id = b.hello["data"]["conn_id"]
        assert await ok(server, "POST", "/api/users/6/kick", {"conn_id": conn_id}) == {"kicked": 1}
        kicked = await recv(b)
        assert kicked["type"] == "kicked" and kicked["data"]["reason"] == "已被管理员踢出"
        assert await close_reason(b) == (4003, "已被管理员踢出")
        assert await ok(server, "POST", "/api/users/6/kick", {"conn_id": "nope"}) == {"kicked": 0}
        assert await ok(server, "POST", "/api/users/6/kick") == {"kicked": 2}  # empty body: all
        for ws in (a, c):
            assert (await recv(ws))["type"] == "kicked"
            assert await close_code(ws) == 4003
    assert (await ok(server, "GET", "/api/users/6/online"))["is_online"] is False


# --------------------------------------------------------------------------- rooms and stats


async def test_rooms_and_room_members_by_group(live_server: Any) -> None:
    server = await start(live_server)
    async with (
        client(server, 1, group_id=1, username="amy") as a,
        client(server, 2, group_id=2) as b,
    ):
        for ws, room in ((a, "chat:room001"), (a, "ops"), (b, "chat:room001")):
            await ws.send_message(json.dumps({"type": "join_room", "data": room}))
            assert (await recv(ws))["type"] == "room_joined"
        rooms = (await ok(server, "GET", "/api/rooms?group_id=1"))["rooms"]
        assert [(r["room"], r["group_id"], r["members"]) for r in rooms] == [
            ("chat:room001", 1, 1),
            ("ops", 1, 1),
        ]
        assert len((await ok(server, "GET", "/api/rooms"))["rooms"]) == 3
        members = await ok(server, "GET", "/api/rooms/chat:room001/members?group_id=1")
        assert (members["room"], members["group_id"]) == ("chat:room001", 1)  # as /api/rooms
        assert members["members"] == [
            {"user_id": 1, "username": "amy", "user_type": None, "connections": 1}
        ]
        assert (await ok(server, "GET", "/api/rooms/empty/members?group_id=1"))["members"] == []


async def test_group_ids_are_echoed_as_they_came_by_every_room_endpoint(live_server: Any) -> None:
    server = await start(live_server)  # the activation code HG66OP88 opens group 1 (a number)
    async with client(server, "u", group_id="007") as ws:
        await ws.send_message(json.dumps({"type": "join_room", "data": "lobby"}))
        assert (await recv(ws))["type"] == "room_joined"
        rooms = (await ok(server, "GET", "/api/rooms"))["rooms"]
        assert [(r["room"], r["group_id"]) for r in rooms] == [("lobby", "007")]
        members = await ok(server, "GET", "/api/rooms/lobby/members?group_id=007")
        assert (members["group_id"], len(members["members"])) == ("007", 1)
    assert (await ok(server, "GET", "/api/rooms/lobby/members?group_id=007"))["group_id"] == "007"
    assert (await ok(server, "GET", "/api/rooms/lobby/members?group_id=1"))["group_id"] == 1
    assert (await ok(server, "GET", "/api/rooms/lobby/members?group_id=x"))["group_id"] == "x"
    assert (await ok(server, "GET", "/api/groups/1/stats"))["group_id"] == 1


async def test_stats_count_connections_users_groups_rooms_and_messages(live_server: Any) -> None:
    server = await start(live_server)
    async with client(server, 1, group_id=1) as a, client(server, 1, group_id=1), desktop(server):
        await a.send_message(json.dumps({"type": "join_room", "data": "r"}))
        await recv(a)
        stats = await ok(server, "GET", "/api/stats")
        assert stats["connections"] == {"total": 3, "user": 2, "device": 1, "pending": 0}
        assert stats["users"] == 1 and stats["principals"] == 2 and stats["groups"] == 1
        assert stats["rooms"] == 1 and stats["messages"]["in"] >= 1
        assert stats["mailboxes"] == {"count": 0, "messages": 0}
        assert stats["uptime"] >= 0 and stats["version"]


# --------------------------------------------------------------------------- auth and errors


async def test_api_credentials(live_server: Any) -> None:
    server = await start(live_server, server__locale="en")
    status, reply, headers = await call(server, "GET", "/api/stats", key=None)
    assert (status, reply["code"]) == (401, 401) and headers["www-authenticate"].startswith(
        "Bearer"
    )
    status, reply, _ = await call(server, "GET", "/api/stats", key="wrong")
    assert (status, reply["message"]) == (401, "invalid API key")
    bad = [("Authorization", "Bearer not-a-jwt")]
    assert (await call(server, "GET", "/api/stats", key=None, headers=bad))[0] == 401
    expired = [("Authorization", "Bearer " + token(server.config, role="admin", ttl=-60))]
    status, reply, _ = await call(server, "GET", "/api/stats", key=None, headers=expired)
    assert (status, reply["message"]) == (401, "token expired")
    user = [("Authorization", "Bearer " + token(server.config, user_id=1))]
    status, reply, _ = await call(server, "GET", "/api/stats", key=None, headers=user)
    assert (status, reply["code"]) == (403, 403)
    admin = [("Authorization", "Bearer " + token(server.config, user_id=1, role="admin"))]
    assert (await call(server, "GET", "/api/stats", key=None, headers=admin))[0] == 200
    assert (await call(server, "GET", "/api/stats"))[0] == 200  # API key
    for open_path in ("/healthz", "/readyz", "/api/openapi.json"):
        assert (await call(server, "GET", open_path, key=None))[0] == 200


async def test_no_api_keys_configured_means_no_key_works(live_server: Any) -> None:
    server = await start(live_server, api__keys=[])
    assert (await call(server, "GET", "/api/stats", key=""))[0] == 401


async def test_unknown_path_404_wrong_method_405_big_body_413(live_server: Any) -> None:
    server = await start(live_server, limits__max_http_body_bytes=1024)
    status, reply, _ = await call(server, "GET", "/api/nope")
    assert (status, reply["code"]) == (404, 404)
    status, reply, headers = await call(server, "GET", "/api/publish")
    assert (status, reply["code"]) == (405, 405) and "POST" in headers["allow"]
    status, reply, _ = await call(
        server, "POST", "/api/publish", {"type": "x", "all": True, "data": "x" * 2000}
    )
    assert (status, reply["code"]) == (413, 413)


@pytest.mark.parametrize(
    ("locale", "no_credentials", "missing_field", "conflict"),
    [
        (
            "zh-CN",
            "需要认证: Authorization: Bearer <管理员令牌> 或 X-API-Key",
            "缺少字段: type",
            "目标冲突: user_id, all（只能给出一个）",
        ),
        (
            "en",
            "authentication required: Authorization: Bearer <admin token> or X-API-Key",
            "missing field: type",
            "conflicting targets: user_id, all (give exactly one)",
        ),
    ],
    ids=["zh-CN", "en"],
)
async def test_every_error_text_is_in_the_configured_locale(
    live_server: Any, locale: str, no_credentials: str, missing_field: str, conflict: str
) -> None:
    server = await start(live_server, server__locale=locale, limits__max_http_body_bytes=1024)

    async def message(method: str, target: str, body: Any = None, **kw: Any) -> str:
        return str((await call(server, method, target, body, **kw))[1]["message"])

    assert await message("GET", "/api/stats", key=None) == no_credentials
    assert await message("POST", "/api/publish", {"all": True}) == missing_field
    assert await message("POST", "/api/publish", {"type": "t", "user_id": 1, "all": True}) == conflict
    # the parser's, the router's and the handlers' texts all come from the catalogue
    notification = {"user_id": 1, "title": "t", "message": "m", "level": "x"}
    expected = [
        ("GET", "/api/nope", None, text("not_found", locale)),
        ("GET", "/api/publish", None, text("http_method", locale)),
        ("POST", "/api/publish", b"[1]", text("http_not_object", locale)),
        ("POST", "/api/publish", b"{", text("http_invalid_json", locale)),
        (
            "POST",
            "/api/publish",
            {"type": "t", "all": "yes"},
            text("http_field_type", locale, field="all", expected="boolean"),
        ),
        (
            "POST",
            "/api/publish",
            {"type": "t", "all": True, "data": "x" * 2000},
            text("http_body_too_large", locale),
        ),
        (
            "POST",
            "/api/websocket/notification",
            notification,
            text("http_field_choice", locale, field="level", choices="info, warning, error, success"),
        ),
        ("DELETE", "/api/activation-codes/nope", None, text("code_not_found", locale)),
    ]
    for method, target, body, want in expected:
        assert await message(method, target, body) == want, (method, target)

async def read_until_eof(stream: trio.abc.Stream) -> bytes:
    """Everything the server sends until it closes (a reset counts as the end)."""
    data = bytearray()
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except trio.BrokenResourceError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


async def test_content_length_and_transfer_encoding_get_one_400_then_the_connection_closes(
    live_server: Any,
) -> None:
    server = await start(live_server, server__locale="en")
    stream = await trio.open_tcp_stream(*server.addresses[0])
    async with stream:
        await stream.send_all(
            b"POST /api/publish HTTP/1.1\r\nHost: t\r\nX-API-Key: " + API_KEY.encode() + b"\r\n"
            b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        with trio.fail_after(10):
            response = await read_until_eof(stream)
    assert response.startswith(b"HTTP/1.1 400 ") and response.count(b"HTTP/1.1 ") == 1
    assert b"\r\nConnection: close\r\n" in response
    assert response.endswith(b"Content-Length and Transfer-Encoding in one request\"}")


async def test_client_that_pipelines_and_never_reads_is_closed_after_write_timeout(
    live_server: Any,
) -> None:
    server = await start(live_server, limits__write_timeout=0.5)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(server.addresses[0])
    stream = trio.SocketStream(sock)
    async with stream:
        # far more reply bytes than both socket buffers hold
        requests = 400
        await stream.send_all(b"GET /api/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n" * requests)
        # it reads nothing for four write timeouts; another client is served meanwhile
        with trio.fail_after(2):
            status, _, _ = await http_request(server.addresses[0], "GET", "/healthz")
        assert status == 200
        await trio.sleep(2.0)
        with trio.fail_after(10):
            response = await read_until_eof(stream)
    assert response.count(b"HTTP/1.1 200 ") < requests


async def test_api_listen_moves_the_api_to_its_private_listener(live_server: Any) -> None:
    server = await start(live_server, server__api_listen="127.0.0.1:0")
    assert (await call(server, "GET", "/api/stats"))[0] == 404
    assert (await call(server, "GET", "/metrics", key=None, address=server.addresses[0]))[0] == 404
    private = server.api_addresses[0]
    assert (await call(server, "GET", "/api/stats", address=private))[0] == 200
    status, _, body = await http_request(private, "GET", "/metrics")
    assert status == 200 and b"wsserver_connections" in body


# --------------------------------------------------------------------------- access log


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def access_log() -> Iterator[Collect]:
    logger = logging.getLogger("wsserver.access")
    handler = Collect()
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_access_log_has_one_line_per_request_and_session_and_no_secret(
    live_server: Any,
) -> None:
    server = await start(live_server)
    t = token(server.config, user_id="alice")
    with access_log() as log:
        await call(server, "GET", f"/api/websocket/test?user_id=alice&token={t}")
        async with client(server, "alice") as ws:
            await ws.send_message(json.dumps({"type": "ping"}))
            await recv(ws)
        async with desktop(server):
            pass
        with trio.fail_after(5):
            while sum(r.kind == "ws" for r in log.records) < 2:  # type: ignore[attr-defined]
                await trio.sleep(0.01)
    lines = [r.getMessage() for r in log.records]
    http = [r for r in log.records if r.kind == "http"]  # type: ignore[attr-defined]
    assert len(http) == 1
    assert http[0].path == "/api/websocket/test" and http[0].status == 200  # type: ignore[attr-defined]
    assert http[0].method == "GET" and http[0].duration_ms >= 0 and http[0].bytes_out > 0  # type: ignore[attr-defined]
    ws_lines = [r for r in log.records if r.kind == "ws"]  # type: ignore[attr-defined]
    assert {r.user for r in ws_lines} == {"alice", "device@group:1"}  # type: ignore[attr-defined]
    alice = next(r for r in ws_lines if r.user == "alice")  # type: ignore[attr-defined]
    assert alice.messages_in == 1 and alice.messages_out == 2 and alice.close_code == 1000  # type: ignore[attr-defined]
    for line in lines:
        for secret in (t, CODE, API_KEY, "token="):
            assert secret not in line


def test_logged_paths_drop_the_query_and_activation_codes() -> None:
    assert safe_path("/api/stats?token=abc") == "/api/stats"
    assert safe_path("/api/activation-codes/HG66OP88") == "/api/activation-codes/[redacted]"
    assert safe_path("/api/activation-codes") == "/api/activation-codes"
    assert safe_path("/" + "a" * 1000) == "/" + "a" * 199 + "...(+801 chars)"


# --------------------------------------------------------------------------- OpenAPI


async def test_openapi_document_describes_every_route_and_is_valid(live_server: Any) -> None:
    server = await start(live_server)
    status, doc, _ = await call(server, "GET", "/api/openapi.json", key=None)
    assert status == 200 and doc["openapi"].startswith("3.1")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert described == {(r.method, r.path) for r in ROUTES}
    for path in (
        "/api/websocket/notification",
        "/api/publish",
        "/api/users/{user_id}/kick",
        "/metrics",
    ):
        assert path in doc["paths"]
    import openapi_spec_validator as validator
    validator.validate(doc)


# --------------------------------------------------------------------------- fuzzing


@contextmanager
def server_in_thread(tmp_path: Any) -> Iterator[tuple[str, int]]:
    """A live server running in its own trio loop in a thread (hypothesis drives it
    synchronously, one example after another, against the same server)."""
    config = make_config(tmp_path, api__keys=[API_KEY])
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        server: Server = await box["nursery"].start(make_server(config).serve)
        box["server"] = server
        box["token"] = trio.lowlevel.current_trio_token()
        started.set()

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            box["nursery"] = nursery
            await main()

    thread = threading.Thread(target=lambda: trio.run(run), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield box["server"].addresses[0]
    finally:
        trio.from_thread.run_sync(box["server"].stop, trio_token=box["token"])
        thread.join(10)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    ["type", "data", "user_id", "user_ids", "group_id", "room", "all", "user_type", "persist"]
)
_bodies = st.one_of(
    st.dictionaries(_keys, _json, max_size=7),
    st.dictionaries(
        _keys,
        st.sampled_from(["system", "x.y:z-1", "", "Bad", 1, True, ["u1"], "room_1"]) | _json,
        max_size=7,
    ),
    _json,
)


def test_publish_answers_random_bodies_with_200_or_400_never_500(tmp_path: Any) -> None:
    allowed = {200, 400}
    with server_in_thread(tmp_path) as (host, port):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:

            @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(body=_bodies)
            def check(body: Any) -> None:
                raw = json.dumps(body).encode()
                conn.request(
                    "POST",
                    "/api/publish",
                    body=raw,
                    headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                reply = json.loads(response.read())
                assert response.status in allowed, (body, reply)
                assert reply["code"] == (0 if response.status == 200 else response.status)
                if response.status == 200:
                    assert set(reply["data"]) == {"delivered", "queued"}

            check()
        finally:
            conn.close()
