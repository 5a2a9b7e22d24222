"""The id of the node whose state a data directory holds: `<storage.dir>/node_id`.

Webhook events name the node that made them (SPEC 6.2, `node`). One process
serving one data directory is one node, so the id is kept with the
directory: made once (random hex), then read at every start, so it stays
the same across restarts and a copied directory carries it along.

Written as a private temporary file and renamed into place (0600, like the
other files under `storage.dir`): the file is whole or absent, never torn.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from wsserver.storage.private import FILE_MODE, private_dir

__all__ = ["NODE_FILE", "node_id"]

NODE_FILE = "node_id"


def node_id(directory: str | os.PathLike[str]) -> str:
    """The node id kept in `directory`, made and kept there on first use."""
    path = Path(directory) / NODE_FILE
    try:
        found = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        found = ""
    if found:
        return found
    private_dir(path.parent)
    made = secrets.token_hex(8)
    tmp = path.with_name(f".{NODE_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(made + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return made
