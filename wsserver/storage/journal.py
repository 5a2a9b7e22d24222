"""File storage: `snapshot.json` plus an append-only `journal.jsonl` in one directory.

Layout: `journal.jsonl` holds one record per line, compact UTF-8 JSON with its
number as key `"n"`, each line newline-terminated. `snapshot.json` is
`{"version": 2, "n": upto, "written_at": <unix s>, "state": {...}}`; the
version is the format of the state and of the journal after it
(`core.migrate`). Format 1 is still read (`Loaded.version`); a journal
without a snapshot can only be format 1, because the server writes a
snapshot as soon as it starts on a new directory.

Invariants:

- One writer task (`run`, or `close` at shutdown) touches the files, one step at a
  time under `_io_lock`. The disk work that can wait on the disk (fsync,
  snapshots, and writes under "always") runs in a worker thread so the trio loop
  never waits on it; under "interval" and "never" a batch of lines is written
  in the loop itself (a write to the page cache, cheaper than the thread hop).
  Everything appended while a step runs goes into the next one.
- Group commit: each step writes all queued lines with one `write`, then (fsync
  "always") one `fsync`, and only then runs the durable callbacks with the
  step's last number. "interval" runs them after the write and fsyncs at most
  once per `fsync_interval` seconds; "never" does not fsync at all.
- Queue items leave the queue only after their step succeeded, so a step that is
  cancelled before its thread starts is simply done again.
- A snapshot request sits in the queue in order: when its step runs, every record
  `<= upto` is in the journal and none after. Its step writes a temp file,
  fsyncs it, renames it over `snapshot.json`, fsyncs the directory
  (`storage.snapshot_file`), and only then empties the journal. A crash between rename and truncation leaves journal
  lines `<= upto`, which `load` skips.
- A failed step never stops the storage: it is reported to its `Health`
  (`storage.journal`, `storage.snapshot`) and lines are retried after the
  backoff `Health.failed` gives; appends queue meanwhile and nothing is
  announced durable before it was written (and fsynced under "always").
  A failed write may have left part of a line: the next write first cuts the
  journal back to its size after the last successful one, so a torn line is
  only ever the *last* one (a crash mid-write); `load` drops and truncates it.
- A snapshot step that fails (the state is not JSON, a write error) is
  dropped, not retried: the journal keeps its records, and the next snapshot
  tries again.
  Any other unreadable line or snapshot stops `load` with a `StorageError` that
  names the file and place, and the files are left as they are.
- `load` reads the files with `storage.reader` (a clean journal in one pass,
  a damaged one line by line), with the cyclic GC paused while they are parsed.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final

import attrs
import trio

from wsserver._version import OLDEST_STATE_VERSION
from wsserver.storage.base import (
    FSYNC_MODES,
    DurableNotifier,
    Health,
    Loaded,
    RetryLog,
    StorageError,
    check_snapshot_request,
    encode_record,
    log,
    write_error,
)
from wsserver.storage.gcpause import gc_paused
from wsserver.storage.private import FILE_MODE, open_private, private_dir
from wsserver.storage.reader import SNAPSHOT_VERSION, read_journal, read_snapshot
from wsserver.storage.snapshot_file import sync_dir, write_snapshot

__all__ = ["JOURNAL_FILE", "SNAPSHOT_FILE", "SNAPSHOT_VERSION", "FileStorage"]

SNAPSHOT_FILE: Final = "snapshot.json"
JOURNAL_FILE: Final = "journal.jsonl"
FLUSH_TIMEOUT: Final = 10.0
"""How long the writer may keep flushing after it was cancelled."""


@attrs.frozen
class _Line:
    """One encoded journal line waiting to be written."""

    n: int
    data: bytes


@attrs.frozen
class _SnapshotRequest:
    """A snapshot waiting its turn in the queue."""

    state: dict[str, Any]
    upto: int


class FileStorage(DurableNotifier):
    """`Storage` in a directory: `snapshot.json` + `journal.jsonl` (see the module docstring).

    `fsync` is "always", "interval" or "never". `clock` gives the snapshot's
    `written_at` (unix seconds); `fsync_fd` is what fsyncs a file descriptor
    and `write_fd` what writes to one (`os.write`'s signature; tests inject
    counters and failures). `health` hears of failed and recovered steps
    (default: logged, retried every second). Call `load()` before anything else.
    """

    def __init__(
        self,
        dir: str | os.PathLike[str],
        fsync: str = "always",
        *,
        clock: Callable[[], float] = time.time,
        fsync_fd: Callable[[int], None] = os.fsync,
        write_fd: Callable[[int, memoryview], int] = os.write,
        fsync_interval: float = 1.0,
        health: Health | None = None,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_MODES)}, got {fsync!r}")
        super().__init__()
        self.dir = Path(dir)
        self.fsync = fsync
        self._clock = clock
        self._fsync_fd = fsync_fd
        self._write_fd = write_fd
        self._fsync_interval = fsync_interval
        self._health: Health = health if health is not None else RetryLog()
        self._snapshot_path = self.dir / SNAPSHOT_FILE
        self._journal_path = self.dir / JOURNAL_FILE
        self._temp_path = self.dir / (SNAPSHOT_FILE + ".tmp")
        self._next_n: int | None = None  # None until load()
        self._queue: deque[_Line | _SnapshotRequest] = deque()
        self._in_flight = 0  # queue items at the front that the current step is writing
        self._wake = trio.Event()
        self._io_lock = trio.Lock()
        # Our own thread slot: other users of to_thread can never starve the writer.
        self._disk = trio.CapacityLimiter(1)
        self._journal: BinaryIO | None = None  # opened by the first step that needs it
        self._journal_size = 0  # after the last successful write: a failed one is cut back to it
        self._cut_needed = False  # a write failed: cut the journal back before the next
        self._unsynced = False  # written but not yet fsynced ("interval")
        self._last_sync = -math.inf  # trio time of the last interval fsync
        self._failing: StorageError | None = None  # the last journal step failed
        self._closed = False
        self._running = False

    # -- start-up --------------------------------------------------------------

    def load(self) -> Loaded:
        """Read the snapshot and the journal after it; see `Storage.load`.

        Creates the directory and an empty journal when missing, owner-only
        (`storage.private`; files found wider are narrowed), and truncates a
        torn last journal line (with a warning) so that appends start clean.
        Afterwards `durable_upto` is the last loaded number.
        """
        if self._running:
            raise RuntimeError("load() while the writer is running")
        private_dir(self.dir, (self._snapshot_path, self._journal_path, self._temp_path))
        with gc_paused():  # everything parsed here stays alive: no collection can free any
            state, snapshot_n, version = read_snapshot(self._snapshot_path)
            scan = read_journal(self._journal_path, after=snapshot_n)
        if state is None and scan.records:
            version = OLDEST_STATE_VERSION  # only that format leaves a journal without a snapshot
        if scan.torn_at is not None:
            self._truncate_torn_tail(scan.torn_at)
        elif not self._journal_path.exists():
            self._journal_path.touch(mode=FILE_MODE)
            if self.fsync != "never":
                sync_dir(self.dir, self._fsync_fd)
        self._journal_size = self._journal_path.stat().st_size
        self._next_n = max(snapshot_n, scan.last_n) + 1
        self._durable_upto = self._next_n - 1  # what was read back is durable
        return Loaded(state=state, records=scan.records, next_n=self._next_n, version=version)

    def _truncate_torn_tail(self, size: int) -> None:
        try:
            with open(self._journal_path, "r+b") as file:
                file.truncate(size)
                if self.fsync != "never":
                    self._fsync_fd(file.fileno())
        except OSError as exc:
            raise write_error(self._journal_path, exc) from exc

    # -- the hub's side: never blocks ------------------------------------------

    def append(self, record: dict[str, Any]) -> int:
        """Number and queue one record; see `Storage.append`."""
        next_n = self._check_open()
        line = encode_record(next_n, record)
        self._next_n = next_n + 1
        self._queue.append(_Line(next_n, line))
        self._wake.set()
        return next_n

    def write_now(self) -> None:
        """Write the queued lines here and now under "interval" and "never" (a
        write to the page cache) when no disk step is running; see
        `Storage.write_now`. Under "always" the fsync decides: left to `run`.
        A failure is reported to `health` and left to the writer task to retry
        (it never reaches the caller); until that retry succeeds, this does
        nothing."""
        if self.fsync == "always" or self._io_lock.locked() or self._failing is not None:
            return
        lines = self._leading_lines()
        if lines:
            try:
                self._write_lines(b"".join(x.data for x in lines))
            except StorageError as exc:
                self._failing = exc
                self._health.failed("storage.journal", exc)
                self._wake.set()
                return
            self._lines_written(lines)

    def _leading_lines(self) -> list[_Line]:
        """The journal lines at the head of the queue, up to a snapshot request."""
        lines: list[_Line] = []
        for item in self._queue:
            if not isinstance(item, _Line):
                break
            lines.append(item)
        return lines

    def _lines_written(self, lines: list[_Line]) -> None:
        """`lines` (the head of the queue) are written: dequeue and announce them."""
        for _ in lines:
            self._queue.popleft()
        if self.fsync != "always":
            self._unsynced = True
        self._announce(lines[-1].n)

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Queue a snapshot after the records appended so far; see `Storage.request_snapshot`.

        A request still waiting behind nothing but another request replaces it:
        both are taken at the same `upto`.
        """
        next_n = self._check_open()
        check_snapshot_request(state, upto, next_n - 1)
        request = _SnapshotRequest(state, upto)
        if len(self._queue) > self._in_flight and isinstance(self._queue[-1], _SnapshotRequest):
            self._queue[-1] = request
        else:
            self._queue.append(request)
        self._wake.set()

    def _check_open(self) -> int:
        if self._closed:
            raise trio.ClosedResourceError("storage is closed")
        if self._next_n is None:
            raise RuntimeError("call load() before using the storage")
        return self._next_n

    # -- the writer ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task; see `Storage.run`.

        A journal step that fails is reported to `health` and retried after the
        backoff it gives; the queue waits meanwhile.
        """
        if self._next_n is None:
            raise RuntimeError("call load() before run()")
        if self._running:
            raise RuntimeError("the writer is already running")
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wait_for_work()
                try:
                    async with self._io_lock:
                        await self._drain()
                        if self._sync_due():
                            await self._sync()
                except StorageError as exc:
                    self._failing = exc
                    await trio.sleep(self._health.failed("storage.journal", exc))
                    continue
                if self._failing is not None:
                    self._failing = None
                    self._health.recovered("storage.journal")
        except trio.Cancelled:
            with trio.move_on_after(FLUSH_TIMEOUT, shield=True):
                async with self._io_lock:
                    await self._drain()
                    await self._sync()
            raise
        finally:
            self._running = False
            if not self._io_lock.locked():  # else close() is using the file
                self._close_journal()

    async def close(self, final_state: dict[str, Any] | None = None, upto: int = 0) -> None:
        """Write what is queued, then the final snapshot if given (which empties the
        journal), fsync, and close the file. Appends are refused from now on.

        Callers at shutdown run it shielded; it takes as long as the disk does.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        if final_state is not None:
            self.request_snapshot(final_state, upto)
        self._closed = True
        async with self._io_lock:
            try:
                await self._drain()
                await self._sync()
            finally:
                self._close_journal()

    async def _wait_for_work(self) -> None:
        """Return when the queue has items or an interval fsync is due; no polling."""
        while True:
            self._wake = trio.Event()
            if self._queue or self._sync_due():
                return
            if self.fsync == "interval" and self._unsynced:
                with trio.move_on_at(self._last_sync + self._fsync_interval):
                    await self._wake.wait()
            else:
                await self._wake.wait()

    def _sync_due(self) -> bool:
        return (
            self.fsync == "interval"
            and self._unsynced
            and trio.current_time() >= self._last_sync + self._fsync_interval
        )

    async def _drain(self) -> None:
        """Write the queue step by step: runs of lines as one batch, snapshots alone.
        Raises the `StorageError` of a failed batch of lines (they stay queued)."""
        while self._queue:
            head = self._queue[0]
            try:
                if isinstance(head, _SnapshotRequest):
                    self._in_flight = 1
                    try:
                        await self._in_thread(self._write_snapshot, head)
                    except StorageError as exc:  # dropped: the journal keeps the records
                        self._health.failed("storage.snapshot", exc)
                    else:
                        self._health.recovered("storage.snapshot")
                    self._queue.popleft()
                else:
                    lines = self._leading_lines()
                    self._in_flight = len(lines)
                    data = b"".join(x.data for x in lines)
                    if self.fsync == "always":
                        await self._in_thread(self._write_lines, data)
                    else:
                        # Without an fsync the write only reaches the page cache:
                        # cheaper than a hop to a worker thread and back.
                        self._write_lines(data)
                    self._lines_written(lines)
            finally:
                self._in_flight = 0

    async def _sync(self) -> None:
        """fsync the journal now if "interval" left writes unsynced."""
        if self._unsynced and self.fsync == "interval":
            await self._in_thread(self._sync_journal)
        self._unsynced = False
        self._last_sync = trio.current_time()

    async def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Run one disk step in a worker thread."""
        await trio.to_thread.run_sync(fn, *args, limiter=self._disk)

    # -- disk steps (worker thread) --------------------------------------------

    def _open_journal(self) -> BinaryIO:
        if self._journal is None:
            # unbuffered: a failed write leaves nothing behind in a buffer to be
            # written later, after the cut (`_write_lines`)
            self._journal = open(self._journal_path, "ab", buffering=0, opener=open_private)
        return self._journal

    def _close_journal(self) -> None:
        if self._journal is not None:
            journal, self._journal = self._journal, None
            try:
                journal.close()
            except OSError as exc:
                log.warning("closing %s failed: %s", self._journal_path, exc)

    def _write_lines(self, data: bytes) -> None:
        """Append one batch of lines; fsync it when the mode is "always".

        After a failed write (or fsync) the journal is first cut back to its
        size after the last good one: a partial batch never stays in the
        middle of the journal, and the batch, still queued, is written whole.
        """
        try:
            journal = self._open_journal()
            fd = journal.fileno()
            if self._cut_needed:
                journal.truncate(self._journal_size)
                self._cut_needed = False
            self._cut_needed = True  # until the batch is written (and fsynced)
            view = memoryview(data)
            while view:
                written = self._write_fd(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[written:]
            if self.fsync == "always":
                self._fsync_fd(fd)
        except OSError as exc:
            raise write_error(self._journal_path, exc) from exc
        self._cut_needed = False
        self._journal_size += len(data)

    def _sync_journal(self) -> None:
        try:
            self._fsync_fd(self._open_journal().fileno())
        except OSError as exc:
            raise write_error(self._journal_path, exc) from exc

    def _write_snapshot(self, request: _SnapshotRequest) -> None:
        """Replace `snapshot.json` atomically (`storage.snapshot_file`), then
        empty the journal it covers.

        A state that is not JSON raises `StorageError` like a write error does:
        the journal keeps the records, so nothing is lost, only the snapshot is
        not taken.
        """
        started = time.monotonic()
        sync = self.fsync != "never"
        size = write_snapshot(
            self.dir,
            self._snapshot_path,
            self._temp_path,
            request.state,
            request.upto,
            self._clock(),
            sync=sync,
            fsync_fd=self._fsync_fd,
        )
        try:
            journal = self._open_journal()
            journal.truncate(0)
            self._journal_size, self._cut_needed = 0, False
            if sync:
                self._fsync_fd(journal.fileno())
        except OSError as exc:
            raise write_error(self._journal_path, exc) from exc
        log.debug(
            "snapshot at n=%d: %d bytes in %.3f s",
            request.upto,
            size,
            time.monotonic() - started,
        )
