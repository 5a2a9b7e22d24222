"""A data directory of format 1 (message keys joined with `|`, `*` for "any")
is migrated at start-up (`core.migrate`): every message stays with the
principal the old server read it for, a real group `*` stops meeting the
"any group" of persisted pushes, and the directory is format 2 from the first
snapshot on, which is written before anything new is appended.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import trio

from tests.conftest import hub_of, make_config, token, ws_connect
from wsserver.core.keys import SYSTEM, conversation_key, dedup_key, principal_key, push_key
from wsserver.core.migrate import STATE_VERSION
from wsserver.net.server import Server
from wsserver.storage import FileStorage

NOW_MS = int(time.time() * 1000)  # recent: within the mailbox TTL and the dedup window


def _msg(mid: int, seq: int, frm: str, to: str, to_party: dict[str, Any], text: str | None, **extra: Any) -> dict[str, Any]:
    user_id = None if frm == "system" else frm.rsplit("|", 1)[-1]
    return {
        "id": mid,
        "seq": seq,
        "from_key": frm,
        "to_key": to,
        "from": {"user_id": user_id, "user_type": None, "username": None},
        "to": to_party,
        "text": text,
        "session_id": None,
        "message_type": "text",
        "reply_to": None,
        "cmid": extra.pop("cmid", None),
        "time": NOW_MS + mid,
        "boxed": True,
        "n": mid,
        "status": "sent",
        **extra,
    }


# Written by hand the way the format-1 server wrote them:
# 1. mallory (group "acme") to to_user_type "1", to_user_id "|v": the key
#    "acme|1||v", which the old server read as ("acme", "1", "|v") -- and which
#    was also the key of user "v" of group "acme|1";
# 2. a persisted push for user u7 in any group of any type: "*|*|u7";
# 3. an admin's message to user u7 of the real group "*": "*||u7", a mailbox
#    the old server also showed to u7 of every other group.
V1_MESSAGES = [
    _msg(1, 1, "acme||mallory", "acme|1||v", {"user_id": "|v", "user_type": "1", "group_id": "acme"}, "psst", cmid="c1"),
    _msg(2, 1, "system", "*|*|u7", {"user_id": "u7", "user_type": None, "group_id": None}, None,
         push={"type": "notice", "data": {"for": "anyone"}}),
    _msg(3, 1, "1||boss", "*||u7", {"user_id": "u7", "user_type": None, "group_id": "*"}, "for group star"),
]
V1_SNAPSHOT = {
    "version": 1,
    "n": 3,
    "written_at": 1700000000.0,
    "state": {
        "n": 3,
        "messages": {
            "next_id": 4,
            "messages": V1_MESSAGES,
            "seq": {"acme|1||v": 1, "*|*|u7": 1, "*||u7": 1},
            "mailbox": {"acme|1||v": [1], "*|*|u7": [2], "*||u7": [3]},
            "truncated": {},
            "conversations": {"acme|1||v>acme||mallory": [1], "*|*|u7>system": [2], "*||u7>1||boss": [3]},
            "inbox": {"acme|1||v": [1], "*|*|u7": [2], "*||u7": [3]},
            "dedup": {"acme||mallory|c1": [1, NOW_MS + 1, 1]},
        },
        "crm": {"groups": {}, "next_customer_db_id": 1, "next_follow_up_id": 1},
        "activation_codes": {"overrides": {}},
    },
}
V1_JOURNAL = [
    {"n": 4, "t": "msg", **{k: v for k, v in _msg(4, 2, "acme||mallory", "acme|1||v",
     {"user_id": "|v", "user_type": "1", "group_id": "acme"}, "again", cmid="c4").items() if k != "n"}},
]


def write_v1_dir(path: Path) -> tuple[bytes, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    snapshot = json.dumps(V1_SNAPSHOT).encode()
    journal = b"".join(json.dumps(r).encode() + b"\n" for r in V1_JOURNAL)
    (path / "snapshot.json").write_bytes(snapshot)
    (path / "journal.jsonl").write_bytes(journal)
    return snapshot, journal


# The keys the messages have after the migration
TARGET = principal_key("acme", "1", "|v")
MALLORY = principal_key("acme", "", "mallory")
ANY_U7 = push_key(None, None, "u7")
STAR_U7 = principal_key("*", "", "u7")
BOSS = principal_key("1", "", "boss")


def test_format_1_state_is_rekeyed_for_the_principals_the_old_server_read(tmp_path: Path) -> None:
    write_v1_dir(tmp_path)
    server = Server(make_config(tmp_path, **{"storage.fsync": "never"}))
    server.load_state()
    store = hub_of(server).direct.store
    assert [(m["from_key"], m["to_key"]) for m in store.messages.values()] == [
        (MALLORY, TARGET), (SYSTEM, ANY_U7), (BOSS, STAR_U7), (MALLORY, TARGET)
    ]
    assert {k: list(v) for k, v in store.mailbox.items()} == {TARGET: [1, 4], ANY_U7: [2], STAR_U7: [3]}
    assert store.inbox == {TARGET: [1, 4], ANY_U7: [2], STAR_U7: [3]}
    # "*|*|u7" and "*||u7" were real keys or "any" to the old server: the counter goes on for both readings
    assert store.seq[TARGET] == 2 and store.seq[STAR_U7] == 1 and store.seq[ANY_U7] == 1
    assert store.conversations == {
        conversation_key(MALLORY, TARGET): [1, 4],
        conversation_key(SYSTEM, ANY_U7): [2],
        conversation_key(BOSS, STAR_U7): [3],
    }
    assert list(store.dedup) == [dedup_key(MALLORY, "c1"), dedup_key(MALLORY, "c4")]
    assert store.mailbox_bytes[TARGET] == len("psst") + len("again")


async def test_a_crash_before_the_first_snapshot_leaves_the_format_1_files_to_migrate_again(tmp_path: Path) -> None:
    snapshot, journal = write_v1_dir(tmp_path)
    server = Server(make_config(tmp_path, **{"storage.fsync": "never"}))
    server.load_state()  # migrates, and queues the format-2 snapshot first
    assert hub_of(server).direct.persist_push(None, None, "late", "notice", {})  # appended after it
    server.storage.write_now()  # the inline write never passes the snapshot
    assert (tmp_path / "snapshot.json").read_bytes() == snapshot
    assert (tmp_path / "journal.jsonl").read_bytes() == journal
    # a crash now: the next start finds format 1 again
    assert FileStorage(tmp_path).load().version == 1
    # no crash: the snapshot is written, then the new record after it
    await server.storage.close()
    assert json.loads((tmp_path / "snapshot.json").read_bytes())["version"] == STATE_VERSION == 2
    loaded = FileStorage(tmp_path).load()
    assert loaded.version == 2
    assert [r["t"] for r in loaded.records] == ["msg"] and loaded.records[0]["to_key"] == push_key(None, None, "late")
    assert loaded.state is not None and loaded.state["messages"]["mailbox"][TARGET] == [1, 4]


async def test_a_new_directory_is_format_2_from_the_start_even_after_a_crash(tmp_path: Path) -> None:
    server = Server(make_config(tmp_path, **{"storage.fsync": "never"}))
    server.load_state()
    # a crash before the snapshot is written: an empty journal, no snapshot
    loaded = FileStorage(tmp_path).load()
    assert (loaded.state, loaded.records, loaded.version) == (None, [], 2)
    hub_of(server).direct.persist_push(None, None, "u", "notice", {})
    await server.storage.close()
    assert json.loads((tmp_path / "snapshot.json").read_bytes())["version"] == 2
    assert FileStorage(tmp_path).load().version == 2


async def _recv(ws: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def _mailbox(server: Any, **claims: Any) -> list[dict[str, Any]]:
    """What a connection of `claims` gets on connect, up to a sync's answer."""
    t = token(server.config, **claims)
    async with ws_connect(f"{server.url}/ws?token={t}") as ws:
        assert (await _recv(ws))["type"] == "connected"
        await ws.send_message(json.dumps({"type": "sync", "data": {"last_seq": 99}}))
        got = []
        while (frame := await _recv(ws))["type"] != "sync_done":
            if frame["type"] != "group_stats_update":  # the CRM's, on connect
                got.append(frame)
        return got


async def test_a_migrated_server_delivers_each_message_to_the_principal_it_was_for(tmp_path: Path, live_server: Any) -> None:
    write_v1_dir(tmp_path)
    server = await live_server()  # its storage.dir is tmp_path
    victim = await _mailbox(server, user_id="v", group_id="acme|1")
    assert victim == []
    target = await _mailbox(server, user_id="|v", user_type="1", group_id="acme")
    assert [f["data"]["text"] for f in target] == ["psst", "again"]
    elsewhere = await _mailbox(server, user_id="u7", group_id=5)
    assert [(f["type"], f["data"]) for f in elsewhere] == [("notice", {"for": "anyone"})]
    in_star = await _mailbox(server, user_id="u7", group_id="*")
    assert [f["data"].get("text") for f in in_star] == ["for group star"]  # the push was delivered once above
    t = token(server.config, user_id="mallory", group_id="acme")
    async with ws_connect(f"{server.url}/ws?token={t}") as ws:
        assert (await _recv(ws))["type"] == "connected"
        retry = {"to_user_type": "1", "to_user_id": "|v", "message": "psst", "client_msg_id": "c1"}
        await ws.send_message(json.dumps({"type": "send_message", "data": retry}))
        sent = await _recv(ws)
        assert (sent["data"]["message_id"], sent["data"].get("duplicate")) == (1, True)
        await ws.send_message(json.dumps({"type": "history", "data": {"with_user_id": "|v", "with_user_type": "1"}}))
        assert [m["text"] for m in (await _recv(ws))["data"]["messages"]] == ["psst", "again"]
