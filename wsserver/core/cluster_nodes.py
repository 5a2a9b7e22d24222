"""Which nodes of a cluster are alive: the decisions, without I/O.

Each node reports itself every `cluster.heartbeat` seconds: its info (a JSON
object: node_id, name, version, connections, users, uptime) and the time of
the report, `last_seen`, in Unix milliseconds of the reporting node's clock.
A node whose last report is older than `cluster.node_ttl` is dead. The
network layer (`net.cluster.nodes`) reads and writes the reports; this module
says what they mean.

Invariants: a node is alive exactly when `now - last_seen < node_ttl`; a
report that does not parse is no node (never an error).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["dead_nodes", "live_nodes"]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def live_nodes(
    infos: Mapping[Any, Any], seen: Mapping[Any, float], now_ms: float, node_ttl: float
) -> list[dict[str, Any]]:
    """The nodes alive at `now_ms`, each its info with `last_seen`, ordered by id."""
    out = []
    for raw_id, raw in infos.items():
        node = _text(raw_id)
        last = seen.get(node)
        if last is None or now_ms - last >= node_ttl * 1000:
            continue
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        if isinstance(info, dict):
            out.append({**info, "node_id": node, "last_seen": int(last)})
    out.sort(key=lambda n: n["node_id"])
    return out


def dead_nodes(seen: Mapping[str, float], now_ms: float, node_ttl: float) -> list[str]:
    """The nodes whose last report is `node_ttl` old or older."""
    return sorted(node for node, last in seen.items() if now_ms - last >= node_ttl * 1000)
