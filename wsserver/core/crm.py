"""The CRM workflow of seed 000 (SPEC 4.4), without I/O.

Windows desktop clients (activation-code connections) sync Line accounts,
report incoming contacts, customers, follow-ups and account status; the web
dashboards of the same group (JWT connections) watch live counters.

`Crm` is a component of the hub: it handles the desktop client's message
types (`handlers`), keeps the per-group state in a `CrmStore`
(`core.crm_store`: records, counters and their invariants), and pushes to
dashboards through the broker. Each change is a `crm_*` record made through
the commit log; replies to the desktop client and dashboard updates go out
through `CommitLog.after_commit`, so every CRM reply a client saw survives a
crash. "Today" is the calendar day in `crm.timezone`.

Isolation: account ids are unique per group, not globally; nothing of one
group is ever sent to another group's connections.

The activation code is a credential: `group_stats_update` carries it in clear
only to connections that administer the group (`role` admin or a role in
`crm.dashboard_roles`); every other member of the group gets it masked
(`mask_code`). Every `group_stats_update` goes through `push_group_stats`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from wsserver.core.activation_codes import ActivationCodes
from wsserver.core.broker import Broker
from wsserver.core.commit import CommitLog
from wsserver.core.crm_store import RECORD_TYPES, MemoryCrmStore
from wsserver.core.env import Env
from wsserver.core.identity import Identity
from wsserver.core.presence import Presence
from wsserver.core.session import Handler, Session
from wsserver.core.stores import CrmStore
from wsserver.errors import ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode
from wsserver.protocol.messages import (
    Account,
    CustomerSync,
    FollowUpSync,
    Incoming,
    StatusChange,
    read,
)

__all__ = ["Crm", "mask_code"]

def mask_code(code: str | None) -> str | None:
    """An activation code as members who do not administer its group see it: its
    first half, at most four characters, is kept and every other character is a
    `*` (`HG66OP88` becomes `HG66****`), enough to tell codes apart on a
    dashboard, too little to log in with."""
    if code is None:
        return None
    shown = min(4, len(code) // 2)
    return code[:shown] + "*" * (len(code) - shown)


DASHBOARDS = "crm.dashboards"
"""The broker's selection of a group's dashboards (`Crm.dashboards`)."""
ADMIN_DASHBOARDS = "crm.dashboards.admins"
MEMBER_DASHBOARDS = "crm.dashboards.members"

class Crm:
    """The seed-000 message handlers and the dashboards' pushes."""

    record_types: tuple[str, ...] = RECORD_TYPES

    def __init__(
        self,
        commit: CommitLog,
        presence: Presence,
        broker: Broker,
        env: Env,
        codes: ActivationCodes,
        group_id: Callable[[str], Any],
        store: CrmStore | None = None,
    ) -> None:
        self.commit = commit
        self.presence = presence
        self.broker = broker
        self.env = env
        self.codes = codes
        self.group_id = group_id  # a group's id as replies echo it (`Hub.group_id`)
        self.store: CrmStore = store if store is not None else MemoryCrmStore()
        self.zone = ZoneInfo(env.config.crm.timezone)  # fixed at start (a restart key)
        self.handlers: dict[str, Handler] = {
            "sync_line_accounts": self._sync_accounts,
            "incoming": self._incoming,
            "customer_sync": self._customer_sync,
            "follow_up_sync": self._follow_up_sync,
            "account_status_change": self._status_change,
        }
        # the dashboards' announcements reach every node's (`Broker.select`)
        broker.select(DASHBOARDS, self.dashboards)
        broker.select(ADMIN_DASHBOARDS, lambda key: [s for s in self.dashboards(key) if self._administers(s)])
        broker.select(MEMBER_DASHBOARDS, lambda key: [s for s in self.dashboards(key) if not self._administers(s)])

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

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold one `crm_*` record into the state."""
        self.store.apply(rec)

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""
        return self.store.to_state()

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""
        self.store.load_state(state)

    # -- reading -----------------------------------------------------------------

    def group_stats(self, key: str, now_ms: int) -> dict[str, Any]:
        """The counters of `group_stats_update` (without `activation_code`/`timestamp`)."""
        return self.store.group_stats(key, self.day(now_ms))

    def account_stats(self, key: str, acct: str, now_ms: int) -> dict[str, Any]:
        """The counters of `account_stats_update` (without `timestamp`)."""
        return self.store.account_stats(key, acct, self.day(now_ms))

    def accounts(self, key: str) -> list[dict[str, Any]]:
        """The group's accounts, for the HTTP API."""
        return self.store.account_list(key)

    # -- pushing to dashboards --------------------------------------------------

    def dashboards(self, key: str) -> list[Session]:
        """The JWT (non-desktop) connections of a group."""
        members = self.presence.of_group(key)
        return [s for s in members.values() if s.identity is not None and not s.identity.is_device]

    def _group_code(self, key: str, code: str | None) -> str | None:
        if code is not None:
            return code
        record = self.codes.of_group(lambda group_id: str(group_id) == key)
        return None if record is None else record.code

    def administers(self, identity: Identity) -> bool:
        """True for a connection that may see its group's activation code: `role`
        admin, or a role listed in `crm.dashboard_roles` (read on use: a reload
        applies to the next update)."""
        return identity.is_admin or (
            identity.role is not None and identity.role in self.env.config.crm.dashboard_roles
        )

    def _administers(self, session: Session) -> bool:
        assert session.identity is not None
        return self.administers(session.identity)

    def announce_group_stats(self, key: str, code: str | None = None) -> None:
        """(After a change.) `group_stats_update` to the group's dashboards on
        every node, encoded once per form (`push_group_stats`)."""
        if not self.broker.shares:
            self.push_group_stats(key, code)
            return
        now = self.env.now_ms()
        code = self._group_code(key, code)
        stats = self.group_stats(key, now)
        for name, shown in ((ADMIN_DASHBOARDS, code), (MEMBER_DASHBOARDS, mask_code(code))):
            data = {"activation_code": shown, **stats, "timestamp": now}
            self.broker.to_selection(name, key, encode("group_stats_update", data, now))

    def push_group_stats(self, key: str, code: str | None = None, dashboards: list[Session] | None = None) -> None:
        """Send `group_stats_update` to `dashboards` (this node's dashboards of the
        group by default), encoded once per form: the activation code in clear for
        those who administer the group, masked for the others. `code` is the
        desktop client's that caused the update, else the group's first code."""
        if dashboards is None:
            dashboards = self.dashboards(key)
        if not dashboards:
            return
        admins: list[Session] = []
        members: list[Session] = []
        for s in dashboards:
            assert s.identity is not None
            (admins if self.administers(s.identity) else members).append(s)
        now = self.env.now_ms()
        code = self._group_code(key, code)
        stats = self.group_stats(key, now)
        for targets, shown in ((admins, code), (members, mask_code(code))):
            if targets:
                data = {"activation_code": shown, **stats, "timestamp": now}
                self.broker.fan_out(targets, encode("group_stats_update", data, now))

    def midnight(self) -> None:
        """(At each new day in `crm.timezone`.) Every dashboard gets today's zeroed counters."""
        for key in self.store.group_keys():
            self.push_group_stats(key)

    # -- desktop client messages -------------------------------------------------

    def _desktop(self, session: Session) -> tuple[str, str]:
        ident = session.identity
        assert ident is not None
        if not ident.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "desktop_only")
        return ident.group_key, ident.activation_code or ""

    def _owned_account(self, key: str, line_account_id: Any) -> str:
        """The account id (as text), if it belongs to the sender's group."""
        acct = str(line_account_id)
        if acct not in self.store.accounts(key):
            if self.store.account_elsewhere(key, acct):
                raise ProtocolError(ErrorCode.FORBIDDEN, "account_other_group", field="line_account_id")
            raise ProtocolError(ErrorCode.NOT_FOUND, "account_unknown", field="line_account_id")
        return acct

    def _after_commit_reply(self, session: Session, msg: Inbound, mtype: str, data: dict[str, Any]) -> None:
        frame = encode(mtype, data, self.env.now_ms(), request_id=msg.id)
        broker = self.broker
        self.commit.after_commit(lambda: broker.send(session, frame))

    def _sync_accounts(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        items = msg.data
        if isinstance(items, dict) and isinstance(items.get("accounts"), list):
            items = items["accounts"]  # {accounts: [...]}, or the seed's bare list
        accounts = []
        seen: set[str] = set()
        for account in read(items, list[Account]):
            acct = str(account.line_account_id)
            if acct in seen:
                continue
            seen.add(acct)
            entry = account.fields  # as sent (but synced_by), with the checked values
            entry["line_account_id"] = acct
            if account.online_status is not None:
                entry["online_status"] = account.online_status
            if account.name is not None:
                entry["name"] = account.name
            accounts.append(entry)
        known = self.store.accounts(key)
        created = sum(1 for a in accounts if a["line_account_id"] not in known)
        self.commit.record({"t": "crm_accounts", "g": key, "by": code, "accounts": accounts, "time": self.env.now_ms()})
        known = self.store.accounts(key)
        stored = [{k: v for k, v in known[a["line_account_id"]].items() if k != "synced_by"} for a in accounts]
        reply = {"success": True, "created_count": created, "updated_count": len(accounts) - created, "accounts": stored}
        self._after_commit_reply(session, msg, "sync_result", reply)
        self.commit.after_commit(lambda: self.announce_group_stats(key, code))

    def _incoming(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        req = read(msg.data, Incoming)
        acct = self._owned_account(key, req.line_account_id)
        line = str(req.incoming_line_id)
        now = self.env.now_ms()
        duplicate = self.store.seen(key, line)
        self.commit.record({"t": "crm_incoming", "g": key, "acct": acct, "line": line, "day": self.day(now), "time": now})
        reply = {"line_account_id": acct, "incoming_line_id": line, "status": "processed", "duplicate": duplicate}
        self._after_commit_reply(session, msg, "incoming_received", reply)

        def announce() -> None:
            if self.broker.shares or self.dashboards(key):
                t = self.env.now_ms()
                stats = encode("account_stats_update", {**self.account_stats(key, acct, t), "timestamp": t}, t)
                self.broker.to_selection(DASHBOARDS, key, stats)
                self.announce_group_stats(key, code)

        self.commit.after_commit(announce)

    def _customer_sync(self, session: Session, msg: Inbound) -> None:
        key, _ = self._desktop(session)
        req = read(msg.data, CustomerSync)
        customer = str(req.customer_id)
        known = self.store.customer(key, customer)
        db_id = known["customer_db_id"] if known else self.store.next_customer_db_id
        merged = {**({k: v for k, v in known.items() if k != "customer_db_id"} if known else {}), **req.fields}
        self.commit.record({"t": "crm_customer", "g": key, "customer_id": customer, "db_id": db_id, "fields": merged})
        reply = {"customer_id": req.customer_id, "customer_db_id": db_id, "status": "processed"}
        self._after_commit_reply(session, msg, "customer_sync_received", reply)

    def _follow_up_sync(self, session: Session, msg: Inbound) -> None:
        key, _ = self._desktop(session)
        req = read(msg.data, FollowUpSync)
        customer = str(req.customer_id)
        fid = self.store.next_follow_up_id
        self.commit.record({"t": "crm_follow_up", "g": key, "customer_id": customer, "id": fid, "fields": req.fields})
        reply = {"customer_id": req.customer_id, "follow_up_id": fid, "status": "processed"}
        self._after_commit_reply(session, msg, "follow_up_sync_received", reply)

    def _status_change(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        req = read(msg.data, StatusChange)
        acct = self._owned_account(key, req.line_account_id)
        status = req.online_status
        now = self.env.now_ms()
        self.commit.record({"t": "crm_status", "g": key, "id": acct, "status": status, "time": now})
        reply = {"line_account_id": acct, "online_status": status, "status": "updated"}
        self._after_commit_reply(session, msg, "account_status_updated", reply)
        self._announce_status(key, code, [acct], status, now)

    def _announce_status(self, key: str, code: str | None, accounts: list[str], status: str, now: int) -> None:
        group_id = self.group_id(key)  # as it came (int or string)

        def announce() -> None:
            if not self.broker.shares and not self.dashboards(key):
                return
            for acct in accounts:
                change = {"line_account_id": acct, "online_status": status, "group_id": group_id, "timestamp": now}
                self.broker.to_selection(DASHBOARDS, key, encode("account_status_change", change, now))
            self.announce_group_stats(key, code)

        self.commit.after_commit(announce)

    # -- connection events -------------------------------------------------------

    def greet_dashboard(self, session: Session) -> None:
        """(A connection authenticated.) A dashboard gets its group's counters right
        after `connected`.

        Only groups that use the CRM (an activation code or CRM data) send it,
        so chat-only deployments are not sent CRM counters."""
        ident = session.identity
        if ident is None or ident.is_device or ident.group_id is None:
            return
        key = ident.group_key
        if self.store.has_group(key) or self._group_code(key, None) is not None:  # a CRM group
            self.push_group_stats(key, None, [session])

    def desktop_gone(self, session: Session) -> None:
        """(A connection was forgotten.) The last connection of a desktop client
        ended: its accounts go offline."""
        ident = session.identity
        if ident is None or not ident.is_device or not self.env.config.crm.offline_on_disconnect:
            return
        if self.presence.of_principal(ident.principal):
            return  # another connection of the same client is still there
        key, code = ident.group_key, ident.activation_code
        if not self.store.has_group(key):
            return
        ids = [
            a["line_account_id"]
            for a in self.store.accounts(key).values()
            if a.get("synced_by") == code and a.get("online_status") != "offline"
        ]
        if not ids:
            return
        now = self.env.now_ms()
        self.commit.record({"t": "crm_offline", "g": key, "ids": ids, "time": now})
        self._announce_status(key, code, ids, "offline", now)
