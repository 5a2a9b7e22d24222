"""The audit log of the HTTP API (SPEC 13): one line per changing call.

A call changes something when its method is not GET or HEAD (a publish, a
kick, an activation code, a webhook test); it is logged once answered, with
the caller's name (`api.credentials.Caller`: the key's name or `jwt:<user>`,
never the credential), the method, the path as the access log shows it
(secret segments redacted) and the status, on the `wsserver.audit` logger at
INFO, also when the call failed. Read-only callers are refused before the
handler runs (403 `api_read_only`), and that refusal is logged too.
"""

from __future__ import annotations

import logging

from wsserver.api.credentials import Caller
from wsserver.ops.access import safe_path
from wsserver.ops.logging import clean

__all__ = ["changes", "log_call"]

log = logging.getLogger("wsserver.audit")

_READS = frozenset({"GET", "HEAD"})


def changes(method: str) -> bool:
    """Whether a call with `method` may change something (and is audited)."""
    return method not in _READS


def log_call(caller: Caller, method: str, raw_path: str, status: int, remote: str) -> None:
    """One audit line for an answered changing call."""
    path, who, remote = safe_path(raw_path), clean(caller.name), clean(remote)
    log.info(
        "audit %s %s %d by %s from %s",
        method, path, status, who, remote,
        extra={"kind": "audit", "method": method, "path": path, "status": status, "caller": who, "remote": remote},
    )  # fmt: skip
