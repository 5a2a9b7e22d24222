"""Named API keys over real HTTP (SPEC 13): a read-only key can read but change
nothing, and every changing call leaves one audit line naming its key, never
the key itself."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.conftest import http_request, token
from wsserver.api.table import ROUTES

READER = "reader-key-0123456789abcdef"
WRITER = "writer-key-0123456789abcdef"
KEYS = [{"name": "crm-reader", "key": READER, "read_only": True}, {"name": "ops", "key": WRITER}, "plain-key-0123456789"]


async def call(server: Any, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    status, _, data = await http_request(server.addresses[0], method, path, headers=[("X-API-Key", key)], body=raw)
    return status, json.loads(data) if data.startswith(b"{") else data


async def test_a_read_only_key_reads_but_every_changing_route_answers_403(live_server: Any) -> None:
    server = await live_server(api__keys=KEYS, activation_codes=[{"code": "HG66OP88", "group_id": 1}])
    status, body = await call(server, "GET", "/api/activation-codes", READER)
    assert status == 200 and len(body["data"]["codes"]) == 1
    changing = [r for r in ROUTES if r.method not in ("GET", "HEAD") and r.access == "admin"]
    assert {r.handler for r in changing} >= {"publish", "kick", "put_code", "delete_code", "notification"}
    for route in changing:
        path = route.path.replace("{user_id}", "5").replace("{code}", "HG66OP88")
        status, body = await call(server, route.method, path, READER, {"type": "x", "data": {}, "all": True})
        assert status == 403 and body["code"] == 403, (route.path, body)
    status, body = await call(server, "POST", "/api/activation-codes", READER, {"code": "NEW00001", "group_id": 2})
    assert status == 403
    status, body = await call(server, "GET", "/api/activation-codes", READER)
    assert [c["code"] for c in body["data"]["codes"]] == ["HG66OP88"]  # nothing changed
    # a writable named key and a plain one may
    assert (await call(server, "POST", "/api/publish", WRITER, {"type": "x", "data": {}, "all": True}))[0] == 200
    assert (await call(server, "POST", "/api/publish", "plain-key-0123456789", {"type": "x", "data": {}, "all": True}))[0] == 200


async def test_every_changing_call_logs_one_audit_line_with_the_keys_name(
    live_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = await live_server(api__keys=KEYS, activation_codes=[{"code": "HG66OP88", "group_id": 1}])
    admin = token(server.config, user_id="root", role="admin")
    with caplog.at_level(logging.INFO, logger="wsserver.audit"):
        await call(server, "GET", "/api/stats", WRITER)  # a read: no audit line
        await call(server, "POST", "/api/publish", WRITER, {"type": "x", "data": {}, "all": True})
        await call(server, "POST", "/api/publish", WRITER, {"type": "Bad Type", "data": {}, "all": True})
        await call(server, "DELETE", "/api/activation-codes/HG66OP88", READER)
        await call(server, "POST", "/api/users/5/kick", "plain-key-0123456789")
        status, _, _ = await http_request(
            server.addresses[0], "POST", "/api/publish", headers=[("Authorization", f"Bearer {admin}")],
            body=json.dumps({"type": "x", "data": {}, "all": True}).encode(),
        )  # fmt: skip
        assert status == 200
    lines = [r for r in caplog.records if r.name == "wsserver.audit"]
    assert [(r.caller, r.method, r.path, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("ops", "POST", "/api/publish", 200),
        ("ops", "POST", "/api/publish", 400),
        ("crm-reader", "DELETE", "/api/activation-codes/[redacted]", 403),
        ("api.keys[2]", "POST", "/api/users/5/kick", 200),
        ("jwt:root", "POST", "/api/publish", 200),
    ]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert READER not in text and WRITER not in text and "HG66OP88" not in text
