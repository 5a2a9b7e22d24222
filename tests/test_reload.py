"""Reloading the configuration while serving: what changes live, what waits for a
restart, what a broken file does, and SIGHUP on the real process."""

from __future__ import annotations

import json
import logging
import re
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from tests.conftest import (
    FAST_IO,
    close_code,
    http_request,
    hub_of,
    make_config,
    make_server,
    recv,
    token,
    ws_connect,
)
from wsserver.config import Config, load_config
from wsserver.net.server import Server
from wsserver.ops.reload import LIVE_KEYS, RESTART_KEYS, _matches, flatten, plan_reload

SECRET = "reload-test-secret-0123456789abcdef-xyz"
DESK, OTHER = "DESKCODE01", "DESKCODE02"


def toml(
    *,
    limits: str = "",
    heartbeat: str = "",
    codes: tuple[tuple[str, bool], ...] = ((DESK, True), (OTHER, True)),
    extra: str = "",
) -> str:
    text = f'[server]\nhost = "127.0.0.1"\nport = 0\n[auth]\njwt_secret = "{SECRET}"\n'
    text += f"[limits]\n{limits}\n[heartbeat]\n{heartbeat}\n{extra}\n"
    for code, enabled in codes:
        text += f'[[activation_codes]]\ncode = "{code}"\ngroup_id = 7\nenabled = {str(enabled).lower()}\n'
    return text


@asynccontextmanager
async def file_server(path: Path, text: str) -> AsyncIterator[Server]:
    """A real server started from the config file at `path`, as `wsserver serve --config` does."""
    path.write_text(text, encoding="utf-8")
    overrides = {"storage.dir": str(path.parent / "data"), "server.fast_io": FAST_IO}
    config = load_config(path, env={}, overrides=overrides)
    async with trio.open_nursery() as nursery:
        server = make_server(config, config_path=path, overrides=overrides)
        await nursery.start(server.serve)
        host, port = server.addresses[0]
        server.url = f"ws://{host}:{port}/ws"  # type: ignore[attr-defined]
        yield server
        server.stop()


async def upgrade_status(
    address: tuple[str, int], credential: str | None, origin: str | None, query: str = ""
) -> int:
    """The HTTP status of a WebSocket upgrade request (101 when accepted)."""
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ]
    if origin is not None:
        headers.append(("Origin", origin))
    target = f"/ws?token={credential}" if credential else f"/ws?{query}"
    status, _, _ = await http_request(address, "GET", target, headers=headers)
    return status


def user_token(tmp_path: Path) -> str:
    return token(make_config(tmp_path, auth__jwt_secret=SECRET), user_id=1, group_id=1)


async def pings(ws: Any, n: int) -> list[str]:
    """Send `n` pings at once; the types of the `n` answers."""
    for i in range(n):
        await ws.send_message(json.dumps({"type": "ping", "id": i}))
    return [(await recv(ws))["type"] for _ in range(n)]


# -- the plan, without I/O -------------------------------------------------------------


def test_every_config_key_is_either_live_or_needs_a_restart() -> None:
    for key in flatten(Config()):
        assert _matches(key, LIVE_KEYS) != _matches(key, RESTART_KEYS), key


def test_plan_applies_live_keys_and_keeps_restart_keys() -> None:
    old = Config()
    new = attrs.evolve(
        old,
        server=attrs.evolve(old.server, port=9999, locale="en"),
        limits=attrs.evolve(old.limits, burst=5),
        storage=attrs.evolve(old.storage, dir="/elsewhere"),
    )
    plan = plan_reload(old, new)
    assert plan.applied == ("limits.burst", "server.locale")
    assert plan.needs_restart == ("server.port", "storage.dir")
    assert plan.config.limits.burst == 5 and plan.config.server.locale == "en"
    assert plan.config.server.port == 8080 and plan.config.storage.dir == "./data"
    assert plan.describe("limits.burst") == "limits.burst: 100 -> 5"


def test_plan_never_describes_a_secret_value() -> None:
    old = Config()
    new = load_config(
        None,
        env={},
        overrides={
            "auth.jwt_secret": "s3cr3t-value-that-must-not-show",
            "api.keys": ["k3y-value"],
            "activation_codes": [{"code": "C0DEVALUE", "group_id": 1}],
        },
    )
    plan = plan_reload(old, new)
    assert plan.applied == ("activation_codes", "api.keys", "auth.jwt_secret")
    described = " ".join(map(plan.describe, plan.applied))
    for secret in ("s3cr3t", "k3y-value", "C0DEVALUE"):
        assert secret not in described


def test_unchanged_file_plans_nothing() -> None:
    plan = plan_reload(Config(), Config())
    assert not plan.changed and plan.config == Config()


# -- a running server ------------------------------------------------------------------


async def test_reload_changes_the_rate_limit_of_open_connections(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    async with file_server(path, toml()) as server:
        async with ws_connect(f"{server.url}?token={user_token(tmp_path)}") as ws:
            assert (await recv(ws))["type"] == "connected"
            assert await pings(ws, 4) == ["pong"] * 4
            path.write_text(toml(limits="messages_per_second = 0.01\nburst = 2"), encoding="utf-8")
            plan = await server.reload()
            assert plan is not None and plan.applied == (
                "limits.burst",
                "limits.messages_per_second",
            )
            assert server.config.limits.burst == 2 and hub_of(server).config is server.config
            # burst 2: two pass, the third is dropped (a second drop in a row would close 4029)
            assert await pings(ws, 3) == ["pong", "pong", "error"]


async def test_reload_turns_on_app_pings_for_open_connections(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    async with file_server(path, toml(heartbeat="interval = 0.2")) as server:
        async with ws_connect(f"{server.url}?token={user_token(tmp_path)}") as ws:
            assert (await recv(ws))["type"] == "connected"
            with trio.move_on_after(0.5):
                raise AssertionError(f"unexpected {await recv(ws)}")
            path.write_text(toml(heartbeat="interval = 0.2\napp_ping = true"), encoding="utf-8")
            await server.reload()
            with trio.fail_after(2):
                assert (await recv(ws))["type"] == "ping"


async def test_reload_disabling_an_activation_code_closes_its_connections_4001(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wsserver.toml"
    async with file_server(path, toml()) as server:
        async with (
            ws_connect(f"{server.url}?activation_code={DESK}") as desk,
            ws_connect(f"{server.url}?activation_code={OTHER}") as other,
        ):
            assert (await recv(desk))["type"] == "auth_success"
            assert (await recv(other))["type"] == "auth_success"
            path.write_text(toml(codes=((DESK, False), (OTHER, True))), encoding="utf-8")
            with caplog.at_level(logging.INFO, logger="wsserver"):
                plan = await server.reload()
            assert plan is not None and plan.applied == ("activation_codes",)
            assert await close_code(desk) == 4001
            await other.send_message(json.dumps({"type": "ping"}))
            assert (await recv(other))["type"] == "pong"  # still open
        # a new connection with the disabled code is refused
        assert (
            await upgrade_status(server.addresses[0], None, None, f"activation_code={DESK}") == 401
        )
    logged = caplog.text
    assert "activation_codes (secret)" in logged and "closed 1 connection" in logged
    assert DESK not in logged and OTHER not in logged


async def test_reload_of_a_broken_file_keeps_the_running_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wsserver.toml"
    async with file_server(path, toml(limits="burst = 3")) as server:
        running = server.config
        for broken, why in (
            ("[limits\nburst = ", "invalid TOML"),
            (toml(limits='burst = "many"'), "limits.burst: expected int, got str"),
            (
                toml(limits="burst = 3", extra='[api]\nkeys = [""]'),
                "api.keys[0]: must not be empty",
            ),
            (
                toml(
                    extra='[auth]\nalgorithms = ["ES256"]\njwt_public_key_file = "/nonexistent.pem"'
                ).replace(f'[auth]\njwt_secret = "{SECRET}"\n', ""),
                "auth",
            ),
        ):
            path.write_text(broken, encoding="utf-8")
            with caplog.at_level(logging.ERROR, logger="wsserver"):
                caplog.clear()
                assert await server.reload() is None
            assert server.config is running and hub_of(server).config is running
            assert "reload failed, keeping the running configuration" in caplog.text
            assert why in caplog.text
        async with ws_connect(f"{server.url}?token={user_token(tmp_path)}") as ws:
            assert (await recv(ws))["type"] == "connected"


async def test_reload_reports_keys_that_need_a_restart_and_keeps_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wsserver.toml"
    async with file_server(path, toml()) as server:
        port = server.addresses[0][1]
        path.write_text(
            toml(extra='[messages]\nhistory_limit = 5\n[log]\nlevel = "debug"').replace(
                "port = 0", "port = 1"
            ),
            encoding="utf-8",
        )
        level = logging.getLogger("wsserver").level
        try:
            with caplog.at_level(logging.INFO, logger="wsserver"):
                plan = await server.reload()
                assert logging.getLogger("wsserver").level == logging.DEBUG
            assert plan is not None
            assert plan.needs_restart == ("messages.history_limit", "server.port")
            assert plan.applied == ("log.level",)
            assert server.config.server.port == 0 and server.config.messages.history_limit == 1000
        finally:
            logging.getLogger("wsserver").setLevel(level)
        assert (
            "needs a restart, running value kept: messages.history_limit: 1000 -> 5; server.port: 0 -> 1"
            in caplog.text
        )
        assert server.addresses[0][1] == port


async def test_reload_changes_api_keys_origins_and_auth(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    async with file_server(path, toml(extra='[api]\nkeys = ["old-key"]')) as server:
        address = server.addresses[0]

        async def stats(key: str) -> int:
            status, _, _ = await http_request(
                address, "GET", "/api/stats", headers=[("X-API-Key", key)]
            )
            return status

        assert await stats("old-key") == 200
        new_secret = "another-reload-secret-0123456789abcdef"
        path.write_text(
            toml(
                extra='[api]\nkeys = ["new-key"]\n[security]\nallowed_origins = ["https://app.example"]'
            ).replace(SECRET, new_secret),
            encoding="utf-8",
        )
        plan = await server.reload()
        assert plan is not None
        assert plan.applied == ("api.keys", "auth.jwt_secret", "security.allowed_origins")
        assert await stats("old-key") == 401 and await stats("new-key") == 200
        fresh = token(make_config(tmp_path, auth__jwt_secret=new_secret), user_id=1)
        origin = [(b"Origin", b"https://app.example")]
        async with ws_connect(f"{server.url}?token={fresh}", extra_headers=origin) as ws:
            assert (await recv(ws))["type"] == "connected"
        assert await upgrade_status(address, fresh, "https://evil.example") == 403
        assert await upgrade_status(address, user_token(tmp_path), "https://app.example") == 401


async def test_server_started_without_a_file_has_nothing_to_reload(
    live_server: Callable[..., Any],
) -> None:
    server = await live_server()
    before = server.config
    assert await server.reload() is None
    assert server.config is before


# -- SIGHUP on the real process --------------------------------------------------------


async def read_log_until(proc: Any, pattern: str) -> str:
    """Read the process's stderr until a line matches `pattern`; that line."""
    with trio.fail_after(10):
        while True:
            line = (await trio.to_thread.run_sync(proc.proc.stderr.readline)).decode()
            assert line, f"server exited: {proc.log}"
            proc.log += line
            if re.search(pattern, line):
                return line


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX-only")
async def test_sighup_reloads_limits_and_codes_and_survives_a_broken_file(
    tmp_path: Path, spawn: Any
) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text(toml(), encoding="utf-8")
    proc = spawn(["serve", "--config", str(path), "--data-dir", str(tmp_path / "data")])
    host, port = await proc.address()
    url = f"ws://{host}:{port}/ws"
    async with (
        ws_connect(f"{url}?activation_code={DESK}") as desk,
        ws_connect(f"{url}?token={user_token(tmp_path)}") as user,
    ):
        assert (await recv(desk))["type"] == "auth_success"
        assert (await recv(user))["type"] == "connected"
        path.write_text(
            toml(
                limits="messages_per_second = 0.01\nburst = 2", codes=((DESK, False), (OTHER, True))
            ),
            encoding="utf-8",
        )
        proc.proc.send_signal(signal.SIGHUP)
        applied = await read_log_until(proc, "reload: applied")
        assert "limits.burst: 100 -> 2" in applied and "activation_codes (secret)" in applied
        assert await close_code(desk) == 4001
        assert await pings(user, 3) == ["pong", "pong", "error"]
        path.write_text("[limits\n", encoding="utf-8")
        proc.proc.send_signal(signal.SIGHUP)
        await read_log_until(proc, "reload failed, keeping the running configuration")
        async with ws_connect(f"{url}?token={user_token(tmp_path)}") as fresh:
            assert (await recv(fresh))["type"] == "connected"
            assert await pings(fresh, 3) == ["pong", "pong", "error"]  # still the reloaded limits
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0
    assert DESK not in proc.log and SECRET not in proc.log
