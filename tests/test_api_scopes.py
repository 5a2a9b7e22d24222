"""Group-scoped API keys over real HTTP (SPEC 13, api/scopes.py): a key with
`groups = [..]` reaches its groups' users, rooms, CRM and codes, and gets 403
naming the field for anything else, with nothing done."""

from __future__ import annotations

from typing import Any

from tests.conftest import recv_type, token, ws_connect
from tests.test_api_keys import call

SCOPED = "acme-key-0123456789abcdef"
WRITER = "writer-key-0123456789abcdef"
KEYS = [{"name": "acme", "key": SCOPED, "groups": [7, "8"]}, {"name": "ops", "key": WRITER}]
CODES = [{"code": "ACME0001", "group_id": 7}, {"code": "OTHR0001", "group_id": 9}]


def refused(answer: tuple[int, Any], field: str | None) -> bool:
    status, body = answer
    return status == 403 and body["code"] == 403 and body.get("field") == field


async def test_a_group_scoped_key_publishes_only_to_its_groups(live_server: Any) -> None:
    server = await live_server(api__keys=KEYS, activation_codes=CODES)
    cfg = server.config
    async with ws_connect(f"{server.url}/ws?token={token(cfg, user_id=1, group_id=7)}") as mine, ws_connect(
        f"{server.url}/ws?token={token(cfg, user_id=2, group_id=9)}"
    ) as other:
        await recv_type(mine, "connected")
        await recv_type(other, "connected")
        publish = {"type": "note", "data": {"n": 1}}
        assert refused(await call(server, "POST", "/api/publish", SCOPED, {**publish, "group_id": 9}), "group_id")
        assert refused(await call(server, "POST", "/api/publish", SCOPED, {**publish, "all": True}), "all")
        assert refused(await call(server, "POST", "/api/publish", SCOPED, {**publish, "user_id": 2}), "group_id")
        assert refused(
            await call(server, "POST", "/api/publish", SCOPED, {**publish, "activation_code": "OTHR0001"}),
            "activation_code",
        )
        assert refused(
            await call(server, "POST", "/api/websocket/notification", SCOPED, {"user_id": 2, "title": "t", "message": "m"}),
            "group_id",
        )
        assert refused(
            await call(server, "POST", "/api/messages", SCOPED, {"from_user_id": 1, "to_user_id": 2, "group_id": 9, "text": "x"}),
            "group_id",
        )
        status, body = await call(server, "POST", "/api/publish", SCOPED, {**publish, "group_id": "7", "data": {"n": 2}})
        assert status == 200 and body["data"]["delivered"] == 1  # "7" and 7 are one group
        assert (await recv_type(mine, "note"))["data"] == {"n": 2}
        # the other group heard nothing of the refused calls: its next frame is this one
        assert (await call(server, "POST", "/api/publish", WRITER, {**publish, "group_id": 9, "data": {"n": 3}}))[0] == 200
        assert (await recv_type(other, "note"))["data"] == {"n": 3}


async def test_a_group_scoped_key_reads_and_kicks_only_in_its_groups(live_server: Any) -> None:
    server = await live_server(api__keys=KEYS, activation_codes=CODES)
    cfg = server.config
    async with ws_connect(f"{server.url}/ws?token={token(cfg, user_id=1, group_id=7)}") as mine, ws_connect(
        f"{server.url}/ws?token={token(cfg, user_id=2, group_id=9)}"
    ) as other:
        await recv_type(mine, "connected")
        await recv_type(other, "connected")
        for path in ("/api/stats", "/api/nodes", "/api/websocket/stats", "/api/websocket/user/2/online"):
            assert refused(await call(server, "GET", path, SCOPED), None), path
        assert refused(await call(server, "POST", "/api/webhooks/test", SCOPED), None)
        assert (await call(server, "GET", "/api/groups/7/stats", SCOPED))[0] == 200
        assert (await call(server, "GET", "/api/groups/8/customers", SCOPED))[0] == 200
        assert refused(await call(server, "GET", "/api/groups/9/customers", SCOPED), "group_id")
        status, body = await call(server, "GET", "/api/users/1/connections?group_id=7", SCOPED)
        assert status == 200 and len(body["data"]["connections"]) == 1
        assert refused(await call(server, "GET", "/api/users/2/connections", SCOPED), "group_id")
        assert refused(await call(server, "GET", "/api/users/2/online?group_id=9", SCOPED), "group_id")
        assert refused(await call(server, "GET", "/api/rooms", SCOPED), "group_id")
        assert refused(await call(server, "POST", "/api/users/2/kick", SCOPED, {"group_id": 9}), "group_id")
        assert refused(await call(server, "POST", "/api/users/2/kick", SCOPED), "group_id")
        status, body = await call(server, "GET", "/api/users/2/connections?group_id=9", WRITER)
        assert len(body["data"]["connections"]) == 1  # still connected
        status, body = await call(server, "POST", "/api/users/1/kick", SCOPED, {"group_id": 7})
        assert status == 200 and body["data"]["kicked"] == 1
        assert (await recv_type(mine, "kicked"))["type"] == "kicked"


async def test_a_group_scoped_key_sees_and_changes_only_its_groups_activation_codes(live_server: Any) -> None:
    server = await live_server(api__keys=KEYS, activation_codes=CODES)
    status, body = await call(server, "GET", "/api/activation-codes", SCOPED)
    assert status == 200 and [c["code"] for c in body["data"]["codes"]] == ["ACME0001"]
    assert refused(await call(server, "POST", "/api/activation-codes", SCOPED, {"code": "NEW00001", "group_id": 9}), "group_id")
    assert refused(await call(server, "DELETE", "/api/activation-codes/OTHR0001", SCOPED), "code")
    assert (await call(server, "POST", "/api/activation-codes", SCOPED, {"code": "NEW00002", "group_id": 8}))[0] == 201
    assert (await call(server, "DELETE", "/api/activation-codes/ACME0001", SCOPED))[0] == 200
    assert (await call(server, "DELETE", "/api/activation-codes/NOPE0001", SCOPED))[0] == 404
    status, body = await call(server, "GET", "/api/activation-codes", WRITER)
    assert sorted(c["code"] for c in body["data"]["codes"]) == ["NEW00002", "OTHR0001"]
