"""A string holding a lone surrogate is refused on every input (SPEC 3), and what
still reaches the store from a trusted source is written anyway.

JSON lets a string carry `"\\ud800"`, but that is no Unicode character: it has no
UTF-8 form. Found by tests/test_fuzz.py: a desktop client's `follow_up_sync`
with such a key was journaled through the stdlib encoder, whose UTF-8 step
raised, so the client got `internal`; a customer's fields merged into every
later record of that customer, and a snapshot holding one could never be
written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import http_request, recv, token, ws_connect
from wsserver.core.commands import TakeSnapshot
from wsserver.embed import HubHandle
from wsserver.protocol.jsonlimits import lone_surrogate
from wsserver.storage.base import encode_record
from wsserver.storage.journal import FileStorage

API_KEY = "surrogate-test-key"
CODE = "SURR0001"


@pytest.mark.parametrize(
    ("text", "lone"),
    [
        ('{"a": "\\ud800"}', True),
        ('{"a": ["x", {"b": "\\udfff"}]}', True),
        ('{"\\udc00": 1}', True),
        ('{"a": "\\ud83d\\ude00"}', False),  # a pair: one character, U+1F600
        ('{"a": "\\u00e9\\u4f60"}', False),
        ('{"a": "plain"}', False),
    ],
)
def test_lone_surrogates_are_found_anywhere_and_pairs_pass(text: str, lone: bool) -> None:
    value = json.loads(text)
    assert lone_surrogate(value, text=text) is lone
    assert lone_surrogate(value, text=text.encode()) is lone
    assert lone_surrogate(value) is lone


async def test_a_message_with_a_lone_surrogate_is_invalid_json_and_nothing_is_stored(
    live_server: Any,
) -> None:
    server = await live_server(activation_codes=[{"code": CODE, "group_id": 1}])
    async with ws_connect(f"{server.url}/ws?activation_code={CODE}") as desk:
        assert (await recv(desk))["type"] == "auth_success"
        frame = '{"type":"follow_up_sync","id":"f1","data":{"customer_id":"c1","\\udfff":{"k":1}}}'
        await desk.send_message(frame)
        err = await recv(desk)
        assert err["type"] == "error" and err["data"]["code"] == "invalid_json", err
        # a pair is one character: accepted and stored
        await desk.send_message('{"type":"follow_up_sync","id":"f2","data":{"customer_id":"c1","note":"\\ud83d\\ude00"}}')
        reply = await recv(desk)
        assert reply["type"] == "follow_up_sync_received" and reply["id"] == "f2"
    await server.actor.call(TakeSnapshot())
    path = Path(server.config.storage.dir) / "snapshot.json"
    with trio.fail_after(5):  # the storage's writer writes it
        while not (follow_ups := _follow_ups(path)):
            await trio.sleep(0.01)
    assert [f["note"] for f in follow_ups] == ["\U0001f600"]


def _follow_ups(path: Path) -> list[dict[str, Any]]:
    try:
        state = json.loads(path.read_text("utf-8"))["state"]
    except (FileNotFoundError, ValueError):
        return []
    return state.get("crm", {}).get("groups", {}).get("1", {}).get("follow_ups", [])  # type: ignore[no-any-return]


async def test_an_api_body_with_a_lone_surrogate_is_400(live_server: Any) -> None:
    server = await live_server(api__keys=[API_KEY])
    body = b'{"type":"notice","user_id":"\\ud800","data":{}}'
    status, _, reply = await http_request(
        server.addresses[0], "POST", "/api/publish", headers=[("X-API-Key", API_KEY)], body=body
    )
    assert status == 400, reply
    assert json.loads(reply)["code"] == 400


async def test_the_embedding_api_refuses_a_lone_surrogate(live_server: Any) -> None:
    server = await live_server()
    with pytest.raises(ValueError, match="surrogate"):
        await HubHandle(server).publish("notice", {"text": "\udfff"}, user_id=1)


def test_a_record_holding_a_lone_surrogate_is_written_as_its_escape(tmp_path: Path) -> None:
    # from a trusted source (a token's claims, an embedding host): the journal
    # line stays UTF-8 and reads back as the same string
    line = encode_record(1, {"t": "x", "user": "a\udfffb", "\ud800": [1]})
    record = json.loads(line.decode("utf-8"))
    assert record == {"n": 1, "t": "x", "user": "a\udfffb", "\ud800": [1]}


async def test_a_snapshot_holding_a_lone_surrogate_is_written_and_loads(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, "never")
    storage.load()
    storage.append({"t": "x"})
    state = {"groups": {"g\udfff": {"name": "\ud800"}}}
    storage.request_snapshot(state, 1)
    await storage.close()
    assert FileStorage(tmp_path, "never").load().state == state


async def test_a_token_whose_user_id_holds_a_lone_surrogate_can_still_send(live_server: Any) -> None:
    server = await live_server()
    sender = token(server.config, user_id="u\udfff", group_id=1)
    async with ws_connect(f"{server.url}/ws?token={sender}") as ws:
        assert (await recv(ws))["type"] == "connected"
        await ws.send_message(json.dumps({"type": "send_message", "id": "m", "data": {"to_user_id": 2, "message": "hi"}}))
        reply = await recv(ws)
        assert reply["type"] == "message_sent" and reply["id"] == "m", reply
