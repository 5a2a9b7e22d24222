"""JSON nested deeper than `limits.max_json_depth` is refused on every input before
anything stores it (SPEC 3), and a deep value that still reaches the store (from
an older journal) can be snapshotted, restarted and stopped cleanly.

The attack this guards against: a desktop client's `customer_sync` with `notes`
nested 600 deep (a 1.3 KB frame) was acknowledged; the next snapshot's
`copy.deepcopy` raised RecursionError and took the server down, and since the
record stayed in the journal, every restart crashed again at the next change.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import http_request, hub_of, make_config, recv, token, ws_connect
from tests.test_process import CODE as PROCESS_CODE
from tests.test_process import SECRET, write_config
from wsserver.core.commands import TakeSnapshot
from wsserver.embed import HubHandle
from wsserver.protocol.i18n import text
from wsserver.protocol.jsonlimits import too_deep
from wsserver.storage.base import encode_record

CODE = "HG66OP88"
API_KEY = "depth-test-key"


def nested(depth: int, bottom: Any = "x") -> Any:
    """`bottom` inside `depth` lists."""
    value = bottom
    for _ in range(depth):
        value = [value]
    return value


# -- the check itself ------------------------------------------------------------------


@pytest.mark.parametrize("limit", [2, 5, 32])
def test_values_as_deep_as_the_limit_pass_and_one_level_more_does_not(limit: int) -> None:
    for value in (nested(limit), {"a": nested(limit - 1)}, [1, {"b": nested(limit - 2, 3)}]):
        assert not too_deep(value, limit)
        assert not too_deep(value, limit, text=json.dumps(value))
    for value in (nested(limit + 1), {"a": nested(limit)}, (1, (2, nested(limit - 1)))):
        assert too_deep(value, limit)
    assert too_deep(nested(limit + 1), limit, text=json.dumps(nested(limit + 1)).encode())


def test_scalars_are_zero_deep_and_a_value_that_contains_itself_is_too_deep() -> None:
    assert not too_deep("x" * 1000, 0) and not too_deep(None, 0)
    assert too_deep([], 0)
    loop: list[Any] = []
    loop.append(loop)
    assert too_deep(loop, 32)


def test_the_text_spares_the_walk_when_it_has_no_more_brackets_than_the_limit() -> None:
    assert not too_deep(nested(100), 32, text='{"a":"[[["}')  # only the text is read
    assert too_deep(nested(100), 32, text="[" * 33)


# -- WebSocket: the attack, the boundary, the first message ------------------------------


async def test_a_desktop_clients_600_deep_customer_notes_are_refused_and_nothing_is_stored(
    live_server: Any,
) -> None:
    server = await live_server(activation_codes=[{"code": CODE, "group_id": 1}])
    async with ws_connect(f"{server.url}/ws") as desk:
        await desk.send_message(json.dumps({
            "type": "sync_line_accounts", "activation_code": CODE,
            "data": [{"line_account_id": "line_account_123", "online_status": "online"}],
        }))  # fmt: skip
        assert (await recv(desk))["type"] == "auth_success"
        assert (await recv(desk))["type"] == "sync_result"
        stored = hub_of(server).last_n
        attack = json.dumps({
            "type": "customer_sync", "activation_code": CODE, "id": "c-1",
            "data": {"customer_id": "cust_1", "notes": nested(600)},
        })  # fmt: skip
        assert len(attack) < 1400
        await desk.send_message(attack)
        error = await recv(desk)
        assert error["type"] == "error" and error["id"] == "c-1"
        assert error["data"] == {"code": "invalid_message", "ref": None}
        assert error["error"] == "JSON嵌套层数过多（最多 32 层）"
        await desk.send_message(json.dumps({"type": "heartbeat", "activation_code": CODE}))
        assert (await recv(desk))["type"] == "heartbeat_ack"  # the connection goes on
        assert hub_of(server).last_n == stored
    assert hub_of(server).crm.store.groups["1"]["customers"] == {}
    await server.actor.call(TakeSnapshot())  # the snapshot that crashed goes through


async def test_a_message_32_deep_is_stored_and_33_deep_is_refused(live_server: Any) -> None:
    server = await live_server(activation_codes=[{"code": CODE, "group_id": 1}])
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as desk:
        assert (await recv(desk))["type"] == "auth_success"

        def customer_sync(customer: str, lists: int) -> str:
            # the envelope, `data`, then `notes`' lists: 2 + lists deep
            data = {"customer_id": customer, "notes": nested(lists)}
            return json.dumps({"type": "customer_sync", "activation_code": CODE, "data": data})

        await desk.send_message(customer_sync("deep", 31))
        assert (await recv(desk))["data"]["code"] == "invalid_message"
        await desk.send_message(customer_sync("ok", 30))
        assert (await recv(desk))["type"] == "customer_sync_received"
    assert list(hub_of(server).crm.store.groups["1"]["customers"]) == ["ok"]


async def test_the_first_message_is_checked_before_it_authenticates(live_server: Any) -> None:
    server = await live_server()
    tok = token(server.config, user_id=5)
    async with ws_connect(f"{server.url}/ws") as ws:
        deep_info = {"token": tok, "device_id": "d1", "device_info": {"os": nested(40)}}
        await ws.send_message(json.dumps({"type": "auth", "data": deep_info}))
        assert (await recv(ws))["data"]["code"] == "invalid_message"
        assert hub_of(server).presence.principals == {}  # not authenticated, nothing kept
        await ws.send_message(json.dumps({"type": "auth", "data": {**deep_info, "device_info": {"os": "win"}}}))
        assert (await recv(ws))["type"] == "connected"


async def test_the_limit_follows_the_configuration(live_server: Any) -> None:
    server = await live_server(limits__max_json_depth=4)
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        await recv(ws)
        await ws.send_message(json.dumps({"type": "ping", "data": nested(4)}))
        assert (await recv(ws))["data"]["code"] == "invalid_message"
        await ws.send_message(json.dumps({"type": "ping", "data": nested(3)}))
        assert (await recv(ws))["type"] == "pong"


# -- HTTP and the embedding API ------------------------------------------------------------


async def test_a_publish_body_32_deep_is_delivered_and_33_deep_is_400(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    headers = [("X-API-Key", API_KEY), ("Content-Type", "application/json")]
    async with ws_connect(f"{server.url}/ws?token={token(server.config, user_id=9)}") as ws:
        await recv(ws)
        for lists, status in ((32, 400), (31, 200)):  # the body object is the first level
            body = json.dumps({"type": "notice", "user_id": 9, "data": nested(lists)}).encode()
            got, _, reply = await http_request(server.addresses[0], "POST", "/api/publish", headers=headers, body=body)
            assert got == status, reply
        assert json.loads(reply)["data"] == {"delivered": 1, "queued": 0}
        pushed = await recv(ws)
        assert pushed["type"] == "notice" and pushed["data"] == nested(31)
    body = json.dumps({"type": "notice", "all": True, "data": nested(32)}).encode()
    _, _, reply = await http_request(server.addresses[0], "POST", "/api/publish", headers=headers, body=body)
    message = text("http_json_depth", server.config.server.locale, depth=32)
    assert json.loads(reply) == {"code": 400, "message": message}


async def test_the_embedding_api_refuses_to_publish_data_nested_too_deep(live_server: Any) -> None:
    server = await live_server()
    hub = HubHandle(server)
    assert await hub.publish("notice", nested(31), all=True) == {"delivered": 0, "queued": 0}
    with pytest.raises(ValueError, match="nested deeper than 32"):
        await hub.publish("notice", nested(32), all=True)
    with pytest.raises(ValueError, match="nested deeper than 32"):
        await hub.publish("notice", nested(100_000), all=True)  # no RecursionError either


# -- a deep value already in the journal: snapshot, restart, SIGTERM ----------------------------


async def test_a_deep_record_from_an_old_journal_is_snapshotted_restarted_and_stopped_with_0(
    tmp_path: Path, spawn: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    records = [
        {"t": "crm_accounts", "g": "7", "by": PROCESS_CODE, "accounts": [{"line_account_id": "a1"}], "time": 1},
        {"t": "crm_customer", "g": "7", "customer_id": "c1", "db_id": 1, "fields": {"notes": nested(600)}},
    ]  # fmt: skip
    (data / "journal.jsonl").write_bytes(b"".join(encode_record(n, r) for n, r in enumerate(records, 1)))
    cfg = write_config(tmp_path, "[storage]\nsnapshot_interval = 0.1\n")
    dashboard = token(make_config(tmp_path, auth__jwt_secret=SECRET), user_id=1, group_id=7)

    async def start() -> tuple[Any, str]:
        proc = spawn(["serve", "--config", str(cfg), "--data-dir", str(data)])
        host, port = await proc.address()
        return proc, f"ws://{host}:{port}/ws"

    proc, base = await start()
    async with ws_connect(f"{base}?activation_code={PROCESS_CODE}") as desk:
        await recv(desk)
        await desk.send_message(json.dumps({"type": "sync_line_accounts", "data": [{"line_account_id": "a2"}]}))
        assert (await recv(desk))["type"] == "sync_result"
    with trio.fail_after(10):  # the periodic snapshot (it used to end the process with 1)
        while not (data / "snapshot.json").exists():
            assert proc.proc.poll() is None, proc.log
            await trio.sleep(0.05)
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.log

    proc, base = await start()  # the state loads
    async with ws_connect(f"{base}?token={dashboard}") as dash:
        assert (await recv(dash))["type"] == "connected"
        stats = await recv(dash)
        assert stats["type"] == "group_stats_update" and stats["data"]["total_accounts"] == 2
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0, proc.log
    snapshot = json.loads((data / "snapshot.json").read_text(encoding="utf-8"))
    assert snapshot["state"]["crm"]["groups"]["7"]["customers"]["c1"]["notes"] == nested(600)
    assert "background task" not in proc.log  # nothing failed on the way
