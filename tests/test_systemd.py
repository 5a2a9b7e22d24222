"""systemd: the sd_notify protocol over a real AF_UNIX datagram socket, the unit that
`wsserver systemd-unit` prints, and the unit's MemoryDenyWriteExecute claim."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import LISTENING, make_config, token, ws_connect
from wsserver.__main__ import main
from wsserver.ops.systemd import Notifier

SECRET = "systemd-test-secret-0123456789abcdef-xyz"

posix_only = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs AF_UNIX")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX socket paths are limited to ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="wss-", dir="/tmp" if os.path.isdir("/tmp") else None))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- the notifier --------------------------------------------------------------------


def test_without_notify_socket_every_notification_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.watchdog_period is None
    assert notifier.ready("x") is False
    assert notifier.stopping() is False
    assert notifier.watchdog() is False


def test_watchdog_is_ours_only_without_watchdog_pid_or_with_our_pid() -> None:
    base = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier(base).watchdog_period == 15.0
    assert Notifier({**base, "WATCHDOG_PID": str(os.getpid())}).watchdog_period == 15.0
    assert Notifier({**base, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_period is None
    assert Notifier({**base, "WATCHDOG_USEC": "0"}).watchdog_period is None
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_period is None  # no socket, no pings


@posix_only
def test_notify_reaches_a_path_socket_and_never_raises(short_dir: Path) -> None:
    path = short_dir / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.ready("3 connections")
        assert sock.recv(4096) == b"READY=1\nSTATUS=3 connections"
        assert notifier.stopping()
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=shutting down"
        assert notifier.stopping() is False  # once
    # The manager went away: notifications are dropped, not raised.
    assert notifier.watchdog() is False
    notifier.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract sockets are Linux-only")
def test_notify_socket_starting_with_at_is_in_the_abstract_namespace() -> None:
    name = f"wsserver-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        notifier.close()


# -- the server process --------------------------------------------------------------


def _fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().split("\n"))


class NotifySocket:
    """The service manager's end: collects every datagram the server sends."""

    def __init__(self, path: Path) -> None:
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.path = path
        self.seen: list[dict[str, str]] = []

    async def expect(
        self, key: str, value: str | None = None, timeout: float = 10
    ) -> dict[str, str]:
        """Read datagrams until one has `key` (with `value`, when given)."""
        with trio.fail_after(timeout):
            while True:
                fields = _fields(await self.sock.recv(4096))
                self.seen.append(fields)
                if key in fields and (value is None or fields[key] == value):
                    return fields


@pytest.fixture
async def manager(short_dir: Path) -> Any:
    notify = NotifySocket(short_dir / "notify.sock")
    await notify.sock.bind(str(notify.path))
    yield notify
    notify.sock.close()


def _write_config(path: Path) -> Path:
    config = path / "wsserver.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n[auth]\njwt_secret = "{SECRET}"\n',
        encoding="utf-8",
    )
    return config


@posix_only
async def test_server_notifies_ready_watchdog_status_reload_and_stopping(
    manager: NotifySocket, tmp_path: Path, spawn: Any
) -> None:
    config = _write_config(tmp_path)
    proc = spawn(
        ["serve", "--config", str(config), "--data-dir", str(tmp_path / "data")],
        env={"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "200000"},
    )
    ready = await manager.expect("READY")
    assert ready["READY"] == "1"
    assert ready["STATUS"].startswith("0 connections")
    assert not any("WATCHDOG" in f for f in manager.seen[:-1]), "READY=1 comes first"
    host, port = await proc.address()
    assert f"listening on {host}:{port}" in ready["STATUS"]
    # WATCHDOG=1 every 0.1 s (half of WATCHDOG_USEC)
    with trio.fail_after(2):
        for _ in range(3):
            await manager.expect("WATCHDOG")
    async with ws_connect(
        f"ws://{host}:{port}/ws?token={token(make_config(tmp_path, auth__jwt_secret=SECRET))}"
    ) as ws:
        assert json.loads(await ws.get_message())["type"] == "connected"
        status = await manager.expect("STATUS")
        assert status["STATUS"].startswith("1 connection (1 users, 0 devices)")
        proc.proc.send_signal(signal.SIGHUP)
        reloading = await manager.expect("RELOADING")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert (await manager.expect("READY"))["STATUS"].startswith("1 connection")
        proc.proc.send_signal(signal.SIGTERM)
        await manager.expect("STOPPING")
    assert await proc.wait() == 0


@posix_only
async def test_watchdog_of_another_process_gets_no_pings(
    manager: NotifySocket, tmp_path: Path, spawn: Any
) -> None:
    proc = spawn(
        ["serve", "--config", str(_write_config(tmp_path)), "--data-dir", str(tmp_path / "data")],
        env={"NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    )
    await manager.expect("READY")
    with trio.move_on_after(0.5):
        await manager.expect("WATCHDOG")
    assert not any("WATCHDOG" in f for f in manager.seen)
    proc.proc.send_signal(signal.SIGTERM)
    await manager.expect("STOPPING")
    assert await proc.wait() == 0


# -- the unit ------------------------------------------------------------------------


def _unit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, dict[str, list[str]]]:
    assert main(["systemd-unit", *args]) == 0
    text = capsys.readouterr().out
    directives: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return text, directives


def test_systemd_unit_runs_the_pyz_as_a_hardened_notify_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text, d = _unit(
        capsys, "--pyz", "/opt/ws/wsserver.pyz", "--config", "/etc/ws/hub.toml", "--user", "hub"
    )
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "WatchdogSec": ["30"],
        "Restart": ["on-failure"],
        "User": ["hub"],
        "Group": ["hub"],
        "StateDirectory": ["wsserver"],
        "CacheDirectory": ["wsserver"],
        "Environment": ["SHIV_ROOT=%C/wsserver"],
        "ExecStart": [
            "/usr/bin/python3 /opt/ws/wsserver.pyz serve --config /etc/ws/hub.toml --data-dir %S/wsserver"
        ],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "LimitNOFILE": ["65536"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "PrivateDevices": ["yes"],
        "ProtectKernelTunables": ["yes"],
        "ProtectKernelModules": ["yes"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_UNIX"],
        "LockPersonality": ["yes"],
        "MemoryDenyWriteExecute": ["yes"],
        "SystemCallArchitectures": ["native"],
        "WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert d.get(key) == value, key
    assert "DynamicUser" not in d
    assert text.index("[Unit]") < text.index("[Service]") < text.index("[Install]")


def test_systemd_unit_with_a_dynamic_user_and_paths_that_need_quoting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, d = _unit(
        capsys, "--dynamic-user", "--pyz", "/opt/my apps/ws%1.pyz", "--config", "/etc/ws.toml"
    )
    assert d["DynamicUser"] == ["yes"]
    assert "User" not in d
    assert d["ExecStart"] == [
        '/usr/bin/python3 "/opt/my apps/ws%%1.pyz" serve --config /etc/ws.toml --data-dir %S/wsserver'
    ]


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_systemd_analyze_accepts_the_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    python = shutil.which("python3") or sys.executable
    for extra in ([], ["--dynamic-user"]):
        text, _ = _unit(capsys, "--pyz", str(tmp_path / "wsserver.pyz"), "--python", python, *extra)
        unit = tmp_path / "wsserver.service"
        unit.write_text(text, encoding="utf-8")
        out = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
        )
        # verify reports unknown or malformed directives on stderr ("ignoring"), even with rc 0
        assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


# -- MemoryDenyWriteExecute ----------------------------------------------------------

PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1

# Turns on the kernel's MDWE (Linux >= 6.3: no mapping that is both writable and
# executable, no making memory executable later: what MemoryDenyWriteExecute=yes
# enforces with seccomp), proves it bites, then becomes the command (inherited).
LAUNCHER = """
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit(78)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _mdwe_supported() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run([sys.executable, "-c", LAUNCHER, "-c", "pass"], check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _mdwe_supported(), reason="needs Linux >= 6.3 (prctl PR_SET_MDWE)")
async def test_server_with_es256_tokens_runs_without_writable_executable_memory(
    tmp_path: Path,
) -> None:
    """cryptography loads cffi's _cffi_backend; neither may need W+X memory, or
    the unit's MemoryDenyWriteExecute=yes would break the service."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from wsserver.tokens import mint_token

    key = ec.generate_private_key(ec.SECP256R1())
    public = tmp_path / "es256.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    config = tmp_path / "wsserver.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n[auth]\njwt_secret = "{SECRET}"\n'
        f'algorithms = ["HS256", "ES256"]\njwt_public_key_file = "{public}"\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, "-m", "wsserver", "serve", "--config", str(config),
         "--data-dir", str(tmp_path / "data")],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        log = ""
        with trio.fail_after(20):
            while (m := LISTENING.search(log)) is None:
                line = await trio.to_thread.run_sync(proc.stderr.readline)
                assert line, f"server exited {proc.poll()}: {log}"
                log += line.decode()
        cfg = make_config(
            tmp_path, auth__algorithms=["HS256", "ES256"], auth__jwt_public_key_file=str(public)
        )
        es256 = mint_token(cfg, {"user_id": 7}, 60, private)
        for credential in (es256, token(make_config(tmp_path, auth__jwt_secret=SECRET))):
            async with ws_connect(f"ws://{m.group(1)}:{m.group(2)}/ws?token={credential}") as ws:
                assert json.loads(await ws.get_message())["type"] == "connected"
        proc.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(proc.wait) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
