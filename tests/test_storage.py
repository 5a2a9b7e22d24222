"""Storage: the journal + snapshot files, group commit, crash safety, and MemoryStorage.

Real files in `tmp_path`; fsyncs are counted through the injectable `fsync_fd`.
"""

from __future__ import annotations

import datetime
import enum
import errno
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsserver.storage
from wsserver.storage import FileStorage, Loaded, MemoryStorage, Storage, StorageError
from wsserver.storage.base import encode_record, json_chunks
from wsserver.storage.journal import SNAPSHOT_VERSION

# -- helpers -----------------------------------------------------------------------


class Durable:
    """Collects the numbers passed to a storage's durable callbacks."""

    def __init__(self, storage: Storage) -> None:
        self.seen: list[int] = []
        self._event = trio.Event()
        storage.on_durable(self._on_durable)

    def _on_durable(self, n: int) -> None:
        self.seen.append(n)
        self._event.set()

    async def wait_for(self, n: int) -> None:
        """Return once the records up to `n` were announced durable."""
        while not self.seen or self.seen[-1] < n:
            self._event = trio.Event()
            await self._event.wait()


class FsyncCounter:
    """An `fsync_fd` that really fsyncs, and counts; it also notes how far the
    storage had announced durability at each call."""

    def __init__(self) -> None:
        self.calls = 0
        self.storage: FileStorage | None = None
        self.durable_at_call: list[int] = []

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.storage is not None:
            self.durable_at_call.append(self.storage.durable_upto)
        os.fsync(fd)


def open_storage(path: Path, fsync: str = "always", **kwargs: Any) -> tuple[FileStorage, Loaded]:
    storage = FileStorage(path, fsync, **kwargs)
    return storage, storage.load()


@asynccontextmanager
async def running(storage: Storage) -> AsyncIterator[None]:
    """The storage's writer task for the duration of the block (cancelled at the end)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        yield
        nursery.cancel_scope.cancel()


def journal_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "journal.jsonl").read_bytes().splitlines()]


# -- the interface -----------------------------------------------------------------


def test_public_api_is_the_storage_interface_and_its_implementations() -> None:
    assert set(wsserver.storage.__all__) == {
        "FSYNC_MODES",
        "FileStorage",
        "Loaded",
        "MemoryStorage",
        "Storage",
        "StorageError",
    }
    assert isinstance(FileStorage("unused"), Storage)
    assert isinstance(MemoryStorage(), Storage)


# -- round trip and group commit ---------------------------------------------------


async def test_appended_records_become_durable_and_reload_in_order_with_their_numbers(
    tmp_path: Path,
) -> None:
    storage, loaded = open_storage(tmp_path / "data")
    assert loaded == Loaded(state=None, records=[], next_n=1)
    durable = Durable(storage)
    async with running(storage):
        numbers = [storage.append({"t": "msg", "text": f"hello {i} ✓"}) for i in range(3)]
        await durable.wait_for(3)
        numbers.append(storage.append({"t": "status", "k": [1, 2]}))
        await durable.wait_for(4)
    assert numbers == [1, 2, 3, 4]
    assert storage.durable_upto == 4
    raw = (tmp_path / "data" / "journal.jsonl").read_bytes()
    assert raw.splitlines()[0] == '{"n":1,"t":"msg","text":"hello 0 ✓"}'.encode()
    assert raw.endswith(b"\n")

    again, loaded = open_storage(tmp_path / "data")
    assert loaded.state is None
    assert loaded.records == [
        {"n": 1, "t": "msg", "text": "hello 0 ✓"},
        {"n": 2, "t": "msg", "text": "hello 1 ✓"},
        {"n": 3, "t": "msg", "text": "hello 2 ✓"},
        {"n": 4, "t": "status", "k": [1, 2]},
    ]
    assert loaded.next_n == 5
    assert again.durable_upto == 4  # what was loaded is durable
    async with running(again):
        assert again.append({"t": "msg"}) == 5


async def test_appends_queued_before_the_writer_runs_go_out_in_one_write_and_one_fsync(
    tmp_path: Path,
) -> None:
    fsyncs = FsyncCounter()
    storage, _ = open_storage(tmp_path, fsync_fd=fsyncs)
    fsyncs.calls = 0
    durable = Durable(storage)
    for i in range(100):
        storage.append({"i": i})
    assert storage.durable_upto == 0  # append never writes
    async with running(storage):
        await durable.wait_for(100)
    assert fsyncs.calls == 1
    assert durable.seen == [100]
    assert [r["i"] for r in journal_lines(tmp_path)] == list(range(100))


async def test_durable_callback_runs_only_after_the_batch_is_written_and_fsynced(
    tmp_path: Path,
) -> None:
    in_fsync = threading.Event()
    release = threading.Event()
    seen_in_file: list[int] = []
    armed = False

    def slow_fsync(fd: int) -> None:
        if not armed:  # load() fsyncs the directory
            return
        seen_in_file.append(len((tmp_path / "journal.jsonl").read_bytes().splitlines()))
        in_fsync.set()
        release.wait(10)
        os.fsync(fd)

    storage, _ = open_storage(tmp_path, fsync_fd=slow_fsync)
    armed = True
    durable = Durable(storage)
    async with running(storage):
        for i in range(3):
            storage.append({"i": i})
        await trio.to_thread.run_sync(in_fsync.wait, 10)
        # The batch is written and being fsynced: not yet durable.
        assert seen_in_file == [3]
        assert (durable.seen, storage.durable_upto) == ([], 0)
        # Appends during the fsync wait for the next batch.
        storage.append({"i": 3})
        storage.append({"i": 4})
        release.set()
        await durable.wait_for(5)
    assert durable.seen == [3, 5]
    assert seen_in_file == [3, 5]


async def test_cancelled_writer_flushes_what_was_queued(tmp_path: Path) -> None:
    storage, _ = open_storage(tmp_path)
    durable = Durable(storage)
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        for i in range(10):
            storage.append({"i": i})
        nursery.cancel_scope.cancel()
    assert durable.seen == [10]
    _, loaded = open_storage(tmp_path)
    assert [r["n"] for r in loaded.records] == list(range(1, 11))


# -- snapshots ---------------------------------------------------------------------


async def test_snapshot_then_more_records_reload_as_snapshot_state_plus_later_records(
    tmp_path: Path,
) -> None:
    storage, _ = open_storage(tmp_path, clock=lambda: 1700000000.5)
    durable = Durable(storage)
    async with running(storage):
        for i in range(3):
            storage.append({"i": i})
        storage.request_snapshot({"total": 3}, 3)
        storage.append({"i": 3})
        storage.append({"i": 4})
        await durable.wait_for(5)
    snapshot = json.loads((tmp_path / "snapshot.json").read_bytes())
    assert snapshot == {"version": 2, "n": 3, "written_at": 1700000000.5, "state": {"total": 3}}
    assert [r["n"] for r in journal_lines(tmp_path)] == [4, 5]

    _, loaded = open_storage(tmp_path)
    assert loaded == Loaded(
        state={"total": 3}, records=[{"n": 4, "i": 3}, {"n": 5, "i": 4}], next_n=6
    )


async def test_close_writes_the_final_snapshot_and_empties_the_journal(tmp_path: Path) -> None:
    storage, _ = open_storage(tmp_path)
    durable = Durable(storage)
    for i in range(3):
        storage.append({"i": i})
    await storage.close({"total": 3}, 3)
    assert durable.seen == [3]
    assert (tmp_path / "journal.jsonl").read_bytes() == b""
    assert json.loads((tmp_path / "snapshot.json").read_bytes())["n"] == 3
    with pytest.raises(trio.ClosedResourceError):
        storage.append({"i": 3})

    _, loaded = open_storage(tmp_path)
    assert loaded == Loaded(state={"total": 3}, records=[], next_n=4)


async def test_close_while_the_writer_runs_keeps_every_record(tmp_path: Path) -> None:
    storage, _ = open_storage(tmp_path)
    async with running(storage):
        for i in range(50):
            storage.append({"i": i})
            if i % 7 == 0:
                await trio.sleep(0)
        await storage.close()
    _, loaded = open_storage(tmp_path)
    assert [r["i"] for r in loaded.records] == list(range(50))


async def test_crash_between_snapshot_rename_and_truncate_reloads_without_duplicates(
    tmp_path: Path,
) -> None:
    (tmp_path / "snapshot.json").write_text(
        json.dumps({"version": 2, "n": 3, "written_at": 0, "state": {"total": 3}})
    )
    (tmp_path / "journal.jsonl").write_text(
        "".join(json.dumps({"n": n, "i": n}) + "\n" for n in range(1, 6))
    )
    storage, loaded = open_storage(tmp_path)
    assert loaded == Loaded(
        state={"total": 3}, records=[{"n": 4, "i": 4}, {"n": 5, "i": 5}], next_n=6
    )
    async with running(storage):
        assert storage.append({"i": 6}) == 6
    _, loaded = open_storage(tmp_path)
    assert [r["n"] for r in loaded.records] == [4, 5, 6]


# -- damaged files -----------------------------------------------------------------

GOOD = b'{"n":1,"i":1}\n{"n":2,"i":2}\n'


@pytest.mark.parametrize(
    "torn",
    [b'{"n":3,"i":3}', b'{"n":3,"i', b'{"n":3,"i\n', b"\x00\x00\x00\x00"],
    ids=["no-newline", "cut-mid-record", "bad-json", "zeros"],
)
async def test_torn_last_journal_line_is_dropped_with_a_warning_and_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, torn: bytes
) -> None:
    (tmp_path / "journal.jsonl").write_bytes(GOOD + torn)
    with caplog.at_level(logging.WARNING, logger="wsserver.storage"):
        storage, loaded = open_storage(tmp_path)
    assert [r["n"] for r in loaded.records] == [1, 2]
    assert loaded.next_n == 3
    assert any("journal.jsonl line 3" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "journal.jsonl").read_bytes() == GOOD
    async with running(storage):
        assert storage.append({"i": 3}) == 3
    _, loaded = open_storage(tmp_path)
    assert [r["n"] for r in loaded.records] == [1, 2, 3]


@pytest.mark.parametrize(
    ("middle", "problem"),
    [
        (b'{"n":2,"i\n', "invalid JSON"),
        (b"[2]\n", "not a record"),
        (b'{"i":2}\n', "record number"),
        (b'{"n":1,"i":2}\n', "does not follow 1"),
    ],
    ids=["bad-json", "not-an-object", "no-number", "number-repeats"],
)
def test_bad_journal_line_before_the_end_stops_load_naming_the_line_and_leaves_the_file(
    tmp_path: Path, middle: bytes, problem: str
) -> None:
    content = b'{"n":1,"i":1}\n' + middle + b'{"n":3,"i":3}\n'
    (tmp_path / "journal.jsonl").write_bytes(content)
    with pytest.raises(StorageError) as info:
        FileStorage(tmp_path).load()
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'journal.jsonl'} line 2: ")
    assert problem in message
    assert info.value.line == 2
    assert (tmp_path / "journal.jsonl").read_bytes() == content


def test_corrupt_snapshot_stops_load_naming_the_file_and_byte_and_leaves_it(
    tmp_path: Path,
) -> None:
    content = '{"version":1,"n":3,"written_at":0,"state":{"café":1,}}'.encode()
    (tmp_path / "snapshot.json").write_bytes(content)
    (tmp_path / "journal.jsonl").write_bytes(GOOD)
    with pytest.raises(StorageError) as info:
        FileStorage(tmp_path).load()
    with pytest.raises(json.JSONDecodeError) as stdlib:  # its wording and place vary by version
        json.loads(content.decode())
    offset = stdlib.value.pos + 1  # a byte offset: "é" is two bytes
    assert str(info.value).startswith(
        f"{tmp_path / 'snapshot.json'}: invalid JSON ({stdlib.value.msg}) at byte {offset}"
    )
    assert (info.value.path, info.value.offset) == (str(tmp_path / "snapshot.json"), offset)
    assert (tmp_path / "snapshot.json").read_bytes() == content
    assert (tmp_path / "journal.jsonl").read_bytes() == GOOD


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"version": 3, "n": 3, "state": {}}, "unknown snapshot version 3"),
        ({"version": 0, "n": 3, "state": {}}, "unknown snapshot version 0"),
        ({"n": 3, "state": {}}, "unknown snapshot version None"),
        ({"version": 1, "n": "3", "state": {}}, 'invalid record number "n"'),
        ({"version": 1, "n": 3, "state": []}, '"state" is not a JSON object'),
    ],
)
def test_snapshot_of_unknown_version_or_shape_stops_load(
    tmp_path: Path, document: dict[str, Any], problem: str
) -> None:
    content = json.dumps(document).encode()
    (tmp_path / "snapshot.json").write_bytes(content)
    with pytest.raises(StorageError, match=problem) as info:
        FileStorage(tmp_path).load()
    assert str(info.value).startswith(f"{tmp_path / 'snapshot.json'}: ")
    assert (tmp_path / "snapshot.json").read_bytes() == content


def test_missing_records_in_the_journal_are_loaded_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "journal.jsonl").write_bytes(b'{"n":1}\n{"n":4}\n')
    with caplog.at_level(logging.WARNING, logger="wsserver.storage"):
        _, loaded = open_storage(tmp_path)
    assert loaded.next_n == 5
    assert "records 2..3 are missing" in caplog.text


class Health:
    """A storage's `health` that records what it hears; retries after `delay`."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.failures: list[tuple[str, str]] = []
        self.recoveries: list[str] = []
        self._event = trio.Event()

    def failed(self, task: str, exc: BaseException) -> float:
        self.failures.append((task, str(exc)))
        self._event.set()
        return self.delay

    def recovered(self, task: str) -> None:
        self.recoveries.append(task)
        self._event.set()

    async def until(self, condition: Callable[[], bool]) -> None:
        with trio.fail_after(5):
            while not condition():
                self._event = trio.Event()
                await self._event.wait()


class FullDisk:
    """A `write_fd` that writes part of the first batch, then fails with ENOSPC
    until `freed` is set; then it writes for real (and counts)."""

    def __init__(self) -> None:
        self.freed = False
        self.half_written = False
        self.writes = 0

    def __call__(self, fd: int, data: memoryview) -> int:
        if self.freed:
            self.writes += 1
            return os.write(fd, data)
        if not self.half_written:
            self.half_written = True
            return os.write(fd, data[: len(data) // 2])  # a torn line...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full


@pytest.mark.parametrize("fsync", ["always", "never"])
async def test_a_failed_write_is_retried_and_leaves_no_torn_line_in_the_journal(
    tmp_path: Path, fsync: str
) -> None:
    health, disk = Health(), FullDisk()
    storage, _ = open_storage(tmp_path, fsync, write_fd=disk, health=health)
    durable = Durable(storage)
    async with running(storage):
        storage.append({"i": 1})
        storage.append({"i": 2})
        storage.write_now()  # "never": inline, and the writer task takes over the failure
        await health.until(lambda: len(health.failures) >= 2)  # reported, and retried
        assert health.failures[0] == (
            "storage.journal", f"{tmp_path / 'journal.jsonl'}: cannot write: No space left on device"
        )
        assert durable.seen == [] and storage.durable_upto == 0  # nothing announced
        storage.append({"i": 3})  # appends are not refused: they wait
        disk.freed = True
        await durable.wait_for(3)
        await health.until(lambda: health.recoveries == ["storage.journal"])
    assert [r["i"] for r in journal_lines(tmp_path)] == [1, 2, 3]  # each line whole, once
    assert [r["n"] for r in FileStorage(tmp_path).load().records] == [1, 2, 3]


async def test_a_failed_fsync_writes_the_batch_again_before_announcing_it(tmp_path: Path) -> None:
    health, failing = Health(), [True]

    def fsync_fd(fd: int) -> None:
        if failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    storage, _ = open_storage(tmp_path, fsync_fd=fsync_fd, health=health)
    durable = Durable(storage)
    async with running(storage):
        storage.append({"i": 1})
        await health.until(lambda: len(health.failures) >= 1)
        assert durable.seen == []
        failing[0] = False
        await durable.wait_for(1)
    assert [r["i"] for r in journal_lines(tmp_path)] == [1]


# -- fsync modes -------------------------------------------------------------------


async def test_interval_mode_acks_after_write_and_fsyncs_at_most_once_an_interval(
    tmp_path: Path,
) -> None:
    # Real time, with a short interval: the autojump clock would jump past
    # deadlines while the writer waits for its disk thread.
    fsyncs = FsyncCounter()
    storage, _ = open_storage(tmp_path, "interval", fsync_fd=fsyncs, fsync_interval=0.05)
    fsyncs.calls, fsyncs.storage = 0, storage
    durable = Durable(storage)
    async with running(storage):
        start = trio.current_time()
        for i in range(30):
            await durable.wait_for(storage.append({"i": i}))
            await trio.sleep(0.01)
        elapsed = trio.current_time() - start
        assert 2 <= fsyncs.calls <= elapsed / 0.05 + 1
        # Acked after the write, before its fsync.
        assert fsyncs.durable_at_call[0] >= 1
        # When writes stop, the timer still fsyncs the last of them...
        calls = fsyncs.calls
        await durable.wait_for(storage.append({"i": 30}))
        await trio.sleep(0.2)
        assert fsyncs.calls > calls
        # ...and then, with nothing unsynced, there is no timer and no fsync.
        calls = fsyncs.calls
        await trio.sleep(0.2)
        assert fsyncs.calls == calls
    _, loaded = open_storage(tmp_path)
    assert len(loaded.records) == 31


async def test_always_mode_acks_only_after_the_fsync(tmp_path: Path) -> None:
    fsyncs = FsyncCounter()
    storage, _ = open_storage(tmp_path, fsync_fd=fsyncs)
    fsyncs.storage = storage
    durable = Durable(storage)
    async with running(storage):
        await durable.wait_for(storage.append({"i": 1}))
    assert fsyncs.durable_at_call == [0]


async def test_never_mode_does_not_fsync_and_still_reloads(tmp_path: Path) -> None:
    fsyncs = FsyncCounter()
    storage, _ = open_storage(tmp_path / "new", "never", fsync_fd=fsyncs)
    durable = Durable(storage)
    async with running(storage):
        for i in range(5):
            storage.append({"i": i})
        await durable.wait_for(5)
        storage.request_snapshot({"total": 5}, 5)
        storage.append({"i": 5})
        await durable.wait_for(6)
    await storage.close({"total": 6}, 6)
    assert fsyncs.calls == 0
    _, loaded = open_storage(tmp_path / "new", "never")
    assert loaded == Loaded(state={"total": 6}, records=[], next_n=7)


# -- misuse ------------------------------------------------------------------------


async def test_bad_records_and_snapshots_fail_in_the_caller_and_use_no_number(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path)
    with pytest.raises(RuntimeError, match="load"):
        storage.append({"i": 1})
    storage.load()
    with pytest.raises(ValueError, match='"n"'):
        storage.append({"n": 7})
    with pytest.raises(TypeError):
        storage.append({"s": {1, 2}})
    with pytest.raises(ValueError):
        storage.append({"x": float("nan")})
    assert storage.append({"i": 1}) == 1
    with pytest.raises(ValueError, match="upto=0"):
        storage.request_snapshot({}, 0)
    with pytest.raises(TypeError):
        storage.request_snapshot([], 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fsync"):
        FileStorage(tmp_path, "sometimes")
    await storage.close()


# -- MemoryStorage -----------------------------------------------------------------


async def test_memory_storage_is_durable_at_once_and_reloads_like_files() -> None:
    storage = MemoryStorage()
    assert storage.load() == Loaded(state=None, records=[], next_n=1)
    durable = Durable(storage)
    async with running(storage):
        assert storage.append({"t": "msg", "to": {1: "a"}}) == 1
        assert storage.durable_upto == 1
        storage.append({"t": "msg"})
        await durable.wait_for(2)
        storage.request_snapshot({"total": 2}, 2)
        storage.append({"t": "status"})
        await durable.wait_for(3)
    assert durable.seen == [2, 3]
    assert storage.load() == Loaded(state={"total": 2}, records=[{"n": 3, "t": "status"}], next_n=4)
    await storage.close({"total": 3}, 3)
    assert storage.load() == Loaded(state={"total": 3}, records=[], next_n=4)
    with pytest.raises(trio.ClosedResourceError):
        storage.append({"t": "msg"})


# -- a model: any sequence of appends, snapshots and restarts ----------------------

json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
)
records = st.dictionaries(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=4).filter(lambda k: k != "n"),
    json_values,
    max_size=3,
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), records),
        st.tuples(st.just("snapshot"), st.none()),
        st.tuples(st.just("settle"), st.none()),
        st.tuples(st.just("restart"), st.sampled_from(["close", "cancel"])),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps)
def test_load_returns_the_last_snapshot_and_exactly_the_records_after_it(
    steps: list[tuple[str, Any]],
) -> None:
    async def scenario(path: str) -> None:
        model_state: dict[str, Any] | None = None
        model_records: list[dict[str, Any]] = []
        all_records: list[dict[str, Any]] = []
        storage = FileStorage(path, "always", fsync_fd=lambda fd: None)
        assert storage.load() == Loaded(state=None, records=[], next_n=1)

        async def writer(
            storage: FileStorage,
            scope: trio.CancelScope,
            done: trio.Event,
            task_status: Any = trio.TASK_STATUS_IGNORED,
        ) -> None:
            with scope:
                await storage.run(task_status=task_status)
            done.set()

        async with trio.open_nursery() as nursery:
            scope, done = trio.CancelScope(), trio.Event()
            await nursery.start(writer, storage, scope, done)
            for kind, arg in steps:
                if kind == "append":
                    n = storage.append(arg)
                    model_records.append({"n": n, **json.loads(json.dumps(arg))})
                    all_records.append(model_records[-1])
                elif kind == "snapshot":
                    model_state = {"records": list(all_records)}
                    storage.request_snapshot(json.loads(json.dumps(model_state)), len(all_records))
                    model_records = []
                elif kind == "settle":
                    await trio.sleep(0.001)
                else:
                    if arg == "close":
                        await storage.close()
                    scope.cancel()
                    await done.wait()  # the cancelled writer has flushed
                    storage = FileStorage(path, "always", fsync_fd=lambda fd: None)
                    loaded = storage.load()
                    assert loaded == expected(model_state, model_records, len(all_records) + 1)
                    scope, done = trio.CancelScope(), trio.Event()
                    await nursery.start(writer, storage, scope, done)
            scope.cancel()
        await storage.close()
        loaded = FileStorage(path).load()
        assert loaded == expected(model_state, model_records, len(all_records) + 1)

    def expected(state: Any, records: list[dict[str, Any]], next_n: int) -> Loaded:
        # a journal without a snapshot can only be the first format's
        version = 1 if state is None and records else SNAPSHOT_VERSION
        return Loaded(state, records, next_n, version)

    with tempfile.TemporaryDirectory() as path:
        trio.run(scenario, path)


# -- a real crash ------------------------------------------------------------------

CRASHING_WRITER = """
import random, sys
import trio
from wsserver.storage import FileStorage

async def main(path):
    storage = FileStorage(path, "always")
    loaded = storage.load()
    progress = [trio.Event()]

    def durable(n):
        sys.stdout.write(f"{n}\\n")
        sys.stdout.flush()
        progress[0].set()

    storage.on_durable(durable)
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        print("ready", loaded.next_n, flush=True)
        while True:
            for _ in range(random.randint(1, 30)):
                n = storage.append({"pad": "é" * random.randint(0, 300)})
            if random.random() < 0.05:
                storage.request_snapshot({"upto": n}, n)
            if n - storage.durable_upto > 300:
                progress[0] = trio.Event()
                await progress[0].wait()
            else:
                await trio.sleep(0)

trio.run(main, sys.argv[1])
"""


async def test_kill_9_never_loses_a_record_announced_durable(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(CRASHING_WRITER)
    data = tmp_path / "data"
    rng = random.Random()
    top = 0
    total_printed = 0
    for round_no in range(5):
        out, err = bytearray(), bytearray()
        ready = trio.Event()

        async def pump(stream: Any, buffer: bytearray, ready: trio.Event) -> None:
            while chunk := await stream.receive_some(65536):
                buffer.extend(chunk)
                if b"\n" in buffer:
                    ready.set()
            ready.set()

        proc = await trio.lowlevel.open_process(
            [sys.executable, str(script), str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        delay = rng.uniform(0.05, 0.3)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, proc.stdout, out, ready)
                nursery.start_soon(pump, proc.stderr, err, trio.Event())
                with trio.fail_after(30):
                    await ready.wait()
                await trio.sleep(delay)
                proc.kill()
                await proc.wait()
        finally:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
                for stream in (proc.stdout, proc.stderr):
                    assert stream is not None
                    await stream.aclose()
        lines = out.decode().split("\n")
        context = f"round {round_no}, delay {delay:.3f}: {err.decode()[-2000:]}"
        assert lines[0] == f"ready {top + 1}", context
        printed = [int(x) for x in lines[1:-1]]  # the last piece has no newline yet
        total_printed += len(printed)

        loaded = FileStorage(data).load()
        base = loaded.state["upto"] if loaded.state else 0
        numbers = [r["n"] for r in loaded.records]
        assert numbers == list(range(base + 1, base + 1 + len(numbers))), context
        top = numbers[-1] if numbers else base
        assert loaded.next_n == top + 1
        assert max(printed, default=0) <= top, context
    assert total_printed > 0


@pytest.mark.parametrize("fsync", ["interval", "never"])
async def test_write_now_makes_records_durable_at_once_without_fsync(tmp_path: Path, fsync: str) -> None:
    storage, _ = open_storage(tmp_path, fsync)
    seen: list[int] = []
    storage.on_durable(seen.append)
    for i in range(3):
        storage.append({"t": "x", "i": i})
    storage.write_now()  # no writer task involved
    assert storage.durable_upto == 3 and seen == [3]
    assert [r["i"] for r in journal_lines(tmp_path)] == [0, 1, 2]
    storage.write_now()  # nothing queued: nothing happens
    assert seen == [3]
    async with running(storage):
        storage.append({"t": "x", "i": 3})
        storage.write_now()  # at once, or by the writer if it holds the file (an fsync)
        with trio.fail_after(5):
            while storage.durable_upto < 4:
                await trio.sleep(0.01)
    assert [r["i"] for r in journal_lines(tmp_path)] == [0, 1, 2, 3]
    assert FileStorage(tmp_path, fsync).load().next_n == 5


async def test_write_now_leaves_fsync_always_to_the_writer(tmp_path: Path) -> None:
    storage, _ = open_storage(tmp_path, "always")
    storage.append({"t": "x"})
    storage.write_now()
    assert storage.durable_upto == 0  # the fsync belongs in the writer's thread
    async with running(storage):
        with trio.fail_after(5):
            while storage.durable_upto < 1:
                await trio.sleep(0.01)


async def test_write_now_of_memory_storage_announces() -> None:
    storage = MemoryStorage()
    storage.load()
    seen: list[int] = []
    storage.on_durable(seen.append)
    storage.append({"t": "x"})
    storage.write_now()
    assert seen == [1]


# -- snapshots in pieces (json_chunks) ---------------------------------------------------

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_json_value = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=40)
    | st.dictionaries(st.text(max_size=6), inner, max_size=40)
    | st.dictionaries(st.integers(-5, 5) | st.booleans() | st.none(), inner, max_size=20),
    max_leaves=200,
)


# journal lines (encode_record) use the same leaves


class _Str(str):
    pass


class _Level(enum.IntEnum):
    HIGH = 2


_odd_leaf = st.sampled_from(
    [
        float("nan"), float("inf"), -float("inf"), 2**64, -(2**63) - 1, "\ud800", _Str("s"),
        _Level.HIGH, (1, "a"), datetime.datetime(2026, 1, 2), uuid.UUID(int=7), {1, 2}, b"x",
    ]
)  # fmt: skip
_line_value = st.recursive(
    _json_leaf | _odd_leaf,
    lambda inner: st.lists(inner, max_size=6)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=4) | st.integers(-3, 3) | st.none(), inner, max_size=6),
    max_leaves=30,
)


def _stdlib_line(n: int, record: dict[str, Any]) -> bytes:
    """What encode_record gives for what orjson does not write: the stdlib's
    text, a lone surrogate as its JSON escape (so the line stays UTF-8)."""
    text = json.dumps({"n": n, **record}, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "backslashreplace") + b"\n"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(record=st.dictionaries(st.text(max_size=4).filter(lambda k: k != "n"), _line_value, max_size=6))
def test_a_journal_line_reads_back_as_the_stdlibs_or_fails_alike(record: dict[str, Any]) -> None:
    """orjson writes the plain records; whatever it would write differently from
    the stdlib (NaN, integers beyond 64 bits, keys that are not str, lone
    surrogates, subclasses, datetime, UUID) is still the stdlib's to encode or
    refuse (a lone surrogate is written as its escape and reads back the same)."""
    try:
        expected = _stdlib_line(9, record)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            encode_record(9, record)
        return
    line = encode_record(9, record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == json.loads(expected)


def test_plain_records_take_orjson_and_the_line_keeps_no_spare_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tracemalloc

    import wsserver.storage.base as base

    record = {"t": "msg", "id": 1, "to": {"user_id": 2, "name": None}, "x": [1.5, True], "s": "é"}

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("the stdlib encoder was used for a plain record")

    monkeypatch.setattr(base.json, "dumps", refuse)
    assert json.loads(encode_record(3, record)) == {"n": 3, **record}
    with pytest.raises(AssertionError, match="stdlib"):
        encode_record(3, {"big": 2**70})  # beyond orjson: the stdlib's turn
    monkeypatch.undo()
    tracemalloc.start()
    try:
        lines = [encode_record(i, record) for i in range(2000)]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(lines[0]) < 120
    assert held / len(lines) < 400  # orjson's own bytes would hold ~4 KiB each


def test_deep_nesting_is_encoded_as_before() -> None:
    """The walk that picks orjson recurses in Python and gives up sooner than the
    stdlib's C encoder; such a record still gets the stdlib's line."""
    value: Any = 1
    for _ in range(900):
        value = [value]
    record = {"x": value, "big": 2**70}
    assert encode_record(4, {"x": value}) == _stdlib_line(4, {"x": value})
    assert json.loads(encode_record(4, record)) == json.loads(_stdlib_line(4, record))


def test_non_finite_floats_anywhere_in_a_record_are_refused() -> None:
    for bad in ({"x": float("nan")}, {"x": [1, (2, float("inf"))]}, {"x": {"y": -float("inf")}}):
        with pytest.raises(ValueError):
            encode_record(1, bad)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(value=_json_value, chunk=st.integers(1, 7))
def test_a_snapshot_in_pieces_is_the_text_json_dumps_gives(value: Any, chunk: int) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert "".join(json_chunks(value, chunk)) == expected


def test_a_large_state_is_encoded_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `json.dumps` call covers at most one chunk of a long list or dict, so a
    worker thread encoding a big snapshot gives the GIL back between pieces."""
    import wsserver.storage.base as base

    sizes: list[int] = []
    real = json.dumps

    def counting(obj: Any, **kwargs: Any) -> str:
        sizes.append(len(obj) if isinstance(obj, list | dict) else 1)
        return real(obj, **kwargs)

    monkeypatch.setattr(base.json, "dumps", counting)
    state = {
        "messages": {"messages": [{"id": i, "text": "x"} for i in range(5000)], "next_id": 5001},
        "inbox": {f"k{i}": [i] for i in range(2500)},
    }
    text = "".join(json_chunks(state, 1000))
    monkeypatch.undo()
    assert json.loads(text) == state
    assert max(sizes) == 1000 and len(sizes) >= 5 + 3


def test_nan_in_a_piece_fails_like_json_dumps() -> None:
    with pytest.raises(ValueError):
        "".join(json_chunks({"a": [*range(40), float("nan")]}, 8))


async def test_a_state_that_is_not_json_skips_the_snapshot_and_keeps_the_journal(
    tmp_path: Path,
) -> None:
    health = Health()
    storage, _ = open_storage(tmp_path, health=health)
    durable = Durable(storage)
    async with running(storage):
        storage.append({"i": 1})
        storage.request_snapshot({"bad": [float("nan")] * 50}, 1)
        storage.append({"i": 2})
        await durable.wait_for(2)
        assert [task for task, _ in health.failures] == ["storage.snapshot"]
        assert "snapshot at n=1 skipped: the state is not JSON" in health.failures[0][1]
        assert not (tmp_path / "snapshot.json").exists()
        assert not (tmp_path / "snapshot.json.tmp").exists()
        assert [r["n"] for r in journal_lines(tmp_path)] == [1, 2]
        storage.request_snapshot({"deep": _nested(100_000)}, 2)  # deeper than the encoder goes
        storage.append({"i": 3})
        await durable.wait_for(3)
        assert [task for task, _ in health.failures] == ["storage.snapshot"] * 2
        assert [r["n"] for r in journal_lines(tmp_path)] == [1, 2, 3]
        storage.request_snapshot({"good": True}, 3)  # the next snapshot is taken
        await health.until(lambda: health.recoveries == ["storage.snapshot"])
    assert FileStorage(tmp_path).load().state == {"good": True}


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value
