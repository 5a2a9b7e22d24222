"""The operator dashboard (`/admin`, SPEC 12) in a real headless Chromium against a
real hub process: its headers and origin, login, the live overview, kick, the
activation codes a desktop client uses, read-only mode and the two languages.

Real WebSocket clients are opened by a second page of the hub's origin
(`CLIENTS`), which records what each receives and the code it was closed with.
With TEST_ADMIN_SCREENSHOTS=<dir> the screenshots test writes its PNGs there
(docs/img/ holds the ones README.md and docs/ADMIN.md show)."""

from __future__ import annotations

import http.server
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from playwright.sync_api import BrowserContext, Page, Request

from tests.browser import (
    api,
    browser_fixture,  # noqa: F401  (the fixtures)
    connections,
    context_fixture,  # noqa: F401
    hub_fixture,  # noqa: F401
    serve_page,
    until,
)
from tests.hubprocess import API_KEY, Hub

CLIENTS = """<!doctype html><meta charset="utf-8"><title>clients</title><script>
window.log = {};
window.open_ws = (name, url) => {
  const entry = log[name] = { messages: [], close: null, open: false };
  const ws = new WebSocket(url);
  ws.onopen = () => { entry.open = true; };
  ws.onmessage = (e) => entry.messages.push(JSON.parse(e.data));
  ws.onclose = (e) => { entry.close = e.code; };
  window["ws_" + name] = ws;
};
window.close_ws = (name) => window["ws_" + name].close(1000);
</script>"""


PAGE_ERRORS: list[str] = []


@pytest.fixture(autouse=True)
def no_page_errors() -> Iterator[None]:
    """No uncaught error in a dashboard page during the test."""
    PAGE_ERRORS.clear()
    yield
    assert PAGE_ERRORS == []


def admin_url(hub: Hub, view: str = "") -> str:
    return f"http://127.0.0.1:{hub.port}/admin" + (f"#{view}" if view else "")


def open_admin(ctx: BrowserContext, hub: Hub, view: str = "") -> Page:
    page = ctx.new_page()
    page.on("pageerror", lambda exc: PAGE_ERRORS.append(str(exc)))
    page.goto(admin_url(hub, view))
    page.wait_for_selector("#credential")
    return page


def log_in(page: Page, secret: str = API_KEY) -> None:
    page.fill("#credential", secret)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login", state="detached")


def stat(page: Page, name: str) -> str:
    return str(page.text_content(f"[data-stat={name}] .value"))


def wait_stat(page: Page, name: str, value: str) -> None:
    page.wait_for_function(
        "a => document.querySelector(`[data-stat=${a[0]}] .value`)?.textContent === a[1]", arg=[name, value]
    )


def clients_page(ctx: BrowserContext, hub: Hub) -> Page:
    page = ctx.new_page()
    page.goto(serve_page(ctx, hub, "clients", CLIENTS))
    return page


def open_ws(page: Page, name: str, url: str) -> None:
    page.evaluate("a => open_ws(a[0], a[1])", [name, url])
    page.wait_for_function("n => log[n].messages.length > 0 || log[n].close !== null", arg=name)


def closed_with(page: Page, name: str) -> int:
    page.wait_for_function("n => log[n].close !== null", arg=name)
    return int(page.evaluate("n => log[n].close", name))


@pytest.fixture(name="requests")
def requests_fixture(context: BrowserContext) -> Iterator[list[Request]]:
    """Every request any page of the context makes."""
    seen: list[Request] = []
    context.on("request", lambda request: seen.append(request))
    yield seen


def visit_every_view(page: Page, views: tuple[str, ...] = ("overview", "users", "rooms", "crm", "codes", "publish")) -> None:
    for view in views:
        page.click(f"[data-view={view}]")
        page.wait_for_selector(f"#view-{view}")


def test_the_page_has_its_csp_and_no_request_leaves_the_hubs_origin(
    context: BrowserContext, hub: Hub, requests: list[Request]
) -> None:
    page = context.new_page()
    response = page.goto(admin_url(hub))
    assert response is not None and response.headers["content-security-policy"] == "default-src 'self'"
    assert response.headers["x-content-type-options"] == "nosniff"
    page.wait_for_selector("#credential")
    log_in(page)
    visit_every_view(page)
    page.click("[data-view=users]")
    page.fill("#user-search input[name=user_id]", "42")  # and the requests a search makes
    page.click("#user-search button")
    page.wait_for_selector("#user-result table, #user-result .muted")
    origin = f"http://127.0.0.1:{hub.port}/"
    assert requests and all(r.url.startswith(origin) for r in requests), {r.url for r in requests}
    assert any(r.url == origin + "api/stats" for r in requests)
    # the credential stays in this tab's sessionStorage: never localStorage or a cookie
    assert page.evaluate("sessionStorage.getItem('wsserver.admin.credential')") == API_KEY
    assert page.evaluate("localStorage.length") == 0 and context.cookies() == []


def test_login_shows_the_apis_own_message_for_a_wrong_key_and_accepts_a_key_or_an_admin_jwt(
    context: BrowserContext, hub: Hub, requests: list[Request]
) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{hub.port}/api/stats", headers={"X-API-Key": "wrong-key"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    message = json.loads(refused.value.read())["message"]
    page = open_admin(context, hub)
    page.fill("#credential", "wrong-key")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login .status.error")
    assert page.text_content("#login .status.error") == message
    assert page.evaluate("sessionStorage.length") == 0
    log_in(page)
    wait_stat(page, "version", page.evaluate("fetch('/healthz').then(r => r.json()).then(b => b.data.version)"))
    assert [r for r in requests if r.url.endswith("/api/stats")][-1].headers.get("x-api-key") == API_KEY
    page.click("#logout")
    page.wait_for_selector("#credential")
    assert page.evaluate("sessionStorage.length") == 0

    jwt = hub.token("ops", role="admin")
    log_in(page, jwt)
    page.wait_for_selector("[data-stat=connections]")
    stats = [r for r in requests if r.url.endswith("/api/stats")]
    assert stats[-1].headers.get("authorization") == "Bearer " + jwt and "x-api-key" not in stats[-1].headers
    # a token without the admin role: the API's 403 message
    page.click("#logout")
    page.fill("#credential", hub.token("someone"))
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login .status.error")
    assert page.text_content("#login .status.error")


def test_the_overview_counts_follow_real_websocket_clients(context: BrowserContext, hub: Hub) -> None:
    page = open_admin(context, hub)
    log_in(page)
    wait_stat(page, "connections", "0")
    clients = clients_page(context, hub)
    open_ws(clients, "a", f"{hub.url}?token={hub.token(1)}")
    open_ws(clients, "b", f"{hub.url}?token={hub.token(2)}")
    open_ws(clients, "desk", f"{hub.url}?activation_code=DESK0001")
    wait_stat(page, "connections", "3")
    assert (stat(page, "user"), stat(page, "device"), stat(page, "users")) == ("2", "1", "2")
    node = page.locator("#nodes tbody tr")
    assert node.count() == 1 and node.locator("td").nth(3).text_content() == "3"
    clients.evaluate("close_ws('b')")
    wait_stat(page, "connections", "2")
    assert stat(page, "users") == "1"
    # the chart has drawn both series
    assert page.locator("#chart polyline").count() == 2


def test_the_overview_polls_only_while_the_page_is_visible(context: BrowserContext, hub: Hub, requests: list[Request]) -> None:
    page = context.new_page()
    page.clock.install()  # the page's timers run when the test says
    page.goto(admin_url(hub))
    page.wait_for_selector("#credential")
    log_in(page)
    page.wait_for_selector("[data-stat=connections]")

    def polls() -> int:
        """The samples taken, counted after a marker request that follows any the timers made."""
        markers = sum(r.url.endswith("/healthz") for r in requests)
        page.evaluate("fetch('/healthz')")
        until(lambda: sum(r.url.endswith("/healthz") for r in requests) > markers, what="the marker request")
        return sum(r.url.endswith("/api/stats") for r in requests)

    first = polls()
    page.clock.run_for(2_100)
    until(lambda: polls() == first + 1, what="the next sample")
    set_visibility = """v => {
        Object.defineProperty(document, 'visibilityState', {value: v, configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }"""
    page.evaluate(set_visibility, "hidden")
    page.clock.run_for(60_000)  # half a minute of samples, had it been visible
    assert polls() == first + 1
    page.evaluate(set_visibility, "visible")  # samples at once, then every period
    until(lambda: polls() == first + 2, what="a sample when visible again")
    page.clock.run_for(2_100)
    until(lambda: polls() == first + 3, what="polling resumed")


def test_kick_from_the_user_view_closes_the_client_with_4003(context: BrowserContext, hub: Hub) -> None:
    clients = clients_page(context, hub)
    open_ws(clients, "pc", f"{hub.url}?token={hub.token(42)}&device_id=pc-1")
    open_ws(clients, "phone", f"{hub.url}?token={hub.token(42)}&device_id=phone-1")
    page = open_admin(context, hub, "users?user_id=42")
    log_in(page)
    page.wait_for_selector("#user-result tbody tr")
    rows = page.locator("#user-result tbody tr")
    assert rows.count() == 2 and "pc-1" in str(rows.first.text_content())
    assert stat(page, "online") == "是"  # yes, in the default zh-CN
    assert stat(page, "mailbox") == "0"  # nothing waits for a user who is online
    pc = next(c for c in connections(hub, 42) if c["device_id"] == "pc-1")
    page.fill("#user-result input[name=reason]", "maintenance")
    page.click(f"button[data-conn='{pc['conn_id']}']")
    assert closed_with(clients, "pc") == 4003
    kicked = clients.evaluate("log.pc.messages.filter(m => m.type === 'kicked')")
    assert kicked and kicked[0]["data"]["reason"] == "maintenance"
    page.wait_for_function("() => document.querySelectorAll('#user-result tbody tr').length === 1")
    assert clients.evaluate("log.phone.close") is None
    page.click("#kick-all")
    assert closed_with(clients, "phone") == 4003
    until(lambda: connections(hub, 42) == [], what="no connection left")


def test_a_code_created_on_the_page_lets_a_desktop_client_connect_until_disabled(context: BrowserContext, hub: Hub) -> None:
    clients = clients_page(context, hub)
    open_ws(clients, "early", f"{hub.url}?activation_code=NEWDESK9")
    assert closed_with(clients, "early") != 1000 and not clients.evaluate("log.early.open")
    page = open_admin(context, hub, "codes")
    log_in(page)
    page.fill("#code-create input[name=code]", "NEWDESK9")
    page.fill("#code-create input[name=group_id]", "9")
    page.fill("#code-create input[name=name]", "front desk")
    page.click("#code-create button[type=submit]")
    page.wait_for_selector("button[data-toggle=NEWDESK9]")
    open_ws(clients, "desk", f"{hub.url}?activation_code=NEWDESK9")
    assert clients.evaluate("log.desk.open && log.desk.close === null")
    until(lambda: connections_of_code("NEWDESK9", hub) == 1, what="the desktop client counted")
    page.click("button[data-toggle=NEWDESK9]")  # disable: its connection closes 4001
    assert closed_with(clients, "desk") == 4001
    page.click("button[data-delete=NEWDESK9]")
    page.click("button[data-delete=NEWDESK9]")  # the second click confirms
    page.wait_for_selector("button[data-delete=NEWDESK9]", state="detached")
    assert connections_of_code("NEWDESK9", hub) is None


def connections_of_code(code: str, hub: Hub) -> Any:
    with urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{hub.port}/api/activation-codes", headers={"X-API-Key": API_KEY}), timeout=10
    ) as resp:
        codes = json.loads(resp.read())["data"]["codes"]
    return next((c["connections"] for c in codes if c["code"] == code), None)


class Hooks(http.server.BaseHTTPRequestHandler):
    """A webhook receiver answering 204 and keeping each event's body."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_publish_and_the_webhook_test_from_the_page(context: BrowserContext, tmp_path: Path, requests: list[Request]) -> None:
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    try:
        with Hub(tmp_path / "hooks", extra_config=f'[webhooks]\nurl = "{hook}"\nevents = []\n') as hub:
            hub.start()
            clients = clients_page(context, hub)
            open_ws(clients, "pc", f"{hub.url}?token={hub.token(42)}")
            page = open_admin(context, hub, "publish")
            log_in(page)
            page.fill("#publish-form input[name=type]", "order_shipped")
            page.fill("#publish-form textarea[name=data]", "{not json")
            page.click("#publish-form button[type=submit]")
            page.wait_for_selector("#view-publish .status.error")
            assert not [r for r in requests if r.method == "POST"]  # refused in the page
            page.fill("#publish-form textarea[name=data]", '{"order": 7, "items": ["a", "b"]}')
            page.fill("#publish-form input[name=value]", "42")
            page.click("#publish-form button[type=submit]")
            clients.wait_for_function("log.pc.messages.some(m => m.type === 'order_shipped')")
            got = clients.evaluate("log.pc.messages.find(m => m.type === 'order_shipped').data")
            assert got == {"order": 7, "items": ["a", "b"]}
            page.wait_for_selector("#view-publish .status.ok")
            assert "1" in str(page.text_content("#view-publish .status.ok"))
            page.click("#webhook-test")
            page.wait_for_function("() => document.querySelectorAll('#view-publish .status.ok').length === 2")
            assert "204" in str(page.locator("#view-publish .status.ok").nth(1).text_content())
            assert [e["event"] for e in Hooks.received] == ["ping"]
    finally:
        receiver.shutdown()
        receiver.server_close()


def test_read_only_mode_shows_no_mutating_control_and_sends_no_post_or_delete(
    context: BrowserContext, tmp_path: Path, requests: list[Request]
) -> None:
    with Hub(tmp_path / "ro", extra_config="[admin]\nread_only = true\n") as hub:
        hub.start()
        clients = clients_page(context, hub)
        open_ws(clients, "pc", f"{hub.url}?token={hub.token(42)}&device_id=pc-1")
        page = open_admin(context, hub)
        log_in(page)
        page.wait_for_selector("#read-only")
        assert page.locator("[data-view=publish]").count() == 0
        visit_every_view(page, ("overview", "users", "rooms", "crm", "codes"))
        page.wait_for_selector("#code-list table")
        assert page.locator("#code-create, button[data-toggle], button[data-delete]").count() == 0
        page.goto(admin_url(hub, "users?user_id=42"))
        page.wait_for_selector("#user-result tbody tr")
        assert page.locator("button[data-conn], #kick-all, input[name=reason]").count() == 0
        page.goto(admin_url(hub, "publish"))  # not offered: the overview instead
        page.wait_for_selector("#view-overview")
        # the page's own guard: a mutating call is refused before it is sent
        refused = page.evaluate("import('/admin/api.mjs').then(api => api.post('/api/publish', {}).catch(e => e.message))")
        assert refused
        assert {r.method for r in requests} == {"GET"}, {(r.method, r.url) for r in requests if r.method != "GET"}
        assert len(connections(hub, 42)) == 1


def test_texts_follow_server_locale_and_switch_on_the_page(context: BrowserContext, hub: Hub) -> None:
    page = open_admin(context, hub)
    assert page.text_content("#login h2") == "登录"  # server.locale = "zh-CN", the default
    assert page.evaluate("document.documentElement.lang") == "zh-CN"
    page.select_option("#language", "en")
    page.wait_for_function("() => document.querySelector('#login h2').textContent === 'Log in'")
    page.reload()
    page.wait_for_selector("#credential")
    assert page.text_content("#login h2") == "Log in"  # kept for the tab
    log_in(page)
    assert page.text_content("[data-view=users]") == "Users"


def test_screenshots_of_each_view(context: BrowserContext, hub: Hub, tmp_path: Path) -> None:
    folder = Path(os.environ.get("TEST_ADMIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    clients = clients_page(context, hub)
    open_ws(clients, "alice", f"{hub.url}?token={hub.token(42, username='alice')}&device_id=pc-1")
    open_ws(clients, "alice2", f"{hub.url}?token={hub.token(42, username='alice')}&device_id=phone-1")
    open_ws(clients, "bob", f"{hub.url}?token={hub.token(43, username='bob')}&device_id=pc-2")
    open_ws(clients, "desk", f"{hub.url}?activation_code=DESK0001")
    for name in ("alice", "bob"):
        clients.evaluate("n => window['ws_' + n].send(JSON.stringify({type: 'join_room', data: 'chat:lobby'}))", name)
    clients.evaluate("""ws_desk.send(JSON.stringify({type: 'sync_line_accounts', data: [
        {line_account_id: 'U1001', name: 'Shop A', online_status: 'online'},
        {line_account_id: 'U1002', name: 'Shop B', online_status: 'offline'}]}))""")
    for progress in (40, 75):
        api(hub, "POST", "/api/websocket/task/progress", {
            "user_id": 42, "task_id": "export-17", "task_type": "batch_export", "status": "running",
            "progress": progress, "total": 200, "completed": progress * 2,
        })
    clients.evaluate("""setInterval(() => ws_alice.send(JSON.stringify(
        {type: 'room_message', data: {room: 'chat:lobby', text: 'hi'}})), 40)""")  # traffic for the chart
    page = context.new_page()
    page.set_viewport_size({"width": 1100, "height": 640})
    page.goto(admin_url(hub))
    page.wait_for_selector("#credential")
    page.select_option("#language", "en")
    page.wait_for_function("() => document.querySelector('#login h2').textContent === 'Log in'")
    page.screenshot(path=str(folder / "admin-login.png"))
    log_in(page)
    wait_stat(page, "connections", "4")
    page.wait_for_timeout(6500)  # a few samples on the chart
    shots = {
        "overview": "#nodes table",
        "users?user_id=42": "#user-result td:text('export-17')",
        "rooms?group_id=1": "#room-list table",
        "crm?group_id=7": "#crm-result table",
        "codes": "#code-list table",
        "publish": "#webhook-test",
    }
    for view, ready in shots.items():
        page.goto(admin_url(hub, view))
        page.wait_for_selector(ready)
        if view.startswith("rooms"):
            page.click("#room-list button")
            page.wait_for_selector("#room-members table")
        path = folder / f"admin-{view.split('?')[0]}.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size > 5000
