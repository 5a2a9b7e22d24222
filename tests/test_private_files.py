"""Files under `storage.dir` are readable by their owner only (SPEC 5): the
journal and snapshot hold message texts and activation codes. Under the usual
umask 022, which would leave new files 0644 and directories 0755."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import make_config
from wsserver.net.server import Server
from wsserver.storage.journal import JOURNAL_FILE, SNAPSHOT_FILE, FileStorage

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes (Windows: ACLs)")


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_data_directory_and_its_files_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "var" / "data"
    storage = FileStorage(data, "always")
    storage.load()
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        storage.append({"t": "note", "text": "a private message"})
        storage.request_snapshot({"k": 1}, 1)
        storage.append({"t": "note", "text": "another"})
        await storage.close()
        nursery.cancel_scope.cancel()
    assert mode(data) == 0o700
    assert mode(data / JOURNAL_FILE) == 0o600
    assert mode(data / SNAPSHOT_FILE) == 0o600  # written as a temp file, renamed
    assert (data / JOURNAL_FILE).read_bytes().count(b"\n") == 1
    assert mode(data.parent) == 0o755  # a parent made on the way is not ours


def test_data_files_found_open_are_narrowed_at_load(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / SNAPSHOT_FILE).write_text('{"version": 1, "n": 0, "written_at": 0, "state": {}}')
    (data / JOURNAL_FILE).write_text("")
    (data / (SNAPSHOT_FILE + ".tmp")).write_text("{")
    for path in data.iterdir():
        path.chmod(0o644)
    FileStorage(data, "never").load()
    assert {p.name: mode(p) for p in data.iterdir()} == {
        SNAPSHOT_FILE: 0o600,
        JOURNAL_FILE: 0o600,
        SNAPSHOT_FILE + ".tmp": 0o600,
    }


def test_an_existing_open_directory_is_left_as_it_is_with_a_warning(
    tmp_path: Path, caplog: Any
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    with caplog.at_level(logging.WARNING, logger="wsserver.storage"):
        FileStorage(shared, "never").load()
    assert mode(shared) == 0o755
    assert mode(shared / JOURNAL_FILE) == 0o600
    assert any("chmod 700" in r.getMessage() for r in caplog.records)


def test_the_server_creates_its_data_directory_owner_only_with_a_generated_secret(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = Server(make_config(tmp_path, storage__dir=str(data), auth__jwt_secret=""))
    server.storage.load()
    assert mode(data) == 0o700
    assert {p.name: mode(p) for p in data.iterdir()} == {"jwt_secret": 0o600, JOURNAL_FILE: 0o600}
