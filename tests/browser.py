"""Headless Chromium for the browser client's tests: Debian's `chromium` driven by
Playwright's sync API (no browser download), one browser per test module, pages
served from the hub's own origin.

A test page is `http://127.0.0.1:<hub port>/<name>.html`, answered by a Playwright
route with `PAGE` (or a file), so the page, `/client.js` and `/client-worker.js`
(fetched from the real hub) share an origin, as a SharedWorker requires. The
page records what its clients see in `window.events`.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.hubprocess import API_KEY, Hub

CHROMIUM = os.environ.get("WSSERVER_CHROMIUM", "/usr/bin/chromium")
# without the background-networking flags Chromium's own connections are refused by a closed network
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# short backoff for tests: reconnects within a fraction of a second
FAST = {"backoffBase": 100, "backoffCap": 400}

PAGE = """<!doctype html><meta charset="utf-8"><title>wsserver client test</title>
<script src="/client.js"></script>
<script>
window.events = [];
window.clients = {};
window.track = (name, client) => {
  clients[name] = client;
  client.on("state", (s) => events.push({ c: name, k: "state", t: performance.now(), ...s }));
  client.on("*", (m) => events.push({ c: name, k: "msg", type: m.type, data: m.data }));
  return client;
};
window.open_client = (name, url, options) => track(name, new WsServerClient(url, options));
window.states = (name) => events.filter((e) => e.c === name && e.k === "state").map((e) => [e.state, e.code]);
window.received = (name, type) => events.filter((e) => e.c === name && e.k === "msg" && e.type === type).map((e) => e.data);
</script>
"""


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """One headless Chromium for the module; the tests fail (not skip) without it."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's `chromium` (apt-get install -y chromium; .ci/run does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(name="hub")
def hub_fixture(tmp_path: Path) -> Iterator[Hub]:
    with Hub(tmp_path) as running:
        running.start()
        yield running


@pytest.fixture(name="context")
def context_fixture(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh profile (its own SharedWorkers, locks and channels) for one test.

    A page answered by a route did not come from the network, so Chromium's Local
    Network Access checks would take it for a public page and block its
    connections to 127.0.0.1; the permission says what a page the hub served is."""
    ctx = browser.new_context(permissions=["local-network-access"])
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


def serve_page(ctx: BrowserContext, hub: Hub, name: str = "test", html: str = PAGE) -> str:
    """Answer `http://127.0.0.1:<port>/<name>.html` with `html` in `ctx`; returns the URL."""
    url = f"http://127.0.0.1:{hub.port}/{name}.html"
    ctx.route(url, lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"))
    return url


def open_page(ctx: BrowserContext, hub: Hub, *, init_script: str | None = None, html: str = PAGE) -> Page:
    url = serve_page(ctx, hub, html=html)
    page = ctx.new_page()
    if init_script:
        page.add_init_script(init_script)
    page.on("pageerror", lambda exc: print("page error:", exc))
    page.goto(url)
    return page


def api(hub: Hub, method: str, path: str, body: Any = None) -> Any:
    """One call to the hub's HTTP API with its key; the reply's `data`."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{hub.port}{path}", data=data, method=method,
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def connections(hub: Hub, user_id: Any) -> list[dict[str, Any]]:
    return list(api(hub, "GET", f"/api/users/{user_id}/connections")["connections"])


def until(condition: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a Python-side condition (the hub's HTTP API) until it holds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def open_client(page: Page, name: str, url: str, **options: Any) -> None:
    """`new WsServerClient(url, options)` in `page`, tracked as `clients[name]`."""
    page.evaluate("a => { open_client(a.name, a.url, a.options) }", {"name": name, "url": url, "options": options})


def wait_state(page: Page, name: str, state: str, timeout: float = 10_000) -> None:
    page.wait_for_function("a => clients[a[0]].state === a[1]", arg=[name, state], timeout=timeout)
