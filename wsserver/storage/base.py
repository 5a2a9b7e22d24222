"""The storage interface: a numbered journal of records plus snapshots of the state.

The hub is event-sourced: every durable change is a JSON-able dict, a *record*,
that the hub applies in memory and hands to `Storage.append`. Replaying the last
snapshot and then the records after it through the same apply function rebuilds
the state. Storage never looks inside a record.

Invariants every implementation keeps:

- `append` numbers records 1, 2, 3, ... and the numbering continues after a
  restart (`Loaded.next_n`); a number is never reused.
- `append` and `request_snapshot` never block and never do I/O. They validate and
  encode at once, so a record that is not JSON fails in the caller, and later
  changes to the dict cannot reach the stored copy.
- What comes back is the JSON round trip (int keys become strings, tuples become
  lists), and every record carries its number as key `"n"`.
- Records and snapshot requests are written in the order they were made. A
  snapshot at `upto` reflects exactly the records with `n <= upto`, and `upto` is
  always the last appended number.
- Durable callbacks receive strictly increasing numbers, from the writer task
  (`run`, or `close` at shutdown), never from inside `append`.
- `load` returns the last snapshot and every record after it that was durable, in
  number order; a record whose durable callback ran is never lost. It reports
  the format they were written in (`Loaded.version`); an older format is
  migrated by the hub, which then snapshots before it appends anything.
- A failed write never stops the storage: it is reported to its `Health` and
  retried; records wait in order meanwhile, and only what was written is
  announced durable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import orjson
import trio

from wsserver._version import STATE_VERSION

__all__ = [
    "FSYNC_MODES",
    "Health",
    "Loaded",
    "MemoryStorage",
    "Storage",
    "StorageError",
    "encode_record",
    "json_chunks",
    "write_error",
]

log = logging.getLogger("wsserver.storage")

FSYNC_MODES = ("always", "interval", "never")
"""The values of `storage.fsync`."""

DurableCallback = Callable[[int], None]


class StorageError(Exception):
    """The journal or snapshot cannot be read or written.

    The message names the file and where: `"data/snapshot.json: invalid JSON at
    byte 1234"`, `"data/journal.jsonl line 17: invalid JSON"`. `path`, `line` and
    `offset` hold the same facts for code.
    """

    def __init__(
        self, message: str, *, path: str, line: int | None = None, offset: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.offset = offset


def write_error(path: Path, exc: OSError) -> StorageError:
    """The `StorageError` of a failed write of `path` (its open, write, fsync, rename)."""
    return StorageError(f"{path}: cannot write: {exc.strerror or exc}", path=str(path))


@attrs.frozen
class Loaded:
    """What `Storage.load` found: the snapshot state (None when there is none), the
    records after it in number order, the number the next `append` returns, and
    the format of the state and records (`_version.STATE_VERSION` when current)."""

    state: dict[str, Any] | None
    records: list[dict[str, Any]]
    next_n: int
    version: int = STATE_VERSION


@runtime_checkable
class Storage(Protocol):
    """Durable storage for the hub's records and snapshots (see the module invariants)."""

    def load(self) -> Loaded:
        """Read the snapshot and the journal after it; call once, before serving.

        Raises `StorageError` naming the file and the byte or line when they
        cannot be read; the files are then left untouched.
        """
        ...

    def append(self, record: dict[str, Any]) -> int:
        """Queue one record; returns its number. Never blocks, never does I/O.

        Raises TypeError/ValueError for a record that is not JSON or already has
        an `"n"` key, and `trio.ClosedResourceError` after `close`. A failing
        disk does not refuse appends: they wait until the writer gets through.
        """
        ...

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Queue a snapshot of `state` (detached, reflecting records `n <= upto`).

        `state` may share objects with the caller that the caller never changes
        in place (a snapshot view's stored messages); it is encoded with
        `json_chunks`. `upto` must be the number of the last appended record
        (ValueError otherwise).
        """
        ...

    def on_durable(self, callback: DurableCallback) -> None:
        """Call `callback(n)` whenever the records up to `n` become durable.

        It runs in the writer task and must not block; an exception in it is logged.
        """
        ...

    def write_now(self) -> None:
        """Make what was appended durable now if that cannot make the caller wait
        on the disk (no fsync due, no other disk step running); else leave it to
        `run`. Durable callbacks run as usual. Called by the server after each
        batch of hub commands, so that without fsync a batch's records are
        durable, and its announcements go out, in the same scheduler tick."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: runs until cancelled, then flushes what is queued."""
        ...

    async def close(self, final_state: dict[str, Any] | None = None, upto: int = 0) -> None:
        """Write what is queued, then a final snapshot of `final_state` if given."""
        ...

    @property
    def durable_upto(self) -> int:
        """The number of the last record known durable (0 before any)."""
        ...


class Health(Protocol):
    """Where a storage's writer reports its failures and recoveries
    (`ops.background.Background` in a server). `task` is `"storage.journal"`
    (lines and their fsync) or `"storage.snapshot"` (a snapshot file)."""

    def failed(self, task: str, exc: BaseException) -> float:
        """Log, count and mark one failure; the seconds to wait before retrying."""
        ...

    def recovered(self, task: str) -> None:
        """`task` succeeded again."""
        ...


class RetryLog:
    """The `Health` of a storage used on its own: failures are logged and
    retried every `delay` seconds."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay

    def failed(self, task: str, exc: BaseException) -> float:
        log.error("%s failed, retrying in %.1f s: %s", task, self.delay, exc)
        return self.delay

    def recovered(self, task: str) -> None:
        log.info("%s recovered", task)


_JSON_OPTIONS: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "allow_nan": False}
"""Records and snapshots: compact UTF-8 JSON that refuses NaN and infinities."""


def encode_record(n: int, record: Mapping[str, Any]) -> bytes:
    """One journal line: compact UTF-8 JSON of `record` with `"n"` first, and a newline.

    Raises TypeError/ValueError when `record` is not a JSON object or has an `"n"`.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"a record must be a dict, got {type(record).__name__}")
    if "n" in record:
        raise ValueError('a record must not carry "n": storage numbers it')
    line = {"n": n, **record}
    try:
        if _plain_json(line):
            # `+ b"\n"` also copies: orjson's own bytes keep its whole output buffer
            return orjson.dumps(line) + b"\n"
    except TypeError:  # integers beyond 64 bits, keys that are not str, lone surrogates
        pass
    except RecursionError:  # nesting deeper than the walk goes (the stdlib's C encoder goes deeper)
        pass
    # a lone surrogate (from a token, say) as its JSON escape: the line stays UTF-8
    return json.dumps(line, **_JSON_OPTIONS).encode("utf-8", "backslashreplace") + b"\n"


_JSON_SCALARS = frozenset({str, int, bool, type(None)})


def _plain_json(value: Any) -> bool:
    """Whether `value` is built of exactly dict, list, tuple, str, int, bool, None
    and finite floats: then orjson encodes it as the stdlib would, faster even
    with this check (docs/BENCHMARKS.md). Anything else (NaN, infinities, subclasses, types orjson
    knows and the stdlib refuses, such as datetime or UUID) goes to the stdlib,
    which decides."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is float:
        difference: float = value - value  # NaN and infinities give NaN
        return difference == 0.0
    if kind is dict:
        return all(map(_plain_json, value.values()))
    if kind is list or kind is tuple:
        return all(map(_plain_json, value))
    return False


JSON_CHUNK = 1000
"""Items of a large list or dict that `json_chunks` encodes with one `json.dumps`."""
_SPLIT_AT = 16  # containers this long or shorter are opened and their values encoded one by one
_OPEN_LEVELS = 8  # small dicts are opened this deep at most: the state's levels, never a client's nesting


def json_chunks(value: Any, chunk: int = JSON_CHUNK, _level: int = 0) -> Iterator[str]:
    """The text `json.dumps(value, ensure_ascii=False, separators=(",", ":"),
    allow_nan=False)` gives, in pieces.

    The stdlib's C encoder holds the GIL for the whole document: a snapshot of
    a million stored messages encoded in a worker thread would stop the trio
    thread for seconds. Here a list or dict longer than `_SPLIT_AT` items is
    encoded `chunk` items per `json.dumps` call, and a shorter dict with string
    keys (the state's upper levels, `_OPEN_LEVELS` at most: the recursion here
    never follows a client's nesting) is opened and each value encoded the same
    way, so between two pieces other threads get the GIL. Raises what
    `json.dumps` raises (TypeError, ValueError, RecursionError), at the piece
    that has it.

    A list whose class has a `json_item` function (a snapshot view's stored
    messages, `core.message_store.StoredMessages`) is encoded as the list of
    `json_item(x)` of its items.
    """
    kind = type(value)
    json_item = getattr(kind, "json_item", None)
    if json_item is not None and isinstance(value, list):  # items made JSON as they go
        yield from _in_groups("[]", value, chunk, lambda part: [json_item(x) for x in part])
    elif kind is list and len(value) > _SPLIT_AT:
        yield from _in_groups("[]", value, chunk, lambda part: part)
    elif kind is dict and len(value) > _SPLIT_AT:
        yield from _in_groups("{}", list(value.items()), chunk, dict)
    elif kind is dict and value and _level < _OPEN_LEVELS and all(type(k) is str for k in value):
        yield "{"
        for i, (key, member) in enumerate(value.items()):
            yield ("" if i == 0 else ",") + json.dumps(key, ensure_ascii=False) + ":"
            yield from json_chunks(member, chunk, _level + 1)
        yield "}"
    else:
        yield json.dumps(value, **_JSON_OPTIONS)


def _in_groups(brackets: str, seq: list[Any], chunk: int, as_json: Callable[[list[Any]], Any]) -> Iterator[str]:
    """`brackets` around the members of `seq`, encoded `chunk` at a time: each
    group is `as_json(group)` (a list, or a dict of items) encoded whole, its
    own brackets taken off."""
    yield brackets[0]
    for start in range(0, len(seq), chunk):
        inner = json.dumps(as_json(seq[start : start + chunk]), **_JSON_OPTIONS)[1:-1]
        yield inner if start == 0 else "," + inner
    yield brackets[1]


def check_snapshot_request(state: object, upto: int, last_n: int) -> None:
    """Refuse a snapshot that is not a dict or is not taken at the last appended record.

    A snapshot at an older `upto` would let the journal truncation that follows it
    drop the records after `upto`.
    """
    if not isinstance(state, dict):
        raise TypeError(f"a snapshot state must be a dict, got {type(state).__name__}")
    if upto != last_n:
        raise ValueError(f"snapshot upto={upto} is not the last appended record ({last_n})")


class DurableNotifier:
    """The callbacks registered with `on_durable` and the number last announced."""

    def __init__(self) -> None:
        self._callbacks: list[DurableCallback] = []
        self._durable_upto = 0

    @property
    def durable_upto(self) -> int:
        """The number of the last record known durable (0 before any)."""
        return self._durable_upto

    def on_durable(self, callback: DurableCallback) -> None:
        """Call `callback(n)` whenever the records up to `n` become durable."""
        self._callbacks.append(callback)

    def _announce(self, n: int) -> None:
        """Tell every callback that the records up to `n` are durable."""
        self._durable_upto = max(self._durable_upto, n)
        for callback in list(self._callbacks):
            try:
                callback(n)
            except Exception:
                log.exception("durable callback %r failed", callback)


class MemoryStorage(DurableNotifier):
    """Storage without files, for tests and for running without a data directory.

    Records are durable at once: `durable_upto` is the last appended number as
    soon as `append` returns. The durable callbacks still run from `run` (or
    `close`), like those of `FileStorage`. `load` on the same object returns
    what a restart would see; nothing survives the process.
    """

    def __init__(self) -> None:
        super().__init__()
        self._state: str | None = None  # the last snapshot's JSON text
        self._lines: list[bytes] = []
        self._next_n = 1
        self._announced = 0
        self._wake = trio.Event()
        self._closed = False

    @property
    def durable_upto(self) -> int:
        """The last appended number: memory is as durable as it gets."""
        return self._next_n - 1

    def load(self) -> Loaded:
        """The last snapshot and the records after it, as JSON round trips."""
        state = None if self._state is None else json.loads(self._state)
        records = [json.loads(line) for line in self._lines]
        return Loaded(state=state, records=records, next_n=self._next_n)

    def append(self, record: dict[str, Any]) -> int:
        """Number and keep one record; see `Storage.append`."""
        if self._closed:
            raise trio.ClosedResourceError("storage is closed")
        n = self._next_n
        self._lines.append(encode_record(n, record))
        self._next_n = n + 1
        self._wake.set()
        return n

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Keep `state` and forget the records it covers."""
        check_snapshot_request(state, upto, self._next_n - 1)
        self._state = "".join(json_chunks(state))  # detached now, as the file's copy is
        self._lines.clear()

    def write_now(self) -> None:
        """Announce what was appended (memory is durable at once)."""
        if self._announced < self._next_n - 1:
            self._announce_all()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Announce appended records to the durable callbacks until cancelled."""
        task_status.started()
        while True:
            self._wake = trio.Event()
            if self._announced < self._next_n - 1:
                self._announce_all()
                await trio.lowlevel.checkpoint()
            else:
                await self._wake.wait()

    async def close(self, final_state: dict[str, Any] | None = None, upto: int = 0) -> None:
        """Announce what is left and keep `final_state` as the snapshot if given."""
        await trio.lowlevel.checkpoint()
        if self._closed:
            return
        if final_state is not None:
            self.request_snapshot(final_state, upto)
        self._closed = True
        self._announce_all()

    def _announce_all(self) -> None:
        if self._announced < self._next_n - 1:
            self._announced = self._next_n - 1
            self._announce(self._announced)
