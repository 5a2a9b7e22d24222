"""Activation codes managed at run time (SPEC 2 and 6), without I/O.

The effective codes are the config's `[[activation_codes]]` overlaid by the
changes made through the HTTP API, which are durable records (`code_put`,
`code_del`, kept by a `core.stores.CodeStore`) and so survive restarts. A change never
reaches into the config file; deleting a code that the config defines hides
it until it is put again.

Disabling or deleting a code closes its live connections with 4001; the hub
forgets them at once (their desktop client goes offline in the CRM). So does
a reload that removes, disables or moves a code to another group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.presence import Presence
from wsserver.core.stores import CodeStore
from wsserver.errors import CloseCode

__all__ = ["ActivationCodes", "CodeRecord", "MemoryCodeStore"]


@attrs.define(slots=True)
class CodeRecord:
    """An activation code: which group it opens, and whether it is enabled."""

    code: str
    group_id: Any
    name: str = ""
    enabled: bool = True


class MemoryCodeStore:
    """The overrides in a dict (a `core.stores.CodeStore`)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any] | None] = {}  # None = deleted

    def apply(self, record: dict[str, Any]) -> None:
        """Fold a `code_put` or `code_del` record."""
        if record["t"] == "code_put":
            self.entries[record["code"]] = {
                "group_id": record["group_id"],
                "name": record["name"],
                "enabled": record["enabled"],
            }
        else:
            self.entries[record["code"]] = None

    def overrides(self) -> Mapping[str, dict[str, Any] | None]:
        """The overrides, in the order they were first made."""
        return self.entries

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""
        return {"overrides": {k: (dict(v) if v is not None else None) for k, v in self.entries.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the overrides with a snapshot's."""
        self.entries = dict(state["overrides"])


class ActivationCodes:
    """The effective activation codes, their run-time changes and their connections."""

    record_types: tuple[str, ...] = ("code_put", "code_del")

    def __init__(
        self,
        commit: CommitLog,
        presence: Presence,
        env: Env,
        forget: Callable[[str], None],
        store: CodeStore | None = None,
    ) -> None:
        self.commit = commit
        self.presence = presence
        self.env = env
        self.forget = forget  # the hub forgets a connection it closed (`Hub.close`)
        self.store: CodeStore = store if store is not None else MemoryCodeStore()
        self.codes: dict[str, CodeRecord] = {}
        self.rebuild()
        commit.on_applied(self.record_types, self._applied_here)

    # -- the effective codes -------------------------------------------------------

    def rebuild(self) -> None:
        """Recompute `codes` from the config and the overrides."""
        codes: dict[str, CodeRecord] = {
            c.code: CodeRecord(c.code, c.group_id, c.name, c.enabled) for c in self.env.config.activation_codes
        }
        for code, entry in self.store.overrides().items():
            if entry is None:
                codes.pop(code, None)
            else:
                codes[code] = CodeRecord(code, entry["group_id"], entry.get("name", ""), entry.get("enabled", True))
        self.codes = codes

    def get(self, code: str) -> CodeRecord | None:
        """An effective code, or None."""
        return self.codes.get(code)

    def of_group(self, predicate: Callable[[Any], bool]) -> CodeRecord | None:
        """The first effective code whose `group_id` satisfies `predicate`."""
        return next((c for c in self.codes.values() if predicate(c.group_id)), None)

    # -- durable state -------------------------------------------------------------

    def apply(self, record: dict[str, Any]) -> None:
        """Fold a `code_put` or `code_del` record."""
        self.store.apply(record)
        self.rebuild()

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""
        return self.store.to_state()

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the overrides with a snapshot's."""
        self.store.load_state(state)
        self.rebuild()

    # -- commands --------------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        """Every effective code with its live connection count."""
        live: dict[str, int] = {}
        for s in self.presence.sessions.values():
            if s.identity is not None and s.identity.activation_code is not None:
                live[s.identity.activation_code] = live.get(s.identity.activation_code, 0) + 1
        return [
            {"code": c.code, "group_id": c.group_id, "name": c.name, "enabled": c.enabled, "connections": live.get(c.code, 0)}
            for c in self.codes.values()
        ]

    def put(self, code: str, group_id: Any, name: str, enabled: bool) -> tuple[bool, int]:
        """Create or replace a code; (created, connections closed)."""
        created = code not in self.codes
        old = self.codes.get(code)
        self.commit.record({"t": "code_put", "code": code, "group_id": group_id, "name": name, "enabled": enabled})
        closed = 0
        if not enabled or (old is not None and str(old.group_id) != str(group_id)):
            closed = self.close_connections(code, "activation_code_disabled")
        return created, closed

    def delete(self, code: str) -> int | None:
        """Remove a code; the number of connections closed, or None if unknown."""
        if code not in self.codes:
            return None
        self.commit.record({"t": "code_del", "code": code})
        return self.close_connections(code, "activation_code_invalid")

    def reconfigured(self) -> int:
        """(The config was just swapped by a reload.) Rebuild the codes from it and
        the overrides; close (4001) the connections of codes now gone, disabled or
        moved to another group. Returns how many were closed."""
        before = self.codes
        self.rebuild()
        closed = 0
        for code, old in before.items():
            new = self.codes.get(code)
            if new is None:
                closed += self.close_connections(code, "activation_code_invalid")
            elif not new.enabled or str(new.group_id) != str(old.group_id):
                closed += self.close_connections(code, "activation_code_disabled")
        return closed

    def _applied_here(self, rec: dict[str, Any], result: Any, conn: str | None) -> None:
        """(Cluster mode: a code changed through the shared log, by any node.) This
        node closes its own connections of the code if it is gone, disabled or
        moved to another group (the origin closed its own already)."""
        code = rec["code"]
        new = self.codes.get(code)
        for s in list(self.presence.sessions.values()):
            ident = s.identity
            if ident is None or ident.activation_code != code:
                continue
            if new is None:
                reason = "activation_code_invalid"
            elif not new.enabled or str(new.group_id) != str(ident.group_id):
                reason = "activation_code_disabled"
            else:
                continue
            s.outlet.close(CloseCode.AUTH_FAILED, reason)
            self.forget(s.conn_id)

    def close_connections(self, code: str, reason: str) -> int:
        """Close (4001) and forget at once the connections of `code`; how many."""
        n = 0
        for s in list(self.presence.sessions.values()):
            if s.identity is not None and s.identity.activation_code == code:
                s.outlet.close(CloseCode.AUTH_FAILED, reason)
                self.forget(s.conn_id)
                n += 1
        return n
