"""What clients send cannot forge or flood the log (SPEC 5): one line per record,
client-supplied values escaped and cut to 200 characters, in text and JSON."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import http_request, make_config, token, ws_connect
from tests.test_process import SECRET, write_config
from wsserver.ops.logging import MAX_LOGGED, JsonFormatter, RedactSecrets, clean

FORGED = "alice\n2026-01-01 00:00:00,000 INFO wsserver.access: FORGED admin logged in"
LONG = "x" * 5000
ODD = "bob\r\x1b[2J\u2028\u202eevil\x85\x7f"


def test_clean_escapes_control_characters_and_cuts_long_values() -> None:
    assert clean("plain id 42") == "plain id 42"
    assert clean(42) == "42"
    assert clean("a\nb\tc\r") == "a\\nb\\tc\\r"
    assert clean(ODD) == "bob\\r\\x1b[2J\\u2028\\u202eevil\\x85\\x7f"
    cut = clean(LONG)
    assert cut == "x" * MAX_LOGGED + "...(+4800 chars)"
    # escapes count toward the limit and are never split
    many = clean("\n" * 150)
    assert many == "\\n" * 100 + "...(+50 chars)"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_handler_keeps_any_message_on_one_line(fmt: str) -> None:
    record = logging.LogRecord("wsserver.x", logging.INFO, __file__, 1, "user=%s", (ODD,), None)
    assert RedactSecrets().filter(record)
    if fmt == "json":
        line = JsonFormatter().format(record)
        assert json.loads(line)["message"] == "user=bob\\r\\x1b[2J\\u2028\\u202eevil\\x85\\x7f"
    else:
        line = logging.Formatter("%(message)s").format(record)
    assert line.isprintable() and line.isascii()


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_client_ids_cannot_forge_or_flood_log_lines(tmp_path: Path, spawn: Any, fmt: str) -> None:
    cfg_path = write_config(tmp_path)
    proc = spawn(
        ["serve", "--config", str(cfg_path)],
        env={"WSSERVER_LOG_FORMAT": fmt, "WSSERVER_STORAGE_DIR": str(tmp_path / "d")},
    )
    host, port = await proc.address()
    config = make_config(tmp_path, auth__jwt_secret=SECRET)
    for user_id in (FORGED, LONG, ODD):
        async with ws_connect(f"ws://{host}:{port}/ws?token={token(config, user_id=user_id)}") as ws:
            assert json.loads(await ws.get_message())["type"] == "connected"
    await http_request((host, port), "M" * 5000, "/" + "p" * 5000)  # 405, logged
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    lines = proc.log.splitlines()
    assert not any("FORGED" in line and "alice" not in line for line in lines)
    access = [line for line in lines if "wsserver.access" in line]
    assert len(access) == 4, access
    for line in lines:
        assert line.isprintable(), line
        assert len(line) < 1500, line[:300]  # a few cut values; each client value sent 5000
        if fmt == "json":
            entry = json.loads(line)
            for key in ("user", "method", "path", "remote"):
                assert len(entry.get(key, "")) <= MAX_LOGGED + 20
    users = [json.loads(line)["user"] if fmt == "json" else line for line in access[:3]]
    assert "alice\\n2026-01-01" in users[0]
    assert "x" * MAX_LOGGED + "...(+4800 chars)" in users[1]
    assert "bob\\r\\x1b[2J\\u2028\\u202eevil\\x85\\x7f" in users[2]
