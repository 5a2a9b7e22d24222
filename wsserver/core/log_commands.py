"""The commands of a cluster node's shared log (`core.replicated`): what the
log bridge (`net.cluster.log`) asks of the hub. Kept apart from
`core.commands` because only cluster mode sends them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from wsserver.core.commands import Command
from wsserver.core.replicated import Snapshot

__all__ = ["ApplyLog", "JoinLog", "LogRefused"]


@attrs.frozen
class JoinLog(Command[None]):
    """Put the hub in cluster mode, before its state is restored: records go to
    `hand_off` (non-blocking; False when the log cannot take one now), snapshots
    to `snapshot`. `origin` names this process in the records it makes."""

    origin: str
    hand_off: Callable[[dict[str, Any]], bool]
    snapshot: Snapshot


@attrs.frozen
class ApplyLog(Command[None]):
    """Apply the shared log's `(log id, record)` entries in order; `live` once
    serving (the records' frames go to this node's connections), not while
    catching up at start-up."""

    entries: list[tuple[str, dict[str, Any]]]
    live: bool = True
    since: str | None = None
    """The log id the state reflects before these entries, when the state was
    just restored from a snapshot (a later snapshot names its position)."""


@attrs.frozen
class LogRefused(Command[None]):
    """The log did not store these records of this node (Redis refused or was
    unreachable): their senders hear `unavailable`."""

    tokens: list[int]
