"""The browser client's files: what the hub serves (`/client.js`, `/client.mjs`,
`/client-worker.js`, `/client.d.ts`) and how, their size budget, and both ways a
page loads the client (a classic script and an ES module) in a real Chromium."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext

from tests.browser import (
    browser_fixture,  # noqa: F401  (the fixtures)
    connections,
    context_fixture,  # noqa: F401
    hub_fixture,  # noqa: F401
    serve_page,
    until,
)
from tests.conftest import http_request
from tests.hubprocess import ROOT, Hub

STATIC = Path(ROOT) / "wsserver" / "static"
BUDGET = 10 * 1024  # bytes, gzipped: client.js, client-worker.js and client.mjs together


def gzipped(name: str) -> int:
    return len(gzip.compress((STATIC / name).read_bytes(), compresslevel=9))


def test_the_client_fits_in_10_kb_gzipped_and_needs_nothing_else() -> None:
    sizes = {name: gzipped(name) for name in ("client.js", "client-worker.js", "client.mjs")}
    print("gzipped sizes:", sizes, "total", sum(sizes.values()))
    assert sum(sizes.values()) <= BUDGET, sizes
    source = (STATIC / "client.js").read_text(encoding="utf-8")
    # no dependency, and no `import`/`export` statement: it must also run as a classic script
    assert not re.search(r"^\s*(import|export)\b|\brequire\(", source, re.M)
    assert (STATIC / "client.d.ts").read_text(encoding="utf-8").count("declare class Client") == 1


async def test_the_hub_serves_the_files_as_javascript_with_cache_headers_and_etags(live_server: Any) -> None:
    server = await live_server(server__api_listen="127.0.0.1:0")  # public files stay on the public listener
    address = server.addresses[0]
    for name, content_type in [
        ("client.js", "text/javascript; charset=utf-8"),
        ("client.mjs", "text/javascript; charset=utf-8"),
        ("client-worker.js", "text/javascript; charset=utf-8"),
        ("client.d.ts", "text/plain; charset=utf-8"),
    ]:
        status, headers, body = await http_request(address, "GET", "/" + name)
        assert status == 200 and body == (STATIC / name).read_bytes()
        assert headers["content-type"] == content_type
        assert headers["cache-control"] == "public, max-age=3600"
        assert headers["access-control-allow-origin"] == "*"
        etag = headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
        for tags in (etag, f'"other", W/{etag}', "*"):
            status, again, body = await http_request(address, "GET", "/" + name, headers=[("If-None-Match", tags)])
            assert (status, body, again["etag"]) == (304, b"", etag)
        status, _, body = await http_request(address, "GET", "/" + name, headers=[("If-None-Match", '"other"')])
        assert status == 200 and body
        status, _, body = await http_request(address, "HEAD", "/" + name)
        assert (status, body) == (200, b"")
    status, _, _ = await http_request(address, "POST", "/client.js")
    assert status == 405


MODULE_PAGES = {
    "classic": '<script src="/client.js"></script><script>window.loaded = typeof WsServerClient;</script>',
    "module-side-effect": '<script type="module">import "/client.js"; window.loaded = typeof WsServerClient;</script>',
    "module-named": """<script type="module">
        import { WsServerClient } from "/client.mjs";
        import Default from "/client.mjs";
        window.WsServerClient = WsServerClient;
        window.loaded = Default === WsServerClient && typeof WsServerClient;
      </script>""",
}


def test_the_same_file_loads_as_a_classic_script_and_as_an_es_module(context: BrowserContext, hub: Hub) -> None:
    errors: list[str] = []
    for name, body in MODULE_PAGES.items():
        serve_page(context, hub, name, "<!doctype html><meta charset=utf-8>" + body)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"http://127.0.0.1:{hub.port}/{name}.html")
        page.wait_for_function("window.loaded")
        assert page.evaluate("window.loaded") == "function", name
        worker = page.evaluate("WsServerClient.workerUrl")
        assert worker == (None if name == "module-side-effect" else f"http://127.0.0.1:{hub.port}/client-worker.js")
        user = {"classic": 1, "module-side-effect": 2, "module-named": 3}[name]
        page.evaluate(
            "a => new Promise(ok => new WsServerClient(a.url, {token: a.token, shared: true}).on('state', s => ok(s.state)))",
            {"url": hub.url, "token": hub.token(user)},
        )
        assert len(connections(hub, user)) == 1
    assert errors == []


def test_a_page_on_another_origin_imports_the_module_and_shares_through_a_leader_tab(
    context: BrowserContext, hub: Hub
) -> None:
    """A SharedWorker must come from the page's own origin: a page elsewhere that loads
    the client from the hub cannot start the hub's worker and falls back to a leader tab."""
    url = f"http://localhost:{hub.port}/app.html"  # another origin than 127.0.0.1:<port>
    html = f"""<!doctype html><meta charset=utf-8><script type="module">
        import {{ WsServerClient }} from "http://127.0.0.1:{hub.port}/client.mjs";
        window.WsServerClient = WsServerClient;
      </script>"""
    context.route(url, lambda route: route.fulfill(body=html, content_type="text/html; charset=utf-8"))
    pages = []
    for _ in range(2):
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("typeof window.WsServerClient === 'function'")
        page.evaluate(
            "a => { window.c = new WsServerClient(a.url, {token: a.token, shared: true}); }",
            {"url": hub.url, "token": hub.token(4)},
        )
        page.wait_for_function("c.state === 'connected'")
        pages.append(page)
    until(lambda: len(connections(hub, 4)) == 1, what="one connection")
    assert pages[1].evaluate("c.request('ping').then(m => m.type)") == "pong"
