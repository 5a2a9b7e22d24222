"""The CRM and activation-code endpoints of the HTTP API (SPEC 6), over real HTTP."""

from __future__ import annotations

import json
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.conftest import recv, ws_connect
from tests.test_api import call, ok, start


async def test_group_stats_and_accounts_follow_the_desktop_client(live_server: Any) -> None:
    server = await start(live_server, activation_codes=[{"code": "DESK0001", "group_id": 3}])
    async with ws_connect(f"{server.url}/ws?activation_code=DESK0001") as desk:
        await recv(desk)
        await desk.send_message(json.dumps({"type": "sync_line_accounts", "data": [
            {"line_account_id": "a1", "name": "Amy", "online_status": "online"},
            {"line_account_id": "a2", "online_status": "offline"},
        ]}))  # fmt: skip
        await recv(desk)
        await desk.send_message(json.dumps({"type": "incoming", "data": {"line_account_id": "a1", "incoming_line_id": "x"}}))
        await recv(desk)
        stats = await ok(server, "GET", "/api/groups/3/stats")
        assert stats == {
            "group_id": 3, "total_accounts": 2, "online_accounts": 1, "total_incoming": 1,
            "today_incoming": 1, "duplicate_incoming": 0, "today_duplicate": 0,
        }  # fmt: skip
        accounts = await ok(server, "GET", "/api/groups/3/accounts")
        assert [(a["line_account_id"], a.get("name"), a["online_status"]) for a in accounts["accounts"]] == [
            ("a1", "Amy", "online"),
            ("a2", None, "offline"),
        ]
    empty = await ok(server, "GET", "/api/groups/99/stats")
    assert empty["total_accounts"] == 0
    assert (await ok(server, "GET", "/api/groups/99/accounts"))["accounts"] == []


async def test_activation_codes_are_managed_at_run_time(live_server: Any) -> None:
    server = await start(live_server)
    listing = await ok(server, "GET", "/api/activation-codes")
    assert [c["code"] for c in listing["codes"]] == ["HG66OP88"]
    status, reply, _ = await call(server, "POST", "/api/activation-codes", {"code": "NEWDESK1", "group_id": 5, "name": "front"})
    assert status == 201 and reply["data"]["created"] is True
    async with ws_connect(f"{server.url}/ws?activation_code=NEWDESK1") as desk:
        hello = await recv(desk)
        assert hello["type"] == "auth_success" and hello["data"]["group_id"] == 5
        listing = {c["code"]: c for c in (await ok(server, "GET", "/api/activation-codes"))["codes"]}
        assert listing["NEWDESK1"]["connections"] == 1
        data = await ok(server, "POST", "/api/activation-codes", {"code": "NEWDESK1", "group_id": 5, "enabled": False})
        assert data["created"] is False and data["closed"] == 1
        try:
            with trio.fail_after(5):
                while True:
                    await desk.get_message()
        except ConnectionClosed as exc:
            assert exc.reason.code == 4001
    data = await ok(server, "DELETE", "/api/activation-codes/NEWDESK1")
    assert data == {"deleted": True, "closed": 0}
    status, reply, _ = await call(server, "DELETE", "/api/activation-codes/NEWDESK1")
    assert status == 404 and reply["field"] == "code"


async def test_activation_code_requests_name_the_bad_field(live_server: Any) -> None:
    server = await start(live_server)
    for body, name in (
        ({"group_id": 1}, "code"),
        ({"code": "", "group_id": 1}, "code"),
        ({"code": " padded ", "group_id": 1}, "code"),
        ({"code": "X1"}, "group_id"),
        ({"code": "X1", "group_id": True}, "group_id"),
        ({"code": "X1", "group_id": 1, "enabled": "no"}, "enabled"),
    ):
        status, reply, _ = await call(server, "POST", "/api/activation-codes", body)
        assert status == 400 and reply["field"] == name, (body, reply)
    status, _, _ = await call(server, "GET", "/api/activation-codes", key=None)
    assert status == 401
