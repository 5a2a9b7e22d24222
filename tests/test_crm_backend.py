"""Seed 000's CRM data back to the business (SPEC 13): retries that count once,
across a kill -9 of a real `wsserver serve`; the CRM reads; dashboards told of
every new incoming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from tests.conftest import http_request, ws_connect
from tests.hubprocess import API_KEY, CODE, Hub


async def recv(ws: Any) -> dict[str, Any]:
    with trio.fail_after(10):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def reply_to(ws: Any, request_id: str) -> dict[str, Any]:
    """The reply that echoes `request_id` (pushes before it are skipped)."""
    while True:
        msg = await recv(ws)
        if msg.get("id") == request_id:
            return msg


async def api(hub: Hub, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    status, _, data = await http_request(hub.address, method, path, headers=[("X-API-Key", API_KEY)], body=raw)
    return status, json.loads(data)


# the desktop's requests, each with its own `id`, as a client that retries sends them
REQUESTS = [
    ("s1", "sync_line_accounts", [{"line_account_id": "a", "online_status": "online"}]),
    ("i1", "incoming", {"line_account_id": "a", "incoming_line_id": "u1"}),
    ("i2", "incoming", {"line_account_id": "a", "incoming_line_id": "u2"}),
    ("i3", "incoming", {"line_account_id": "a", "incoming_line_id": "u1"}),
    ("c1", "customer_sync", {"customer_id": "cust-1", "name": "Wang"}),
    ("f1", "follow_up_sync", {"customer_id": "cust-1", "note": "called"}),
    ("st1", "account_status_change", {"line_account_id": "a", "online_status": "busy"}),
]


async def send_all(desk: Any) -> None:
    for rid, mtype, data in REQUESTS:
        await desk.send_message(json.dumps({"type": mtype, "id": rid, "data": data}))


async def replies(desk: Any) -> dict[str, Any]:
    await send_all(desk)
    return {rid: (await reply_to(desk, rid)) for rid, _, _ in REQUESTS}


async def test_a_crm_retry_storm_with_a_kill_in_the_middle_counts_every_request_once(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        await trio.to_thread.run_sync(hub.start)
        desk_url = f"{hub.url}?activation_code={CODE}&device_id=pc-1"
        async with ws_connect(desk_url) as desk:
            await recv(desk)  # auth_success
            first = await replies(desk)
            assert first["i3"]["data"]["duplicate"] is True and first["f1"]["data"]["follow_up_id"] == 1
            again = await replies(desk)  # round 2: a retry of everything
            await send_all(desk)  # round 3, cut short by a kill -9
        hub.kill()
        await trio.to_thread.run_sync(hub.start)
        for _ in range(2):  # rounds 4 and 5 on the restarted hub
            async with ws_connect(desk_url) as desk:
                await recv(desk)
                later = await replies(desk)
            for rid in first:
                assert later[rid]["type"] == first[rid]["type"], rid
                assert later[rid]["data"] == first[rid]["data"], rid
        for rid in first:
            assert (again[rid]["type"], again[rid]["data"]) == (first[rid]["type"], first[rid]["data"]), rid
        status, body = await api(hub, "GET", "/api/groups/7/stats")
        assert status == 200
        stats = body["data"]
        assert (stats["total_accounts"], stats["total_incoming"], stats["duplicate_incoming"]) == (1, 3, 1)
        assert (stats["today_incoming"], stats["today_duplicate"]) == (3, 1)
        # the same id on another installation of the code is another request; and
        # nothing was created twice: the next ids follow the first ones
        async with ws_connect(f"{hub.url}?activation_code={CODE}&device_id=pc-2") as desk:
            await recv(desk)
            await desk.send_message(json.dumps({"type": "follow_up_sync", "id": "f1", "data": {"customer_id": "cust-2"}}))
            assert (await reply_to(desk, "f1"))["data"]["follow_up_id"] == 2
            await desk.send_message(json.dumps({"type": "customer_sync", "id": "c1", "data": {"customer_id": "cust-2"}}))
            assert (await reply_to(desk, "c1"))["data"]["customer_db_id"] == 2


async def live_api(server: Any, method: str, path: str) -> tuple[int, Any]:
    host, port = server.addresses[0]
    status, _, data = await http_request((host, port), method, path, headers=[("X-API-Key", "crm-reader-key-0123456789")])
    return status, json.loads(data)


async def test_a_backend_pages_through_customers_follow_ups_and_incoming_and_dashboards_see_each_incoming(
    live_server: Any,
) -> None:
    server = await live_server(
        activation_codes=[{"code": "HG66OP88", "group_id": 1}, {"code": "OTHER002", "group_id": 2}],
        api__keys=["crm-reader-key-0123456789"],
    )
    from tests.conftest import token

    dash_token = token(server.config, user_id=10, group_id=1, role="dashboard")
    async with ws_connect(f"{server.url}/ws?token={dash_token}") as dash, ws_connect(
        f"{server.url}/ws?activation_code=HG66OP88"
    ) as desk, ws_connect(f"{server.url}/ws?activation_code=OTHER002") as other:
        await recv(desk)
        await recv(other)
        await desk.send_message(json.dumps({"type": "sync_line_accounts", "id": "s", "data": [{"line_account_id": "a"}]}))
        await reply_to(desk, "s")
        for i, line in enumerate(["u1", "u2", "u1"]):
            data = {"line_account_id": "a", "incoming_line_id": line, "customer_name": f"Li {i}", "source": "ad"}
            await desk.send_message(json.dumps({"type": "incoming", "id": f"i{i}", "data": data}))
            await reply_to(desk, f"i{i}")
            while (msg := await recv(dash))["type"] != "incoming_update":
                pass
            assert msg["data"]["incoming_line_id"] == line and msg["data"]["line_account_id"] == "a"
            assert msg["data"]["customer_name"] == f"Li {i}" and msg["data"]["source"] == "ad"
            assert msg["data"]["duplicate"] is (i == 2) and msg["data"]["incoming_id"] == i + 1
            assert (await recv(dash))["type"] == "account_stats_update"  # the counters it moved come after
            await desk.send_message(json.dumps({"type": "customer_sync", "id": f"c{i}", "data": {"customer_id": f"k{i}", "tier": i}}))
            await reply_to(desk, f"c{i}")
            await desk.send_message(json.dumps({"type": "follow_up_sync", "id": f"f{i}", "data": {"customer_id": f"k{i}", "note": i}}))
            await reply_to(desk, f"f{i}")
        # group 2 has a customer of its own, numbered in between
        await other.send_message(json.dumps({"type": "customer_sync", "id": "x", "data": {"customer_id": "theirs"}}))
        await reply_to(other, "x")
        await desk.send_message(json.dumps({"type": "customer_sync", "id": "c0", "data": {"customer_id": "k0", "tier": 9}}))
        await reply_to(desk, "c0")  # a retry: the first reply, nothing changed

    for path, number, field, values in (
        ("customers", "customer_db_id", "customer_id", ["k0", "k1", "k2"]),
        ("follow-ups", "follow_up_id", "note", [0, 1, 2]),
        ("incoming", "incoming_id", "customer_name", ["Li 0", "Li 1", "Li 2"]),
    ):
        status, body = await live_api(server, "GET", f"/api/groups/1/{path}?limit=2")
        assert status == 200, body
        page = body["data"]
        assert [item[field] for item in page["items"]] == values[:2] and page["has_more"] is True
        status, body = await live_api(server, "GET", f"/api/groups/1/{path}?after={page['next_after']}&limit=2")
        rest = body["data"]
        assert [item[field] for item in rest["items"]] == values[2:] and rest["has_more"] is False
        assert rest["next_after"] == rest["items"][-1][number] and rest["group_id"] == 1
    status, body = await live_api(server, "GET", "/api/groups/1/customers")
    assert [c["tier"] for c in body["data"]["items"]] == [0, 1, 2]
    status, body = await live_api(server, "GET", "/api/groups/1/incoming")
    assert [i["duplicate"] for i in body["data"]["items"]] == [False, False, True]
    status, body = await live_api(server, "GET", "/api/groups/2/customers")
    assert [c["customer_id"] for c in body["data"]["items"]] == ["theirs"]
    status, body = await live_api(server, "GET", "/api/groups/3/follow-ups")
    assert body["data"]["items"] == [] and body["data"]["has_more"] is False
    for query, field in (("limit=501", "limit"), ("limit=0", "limit"), ("limit=x", "limit"), ("after=-1", "after")):
        status, body = await live_api(server, "GET", f"/api/groups/1/incoming?{query}")
        assert status == 400 and body["field"] == field, (query, body)


async def live_publish(server: Any, body: dict[str, Any]) -> tuple[int, Any]:
    host, port = server.addresses[0]
    status, _, data = await http_request(
        (host, port), "POST", "/api/publish", headers=[("X-API-Key", "crm-reader-key-0123456789")],
        body=json.dumps(body).encode(),
    )  # fmt: skip
    return status, json.loads(data)


async def test_a_backend_publishes_to_a_groups_dashboards_its_devices_or_one_activation_code(live_server: Any) -> None:
    server = await live_server(
        activation_codes=[{"code": "HG66OP88", "group_id": 1}, {"code": "HG66OP99", "group_id": 1}],
        api__keys=["crm-reader-key-0123456789"],
    )
    from tests.conftest import token

    dash_token = token(server.config, user_id=10, group_id=1, role="dashboard")
    async with ws_connect(f"{server.url}/ws?token={dash_token}") as dash, ws_connect(
        f"{server.url}/ws?activation_code=HG66OP88"
    ) as desk1, ws_connect(f"{server.url}/ws?activation_code=HG66OP99") as desk2:
        for ws in (dash, desk1, desk2):
            await recv(ws)  # connected / auth_success
        await recv(dash)  # its group_stats_update
        for body, reached in (
            ({"type": "notice", "data": {"n": 1}, "group_id": 1, "kind": "dashboard"}, [dash]),
            ({"type": "notice", "data": {"n": 2}, "group_id": 1, "kind": "device"}, [desk1, desk2]),
            ({"type": "notice", "data": {"n": 3}, "activation_code": "HG66OP99"}, [desk2]),
            ({"type": "notice", "data": {"n": 4}, "group_id": 1}, [dash, desk1, desk2]),
        ):
            status, reply = await live_publish(server, body)
            assert status == 200 and reply["data"]["delivered"] == len(reached), (body, reply)
            for ws in reached:
                assert (await recv(ws))["data"] == body["data"]
        # nothing else arrived: each connection's next frame is its pong
        for ws in (dash, desk1, desk2):
            await ws.send_message(json.dumps({"type": "ping", "id": "p"}))
            assert (await recv(ws))["type"] == "pong"
    for body, field in (
        ({"type": "t", "kind": "dashboard"}, "user_id"),  # no target at all
        ({"type": "t", "kind": "dashboard", "user_id": 1, "group_id": 1}, "kind"),
        ({"type": "t", "kind": "phone", "group_id": 1}, "kind"),
        ({"type": "t", "activation_code": "HG66OP88", "group_id": 1}, "group_id"),
        ({"type": "t", "activation_code": ""}, "activation_code"),
    ):
        status, reply = await live_publish(server, body)
        assert status == 400 and reply["field"] == field, (body, reply)
