"""Durable storage for the hub: the `Storage` interface and its implementations.

`FileStorage` keeps `snapshot.json` + `journal.jsonl` in a directory;
`MemoryStorage` keeps everything in memory (tests, no data directory). A Redis
implementation can take their place later behind the same interface.
"""

from wsserver.storage.base import (
    FSYNC_MODES,
    Loaded,
    MemoryStorage,
    Storage,
    StorageError,
)
from wsserver.storage.journal import FileStorage

__all__ = [
    "FSYNC_MODES",
    "FileStorage",
    "Loaded",
    "MemoryStorage",
    "Storage",
    "StorageError",
]
