"""The CRM workflow of seed 000 (SPEC 4.4), without I/O.

Windows desktop clients (activation-code connections) sync Line accounts,
report incoming contacts, customers, follow-ups and account status; the web
dashboards of the same group (JWT connections) watch live counters.

State is per group and event-sourced like the direct messages: each change is
a `crm_*` record that `apply()` folds in, at run time and at replay. Replies
to the desktop client and dashboard updates go out through
`hub.after_commit`, so every CRM reply a client saw survives a crash.

Counters:
- an incoming is a duplicate when its `incoming_line_id` was already seen in
  the group (in any account);
- "today" is the calendar day of the incoming's time in `crm.timezone`;
  counts are kept per day, so a new day starts at zero without any job;
- per account and per group: total, today, duplicate, today's duplicates;
  accounts: total and online.

Isolation: account ids are unique per group, not globally; nothing of one
group is ever sent to another group's connections.

In place, `apply` changes only a group's dicts, its account dicts and its
counter lists; everything else is replaced whole (`to_state` relies on it).

The activation code is a credential: `group_stats_update` carries it in clear
only to connections that administer the group (`role` admin or a role in
`crm.dashboard_roles`); every other member of the group gets it masked
(`mask_code`). Every `group_stats_update` goes through `push_group_stats`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode, field

if TYPE_CHECKING:
    from wsserver.core.hub import Hub
    from wsserver.core.identity import Identity
    from wsserver.core.session import Session

RECORD_TYPES = (
    "crm_accounts",
    "crm_status",
    "crm_incoming",
    "crm_customer",
    "crm_follow_up",
    "crm_offline",
)
MAX_ID = 256  # characters of an account, customer or incoming id


def _new_group() -> dict[str, Any]:
    return {
        "accounts": {},  # line_account_id -> account dict
        "seen": {},  # incoming_line_id -> {"acct", "time"} (first sighting)
        "days": {},  # "YYYY-MM-DD" -> {"all": [incoming, duplicate], acct_id: [incoming, duplicate]}
        "totals": {},  # acct_id -> [incoming, duplicate]; "" for the group
        "customers": {},  # customer_id -> {"customer_db_id", ...fields}
        "follow_ups": [],  # {"follow_up_id", "customer_id", ...fields}
    }


def mask_code(code: str | None) -> str | None:
    """An activation code as members who do not administer its group see it: its
    first half, at most four characters, is kept and every other character is a
    `*` (`HG66OP88` becomes `HG66****`), enough to tell codes apart on a
    dashboard, too little to log in with."""
    if code is None:
        return None
    shown = min(4, len(code) // 2)
    return code[:shown] + "*" * (len(code) - shown)


def _text_id(data: Any, name: str) -> str:
    """A required id field: a non-empty string or an integer, as a string."""
    value = field(data, name, (str, int))
    text = str(value)
    if not text or len(text) > MAX_ID:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_invalid", field=name)
    return text


def _status(data: Any, name: str = "online_status", *, required: bool = True) -> str | None:
    value: str | None = field(data, name, str, required=required)
    if value is not None and not 0 < len(value) <= 32:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_invalid", field=name)
    return value


class Crm:
    """The CRM state of every group and the seed-000 message handlers."""

    def __init__(self, hub: Hub, clock: Callable[[], float] | None = None) -> None:
        self.hub = hub
        self.zone = ZoneInfo(hub.config.crm.timezone)
        self.groups: dict[str, dict[str, Any]] = {}
        self.next_customer_db_id = 1
        self.next_follow_up_id = 1
        hub.appliers.update({t: self.apply for t in RECORD_TYPES})
        hub.handlers.update(
            {
                "sync_line_accounts": self._sync_accounts,
                "incoming": self._incoming,
                "customer_sync": self._customer_sync,
                "follow_up_sync": self._follow_up_sync,
                "account_status_change": self._status_change,
            }
        )
        hub.on_authenticated.append(self._greet_dashboard)
        hub.on_closed.append(self._desktop_gone)

    # -- time ------------------------------------------------------------------

    def day(self, ms: int) -> str:
        """The calendar day of `ms` (Unix milliseconds) in `crm.timezone`."""
        return datetime.datetime.fromtimestamp(ms / 1000, self.zone).strftime("%Y-%m-%d")

    def ms_to_next_midnight(self, now_ms: int) -> int:
        """Milliseconds until the next day starts in `crm.timezone`."""
        now = datetime.datetime.fromtimestamp(now_ms / 1000, self.zone)
        tomorrow = (now + datetime.timedelta(days=1)).date()
        midnight = datetime.datetime.combine(tomorrow, datetime.time(), self.zone)
        return max(1, int(midnight.timestamp() * 1000) - now_ms)

    # -- durable state -----------------------------------------------------------

    def group(self, key: str) -> dict[str, Any]:
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = _new_group()
        return g

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold one `crm_*` record into the state."""
        kind = rec["t"]
        g = self.group(rec["g"])
        if kind == "crm_accounts":
            for acct in rec["accounts"]:
                old = g["accounts"].get(acct["line_account_id"], {})
                g["accounts"][acct["line_account_id"]] = {**old, **acct, "synced_by": rec.get("by")}
        elif kind == "crm_status":
            acct = g["accounts"].setdefault(rec["id"], {"line_account_id": rec["id"]})
            acct["online_status"] = rec["status"]
        elif kind == "crm_offline":
            for acct_id in rec["ids"]:
                if acct_id in g["accounts"]:
                    g["accounts"][acct_id]["online_status"] = "offline"
        elif kind == "crm_incoming":
            line, acct = rec["line"], rec["acct"]
            dup = line in g["seen"]
            if not dup:
                g["seen"][line] = {"acct": acct, "time": rec["time"]}
            day = g["days"].setdefault(rec["day"], {})
            for counts in (
                day.setdefault("", [0, 0]),
                day.setdefault(acct, [0, 0]),
                g["totals"].setdefault("", [0, 0]),
                g["totals"].setdefault(acct, [0, 0]),
            ):
                counts[0] += 1
                counts[1] += dup
        elif kind == "crm_customer":
            g["customers"][rec["customer_id"]] = {"customer_db_id": rec["db_id"], **rec["fields"]}
            self.next_customer_db_id = max(self.next_customer_db_id, rec["db_id"] + 1)
        elif kind == "crm_follow_up":
            g["follow_ups"].append(
                {"follow_up_id": rec["id"], "customer_id": rec["customer_id"], **rec["fields"]}
            )
            self.next_follow_up_id = max(self.next_follow_up_id, rec["id"] + 1)
        else:
            raise ValueError(f"unknown CRM record {kind!r}")

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot.

        Exactly the levels `apply` changes in place are copied: each group's
        dicts, the account dicts (status changes), the per-day and total
        counter lists; first sightings, customers, follow-ups and every value a
        client sent are only ever replaced, never changed, so they are shared.
        No recursion (a `copy.deepcopy` of a client's deeply nested value once
        took the server down), and no walk of what clients sent.
        """
        groups = {
            key: {
                **g,
                "accounts": {k: dict(acct) for k, acct in g["accounts"].items()},
                "seen": dict(g["seen"]),
                "days": {day: {k: list(c) for k, c in counts.items()} for day, counts in g["days"].items()},
                "totals": {k: list(c) for k, c in g["totals"].items()},
                "customers": dict(g["customers"]),
                "follow_ups": list(g["follow_ups"]),
            }
            for key, g in self.groups.items()
        }
        return {
            "groups": groups,
            "next_customer_db_id": self.next_customer_db_id,
            "next_follow_up_id": self.next_follow_up_id,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""
        self.groups = state["groups"]
        self.next_customer_db_id = state["next_customer_db_id"]
        self.next_follow_up_id = state["next_follow_up_id"]

    # -- reading -----------------------------------------------------------------

    def group_stats(self, key: str, now_ms: int) -> dict[str, Any]:
        """The counters of `group_stats_update` (without `activation_code`/`timestamp`)."""
        g = self.groups.get(key) or _new_group()
        today = g["days"].get(self.day(now_ms), {}).get("", [0, 0])
        total = g["totals"].get("", [0, 0])
        accounts = g["accounts"].values()
        return {
            "total_accounts": len(g["accounts"]),
            "online_accounts": sum(1 for a in accounts if a.get("online_status") == "online"),
            "total_incoming": total[0],
            "today_incoming": today[0],
            "duplicate_incoming": total[1],
            "today_duplicate": today[1],
        }

    def account_stats(self, key: str, acct: str, now_ms: int) -> dict[str, Any]:
        """The counters of `account_stats_update` (without `timestamp`)."""
        g = self.groups.get(key) or _new_group()
        today = g["days"].get(self.day(now_ms), {}).get(acct, [0, 0])
        total = g["totals"].get(acct, [0, 0])
        return {
            "line_id": acct,
            "total_incoming": total[0],
            "today_incoming": today[0],
            "duplicate_incoming": total[1],
            "today_duplicate": today[1],
        }

    def accounts(self, key: str) -> list[dict[str, Any]]:
        """The group's accounts, for the HTTP API."""
        g = self.groups.get(key)
        if g is None:
            return []
        return [{k: v for k, v in a.items() if k != "synced_by"} for a in g["accounts"].values()]

    # -- pushing to dashboards --------------------------------------------------

    def dashboards(self, key: str) -> list[Session]:
        """The JWT (non-desktop) connections of a group."""
        members = self.hub.by_group.get(key, {})
        return [s for s in members.values() if s.identity is not None and not s.identity.is_device]

    def _group_code(self, key: str, code: str | None) -> str | None:
        if code is not None:
            return code
        return next((c.code for c in self.hub.codes.values() if str(c.group_id) == key), None)

    def administers(self, identity: Identity) -> bool:
        """True for a connection that may see its group's activation code: `role`
        admin, or a role listed in `crm.dashboard_roles` (read on use: a reload
        applies to the next update)."""
        return identity.is_admin or (
            identity.role is not None and identity.role in self.hub.config.crm.dashboard_roles
        )

    def push_group_stats(self, key: str, code: str | None = None, dashboards: list[Session] | None = None) -> None:
        """Send `group_stats_update` to `dashboards` (every dashboard of the group by
        default), encoded once per form: the activation code in clear for those who
        administer the group, masked for the others. `code` is the desktop client's
        that caused the update, else the group's first code."""
        if dashboards is None:
            dashboards = self.dashboards(key)
        if not dashboards:
            return
        admins: list[Session] = []
        members: list[Session] = []
        for s in dashboards:
            assert s.identity is not None
            (admins if self.administers(s.identity) else members).append(s)
        hub = self.hub
        now = hub.now_ms()
        code = self._group_code(key, code)
        stats = self.group_stats(key, now)
        for targets, shown in ((admins, code), (members, mask_code(code))):
            if targets:
                data = {"activation_code": shown, **stats, "timestamp": now}
                hub.fan_out(targets, encode("group_stats_update", data, now))

    def midnight(self) -> None:
        """(At each new day in `crm.timezone`.) Every dashboard gets today's zeroed counters."""
        for key in list(self.groups):
            self.push_group_stats(key)

    # -- desktop client messages -------------------------------------------------

    def _desktop(self, session: Session) -> tuple[str, str]:
        ident = session.identity
        assert ident is not None
        if not ident.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "desktop_only")
        return ident.group_key, ident.activation_code or ""

    def _owned_account(self, key: str, data: Any) -> str:
        """A `line_account_id` that belongs to the sender's group."""
        acct = _text_id(data, "line_account_id")
        if acct not in self.group(key)["accounts"]:
            other = any(acct in g["accounts"] for k, g in self.groups.items() if k != key)
            if other:
                raise ProtocolError(ErrorCode.FORBIDDEN, "account_other_group", field="line_account_id")
            raise ProtocolError(ErrorCode.NOT_FOUND, "account_unknown", field="line_account_id")
        return acct

    def _after_commit_reply(self, session: Session, msg: Inbound, mtype: str, data: dict[str, Any]) -> None:
        hub = self.hub
        frame = encode(mtype, data, hub.now_ms(), request_id=msg.id)
        hub.after_commit(lambda: hub.send(session, frame))

    def _sync_accounts(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        items = msg.data
        if isinstance(items, dict) and isinstance(items.get("accounts"), list):
            items = items["accounts"]
        if not isinstance(items, list):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_type", field="data")
        accounts = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "field_type", field=f"data[{i}]")
            try:
                acct = _text_id(item, "line_account_id")
                status = _status(item, required=False)
                name = field(item, "name", str, required=False)
            except ProtocolError as err:
                err.field = f"data[{i}].{err.field}"
                raise
            if acct in seen:
                continue
            seen.add(acct)
            entry = {k: v for k, v in item.items() if k not in ("synced_by",)}
            entry["line_account_id"] = acct
            if status is not None:
                entry["online_status"] = status
            if name is not None:
                entry["name"] = name
            accounts.append(entry)
        known = self.group(key)["accounts"]
        created = sum(1 for a in accounts if a["line_account_id"] not in known)
        hub = self.hub
        hub.record({"t": "crm_accounts", "g": key, "by": code, "accounts": accounts, "time": hub.now_ms()})
        stored = [{k: v for k, v in known[a["line_account_id"]].items() if k != "synced_by"} for a in accounts]
        reply = {"success": True, "created_count": created, "updated_count": len(accounts) - created, "accounts": stored}
        self._after_commit_reply(session, msg, "sync_result", reply)
        hub.after_commit(lambda: self.push_group_stats(key, code))

    def _incoming(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        data = msg.data
        acct = self._owned_account(key, data)
        line = _text_id(data, "incoming_line_id")
        hub = self.hub
        now = hub.now_ms()
        duplicate = line in self.group(key)["seen"]
        hub.record({"t": "crm_incoming", "g": key, "acct": acct, "line": line, "day": self.day(now), "time": now})
        reply = {"line_account_id": acct, "incoming_line_id": line, "status": "processed", "duplicate": duplicate}
        self._after_commit_reply(session, msg, "incoming_received", reply)

        def announce() -> None:
            dashboards = self.dashboards(key)
            if dashboards:
                t = hub.now_ms()
                stats = encode("account_stats_update", {**self.account_stats(key, acct, t), "timestamp": t}, t)
                hub.fan_out(dashboards, stats)
                self.push_group_stats(key, code, dashboards)

        hub.after_commit(announce)

    def _customer_sync(self, session: Session, msg: Inbound) -> None:
        key, _ = self._desktop(session)
        data = msg.data
        customer = _text_id(data, "customer_id")
        known = self.group(key)["customers"].get(customer)
        db_id = known["customer_db_id"] if known else self.next_customer_db_id
        fields = {k: v for k, v in data.items() if k not in ("customer_id", "customer_db_id")}
        merged = {**({k: v for k, v in known.items() if k != "customer_db_id"} if known else {}), **fields}
        self.hub.record({"t": "crm_customer", "g": key, "customer_id": customer, "db_id": db_id, "fields": merged})
        reply = {"customer_id": data["customer_id"], "customer_db_id": db_id, "status": "processed"}
        self._after_commit_reply(session, msg, "customer_sync_received", reply)

    def _follow_up_sync(self, session: Session, msg: Inbound) -> None:
        key, _ = self._desktop(session)
        data = msg.data
        customer = _text_id(data, "customer_id")
        fid = self.next_follow_up_id
        fields = {k: v for k, v in data.items() if k not in ("customer_id", "follow_up_id")}
        self.hub.record({"t": "crm_follow_up", "g": key, "customer_id": customer, "id": fid, "fields": fields})
        reply = {"customer_id": data["customer_id"], "follow_up_id": fid, "status": "processed"}
        self._after_commit_reply(session, msg, "follow_up_sync_received", reply)

    def _status_change(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        data = msg.data
        acct = self._owned_account(key, data)
        status = _status(data)
        assert status is not None
        hub = self.hub
        now = hub.now_ms()
        hub.record({"t": "crm_status", "g": key, "id": acct, "status": status, "time": now})
        reply = {"line_account_id": acct, "online_status": status, "status": "updated"}
        self._after_commit_reply(session, msg, "account_status_updated", reply)
        self._announce_status(key, code, [acct], status, now)

    def _announce_status(self, key: str, code: str | None, accounts: list[str], status: str, now: int) -> None:
        hub = self.hub
        group_id = self._group_id(key)

        def announce() -> None:
            dashboards = self.dashboards(key)
            if not dashboards:
                return
            for acct in accounts:
                change = {"line_account_id": acct, "online_status": status, "group_id": group_id, "timestamp": now}
                hub.fan_out(dashboards, encode("account_status_change", change, now))
            self.push_group_stats(key, code, dashboards)

        hub.after_commit(announce)

    def _group_id(self, key: str) -> Any:
        """The group id as it came (int or string), for `group_id` fields."""
        return self.hub.group_id(key)

    # -- connection events -------------------------------------------------------

    def _greet_dashboard(self, session: Session) -> None:
        """A dashboard gets its group's counters right after `connected`.

        Only groups that use the CRM (an activation code or CRM data) send it,
        so chat-only deployments are not sent CRM counters."""
        ident = session.identity
        if ident is None or ident.is_device or ident.group_id is None:
            return
        key = ident.group_key
        if key in self.groups or self._group_code(key, None) is not None:  # a CRM group
            self.push_group_stats(key, None, [session])

    def _desktop_gone(self, session: Session) -> None:
        """The last connection of a desktop client ended: its accounts go offline."""
        ident = session.identity
        if ident is None or not ident.is_device or not self.hub.config.crm.offline_on_disconnect:
            return
        if self.hub.principals.get(ident.principal):
            return  # another connection of the same client is still there
        key, code = ident.group_key, ident.activation_code
        g = self.groups.get(key)
        if g is None:
            return
        ids = [
            a["line_account_id"]
            for a in g["accounts"].values()
            if a.get("synced_by") == code and a.get("online_status") != "offline"
        ]
        if not ids:
            return
        now = self.hub.now_ms()
        self.hub.record({"t": "crm_offline", "g": key, "ids": ids, "time": now})
        self._announce_status(key, code, ids, "offline", now)
