"""The CRM flow over real sockets, and counters that survive a restart of the process."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import trio

from tests.conftest import make_config, recv, recv_type, token, ws_connect
from tests.test_process import SECRET, write_config

CODE = "SECRETCODE42"  # group 7 in write_config


async def test_desktop_and_dashboard_over_real_connections(live_server: Any) -> None:
    server = await live_server(activation_codes=[{"code": "HG66OP88", "group_id": 1}, {"code": "OTHER002", "group_id": 2}])
    base = server.url + "/ws"
    dash_token = token(server.config, user_id=10, group_id=1, role="dashboard")
    other_token = token(server.config, user_id=20, group_id=2, role="dashboard")
    async with ws_connect(f"{base}?token={dash_token}") as dash, ws_connect(f"{base}?token={other_token}") as other:
        assert (await recv(dash))["type"] == "connected"
        first = await recv(dash)
        assert first["type"] == "group_stats_update" and first["data"]["activation_code"] == "HG66OP88"
        await recv_type(other, "group_stats_update")
        async with ws_connect(base) as desk:
            # seed 000: every message carries the code; the first one authenticates
            await desk.send_message(json.dumps({
                "type": "sync_line_accounts", "activation_code": "HG66OP88",
                "data": [{"line_account_id": "line_account_123", "online_status": "online"}],
            }))
            assert (await recv(desk))["type"] == "auth_success"
            result = await recv(desk)
            assert result["type"] == "sync_result" and result["data"]["created_count"] == 1
            update = await recv_type(dash, "group_stats_update")
            assert update["data"]["total_accounts"] == 1 and update["data"]["online_accounts"] == 1
            await desk.send_message(json.dumps({
                "type": "incoming", "activation_code": "HG66OP88",
                "data": {"line_account_id": "line_account_123", "incoming_line_id": "U1"},
            }))
            assert (await recv(desk))["data"]["status"] == "processed"
            acct = await recv_type(dash, "account_stats_update")
            assert acct["data"]["line_id"] == "line_account_123" and acct["data"]["total_incoming"] == 1
        # the desktop client went away: its account goes offline on the dashboard
        change = await recv_type(dash, "account_status_change")
        assert change["data"]["online_status"] == "offline" and change["data"]["group_id"] == 1
        # group 2's dashboard heard nothing of group 1
        with trio.move_on_after(0.3):
            msg = await recv(other)
            raise AssertionError(f"group 2 got {msg}")


async def test_a_group_member_who_is_no_administrator_cannot_log_in_as_the_desktop_client(
    live_server: Any,
) -> None:
    server = await live_server(activation_codes=[{"code": "HG66OP88", "group_id": 1}])
    base = server.url + "/ws"
    member = token(server.config, user_id=11, group_id=1)  # no role: a plain member of group 1
    async with ws_connect(f"{base}?token={member}") as ws:
        stats = await recv_type(ws, "group_stats_update")
    shown = stats["data"]["activation_code"]
    assert shown == "HG66****"
    async with ws_connect(base) as desk:  # trying the code it was shown, as seed 000's client sends it
        await desk.send_message(json.dumps({"type": "heartbeat", "activation_code": shown}))
        err = await recv(desk)
        assert err["type"] == "error" and err["data"]["code"] == "unauthorized"
    admin = token(server.config, user_id=12, group_id=1, role="admin")
    async with ws_connect(f"{base}?token={admin}") as ws:
        assert (await recv_type(ws, "group_stats_update"))["data"]["activation_code"] == "HG66OP88"


async def test_crm_counters_survive_a_kill_and_restart(tmp_path: Path, spawn: Any) -> None:
    cfg, data = write_config(tmp_path), tmp_path / "data"
    dash_token = token(make_config(tmp_path, auth__jwt_secret=SECRET), user_id=1, group_id=7)

    async def start() -> tuple[Any, str]:
        proc = spawn(["serve", "--config", str(cfg), "--data-dir", str(data)])
        host, port = await proc.address()
        return proc, f"ws://{host}:{port}/ws"

    proc, base = await start()
    async with ws_connect(f"{base}?activation_code={CODE}") as desk:
        await recv(desk)
        await desk.send_message(json.dumps({"type": "sync_line_accounts", "data": [{"line_account_id": "a", "online_status": "online"}]}))
        await recv_type(desk, "sync_result")
        for i, line in enumerate(["u1", "u2", "u1"]):
            await desk.send_message(json.dumps({"type": "incoming", "data": {"line_account_id": "a", "incoming_line_id": line}}))
            reply = await recv_type(desk, "incoming_received")
            assert reply["data"]["duplicate"] is (i == 2)
        await desk.send_message(json.dumps({"type": "customer_sync", "data": {"customer_id": "c1"}}))
        db_id = (await recv_type(desk, "customer_sync_received"))["data"]["customer_db_id"]
        async with ws_connect(f"{base}?token={dash_token}") as dash:
            await recv(dash)
            before = (await recv_type(dash, "group_stats_update"))["data"]
        proc.proc.send_signal(signal.SIGKILL)
        await proc.wait()
    proc, base = await start()
    async with ws_connect(f"{base}?token={dash_token}") as dash:
        await recv(dash)
        after = (await recv_type(dash, "group_stats_update"))["data"]
    for key in ("total_accounts", "total_incoming", "today_incoming", "duplicate_incoming", "today_duplicate"):
        assert after[key] == before[key], key
    assert (after["total_incoming"], after["duplicate_incoming"]) == (3, 1)
    async with ws_connect(f"{base}?activation_code={CODE}") as desk:
        await recv(desk)
        await desk.send_message(json.dumps({"type": "customer_sync", "data": {"customer_id": "c1", "name": "again"}}))
        assert (await recv_type(desk, "customer_sync_received"))["data"]["customer_db_id"] == db_id
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_a_desktop_client_cannot_send_or_read_direct_messages(live_server: Any) -> None:
    # One activation code serves every desktop of a group: its messages would
    # come from nobody, and whatever it read would be every desktop's.
    server = await live_server(activation_codes=[{"code": CODE, "group_id": 7}])
    user = token(server.config, user_id=5, group_id=7)
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as desk, ws_connect(
        f"{server.url}/ws?token={user}"
    ) as person:
        await recv_type(desk, "auth_success")
        await recv_type(person, "connected")
        for mtype, data in (
            ("send_message", {"to_user_id": 5, "message": "hi"}),
            ("typing", {"to_user_id": 5, "typing": True}),
            ("sync", {"last_seq": 0}),
            ("history", {"with_user_id": 5}),
            ("message_read", {"message_id": 1}),
        ):
            await desk.send_message(json.dumps({"type": mtype, "data": data, "id": mtype}))
            err = await recv_type(desk, "error")
            assert err["id"] == mtype and err["data"]["code"] == "forbidden", err
        await person.send_message(json.dumps({"type": "ping", "id": "p"}))
        while (msg := await recv(person))["type"] == "group_stats_update":
            pass  # the user is in a CRM group: its greeting
        assert msg["type"] == "pong"  # nothing of the desktop reached the user
