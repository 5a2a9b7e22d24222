"""The embedding API: a hub inside a host trio program (publish, host handlers,
stop, cancellation) and `wsserver.run()` in a host without trio."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

import wsserver
from tests.conftest import ServerProcess, make_config, recv, token, ws_connect
from wsserver.config import Config


def test_public_api_is_exactly_the_embedding_names() -> None:
    assert sorted(wsserver.__all__) == [
        "Config",
        "ConfigError",
        "HostContext",
        "HubHandle",
        "__version__",
        "load_config",
        "run",
        "serve",
    ]
    for name in wsserver.__all__:
        assert getattr(wsserver, name) is not None
    with pytest.raises(AttributeError):
        wsserver.Server  # noqa: B018  (not public: reach it through HubHandle.server)


def test_import_wsserver_stays_light() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, wsserver; print('trio' in sys.modules, 'jwt' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]


async def test_host_trio_program_publishes_and_answers_its_own_message_type(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    orders: list[Any] = []
    async with trio.open_nursery() as nursery:
        hub: wsserver.HubHandle = await nursery.start(wsserver.serve, config)
        assert hub.address[0] == "127.0.0.1" and hub.address[1] > 0
        assert hub.url == f"ws://127.0.0.1:{hub.address[1]}/ws"

        @hub.on("order_placed")
        def placed(ctx: wsserver.HostContext, data: Any) -> None:
            orders.append((ctx.identity.user_id, data))
            ctx.reply("order_ack", {"order": data["order"], "by": ctx.identity.user_id})
            ctx.publish("order_feed", {"order": data["order"]}, group_id=ctx.identity.group_id)

        async with (
            ws_connect(f"{hub.url}?token={token(config, user_id=1, group_id=5)}") as alice,
            ws_connect(f"{hub.url}?token={token(config, user_id=2, group_id=5)}") as bob,
        ):
            assert (await recv(alice))["type"] == "connected"
            assert (await recv(bob))["type"] == "connected"
            # the host publishes, as POST /api/publish would
            assert await hub.publish("notice", {"text": "hi"}, user_id=1) == {
                "delivered": 1,
                "queued": 0,
            }
            notice = await recv(alice)
            assert notice["type"] == "notice" and notice["data"] == {"text": "hi"}
            # a client message of the host's own type reaches the host's handler
            await alice.send_message(
                json.dumps({"type": "order_placed", "id": 7, "data": {"order": "A-1"}})
            )
            ack = await recv(alice)
            assert ack == {**ack, "type": "order_ack", "id": 7, "data": {"order": "A-1", "by": 1}}
            assert (await recv(alice))["type"] == "order_feed"
            assert (await recv(bob))["data"] == {"order": "A-1"}
            assert orders == [(1, {"order": "A-1"})]
            # types nobody handles still answer unknown_type
            await alice.send_message(json.dumps({"type": "order_cancelled", "data": {}}))
            error = await recv(alice)
            assert error["type"] == "error" and error["data"]["code"] == "unknown_type"
            assert (await hub.stats())["connections"]["total"] == 2
            hub.stop()
            bye = await recv(alice)  # SPEC 13: the last message before the server's close
            assert bye["type"] == "disconnected" and bye["data"]["code"] == 1001
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                await alice.get_message()
            assert closed.value.reason.code == 1001
    # the nursery ended: serve() returned after the graceful stop


async def test_host_handler_errors_and_registration_rules(tmp_path: Path) -> None:
    config = make_config(tmp_path)

    def boom(ctx: wsserver.HostContext, data: Any) -> None:
        raise RuntimeError("host bug")

    def picky(ctx: wsserver.HostContext, data: Any) -> None:
        ctx.error("quantity must be positive", code="invalid_message", field="quantity")

    async with trio.open_nursery() as nursery:
        hub = await nursery.start(
            lambda task_status: wsserver.serve(
                config, handlers={"boom": boom, "picky": picky}, task_status=task_status
            )
        )
        for builtin in ("join_room", "send_message", "heartbeat", "auth", "sync_line_accounts"):
            with pytest.raises(ValueError, match="already handled"):
                hub.add_handler(builtin, picky)
        with pytest.raises(ValueError, match="already handled"):
            hub.add_handler("boom", picky)
        with pytest.raises(ValueError, match="invalid message type"):
            hub.add_handler("has space", picky)

        async def not_allowed(ctx: Any, data: Any) -> None:
            pass

        with pytest.raises(TypeError):
            hub.add_handler("async_one", not_allowed)  # type: ignore[arg-type]
        async with ws_connect(f"{hub.url}?token={token(config)}") as ws:
            assert (await recv(ws))["type"] == "connected"
            await ws.send_message(json.dumps({"type": "boom", "id": "b"}))
            error = await recv(ws)
            assert error["data"] == {"code": "internal", "ref": "boom"} and error["id"] == "b"
            await ws.send_message(json.dumps({"type": "picky", "data": {"quantity": -1}}))
            error = await recv(ws)
            assert error["error"] == "quantity must be positive"
            assert error["data"] == {"code": "invalid_message", "ref": "picky", "field": "quantity"}
            await ws.send_message(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"  # the hub went on
        hub.stop()


async def test_publish_checks_its_arguments_like_the_http_api(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(wsserver.serve, config)
        with pytest.raises(ValueError, match="conflicting targets"):
            await hub.publish("notice", {}, user_id=1, all=True)
        with pytest.raises(ValueError, match="missing field"):
            await hub.publish("notice", {})
        with pytest.raises(ValueError, match="type"):
            await hub.publish("Not A Type", {}, all=True)
        with pytest.raises(ValueError, match="not JSON"):
            await hub.publish("notice", {"x": math.nan}, all=True)
        assert await hub.publish("notice", None, all=True) == {"delivered": 0, "queued": 0}
        # persist: an offline user's mailbox, answered once durable; pushed on connect
        assert await hub.publish("invoice", {"n": 1}, user_ids=(42,), persist=True) == {
            "delivered": 0,
            "queued": 1,
        }
        async with ws_connect(f"{hub.url}?token={token(config, user_id=42)}") as ws:
            assert (await recv(ws))["type"] == "connected"
            pushed = await recv(ws)
            assert pushed["type"] == "invoice" and pushed["data"] == {"n": 1}
        hub.stop()


async def test_cancelling_serve_stops_the_hub_gracefully(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    host = trio.CancelScope()

    async def host_program(task_status: trio.TaskStatus[wsserver.HubHandle]) -> None:
        with host:
            async with trio.open_nursery() as nursery:
                task_status.started(await nursery.start(wsserver.serve, config))

    async with trio.open_nursery() as outside:
        hub = await outside.start(host_program)
        async with ws_connect(f"{hub.url}?token={token(config)}") as ws:
            assert (await recv(ws))["type"] == "connected"
            host.cancel()  # e.g. the host program shuts down
            assert (await recv(ws))["data"]["code"] == 1001  # disconnected, then the close
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                await ws.get_message()
            assert closed.value.reason.code == 1001
    assert host.cancelled_caught
    assert (tmp_path / "snapshot.json").exists()  # the final snapshot was written


async def test_serve_takes_a_config_file_path(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n[storage]\ndir = "{(tmp_path / "d").as_posix()}"\n',
        encoding="utf-8",
    )
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(wsserver.serve, path)
        assert isinstance(hub.server.config, Config) and hub.server.config_path == path
        assert await hub.server.reload() is not None  # a file to read again
        hub.stop()


HOST_SCRIPT = """
import sys
import wsserver

def echo_upper(ctx, data):
    ctx.reply("shout", str(data).upper())

sys.exit(wsserver.run(sys.argv[1], handlers={"shout": echo_upper}))
"""


class HostProcess(ServerProcess):
    """A host program (`python script args`) instead of `python -m wsserver`."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.log = ""


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT to a child process")
async def test_run_in_a_host_without_trio_stops_on_sigint_with_exit_0(tmp_path: Path) -> None:
    secret = "embed-run-secret-0123456789abcdef-xyz"
    path = tmp_path / "hub.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n[auth]\njwt_secret = "{secret}"\n'
        f'[storage]\ndir = "{(tmp_path / "d").as_posix()}"\n',
        encoding="utf-8",
    )
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(HOST_SCRIPT), encoding="utf-8")
    proc = HostProcess([str(script), str(path)])
    try:
        host, port = await proc.address()
        config = make_config(tmp_path, auth__jwt_secret=secret)
        async with ws_connect(f"ws://{host}:{port}/ws?token={token(config)}") as ws:
            assert (await recv(ws))["type"] == "connected"
            await ws.send_message(json.dumps({"type": "shout", "data": "hello"}))
            assert (await recv(ws))["data"] == "HELLO"
            proc.proc.send_signal(signal.SIGINT)
            assert (await recv(ws))["data"]["code"] == 1001  # disconnected, then the close
            with pytest.raises(ConnectionClosed) as closed, trio.fail_after(10):
                await ws.get_message()
            assert closed.value.reason.code == 1001
        assert await proc.wait() == 0
        assert "shutting down" in proc.log
    finally:
        proc.kill()
