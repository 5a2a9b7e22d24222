"""The browser client's shared mode in a real headless Chromium: every tab of an
origin with the same hub URL and user on one connection, held by a SharedWorker,
or (where SharedWorker is missing) by a leader tab chosen with Web Locks; and seed
001's example page (`examples/autoads.html`) on it."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import BrowserContext, Page

from tests.browser import (
    FAST,
    api,
    browser_fixture,  # noqa: F401  (the fixtures)
    connections,
    context_fixture,  # noqa: F401
    hub_fixture,  # noqa: F401
    open_client,
    open_page,
    until,
    wait_state,
)
from tests.hubprocess import ROOT, Hub
from wsserver.client import SyncClient

NO_SHARED_WORKER = "delete window.SharedWorker"  # as on Chrome for Android before 148


def tab(context: BrowserContext, hub: Hub, user_id: int = 1, init_script: str | None = None) -> Page:
    page = open_page(context, hub, init_script=init_script)
    open_client(page, "a", hub.url, token=hub.token(user_id), shared=True, **FAST)
    wait_state(page, "a", "connected")
    return page


def publish(hub: Hub, n: int) -> None:
    api(hub, "POST", "/api/publish", {"type": "news", "data": {"n": n}, "user_id": 1})


def test_three_tabs_share_one_connection_in_a_shared_worker(context: BrowserContext, hub: Hub) -> None:
    tabs = [tab(context, hub) for _ in range(3)]
    [conn] = connections(hub, 1)  # one connection for the three tabs
    assert all(t.evaluate("typeof SharedWorker") == "function" for t in tabs)
    open_client(tabs[0], "b", hub.url, token=hub.token(2), **FAST)  # another user, its own connection
    wait_state(tabs[0], "b", "connected")

    publish(hub, 1)
    for t in tabs:
        t.wait_for_function("received('a', 'news').length === 1")
    # any tab can send and request; the reply goes to the asking tab only
    assert tabs[1].evaluate("clients.a.request('ping').then(m => m.type)") == "pong"
    sent = tabs[2].evaluate("clients.a.sendMessage(2, 'from tab 3')")
    tabs[0].wait_for_function("received('b', 'new_message').length === 1")
    assert tabs[0].evaluate("received('b', 'new_message')[0].message_id") == sent["message_id"]
    for t in tabs:
        assert t.evaluate("received('a', 'pong').length + received('a', 'message_sent').length") == 0

    # rooms: the connection stays in a room while any tab holds it; every tab gets its messages
    assert tabs[0].evaluate("clients.a.joinRoom('lobby').then(m => m.type)") == "room_joined"
    assert tabs[1].evaluate("clients.a.joinRoom('lobby').then(m => m.type)") == "room_joined"
    assert tabs[0].evaluate("clients.a.leaveRoom('lobby').then(m => m.data)") == {"room": "lobby", "shared": True}
    tabs[0].evaluate("clients.b.joinRoom('lobby')")
    assert tabs[0].evaluate("clients.b.roomMessage('lobby', 'hi').then(m => m.data.delivered)") == 1
    for t in tabs:
        t.wait_for_function("received('a', 'room_message').length === 1")

    tabs[0].evaluate("clients.a.close()")  # this tab says goodbye ...
    tabs[1].close()  # ... this one just goes
    until(lambda: tabs[0].evaluate("states('a')") == [["connected", None], ["disconnected", 1000]], what="close")
    publish(hub, 2)
    tabs[2].wait_for_function("received('a', 'news').length === 2")
    assert [c["conn_id"] for c in connections(hub, 1)] == [conn["conn_id"]]  # kept for the last tab
    assert tabs[2].evaluate("states('a')") == [["connected", None]]
    # the tab that went held the room too: the connection is out of it now
    until(lambda: not api(hub, "GET", "/api/rooms/lobby/members?group_id=1")["members"][1:], what="room left")

    tabs[2].close()  # the last tab: the connection ends
    until(lambda: not connections(hub, 1), what="the connection to end")


def test_without_shared_worker_a_leader_tab_holds_the_connection_and_hands_it_over(
    context: BrowserContext, hub: Hub
) -> None:
    tabs = [tab(context, hub, init_script=NO_SHARED_WORKER) for _ in range(3)]
    [first] = connections(hub, 1)
    assert tabs[0].evaluate("typeof SharedWorker") == "undefined"
    publish(hub, 1)
    for t in tabs:
        t.wait_for_function("received('a', 'news').length === 1")
    assert tabs[2].evaluate("clients.a.request('ping').then(m => m.type)") == "pong"  # a follower asks
    assert all(t.evaluate("received('a', 'pong').length") == 0 for t in tabs)

    sender = SyncClient(hub.url, hub.token(2), backoff_base=0.05, backoff_cap=0.3)
    sender.start()
    try:
        sender.send_message(to_user_id=1, message="before").result(timeout=10)
        for t in tabs:
            t.wait_for_function("received('a', 'new_message').length === 1")
        tabs[0].close()  # the leader (the first tab took the lock) goes
        sender.send_message(to_user_id=1, message="during the handover").result(timeout=10)
        conn = until(lambda: [c for c in connections(hub, 1) if c["conn_id"] != first["conn_id"]], what="a new leader")
        for t in tabs[1:]:
            wait_state(t, "a", "connected")
            t.wait_for_function("received('a', 'new_message').length === 2")
        sender.send_message(to_user_id=1, message="after").result(timeout=10)
        for t in tabs[1:]:
            t.wait_for_function("received('a', 'new_message').length === 3")
            t.evaluate("clients.a.request('ping')")
    finally:
        sender.stop()
    until(lambda: len(connections(hub, 1)) == 1, what="the old leader's connection to end")
    assert [c["conn_id"] for c in connections(hub, 1)] == [conn[0]["conn_id"]]
    for t in tabs[1:]:
        assert t.evaluate("received('a', 'new_message').map(d => d.text)") == ["before", "during the handover", "after"]
        assert t.evaluate("states('a').map(s => s[0])") == ["connected", "reconnecting", "connected"]
        assert t.evaluate("clients.a.lastSeq") == 3
    publish(hub, 2)
    for t in tabs[1:]:
        t.wait_for_function("received('a', 'news').length === 2")


def test_seed_001s_page_shows_task_progress_and_notifications_in_every_tab(context: BrowserContext, hub: Hub) -> None:
    html = (Path(ROOT) / "examples" / "autoads.html").read_text(encoding="utf-8")
    url = f"http://127.0.0.1:{hub.port}/autoads.html"
    context.route(lambda u: u.startswith(url), lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"))
    pages = []
    for _ in range(2):
        page = context.new_page()
        page.goto(f"{url}?token={hub.token('user_123')}")
        page.wait_for_function("document.getElementById('status').dataset.state === 'connected'")
        pages.append(page)
    assert len(connections(hub, "user_123")) == 1
    api(hub, "POST", "/api/websocket/task/progress", {
        "user_id": "user_123", "task_id": "task_001", "task_type": "batchgo", "status": "running",
        "progress": 65.5, "total": 20, "completed": 13, "failed": 0, "message": "处理中...",
    })
    api(hub, "POST", "/api/websocket/notification",
        {"user_id": "user_123", "title": "系统通知", "message": "您有新的消息", "level": "info"})
    for page in pages:
        page.wait_for_function("document.getElementById('progress-task_001')?.style.width === '65.5%'")
        assert page.text_content("#progress-task_001") == "13/20"
        page.wait_for_function("document.querySelector('#notes .note.info')")
        assert page.text_content("#notes .note.info") == "系统通知 您有新的消息"
    api(hub, "POST", "/api/websocket/task/progress", {
        "user_id": "user_123", "task_id": "task_001", "task_type": "batchgo", "status": "completed",
        "progress": 100, "total": 20, "completed": 20, "failed": 0, "message": "完成",
    })
    pages[1].wait_for_function("document.getElementById('task-task_001').classList.contains('completed')")
    assert pages[1].text_content("#progress-task_001") == "20/20"
    api(hub, "POST", "/api/websocket/task/progress", {
        "user_id": "user_123", "task_id": "task_002", "task_type": "siterank", "status": "running",
        "progress": 30, "total": 10, "completed": 3, "failed": 0, "message": "查询中",
    })
    pages[0].wait_for_function("document.getElementById('progress-task_002')?.style.width === '30%'")
    # a tab opened later shows the running task at once (SPEC 6.1), from the shared connection
    late = context.new_page()
    late.goto(f"{url}?token={hub.token('user_123')}")
    late.wait_for_function("document.getElementById('progress-task_002')?.style.width === '30%'")
    assert late.query_selector("#progress-task_001") is None  # completed: not replayed
    assert len(connections(hub, "user_123")) == 1


def test_a_follower_that_hears_of_the_new_leader_late_still_sees_the_reconnect(
    context: BrowserContext, hub: Hub
) -> None:
    # The third tab is busy while the leader goes: by the time it hears of the
    # new leader, that leader's connection is up again. It must still say it
    # was reconnecting (what it had in flight may be lost), not stay "connected".
    tabs = [tab(context, hub, init_script=NO_SHARED_WORKER) for _ in range(3)]
    [old] = connections(hub, 1)
    tabs[2].evaluate("setTimeout(() => { const end = Date.now() + 2000; while (Date.now() < end); }, 0)")
    tabs[0].close()  # the leader goes; the second tab (next in the lock's queue) takes over
    until(lambda: [c for c in connections(hub, 1) if c["conn_id"] != old["conn_id"]], what="a new leader")
    wait_state(tabs[1], "a", "connected")
    wait_state(tabs[2], "a", "connected")
    for t in tabs[1:]:
        assert t.evaluate("states('a').map(s => s[0])") == ["connected", "reconnecting", "connected"]
