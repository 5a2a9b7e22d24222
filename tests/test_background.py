"""Background tasks never stop the server (SPEC 5): a failure is logged, counted in
the metrics and retried, `/readyz` answers 503 naming the task while it keeps
failing, and 200 again once it recovers."""

from __future__ import annotations

import errno
import json
import logging
import os
from typing import Any

import pytest
import trio

from tests.conftest import http_request, hub_of, token, ws_connect
from wsserver.core.commands import PutCode
from wsserver.ops.background import Background
from wsserver.protocol.i18n import text

API_KEY = "background-test-key"


class Flaky:
    """An async round that fails `times` times (with `error`), then succeeds, every 10 s."""

    def __init__(self, times: int, error: Exception | None = None) -> None:
        self.left = times
        self.error = error or RuntimeError("boom")
        self.calls: list[float] = []

    async def __call__(self) -> None:
        self.calls.append(trio.current_time())
        await trio.sleep(0)
        if self.left:
            self.left -= 1
            raise self.error
        await trio.sleep(10)


# -- Background itself, on the autojump clock ------------------------------------------


async def test_a_failing_round_is_logged_counted_marked_and_retried_with_a_growing_backoff(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    counted: list[str] = []
    background = Background(counted.append, first_delay=1.0, max_delay=3.0)
    flaky = Flaky(4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(background.supervised, "timer", flaky)
        await trio.sleep(0.5)
        assert background.failing() == {"timer": "RuntimeError: boom"}
        await trio.sleep(100)
        nursery.cancel_scope.cancel()  # Cancelled is never taken for a failure
    gaps = [round(b - a, 3) for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    assert gaps[:5] == [1, 2, 3, 3, 10]
    assert counted == ["timer"] * 4
    assert background.failing() == {}  # the fifth round succeeded
    records = [r for r in caplog.records if r.name == "wsserver.background"]
    messages = [r.getMessage() for r in records]
    assert messages[0] == "background task timer failed, retrying in 1.0 s: RuntimeError: boom"
    assert records[0].exc_info is not None and records[1].exc_info is None  # a streak's first only
    assert messages[1] == "background task timer failed again (2 in a row), retrying in 2.0 s: RuntimeError: boom"
    assert messages[-1] == "background task timer recovered after 4 failure(s)"


async def test_a_reason_is_short_and_printable(autojump_clock: trio.testing.MockClock) -> None:
    background = Background()
    background.failed("x", ValueError("line\nbreak " + "y" * 500))
    (reason,) = background.failing().values()
    assert reason.startswith("ValueError: line break yyy") and len(reason) == 200


async def test_a_long_running_task_is_restarted_and_recovers_after_running_as_long_as_it_waited(
    autojump_clock: trio.testing.MockClock,
) -> None:
    background = Background(first_delay=1.0)
    starts: list[float] = []

    async def service(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        starts.append(trio.current_time())
        task_status.started()
        await trio.sleep(0.1)
        if len(starts) < 3:
            raise OSError("bad")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(background.keep_running, "service", service)
        await trio.sleep(3.5)  # restarted at 1.1 and 3.2 (backoff 1, then 2)
        assert len(starts) == 3 and background.failing() == {"service": "OSError: bad"}
        await trio.sleep(2.0)  # has run 2 s (what it waited) without failing
        assert background.failing() == {}
        nursery.cancel_scope.cancel()


async def test_a_task_that_fails_before_it_started_is_the_callers_error() -> None:
    async def broken(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        raise RuntimeError("wiring")

    async with trio.open_nursery() as nursery:
        with pytest.raises(RuntimeError, match="wiring"):
            await nursery.start(Background().keep_running, "broken", broken)


# -- a real server ---------------------------------------------------------------------------


async def readyz(server: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = await http_request(server.addresses[0], "GET", "/readyz")
    return status, json.loads(body)


async def metric(server: Any, line: str) -> bool:
    _, _, body = await http_request(
        server.addresses[0], "GET", "/metrics", headers=[("X-API-Key", API_KEY)]
    )
    return line in body.decode()


class Signals:
    """Events for the server's Background reporting a failure or a recovery."""

    def __init__(self, server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failed, self.recovered = trio.Event(), trio.Event()
        background = server.background
        failed, recovered = background.failed, background.recovered

        def on_failed(task: str, exc: BaseException) -> float:
            delay: float = failed(task, exc)
            self.failed.set()
            return delay

        def on_recovered(task: str) -> None:
            # only a task that was failing recovers: every writer step that
            # succeeds also reports (the start-up snapshot's, for one)
            was_failing = task in background._failing
            recovered(task)
            if was_failing:
                self.recovered.set()

        monkeypatch.setattr(background, "failed", on_failed)
        monkeypatch.setattr(background, "recovered", on_recovered)


async def test_a_failing_snapshot_is_reported_by_readyz_until_it_recovers_and_serving_goes_on(
    live_server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = await live_server(storage__snapshot_interval=0.05, api__keys=[API_KEY])
    signals = Signals(server, monkeypatch)
    view = hub_of(server).commit.snapshot_view
    broken = [True]

    def snapshot_view() -> dict[str, Any]:
        if broken[0]:
            raise RuntimeError("the state cannot be copied")
        return view()

    monkeypatch.setattr(hub_of(server).commit, "snapshot_view", snapshot_view)
    await server.actor.call(PutCode("NEWCODE1", 3, "", True))
    with trio.fail_after(5):
        await signals.failed.wait()
    assert await readyz(server) == (503, {
        "code": 503,
        "message": text("background_failing", server.config.server.locale, tasks="snapshots"),
        "failing": {"snapshots": "RuntimeError: the state cannot be copied"},
    })  # fmt: skip
    assert await metric(server, 'wsserver_background_failures_total{task="snapshots"} 1.0')
    assert "background task snapshots failed" in caplog.text
    async with ws_connect(f"{server.url}/ws?token={token(server.config)}") as ws:
        assert json.loads(await ws.get_message())["type"] == "connected"  # still serving
    broken[0] = False
    with trio.fail_after(5):
        await signals.recovered.wait()
    assert await readyz(server) == (200, {"code": 0, "message": "success", "data": {"status": "ready"}})


async def test_a_full_disk_holds_the_acks_back_and_readyz_names_the_journal_until_it_is_freed(
    live_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await live_server(storage__fsync="always", activation_codes=[{"code": "DISK0001", "group_id": 1}])
    signals = Signals(server, monkeypatch)
    full = [True]

    def write_fd(fd: int, data: memoryview) -> int:
        if full[0]:
            os.write(fd, data[:7])  # a torn line, then nothing more
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    monkeypatch.setattr(server.storage, "_write_fd", write_fd)
    async with ws_connect(f"{server.url}/ws?activation_code=DISK0001") as desk:
        await desk.get_message()
        await desk.send_message(json.dumps({"type": "sync_line_accounts", "data": [{"line_account_id": "a1"}]}))
        with trio.fail_after(5):
            await signals.failed.wait()
        status, body = await readyz(server)
        assert status == 503 and list(body["failing"]) == ["storage.journal"]
        assert "No space left on device" in body["failing"]["storage.journal"]
        with trio.move_on_after(0.3):  # not acknowledged: it is not durable
            raise AssertionError(f"acknowledged before durable: {await desk.get_message()}")
        full[0] = False
        with trio.fail_after(5):
            assert json.loads(await desk.get_message())["type"] == "sync_result"
            await signals.recovered.wait()
        assert (await readyz(server))[0] == 200
    lines = (server.storage.dir / "journal.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["t"] for line in lines][:1] == ["crm_accounts"]  # whole lines only


@pytest.fixture(autouse=True)
def _background_log_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsserver.background")
