"""Reading the storage directory back at start-up: the snapshot, then the journal after it.

The files are the ones `storage.journal.FileStorage` writes (its docstring
describes them); it calls these functions from `load`, with the cyclic GC
paused.

Invariants:

- Anything unreadable raises `StorageError` naming the file and the place (a
  byte offset in the snapshot, a line of the journal); nothing is guessed.
- The one damage accepted is a torn last journal line (no newline, or not
  JSON): what a crash in the middle of a write leaves. It is left out, with a
  warning, and `JournalScan.torn_at` says where it starts so the writer can cut
  it off.
- A clean journal is scanned in one pass over its text (`_scan_clean_journal`);
  at the first thing that is not clean it is read line by line instead, which
  is what judges and reports the fault. Both give the same records.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from wsserver._version import OLDEST_STATE_VERSION, STATE_VERSION
from wsserver.storage.base import StorageError, log

__all__ = ["JournalScan", "read_journal", "read_snapshot"]

SNAPSHOT_VERSION = STATE_VERSION
"""The newest snapshot format this server reads (and the one it writes)."""


def read_snapshot(path: Path) -> tuple[dict[str, Any] | None, int, int]:
    """The snapshot's state, number and format version, or `(None, 0,
    SNAPSHOT_VERSION)` when there is no snapshot.

    Raises `StorageError` naming the file and byte offset for anything unreadable.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, 0, SNAPSHOT_VERSION
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {exc.strerror or exc}", path=str(path)) from exc

    def fail(detail: str, offset: int | None = None) -> StorageError:
        where = "" if offset is None else f" at byte {offset}"
        return StorageError(f"{path}: {detail}{where}", path=str(path), offset=offset)

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail("invalid UTF-8", exc.start) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        offset = len(text[: exc.pos].encode("utf-8"))
        raise fail(f"invalid JSON ({exc.msg})", offset) from None
    if not isinstance(document, dict):
        raise fail("not a snapshot (expected a JSON object)")
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not (
        OLDEST_STATE_VERSION <= version <= SNAPSHOT_VERSION
    ):
        raise fail(
            f"unknown snapshot version {version!r} (this server reads versions "
            f"{OLDEST_STATE_VERSION} to {SNAPSHOT_VERSION})"
        )
    n = document.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise fail(f'invalid record number "n": {n!r}')
    state = document.get("state")
    if not isinstance(state, dict):
        raise fail('"state" is not a JSON object')
    return state, n, version


@attrs.frozen
class JournalScan:
    """What `read_journal` found: the records after the snapshot, the highest number
    seen, and where a torn last line starts (None when there is none)."""

    records: list[dict[str, Any]]
    last_n: int
    torn_at: int | None


def read_journal(path: Path, *, after: int) -> JournalScan:
    """Parse the journal, keeping the records numbered above `after` (the snapshot's).

    A last line without a newline or not valid JSON is a torn write: it is left
    out (with a warning) and `torn_at` says where it starts. Any other bad line,
    or numbers that do not increase, raise `StorageError` naming the line.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalScan([], after, None)
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {exc.strerror or exc}", path=str(path)) from exc
    fast = _scan_clean_journal(data, after)
    if fast is not None:
        return fast
    records: list[dict[str, Any]] = []
    last_n = after
    previous_n = 0
    start = 0
    for line_no in itertools.count(1):
        if start >= len(data):
            break
        end = data.find(b"\n", start)
        is_last = end == -1 or end + 1 == len(data)
        record, problem, torn = _parse_line(data[start:] if end == -1 else data[start:end])
        if end == -1:
            problem, torn = problem or "incomplete line (no newline)", True
        if problem is not None:
            if is_last and torn:
                log.warning("%s line %d: dropping a torn last line: %s", path, line_no, problem)
                return JournalScan(records, last_n, start)
            raise StorageError(f"{path} line {line_no}: {problem}", path=str(path), line=line_no)
        assert record is not None
        n = record["n"]
        if n <= previous_n:
            raise StorageError(
                f"{path} line {line_no}: record number {n} does not follow {previous_n}",
                path=str(path),
                line=line_no,
            )
        previous_n = n
        if n > after:
            if n != last_n + 1:
                log.warning(
                    "%s line %d: records %d..%d are missing", path, line_no, last_n + 1, n - 1
                )
            records.append(record)
            last_n = n
        start = end + 1
    return JournalScan(records, last_n, None)


_SCAN_ONCE: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
"""The scanner `json.loads` uses (same settings): one JSON value at an index of a str."""


def _scan_clean_journal(data: bytes, after: int) -> JournalScan | None:
    """`read_journal`'s result for a journal without any fault, in one pass over the
    whole text, or None as soon as anything is unusual (bad UTF-8 or JSON, a line
    that is not exactly one object with a valid increasing "n", a missing newline,
    a gap in the numbers), so that the line-by-line reading finds it and says what
    and where. Lines `json.loads` accepts are scanned by the same scanner, so a
    clean journal gives the same records either way.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    end = len(text)
    if end and text[-1] != "\n":
        return None  # a torn last line
    scan_once = _SCAN_ONCE
    records: list[dict[str, Any]] = []
    append = records.append
    last_n = after
    previous_n = 0
    pos = 0
    try:
        while pos < end:
            record, pos = scan_once(text, pos)
            if text[pos] != "\n" or type(record) is not dict:
                return None
            pos += 1
            n = record.get("n")
            if type(n) is not int or n <= previous_n:  # also n < 1: previous_n starts at 0
                return None
            previous_n = n
            if n > after:
                if n != last_n + 1:
                    return None  # missing records: the slow path warns
                append(record)
                last_n = n
    except (StopIteration, ValueError, IndexError):  # JSONDecodeError is a ValueError
        return None
    return JournalScan(records, last_n, None)


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None, bool]:
    """A journal line as `(record, None, False)`, or `(None, what is wrong, torn)`
    where `torn` says the damage is what an interrupted write leaves (bad JSON)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "invalid UTF-8", True
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})", True
    if not isinstance(record, dict):
        return None, "not a record (expected a JSON object)", False
    n = record.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return None, f'invalid record number "n": {n!r}', False
    return record, None, False
