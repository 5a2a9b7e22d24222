"""Writing `snapshot.json`: the whole durable state, replacing the last snapshot atomically.

`storage.journal.FileStorage` runs this as one disk step of its writer, in a
worker thread, when a snapshot request reaches the head of its queue; then it
empties the journal the snapshot covers. The file's layout is in
`storage.journal`'s docstring; `storage.reader` reads it back. Kept apart from
the writer's queue and schedule because it is the one step that writes a
whole file, and the only one that must be atomic across a crash:

- The document (`{"version", "n", "written_at", "state"}`) is written to a
  temporary file in pieces as `storage.base.json_chunks` makes them: the trio
  thread gets the GIL between pieces, and neither the text nor its UTF-8 is
  ever held whole.
- The temporary file is fsynced, renamed over `snapshot.json`, and the
  directory fsynced (all three skipped under fsync "never"): a crash leaves
  the old snapshot or the new one, never a mix.
- A state that is not JSON raises `StorageError` like a write error does, and
  the temporary file is removed: the journal keeps the records, so nothing is
  lost, only the snapshot is not taken.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsserver.storage.base import StorageError, json_chunks, log, write_error
from wsserver.storage.private import open_private
from wsserver.storage.reader import SNAPSHOT_VERSION

__all__ = ["sync_dir", "write_snapshot"]


def write_snapshot(
    directory: Path,
    path: Path,
    temp_path: Path,
    state: dict[str, Any],
    upto: int,
    written_at: float,
    *,
    sync: bool,
    fsync_fd: Callable[[int], None],
) -> int:
    """Replace `path` (`snapshot.json` in `directory`) with the snapshot of
    `state` at `upto` by way of `temp_path`; the bytes written. `sync`: fsync
    the file and the directory with `fsync_fd`."""
    document = {
        "version": SNAPSHOT_VERSION,
        "n": upto,
        "written_at": written_at,
        "state": state,
    }
    size = 0
    try:
        with open(temp_path, "wb", opener=open_private) as temp:
            try:
                # in pieces, written as they come: the trio thread gets the
                # GIL between them (`json_chunks`), and the text is never
                # held whole, nor its UTF-8 beside it
                for piece in json_chunks(document):
                    data = piece.encode("utf-8", "backslashreplace")  # see encode_record
                    temp.write(data)
                    size += len(data)
            except (TypeError, ValueError, RecursionError) as exc:
                temp.close()
                os.unlink(temp_path)
                raise StorageError(
                    f"snapshot at n={upto} skipped: the state is not JSON ({exc})",
                    path=str(path),
                ) from exc
            temp.flush()
            if sync:
                fsync_fd(temp.fileno())
        os.replace(temp_path, path)
        if sync:
            sync_dir(directory, fsync_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):  # a half-written temp file (gone once renamed)
            os.unlink(temp_path)
        raise write_error(path, exc) from exc
    return size


def sync_dir(directory: Path, fsync_fd: Callable[[int], None]) -> None:
    """fsync `directory` so a rename or a new file survives a power cut.

    Windows cannot open a directory; there the rename is as durable as it gets.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        fsync_fd(fd)
    except OSError as exc:
        log.debug("fsync of directory %s refused: %s", directory, exc)
    finally:
        os.close(fd)
