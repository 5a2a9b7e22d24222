"""Latest task states (SPEC 6.1, seed 001's progress bars) on the real server: the
state on connect, the tasks endpoint, durability across a restart, the TTL after
completion, and the coalescing of a slow reader's progress frames."""

from __future__ import annotations

import json
import socket
from typing import Any

import trio
import trio.testing
from wsproto.events import TextMessage

from tests.conftest import MemoryClient, http_request, make_config, make_server, token, ws_connect
from tests.test_writer import next_whole
from wsserver.core.commands import PushTask, Target
from wsserver.net.writer import FrameWriter
from wsserver.protocol.coalesce import keyed
from wsserver.protocol.envelope import encode

KEY = "tasks-api-key-0123456789"


async def post_progress(server: Any, **body: Any) -> dict[str, Any]:
    status, _, reply = await http_request(
        server.addresses[0], "POST", "/api/websocket/task/progress",
        headers=[("X-API-Key", KEY), ("Content-Type", "application/json")],
        body=json.dumps(body).encode(),
    )  # fmt: skip
    assert status == 200, reply
    return json.loads(reply)["data"]  # type: ignore[no-any-return]


async def list_tasks(server: Any, user_id: Any, query: str = "") -> list[dict[str, Any]]:
    status, _, reply = await http_request(
        server.addresses[0], "GET", f"/api/users/{user_id}/tasks{query}", headers=[("X-API-Key", KEY)]
    )
    assert status == 200, reply
    data = json.loads(reply)["data"]
    assert data["user_id"] == str(user_id)
    return data["tasks"]  # type: ignore[no-any-return]


def task(task_id: Any, status: str, progress: float, **more: Any) -> dict[str, Any]:
    return {"user_id": "u1", "task_id": task_id, "task_type": "batchgo", "status": status, "progress": progress, **more}


async def test_a_user_who_connects_sees_each_running_task_at_once(live_server: Any) -> None:
    server = await live_server(api__keys=[KEY])
    await post_progress(server, **task("b1", "started", 0, total=20))
    await post_progress(server, **task("b1", "running", 65.5, total=20, completed=13, message="处理中..."))
    await post_progress(server, **task("b2", "started", 0, total=5))
    await post_progress(server, **task("b3", "completed", 100, total=1, completed=1))
    async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id='u1')}") as ws:
        frames = [json.loads(await ws.get_message()) for _ in range(4)]
    assert [f["type"] for f in frames] == ["connected", "batchgo_progress", "batchgo_start", "batchgo_complete"]
    progress = frames[1]
    assert progress["latest"] is True
    assert progress["data"] == {
        "task_id": "b1", "task_type": "batchgo", "status": "running", "progress": 65.5, "total": 20,
        "completed": 13, "failed": 0, "message": "处理中...", "start_time": 0, "end_time": 0,
    }  # fmt: skip
    listed = await list_tasks(server, "u1")
    assert [(t["task_id"], t["type"], t["status"], t["completed"]) for t in listed] == [
        ("b1", "batchgo_progress", "running", False),
        ("b2", "batchgo_start", "started", False),
        ("b3", "batchgo_complete", "completed", True),
    ]
    assert listed[0]["data"] == progress["data"]
    assert await list_tasks(server, "somebody-else") == []


async def test_a_completed_task_is_kept_for_task_state_ttl_then_forgotten(live_server: Any) -> None:
    server = await live_server(api__keys=[KEY], messages__task_state_ttl=0.5)
    await post_progress(server, **task(1, "started", 0))
    await post_progress(server, **task(1, "failed", 40))  # failed completes a task too
    [done] = await list_tasks(server, "u1")
    assert done["type"] == "batchgo_complete" and done["status"] == "failed"
    await trio.sleep(0.6)  # the TTL itself is what is tested: time has to pass
    assert await list_tasks(server, "u1") == []
    async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id='u1')}") as ws:
        assert json.loads(await ws.get_message())["type"] == "connected"
        await ws.send_message(json.dumps({"type": "ping"}))
        assert json.loads(await ws.get_message())["type"] == "pong"  # no task state before it


async def test_task_states_survive_a_restart(tmp_path: Any) -> None:
    config = make_config(tmp_path, api__keys=[KEY])
    async with trio.open_nursery() as nursery:
        server = await nursery.start(make_server(config).serve)
        await post_progress(server, **task("t9", "running", 12.5))
        server.stop()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(make_server(config).serve)
        [kept] = await list_tasks(server, "u1")
        assert kept["task_id"] == "t9" and kept["data"]["progress"] == 12.5
        server.stop()


async def test_the_tasks_endpoint_filters_by_user_type_and_group(live_server: Any) -> None:
    server = await live_server(api__keys=[KEY])
    await post_progress(server, **task("a", "running", 1, user_type=3))
    await post_progress(server, **task("b", "running", 2, group_id=8))
    assert [t["task_id"] for t in await list_tasks(server, "u1")] == ["a", "b"]
    assert [t["task_id"] for t in await list_tasks(server, "u1", "?user_type=1")] == ["b"]
    assert [t["task_id"] for t in await list_tasks(server, "u1", "?group_id=8&user_type=3")] == ["a", "b"]
    assert [t["task_id"] for t in await list_tasks(server, "u1", "?group_id=9")] == ["a"]


# -- coalescing ---------------------------------------------------------------------------------


def frame(mtype: str, n: int, key: Any = None, replaces: bool = False) -> bytes:
    wire = encode(mtype, {"n": n}, 0)
    if key is not None:
        wire = keyed(wire, key, replaces=replaces)
    return wire.frame  # type: ignore[attr-defined, no-any-return]


async def test_a_queued_progress_frame_is_replaced_in_its_place_and_never_across_a_barrier() -> None:
    sent, received = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        writer = FrameWriter(sent, nursery.start_soon)
        k = ("task", "batchgo", "1")
        a, x = frame("other", 0), frame("other", 1)
        p1, p2, p3 = (frame("batchgo_progress", i, k, True) for i in (1, 2, 3))
        done = frame("batchgo_complete", 9, k)
        p4 = frame("batchgo_progress", 4, k, True)
        for f in (a, p1, x, p2, p3, done, p4):
            writer.write_nowait(f)  # (a memory stream: everything queues, nothing is written yet)
        assert writer.frames == 5
        await writer.flush()
        got = b""
        while len(got) < len(a + p3 + x + done + p4):
            got += await received.receive_some()
        assert got == a + p3 + x + done + p4
        # a dropped queue forgets its keys: the next progress frame queues anew
        writer.write_nowait(a)
        writer.write_nowait(p1)
        writer.drop_pending()
        writer.write_nowait(p2)
        assert writer.frames == 1
        await writer.flush()
        nursery.cancel_scope.cancel()


async def test_a_slow_reader_ends_with_the_latest_progress_and_every_start_and_complete(
    live_server: Any,
) -> None:
    server = await live_server(limits__send_queue=64)
    stream = await trio.open_tcp_stream(*server.addresses[0])
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = MemoryClient(stream)
    assert await client.handshake(f"/ws?token={token(server.config, user_id='slow')}")
    assert (await client.recv())["type"] == "connected"
    filler = "x" * 4000  # each frame fills the socket buffers fast

    async def push(tid: str, status: str, progress: float) -> None:
        suffix = {"started": "start", "completed": "complete"}.get(status, "progress")
        data = {"task_id": tid, "task_type": "batchgo", "status": status, "progress": progress, "message": filler}
        await server.actor.call(PushTask(f"batchgo_{suffix}", data, Target(user_ids=("slow",))))

    # the client reads nothing meanwhile: the socket fills, then the queue
    sent_progress = 0
    for tid in ("t1", "t2"):
        await push(tid, "started", 0)
    for i in range(1, 801):
        for tid in ("t1", "t2"):
            await push(tid, "running", i / 8)
            sent_progress += 1
        if i == 400:
            await push("t1", "completed", 50)  # t1 ends halfway; later updates follow it
    await push("t2", "completed", 100)
    got: list[dict[str, Any]] = []
    with trio.fail_after(30):
        while not got or got[-1]["type"] != "batchgo_complete" or got[-1]["data"]["task_id"] != "t2":
            event = await next_whole(client)
            assert isinstance(event, TextMessage), event  # never closed 4008 (send_queue is 64)
            got.append(json.loads(event.data))
    of = {tid: [(m["type"], m["data"]["progress"]) for m in got if m["data"]["task_id"] == tid] for tid in ("t1", "t2")}
    # every start and complete arrived, in order with the progress around them
    assert of["t1"][0] == ("batchgo_start", 0) and ("batchgo_complete", 50) in of["t1"]
    assert of["t2"][0] == ("batchgo_start", 0) and of["t2"][-1] == ("batchgo_complete", 100)
    done_at = of["t1"].index(("batchgo_complete", 50))
    assert all(p <= 50 for _, p in of["t1"][:done_at]) and all(p > 50 for _, p in of["t1"][done_at + 1 :])
    for tid in ("t1", "t2"):
        values = [p for kind, p in of[tid] if kind == "batchgo_progress"]
        assert values == sorted(values)  # never older after newer
    assert of["t1"][-1] == ("batchgo_progress", 100)  # the latest of t1, after its complete
    assert of["t2"][-2] == ("batchgo_progress", 100)  # the latest of t2, right before its complete
    received = sum(kind == "batchgo_progress" for tid in of for kind, _ in of[tid])
    assert received < sent_progress / 4, (received, sent_progress)  # most were coalesced
    await stream.aclose()
