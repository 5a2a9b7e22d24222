"""Files under `storage.dir` are readable by their owner only (SPEC 5).

The journal and the snapshot hold message texts, CRM data and activation
codes. Invariants:

- What the server creates there is created private: the directory 0700,
  files 0600 (`os.open` with the mode, so no moment exists where another
  user could open the file; the umask can only narrow it).
- Data files found with wider modes (an older version, a restored backup)
  are narrowed to 0600 when the storage loads.
- An existing directory is never changed, only reported when group or others
  may enter it: it may be shared on purpose (`storage.dir = "."`, a mount
  point) and its mode is the operator's to choose. The files in it stay
  private either way.
- Windows has no POSIX modes: there the ACLs of the parent directory apply
  and nothing here changes a mode.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "open_private", "private_dir"]

log = logging.getLogger("wsserver.storage")

FILE_MODE = 0o600
DIR_MODE = 0o700
POSIX = os.name != "nt"


def open_private(path: str, flags: int) -> int:
    """An `opener` for `open()`: a file created now is readable by its owner only."""
    return os.open(path, flags, FILE_MODE)


def private_dir(directory: Path, files: Iterable[Path] = ()) -> None:
    """Create `directory` (0700) if missing, else warn when others may enter it;
    narrow any of `files` that exists with a wider mode to 0600."""
    try:
        directory.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if POSIX:
            mode = stat.S_IMODE(directory.stat().st_mode)
            if mode & 0o077:
                log.warning(
                    "storage.dir %s is open to group or others (mode %04o); the data files "
                    "in it are private, but consider chmod 700 on the directory",
                    directory,
                    mode,
                )
    except FileNotFoundError:  # its parents first, with the usual modes (mkdir -p)
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=DIR_MODE, exist_ok=True)
    if not POSIX:
        return
    for path in files:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & ~FILE_MODE:
            try:
                os.chmod(path, FILE_MODE)
            except OSError as exc:  # not ours to change (another owner): say so, go on
                log.warning("%s is mode %04o and cannot be made private: %s", path, mode, exc)
            else:
                log.info("%s was mode %04o, now %04o", path, mode, FILE_MODE)
