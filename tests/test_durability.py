"""Nothing acknowledged is lost: real server processes killed with SIGKILL at random
moments, restarted on the same data directory; SIGTERM; a torn journal tail; a
corrupt snapshot (SPEC section 7)."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from tests.conftest import make_config, token, ws_connect
from tests.test_process import SECRET, write_config

ENV = {"WSSERVER_MESSAGES_MAILBOX_LIMIT": "100000", "WSSERVER_LIMITS_BURST": "10000", "WSSERVER_LIMITS_MESSAGES_PER_SECOND": "10000"}


def tokens(tmp_path: Path) -> tuple[str, str]:
    config = make_config(tmp_path, auth__jwt_secret=SECRET)
    return token(config, user_id=1, group_id=1), token(config, user_id=2, group_id=1)


async def start(spawn: Any, cfg: Path, data: Path) -> tuple[Any, str]:
    proc = spawn(["serve", "--config", str(cfg), "--data-dir", str(data)], env=ENV)
    host, port = await proc.address()
    return proc, f"ws://{host}:{port}/ws?token="


async def send_until_killed(base: str, sender: str, proc: Any, prefix: str, count: int, kill_after: float) -> dict[str, int]:
    """Pipeline `count` messages to user 2; SIGKILL the server after `kill_after` s.
    Returns client_msg_id -> message_id for every `message_sent` seen."""
    acked: dict[str, int] = {}
    try:
        async with ws_connect(base + sender) as ws:
            assert json.loads(await ws.get_message())["type"] == "connected"
            async with trio.open_nursery() as nursery:

                async def pump() -> None:
                    try:
                        for i in range(count):
                            body = {"to_user_id": 2, "message": f"{prefix}-{i}", "client_msg_id": f"{prefix}-{i}"}
                            await ws.send_message(json.dumps({"type": "send_message", "data": body}))
                            if i % 20 == 0:
                                await trio.sleep(0.005)
                    except ConnectionClosed:
                        pass

                async def killer() -> None:
                    await trio.sleep(kill_after)
                    proc.proc.send_signal(signal.SIGKILL)

                nursery.start_soon(pump)
                nursery.start_soon(killer)
                try:
                    while True:
                        msg = json.loads(await ws.get_message())
                        if msg["type"] == "message_sent":
                            acked[msg["data"]["client_msg_id"]] = msg["data"]["message_id"]
                except ConnectionClosed:
                    nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, OSError):
        pass
    return acked


async def mailbox(base: str, recipient: str) -> list[dict[str, Any]]:
    """Connect as user 2; the pushed mailbox page, then the rest through `sync` pages."""
    async with ws_connect(base + recipient) as ws:
        assert json.loads(await ws.get_message())["type"] == "connected"
        await ws.send_message('{"type":"ping"}')
        out: list[dict[str, Any]] = []
        last_seq = 0
        with trio.fail_after(30):
            while True:  # the push on connect, ended by our ping's pong
                msg = json.loads(await ws.get_message())
                if msg["type"] == "pong":
                    break
                if msg["type"] == "mailbox_more":
                    last_seq = msg["data"]["last_seq"]
                    continue
                assert msg["type"] == "new_message" and msg["data"]["offline"] is True
                out.append(msg["data"])
            if not last_seq:
                return out
            while True:
                await ws.send_message(json.dumps({"type": "sync", "data": {"last_seq": last_seq}}))
                while True:
                    msg = json.loads(await ws.get_message())
                    if msg["type"] == "sync_done":
                        break
                    out.append(msg["data"])
                last_seq = msg["data"]["last_seq"]
                if not msg["data"]["has_more"]:
                    return out


async def test_kill_9_at_random_moments_loses_no_acknowledged_message(tmp_path: Path, spawn: Any) -> None:
    cfg, data = write_config(tmp_path), tmp_path / "data"
    sender, recipient = tokens(tmp_path)
    rng = random.Random(4)
    acked: dict[str, int] = {}
    for rnd in range(4):
        proc, base = await start(spawn, cfg, data)
        got = await send_until_killed(base, sender, proc, f"r{rnd}", 400, rng.uniform(0.05, 0.4))
        assert await proc.wait() == -signal.SIGKILL
        acked.update(got)
    assert len(acked) > 50, "the rounds acknowledged too little to prove anything"
    proc, base = await start(spawn, cfg, data)
    box = await mailbox(base, recipient)
    ids = [m["message_id"] for m in box]
    assert len(ids) == len(set(ids)), "a message arrived twice"
    assert set(acked.values()) <= set(ids), f"lost {sorted(set(acked.values()) - set(ids))[:10]}"
    assert [m["seq"] for m in box] == list(range(1, len(box) + 1)), "seq not contiguous and in order"
    assert ids == sorted(ids), "message ids must grow with seq"
    for m in box:  # text and id belong together
        if m["text"] in acked:
            assert acked[m["text"]] == m["message_id"]
    # de-duplication survives the crashes: resending an acknowledged message is a duplicate
    cmid, mid = next(iter(acked.items()))
    async with ws_connect(base + sender) as ws:
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "send_message", "data": {"to_user_id": 2, "message": cmid, "client_msg_id": cmid}}))
        reply = json.loads(await ws.get_message())
        assert reply["type"] == "message_sent" and reply["data"]["duplicate"] is True
        assert reply["data"]["message_id"] == mid
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_sigterm_snapshots_and_loses_nothing(tmp_path: Path, spawn: Any) -> None:
    cfg, data = write_config(tmp_path), tmp_path / "data"
    sender, recipient = tokens(tmp_path)
    proc, base = await start(spawn, cfg, data)
    acked = {}
    async with ws_connect(base + sender) as ws:
        await ws.get_message()
        for i in range(150):
            await ws.send_message(json.dumps({"type": "send_message", "data": {"to_user_id": 2, "message": f"m{i}"}}))
        while len(acked) < 150:
            msg = json.loads(await ws.get_message())
            if msg["type"] == "message_sent":
                acked[msg["data"]["message_id"]] = msg["data"]["seq"]
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    snapshot = json.loads((data / "snapshot.json").read_text())
    assert snapshot["version"] == 2
    assert (data / "journal.jsonl").stat().st_size == 0
    proc, base = await start(spawn, cfg, data)
    box = await mailbox(base, recipient)
    assert [m["message_id"] for m in box] == sorted(acked)
    assert [m["text"] for m in box] == [f"m{i}" for i in range(150)]
    # numbering continues after the restart
    async with ws_connect(base + sender) as ws:
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "send_message", "data": {"to_user_id": 2, "message": "after"}}))
        reply = json.loads(await ws.get_message())
        assert reply["data"]["message_id"] == max(acked) + 1 and reply["data"]["seq"] == 151
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_torn_journal_tail_is_dropped_and_start_up_succeeds(tmp_path: Path, spawn: Any) -> None:
    cfg, data = write_config(tmp_path), tmp_path / "data"
    sender, recipient = tokens(tmp_path)
    proc, base = await start(spawn, cfg, data)
    async with ws_connect(base + sender) as ws:
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "send_message", "data": {"to_user_id": 2, "message": "kept"}}))
        assert json.loads(await ws.get_message())["type"] == "message_sent"
    proc.proc.send_signal(signal.SIGKILL)
    await proc.wait()
    with open(data / "journal.jsonl", "ab") as f:
        f.write(b'{"t":"msg","id":2,"seq":2,"te')  # a crash in the middle of a write
    proc, base = await start(spawn, cfg, data)
    assert [m["text"] for m in await mailbox(base, recipient)] == ["kept"]
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    assert "torn" in proc.log.lower() or "dropped" in proc.log.lower()


async def test_corrupt_snapshot_stops_start_up_and_is_left_untouched(tmp_path: Path, spawn: Any) -> None:
    cfg, data = write_config(tmp_path), tmp_path / "data"
    data.mkdir()
    broken = b'{"version": 1, "n": 3, "state": {"messages": [oops'
    (data / "snapshot.json").write_bytes(broken)
    proc = spawn(["serve", "--config", str(cfg), "--data-dir", str(data)])
    assert await proc.wait() == 2
    assert "snapshot.json" in proc.log and "byte" in proc.log
    assert (data / "snapshot.json").read_bytes() == broken


async def test_corrupt_journal_line_stops_start_up_naming_the_line(tmp_path: Path, spawn: Any) -> None:
    cfg, data = write_config(tmp_path), tmp_path / "data"
    data.mkdir()
    journal = b'{"t":"trunc_seen","to":"1||2","n":1}\nnot json at all\n{"t":"trunc_seen","to":"1||2","n":3}\n'
    (data / "journal.jsonl").write_bytes(journal)
    proc = spawn(["serve", "--config", str(cfg), "--data-dir", str(data)])
    assert await proc.wait() == 2
    assert "journal.jsonl" in proc.log and "line 2" in proc.log
    assert (data / "journal.jsonl").read_bytes() == journal
