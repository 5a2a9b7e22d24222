"""The operator dashboard's files (`/admin`, SPEC 12): where they are served, with
which headers, the switch that turns them off, and what the page's sources may
hold (no external resource, no inline script or style, every text in both
languages). The page itself runs in Chromium in tests/test_browser_admin.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs

from tests.conftest import http_request
from tests.hubprocess import ROOT

ADMIN = Path(ROOT) / "wsserver" / "static" / "admin"
SECURITY = {
    "content-security-policy": "default-src 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def security_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: headers.get(k, "") for k in SECURITY}


async def test_admin_serves_the_page_and_each_file_with_csp_nosniff_and_revalidation(live_server: Any) -> None:
    server = await live_server()
    address = server.addresses[0]
    status, headers, body = await http_request(address, "GET", "/admin")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == (ADMIN / "index.html").read_bytes()
    assert security_headers(headers) == SECURITY
    assert (await http_request(address, "GET", "/admin/"))[2] == body
    types = {".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
             ".svg": "image/svg+xml"}
    for path in sorted(ADMIN.iterdir()):
        status, headers, body = await http_request(address, "GET", "/admin/" + path.name)
        assert (status, body) == (200, path.read_bytes()), path.name
        assert headers["content-type"] == types[path.suffix]
        assert headers["cache-control"] == "no-cache"
        assert security_headers(headers) == SECURITY
        status, again, body = await http_request(address, "GET", "/admin/" + path.name, headers=[("If-None-Match", headers["etag"])])
        assert (status, body, security_headers(again)) == (304, b"", SECURITY)
    status, headers, _ = await http_request(address, "GET", "/admin/nothing.mjs")
    assert status == 404 and security_headers(headers) == SECURITY
    assert (await http_request(address, "POST", "/admin/admin.mjs"))[0] == 405


async def test_settings_tell_the_page_its_mode_and_language_without_credentials(live_server: Any) -> None:
    server = await live_server(admin__read_only=True, server__locale="en")
    status, headers, body = await http_request(server.addresses[0], "GET", "/admin/settings.json")
    assert status == 200 and headers["cache-control"] == "no-store"
    data = json.loads(body)["data"]
    assert (data["read_only"], data["locale"]) == (True, "en") and data["version"]


async def test_with_api_listen_the_page_moves_to_the_api_listener(live_server: Any) -> None:
    server = await live_server(server__api_listen="127.0.0.1:0")
    assert (await http_request(server.addresses[0], "GET", "/admin"))[0] == 404
    status, headers, _ = await http_request(server.api_addresses[0], "GET", "/admin")
    assert status == 200 and security_headers(headers) == SECURITY


async def test_admin_enabled_false_is_404_and_a_reload_turns_it_on_at_once(live_server: Any) -> None:
    server = await live_server(admin__enabled=False)
    address = server.addresses[0]
    for path in ("/admin", "/admin/admin.mjs", "/admin/settings.json"):
        status, _, body = await http_request(address, "GET", path)
        assert status == 404 and json.loads(body)["code"] == 404, path
    config = server.config
    await server.reload(attrs.evolve(config, admin=attrs.evolve(config.admin, enabled=True)))
    assert (await http_request(address, "GET", "/admin"))[0] == 200
    assert json.loads((await http_request(address, "GET", "/admin/settings.json"))[2])["data"]["read_only"] is False


def sources() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(ADMIN.iterdir())}


def test_the_page_loads_nothing_from_elsewhere_and_has_no_inline_script_or_style() -> None:
    files = sources()
    for name, text in files.items():
        # the one URL allowed is the SVG namespace (a name, never fetched)
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+[^\s\"'`)]*", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (name, urls)
        assert not re.search(r"\blocalStorage\s*[.\[]|document\.cookie", text), name
        assert ".innerHTML" not in text and "insertAdjacentHTML" not in text, name
    html = files["index.html"]
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/admin/admin.mjs">']
    assert "<style" not in html and " style=" not in html and not re.search(r"\son\w+=", html)
    for name, text in files.items():  # every module imported exists
        for target in re.findall(r'from "(/admin/[^"]+)"', text):
            assert target.removeprefix("/admin/") in files, (name, target)


def test_every_text_of_the_page_is_in_chinese_and_english() -> None:
    files = sources()
    catalogue = files["i18n.mjs"]
    entries = dict(re.findall(r"^  (\w+): \[(.*?)\],?$", catalogue, re.M | re.S))
    for key, pair in entries.items():
        texts = json.loads("[" + pair + "]")
        assert len(texts) == 2 and all(texts), key
    used = {"overview", "users", "rooms", "crm", "codes", "publish"}  # the views' names
    for name, text in files.items():
        if name == "i18n.mjs":
            continue
        used |= set(re.findall(r'\bt\("(\w+)"', text))
        for columns in re.findall(r"\[((?:\"\w+\",\s*)+\"\w+\")\]", text):  # column lists are catalogue keys
            used |= set(json.loads("[" + columns + "]"))
    # built from a condition or a prefix: "target_" + each of publish.mjs's TARGETS
    used -= {"target_", "all"}
    used |= {"code_created", "code_replaced", "code_enabled", "code_disabled"}
    used |= {"target_" + k for k in ("user_id", "group_id", "room", "all")}
    assert sorted(used - entries.keys()) == []
