"""The Windows check: the Windows pyz, built from this checkout, run by python.org's
embeddable CPython 3.11 under Wine, talked to from Linux (this Python).

Selected with `-m windows` and left out of the default run (pyproject.toml):
`.ci/run` runs it as its own pytest invocation after the main suite, having
installed Debian's `wine wine64 binutils-mingw-w64-x86-64`. Without them, or
without PyPI, it fails; it never skips. tests/winehost.py sets up the Windows
side and lists Wine 8's gaps and their test-only work-arounds; README.md
("Windows") says what passing proves about real Windows and what it does not.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

import wsserver
from tests.conftest import http_request, make_config, token, ws_connect
from tests.winehost import WINDOWS_FILES, WindowsProcess, WindowsPython, windows_path

pytestmark = pytest.mark.windows

ROOT = Path(__file__).resolve().parent.parent
SECRET = "windows-check-secret-0123456789abcdef-0123"
API_KEY = "windows-check-api-key-0123456789"
CODE = "DESK0001"


@pytest.fixture(scope="session")
def windows_pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`build.py --platform win_amd64` from this checkout, once per session."""
    out = tmp_path_factory.mktemp("winpyz") / "wsserver-win_amd64-cp311.pyz"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), "--platform", "win_amd64", "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.fixture(scope="session")
def windows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WindowsPython]:
    """The embeddable CPython in a fresh Wine prefix, once per session."""
    python = WindowsPython(tmp_path_factory.mktemp("wine"))
    try:
        python.setup()
        yield python
    finally:
        python.close()


def write_config(where: Path) -> Path:
    """A hub config as an operator on Windows writes it: Windows paths, port 0."""
    where.mkdir(parents=True, exist_ok=True)
    config = where / "wsserver.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = 0
[auth]
jwt_secret = "{SECRET}"
[api]
keys = ["{API_KEY}"]
[[activation_codes]]
code = "{CODE}"
group_id = 7
[storage]
dir = '{windows_path(where / "data")}'
""",
        encoding="utf-8",
    )
    return config


def jwt(tmp_path: Path, user_id: int, group_id: int = 7) -> str:
    return token(make_config(tmp_path, auth__jwt_secret=SECRET), user_id=user_id, group_id=group_id)


def ws_url(address: tuple[str, int], query: str) -> str:
    return f"ws://{address[0]}:{address[1]}/ws?{query}"


async def recv(ws: Any, timeout: float = 15) -> dict[str, Any]:
    with trio.fail_after(timeout):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def recv_type(ws: Any, mtype: str) -> dict[str, Any]:
    return (await recv_types(ws, mtype))[mtype]


async def recv_types(ws: Any, *types: str) -> dict[str, dict[str, Any]]:
    """The first message of each of `types`, whatever their order; others are skipped."""
    found: dict[str, dict[str, Any]] = {}
    seen: list[dict[str, Any]] = []
    try:
        while len(found) < len(types):
            seen.append(msg := await recv(ws))
            if msg["type"] in types:
                found.setdefault(msg["type"], msg)
    except trio.TooSlowError:
        raise AssertionError(f"waited for {types}, got {seen}") from None
    return found


async def api(address: tuple[str, int], method: str, target: str, body: Any = None) -> Any:
    status, _, raw = await http_request(
        address, method, target, headers=[("X-API-Key", API_KEY)],
        body=b"" if body is None else json.dumps(body).encode(),
    )  # fmt: skip
    reply = json.loads(raw)
    assert status == 200 and reply["code"] == 0, (status, reply)
    return reply["data"]


async def listening(hub: WindowsProcess) -> tuple[str, int]:
    return await trio.to_thread.run_sync(hub.listening)


async def exit_status(hub: WindowsProcess) -> int:
    return await trio.to_thread.run_sync(hub.wait)


def start_hub(windows: WindowsPython, pyz: Path, config: Path) -> WindowsProcess:
    return WindowsProcess(windows, pyz, "serve", "--config", windows_path(config))


def assert_clean(log: str) -> None:
    """Nothing went wrong on the Windows side: no error, no traceback in the hub's log."""
    assert " ERROR " not in log and "Traceback" not in log, log


def journal_records(log: str) -> int:
    """From the start-up line `state loaded from DIR: N journal records after the snapshot`."""
    found = re.findall(r"state loaded from .*: (\d+) journal records", log)
    assert found, log
    return int(found[-1])


def test_version_and_a_generated_config_that_loads(
    windows: WindowsPython, windows_pyz: Path, tmp_path: Path
) -> None:
    version = windows.run(windows_pyz, "version")
    assert version.returncode == 0 and version.stdout == f"wsserver {wsserver.__version__}\n"
    # `gen-config > wsserver.toml`, as cmd.exe would write it: the bytes of stdout
    generated = subprocess.run(
        windows.command(windows_pyz, "gen-config"), stdin=subprocess.DEVNULL,
        capture_output=True, env=windows.env, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert generated.replace(b"\r\n", b"\n") == (ROOT / "wsserver.toml").read_bytes()
    (tmp_path / "generated.toml").write_bytes(generated)
    for config in (tmp_path / "generated.toml", write_config(tmp_path)):
        checked = windows.run(windows_pyz, "check-config", "--config", windows_path(config))
        assert (checked.returncode, checked.stdout) == (0, f"ok: {windows_path(config)}\n"), checked


async def test_client_command_on_windows_reads_and_writes_utf8_json_lines(
    windows: WindowsPython, windows_pyz: Path, live_server: Any
) -> None:
    server = await live_server()
    user = token(server.config, user_id=5)
    typed = '{"type":"ping","id":"订单"}\n'.encode()

    def run_client() -> subprocess.CompletedProcess[bytes]:
        argv = windows.command(windows_pyz, "client", "--url", f"{server.url}/ws", "--token", user)
        return subprocess.run(argv, input=typed, capture_output=True, env=windows.env, timeout=120)

    done = await trio.to_thread.run_sync(run_client)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    lines = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert lines[0]["type"] == "connected" and lines[0]["data"]["message"] == "WebSocket连接成功"
    assert [m["id"] for m in lines if m["type"] == "pong"] == ["订单"]


async def test_serve_answers_healthz_clients_and_the_api_then_stops_on_ctrl_c(
    windows: WindowsPython, windows_pyz: Path, tmp_path: Path
) -> None:
    hub = start_hub(windows, windows_pyz, write_config(tmp_path))
    try:
        address = await listening(hub)
        status, _, body = await http_request(address, "GET", "/healthz")
        assert status == 200 and json.loads(body)["data"]["status"] == "ok", body
        async with (
            ws_connect(ws_url(address, f"token={jwt(tmp_path, 42)}")) as user,
            ws_connect(ws_url(address, f"activation_code={CODE}")) as desktop,
        ):
            hello = await recv(user)
            assert hello["type"] == "connected" and hello["data"]["user_id"] == 42, hello
            welcome = await recv(desktop)  # a desktop client is welcomed as seed 000 expects
            assert welcome["type"] == "auth_success", welcome
            await user.send_message(json.dumps({"type": "ping", "id": "p1"}))
            assert (await recv_type(user, "pong"))["id"] == "p1"
            # the API: one user, then the whole group (the desktop client is in group 7)
            one = {"type": "order_update", "data": {"order": 5}, "user_id": 42}
            assert await api(address, "POST", "/api/publish", one) == {"delivered": 1, "queued": 0}
            assert (await recv_type(user, "order_update"))["data"] == {"order": 5}
            group = {"type": "notice", "data": {"text": "系统通知"}, "group_id": 7}
            assert await api(address, "POST", "/api/publish", group) == {
                "delivered": 2,
                "queued": 0,
            }
            assert (await recv_type(desktop, "notice"))["data"] == {"text": "系统通知"}
            assert (await recv_type(user, "notice"))["data"] == {"text": "系统通知"}
            await fan_out(address, tmp_path)
            hub.interrupt()  # Ctrl+C
            with pytest.raises(ConnectionClosed) as closed:
                await recv_type(user, "never")
            assert closed.value.reason.code == 1001  # a graceful stop closes clients with 1001
        assert await exit_status(hub) == 0, hub.log
    finally:
        hub.kill()
    assert "signal SIGINT received" in hub.log and "stopped" in hub.log, hub.log
    assert_clean(hub.log)


async def fan_out(address: tuple[str, int], tmp_path: Path, n: int = 40) -> None:
    """A publish to a group of `n` connections (over FANOUT_SOON: the flusher writes
    it) and one whose frame is larger than a socket takes at once (the writer's
    joined send(), Windows having no sendmsg())."""
    big = "大" * 150_000  # 450 KB of UTF-8
    async with AsyncExitStack() as stack:
        crowd = [
            await stack.enter_async_context(
                ws_connect(ws_url(address, f"token={jwt(tmp_path, i, 8)}"))
            )
            for i in range(100, 100 + n)
        ]
        for ws in crowd:
            assert (await recv(ws))["type"] == "connected"
        for seq, text in enumerate(("small", big)):
            bulk = {"type": "bulk", "data": {"seq": seq, "text": text}, "group_id": 8}
            assert await api(address, "POST", "/api/publish", bulk) == {"delivered": n, "queued": 0}
        for ws in crowd:
            assert (await recv_type(ws, "bulk"))["data"] == {"seq": 0, "text": "small"}
            assert (await recv_type(ws, "bulk"))["data"] == {"seq": 1, "text": big}


async def test_journal_survives_a_hard_kill_and_a_restart(
    windows: WindowsPython, windows_pyz: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path)
    hub = start_hub(windows, windows_pyz, config)
    try:
        address = await listening(hub)
        async with ws_connect(ws_url(address, f"token={jwt(tmp_path, 1)}")) as alice:
            assert (await recv(alice))["type"] == "connected"
            dm = {
                "type": "send_message",
                "id": "m1",
                "data": {"to_user_id": 2, "message": "你好 bob"},
            }
            await alice.send_message(json.dumps(dm))
            assert (await recv_type(alice, "message_sent"))["id"] == "m1"
        push = {"type": "notice", "data": {"n": 1}, "user_id": 2, "group_id": 7, "persist": True}
        queued = await api(address, "POST", "/api/publish", push)
        assert queued == {"delivered": 0, "queued": 1}  # durable once answered
    finally:
        hub.kill()  # TerminateProcess: no final snapshot, the journal is all there is

    # First restart: the journal is replayed. Bob gets the message and the push
    # (a push without user_type is pushed once); a graceful stop writes a snapshot.
    hub = start_hub(windows, windows_pyz, config)
    try:
        address = await listening(hub)
        assert journal_records(hub.log) == 2, hub.log
        async with ws_connect(ws_url(address, f"token={jwt(tmp_path, 2)}")) as bob:
            mailbox = await recv_types(bob, "connected", "new_message", "notice")
            dm = mailbox["new_message"]["data"]
            assert dm["text"] == "你好 bob" and dm["offline"] is True, dm
            assert mailbox["notice"]["data"] == {"n": 1}
        hub.interrupt()
        assert await exit_status(hub) == 0, hub.log
    finally:
        hub.kill()
    assert_clean(hub.log)

    # Second restart: everything comes from the snapshot; the message, never
    # acknowledged, is in Bob's mailbox again.
    hub = start_hub(windows, windows_pyz, config)
    try:
        address = await listening(hub)
        assert journal_records(hub.log) == 0, hub.log
        async with ws_connect(ws_url(address, f"token={jwt(tmp_path, 2)}")) as bob:
            dm = (await recv_type(bob, "new_message"))["data"]
            assert dm["text"] == "你好 bob" and dm["message_id"] == 1, dm
        hub.interrupt()
        assert await exit_status(hub) == 0, hub.log
    finally:
        hub.kill()
    assert_clean(hub.log)


async def test_ctrl_break_from_a_launcher_stops_the_hub_gracefully(
    windows: WindowsPython, windows_pyz: Path, tmp_path: Path
) -> None:
    config = windows_path(write_config(tmp_path))
    hub = [windows_path(windows.exe), windows_path(windows_pyz), "serve", "--config", config]
    launcher = WindowsProcess(windows, windows_path(WINDOWS_FILES / "ctrl_break.py"), *hub)
    try:
        address = await listening(launcher)
        async with ws_connect(ws_url(address, f"token={jwt(tmp_path, 42)}")) as user:
            assert (await recv(user))["type"] == "connected"
            launcher.tell("break")
            with pytest.raises(ConnectionClosed) as closed:
                await recv_type(user, "never")
            assert closed.value.reason.code == 1001
        assert await exit_status(launcher) == 0, launcher.log
    finally:
        launcher.kill()
    sent = [line for line in launcher.out if line.startswith("sent CTRL_BREAK_EVENT")]
    assert len(sent) == 1, launcher.out
    assert "signal SIGBREAK received" in launcher.log and "stopped" in launcher.log, launcher.log
    assert_clean(launcher.log)


async def test_host_program_runs_the_hub_with_wsserver_run(
    windows: WindowsPython, windows_pyz: Path, tmp_path: Path
) -> None:
    host_program = WindowsProcess(
        windows, windows_pyz, windows_path(WINDOWS_FILES / "embedded_host.py"),
        windows_path(write_config(tmp_path)), env={"SHIV_INTERPRETER": "1"},
    )  # fmt: skip
    try:
        address = await listening(host_program)
        async with ws_connect(ws_url(address, f"token={jwt(tmp_path, 42)}")) as user:
            assert (await recv(user))["type"] == "connected"
            order = {"type": "order_placed", "id": "o1", "data": {"order": 7}}
            await user.send_message(json.dumps(order))
            ack = await recv_type(user, "order_ack")
            assert ack["id"] == "o1" and ack["data"] == {"order": 7, "by": 42, "host": "windows"}
            host_program.interrupt()
        assert await exit_status(host_program) == 0, host_program.log
    finally:
        host_program.kill()
    assert "signal SIGINT received" in host_program.log and "stopped" in host_program.log
    assert_clean(host_program.log)
