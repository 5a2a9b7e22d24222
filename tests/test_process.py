"""The real `wsserver serve` process: start-up on port 0, graceful SIGTERM/SIGINT,
config errors at start-up, and logs that never show a token or an activation code."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import make_config, token, ws_connect

SECRET = "process-test-secret-0123456789abcdef-xyz"
CODE = "SECRETCODE42"


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "wsserver.toml"
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0
[auth]
jwt_secret = "{SECRET}"
[log]
level = "debug"
[[activation_codes]]
code = "{CODE}"
group_id = 7
{extra}
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_clients_with_1001_and_exits_0(tmp_path: Path, spawn: Any, sig: int) -> None:
    cfg_path = write_config(tmp_path)
    proc = spawn(["serve", "--config", str(cfg_path), "--data-dir", str(tmp_path / "data")])
    host, port = await proc.address()
    config = make_config(tmp_path, auth__jwt_secret=SECRET)
    async with ws_connect(f"ws://{host}:{port}/ws?token={token(config)}") as ws:
        assert json.loads(await ws.get_message())["type"] == "connected"
        proc.proc.send_signal(sig)
        from trio_websocket import ConnectionClosed

        with pytest.raises(ConnectionClosed) as info, trio.fail_after(10):
            while True:
                await ws.get_message()
        assert info.value.reason.code == 1001
    assert await proc.wait() == 0
    assert "shutting down" in proc.log


async def test_logs_never_contain_tokens_or_activation_codes(tmp_path: Path, spawn: Any) -> None:
    cfg_path = write_config(tmp_path)
    proc = spawn(["serve", "--config", str(cfg_path)], env={"WSSERVER_STORAGE_DIR": str(tmp_path / "d")})
    host, port = await proc.address()
    config = make_config(tmp_path, auth__jwt_secret=SECRET)
    good = token(config, user_id=1)
    expired = token(config, user_id=2, ttl=-60)
    base = f"ws://{host}:{port}/ws"
    async with ws_connect(f"{base}?token={good}") as ws:
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "refresh", "data": {"token": expired}}))
        await ws.get_message()
    async with ws_connect(f"{base}?activation_code={CODE}") as ws:
        await ws.get_message()
        await ws.send_message(json.dumps({"type": "heartbeat", "activation_code": CODE}))
        await ws.get_message()
    async with ws_connect(base) as ws:
        await ws.send_message(json.dumps({"type": "auth", "data": {"token": expired}}))
        await ws.get_message()
    from tests.conftest import http_request

    await http_request((host, port), "GET", f"/nope?token={good}&activation_code={CODE}")
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    for secret in (good, expired, CODE, SECRET, good.split(".")[2]):
        assert secret not in proc.log
    assert "listening on" in proc.log


async def test_json_log_format(tmp_path: Path, spawn: Any) -> None:
    cfg_path = write_config(tmp_path)
    proc = spawn(["serve", "--config", str(cfg_path)], env={"WSSERVER_LOG_FORMAT": "json", "WSSERVER_STORAGE_DIR": str(tmp_path / "d")})
    await proc.address()
    first = json.loads(proc.log.strip().splitlines()[-1])
    assert first["level"] == "info" and first["logger"] == "wsserver.server"
    assert first["message"].startswith("listening on")
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_bad_config_stops_startup_naming_the_key(tmp_path: Path, spawn: Any) -> None:
    cfg_path = write_config(tmp_path, "[limits]\nsend_queue = \"many\"\n")
    proc = spawn(["serve", "--config", str(cfg_path)])
    assert await proc.wait() == 2
    assert "limits.send_queue" in proc.log


async def test_embedded_defaults_generate_a_secret_that_gentoken_uses(tmp_path: Path, spawn: Any) -> None:
    data = tmp_path / "data"
    proc = spawn(["serve", "--port", "0", "--host", "127.0.0.1", "--data-dir", str(data)])
    host, port = await proc.address()
    assert (data / "jwt_secret").exists()
    assert (data / "jwt_secret").stat().st_mode & 0o777 == 0o600
    out = subprocess.run(
        [sys.executable, "-m", "wsserver", "gentoken", "--user", "1", "--group", "1", "--data-dir", str(data)],
        capture_output=True,
        check=True,
        text=True,
    )
    minted = out.stdout.strip()
    async with ws_connect(f"ws://{host}:{port}/ws?token={minted}") as ws:
        msg = json.loads(await ws.get_message())
        assert msg["type"] == "connected" and msg["data"]["user_id"] == 1 and msg["data"]["group_id"] == 1
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
