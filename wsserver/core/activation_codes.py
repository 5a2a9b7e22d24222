"""Activation codes managed at run time (SPEC 2 and 6), without I/O.

The effective codes are the config's `[[activation_codes]]` overlaid by the
changes made through the HTTP API, which are durable records (`code_put`,
`code_del`) and so survive restarts. A change never reaches into the config
file; deleting a code that the config defines hides it until it is put again.

Disabling or deleting a code closes its live connections with 4001; the hub
forgets them at once (their desktop client goes offline in the CRM).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from wsserver.errors import CloseCode

if TYPE_CHECKING:
    from wsserver.core.hub import Hub


@attrs.define(slots=True)
class CodeRecord:
    """An activation code: which group it opens, and whether it is enabled."""

    code: str
    group_id: Any
    name: str = ""
    enabled: bool = True


class ActivationCodes:
    """Run-time changes to the activation codes, kept as durable overrides."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.overrides: dict[str, dict[str, Any] | None] = {}  # None = deleted
        hub.appliers.update({"code_put": self.apply, "code_del": self.apply})

    def rebuild(self) -> None:
        """Recompute `hub.codes` from the config and the overrides."""
        codes: dict[str, CodeRecord] = {
            c.code: CodeRecord(c.code, c.group_id, c.name, c.enabled) for c in self.hub.config.activation_codes
        }
        for code, entry in self.overrides.items():
            if entry is None:
                codes.pop(code, None)
            else:
                codes[code] = CodeRecord(code, entry["group_id"], entry.get("name", ""), entry.get("enabled", True))
        self.hub.codes = codes

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold a `code_put` or `code_del` record."""
        if rec["t"] == "code_put":
            self.overrides[rec["code"]] = {"group_id": rec["group_id"], "name": rec["name"], "enabled": rec["enabled"]}
        else:
            self.overrides[rec["code"]] = None
        self.rebuild()

    def to_state(self) -> dict[str, Any]:
        return {"overrides": {k: (dict(v) if v is not None else None) for k, v in self.overrides.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        self.overrides = dict(state["overrides"])
        self.rebuild()

    # -- commands (registry) -------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        """Every effective code with its live connection count."""
        live: dict[str, int] = {}
        for s in self.hub.sessions.values():
            if s.identity is not None and s.identity.activation_code is not None:
                live[s.identity.activation_code] = live.get(s.identity.activation_code, 0) + 1
        return [
            {"code": c.code, "group_id": c.group_id, "name": c.name, "enabled": c.enabled, "connections": live.get(c.code, 0)}
            for c in self.hub.codes.values()
        ]

    def put(self, code: str, group_id: Any, name: str, enabled: bool) -> tuple[bool, int]:
        """Create or replace a code; (created, connections closed)."""
        created = code not in self.hub.codes
        old: CodeRecord | None = self.hub.codes.get(code)
        self.hub.record({"t": "code_put", "code": code, "group_id": group_id, "name": name, "enabled": enabled})
        closed = 0
        if not enabled or (old is not None and str(old.group_id) != str(group_id)):
            closed = self._close_live(code, "activation_code_disabled")
        return created, closed

    def delete(self, code: str) -> int | None:
        """Remove a code; the number of connections closed, or None if unknown."""
        if code not in self.hub.codes:
            return None
        self.hub.record({"t": "code_del", "code": code})
        return self._close_live(code, "activation_code_invalid")

    def _close_live(self, code: str, reason: str) -> int:
        """Close (4001) and forget at once the connections of `code`; how many."""
        n = 0
        for s in list(self.hub.sessions.values()):
            if s.identity is not None and s.identity.activation_code == code:
                s.outlet.close(CloseCode.AUTH_FAILED, reason)
                self.hub.close(s.conn_id)
                n += 1
        return n
