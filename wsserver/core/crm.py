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

A reply is built from what applying its record answered (`CommitLog.record`'s
`applied`: an incoming's `duplicate`, the ids of customers and follow-ups),
so on a cluster node, where records are applied when they come back from
the shared log (`core.replicated`), the values are the log's; a record the
log refused is answered `unavailable`. There the dashboards' pushes are
every node's live effect of the records it applies (`_applied_here`), each
node to its own dashboards (`code`: the group's first one).

A desktop request with an `id` is answered once: a retry within
`messages.dedup_window` (same group, code, device, type and `id`) gets the
first reply again and changes nothing. The request rides in its record
(`req`), and applying the record remembers the reply, which is built from the
record and what applying it answered (`_reply`): at run time, at replay and
on every cluster node alike.

Every new incoming is pushed to the group's dashboards as `incoming_update`
(the desktop's fields, `duplicate`, `incoming_id`), before the counters it
moved.

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
from wsserver.core.idempotency import RequestMemory, request_key
from wsserver.core.identity import Identity
from wsserver.core.presence import Presence
from wsserver.core.replicated import REFUSED
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
        self.requests = RequestMemory()  # the replies to requests with an `id` (retries)
        writes: dict[str, Handler] = {
            "sync_line_accounts": self._sync_accounts,
            "incoming": self._incoming,
            "customer_sync": self._customer_sync,
            "follow_up_sync": self._follow_up_sync,
            "account_status_change": self._status_change,
        }
        self.handlers: dict[str, Handler] = {name: self._once(fn) for name, fn in writes.items()}
        commit.on_applied(RECORD_TYPES, self._applied_here)

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

    def apply(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one `crm_*` record into the state (what it answers: `CrmStore.apply`),
        and remember the reply to the request it carries, if any."""
        req = rec.get("req")
        if req is not None:
            first = self.requests.answer(req["key"], req["time"], self._window_ms())
            if first is not None:
                # a retry that reached another cluster node before the first
                # request's record did: it changes nothing and gets the first reply
                rec["retry"] = True
                return {"retry_of": first}
        result = self.store.apply(rec)
        if req is not None:
            self.requests.remember(req["key"], req["time"], req["type"], self._reply(rec, result), self._window_ms())
        return result

    def _reply(self, rec: dict[str, Any], result: dict[str, Any] | None, echo: Any = None) -> dict[str, Any]:
        """The reply to the desktop request that made `rec`, from the record and
        what applying it answered (the state just after it, for a sync)."""
        kind, answer = rec["t"], result or {}
        if kind == "crm_accounts":
            created = answer.get("created", 0)
            known = self.store.accounts(rec["g"])
            stored = [
                {k: v for k, v in known[a["line_account_id"]].items() if k != "synced_by"} for a in rec["accounts"]
            ]
            n = len(rec["accounts"])
            return {"success": True, "created_count": created, "updated_count": n - created, "accounts": stored}
        if kind == "crm_incoming":
            return {
                "line_account_id": rec["acct"],
                "incoming_line_id": rec["line"],
                "status": "processed",
                "duplicate": bool(answer.get("duplicate")),
            }
        if echo is None:  # the customer id as the client sent it (a str or an int)
            echo = rec.get("req", {}).get("echo", rec.get("customer_id"))
        if kind == "crm_customer":
            return {"customer_id": echo, "customer_db_id": answer.get("customer_db_id"), "status": "processed"}
        if kind == "crm_follow_up":
            return {"customer_id": echo, "follow_up_id": answer.get("follow_up_id"), "status": "processed"}
        assert kind == "crm_status", kind
        return {"line_account_id": rec["id"], "online_status": rec["status"], "status": "updated"}

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy for the snapshot."""
        return {**self.store.to_state(), "requests": self.requests.to_state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's (one without `requests` remembers none)."""
        self.store.load_state(state)
        self.requests.load_state(state.get("requests", []))

    def _window_ms(self) -> int:
        return int(self.env.config.messages.dedup_window * 1000)

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

    def _request_key(self, session: Session, msg: Inbound) -> str | None:
        """The key a desktop client's request with an `id` is remembered by."""
        ident = session.identity
        if msg.id is None or ident is None or not ident.is_device:
            return None
        return request_key(ident.group_key, ident.activation_code or "", session.device_id, msg.type, msg.id)

    def _once(self, write: Handler) -> Handler:
        """`write` for requests not seen within `messages.dedup_window`; a retry
        (same sender, type and `id`) gets the first reply again, once every record
        before it is durable, and changes nothing."""

        def handler(session: Session, msg: Inbound) -> None:
            key = self._request_key(session, msg)
            if key is not None:
                hit = self.requests.answer(key, self.env.now_ms(), self._window_ms())
                if hit is not None:
                    self._after_commit_reply(session, msg, hit[0], hit[1])
                    return
            write(session, msg)

        return handler

    def _record_then_reply(
        self,
        session: Session,
        msg: Inbound,
        rec: dict[str, Any],
        mtype: str,
        then: Callable[[dict[str, Any] | None], object] | None = None,
        echo: Any = None,
    ) -> None:
        """Record `rec` with the request it answers (`req`, when the request has an
        `id`); once applied, its reply (`_reply`) goes to the client when durable,
        or `unavailable` if the shared log refused it. `then(what apply answered)`
        runs after the reply is queued (a single node's dashboard pushes)."""
        key = self._request_key(session, msg)
        if key is not None:
            rec["req"] = {"key": key, "time": self.env.now_ms(), "type": mtype}
            if echo is not None:
                rec["req"]["echo"] = echo

        def applied(result: Any) -> None:
            if result is REFUSED:
                self.broker.send_error(session, ProtocolError(ErrorCode.UNAVAILABLE, "unavailable"), msg)
                return
            if result is not None and "retry_of" in result:
                self._after_commit_reply(session, msg, *result["retry_of"])
                return
            self._after_commit_reply(session, msg, mtype, self._reply(rec, result, echo))
            if then is not None:
                then(result)

        self.commit.record(rec, applied, session.conn_id)

    @property
    def _single(self) -> bool:
        """No cluster: the dashboards' pushes are announced here (else `_applied_here`)."""
        return self.commit.cluster is None

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
        rec = {"t": "crm_accounts", "g": key, "by": code, "accounts": accounts, "time": self.env.now_ms()}
        then = (lambda _: self.commit.after_commit(lambda: self.push_group_stats(key, code))) if self._single else None
        self._record_then_reply(session, msg, rec, "sync_result", then)

    def _incoming(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        req = read(msg.data, Incoming)
        acct = self._owned_account(key, req.line_account_id)
        line = str(req.incoming_line_id)
        now = self.env.now_ms()
        rec = {"t": "crm_incoming", "g": key, "acct": acct, "line": line, "day": self.day(now), "time": now}
        rec["fields"] = req.fields  # the desktop's fields, kept for the CRM reads
        if self._single:  # the journal holds the id; a cluster's apply decides it
            rec["id"] = self.store.next_incoming_id

        def then(result: dict[str, Any] | None) -> None:
            self.commit.after_commit(lambda: self._incoming_counted(key, code, rec, result))

        self._record_then_reply(session, msg, rec, "incoming_received", then if self._single else None)

    def _incoming_counted(self, key: str, code: str | None, rec: dict[str, Any], result: dict[str, Any] | None) -> None:
        """A new incoming is durable: the group's dashboards get it (seed 000's "new
        incoming customers, live": the desktop's fields as sent) and the counters."""
        dashboards = self.dashboards(key)
        if not dashboards:
            return
        t = self.env.now_ms()
        acct, answer = rec["acct"], result or {}
        update = {**rec.get("fields", {}), "line_account_id": acct, "incoming_line_id": rec["line"]}
        update.update(duplicate=bool(answer.get("duplicate")), incoming_id=answer.get("incoming_id"))
        update["timestamp"] = rec["time"] // 1000
        self.broker.fan_out(dashboards, encode("incoming_update", update, t))
        stats = encode("account_stats_update", {**self.account_stats(key, acct, t), "timestamp": t}, t)
        self.broker.fan_out(dashboards, stats)
        self.push_group_stats(key, code, dashboards)

    def _customer_sync(self, session: Session, msg: Inbound) -> None:
        key, _ = self._desktop(session)
        req = read(msg.data, CustomerSync)
        customer = str(req.customer_id)
        rec: dict[str, Any] = {"t": "crm_customer", "g": key, "customer_id": customer, "fields": req.fields}
        if self._single:  # the journal holds the id and the merged fields; a cluster's apply decides them
            known = self.store.customer(key, customer)
            rec["db_id"] = known["customer_db_id"] if known else self.store.next_customer_db_id
            rec["fields"] = {**({k: v for k, v in known.items() if k != "customer_db_id"} if known else {}), **req.fields}
        self._record_then_reply(session, msg, rec, "customer_sync_received", echo=req.customer_id)

    def _follow_up_sync(self, session: Session, msg: Inbound) -> None:
        key, _ = self._desktop(session)
        req = read(msg.data, FollowUpSync)
        customer = str(req.customer_id)
        rec: dict[str, Any] = {"t": "crm_follow_up", "g": key, "customer_id": customer, "fields": req.fields}
        if self._single:  # the journal holds the id; a cluster's apply decides it
            rec["id"] = self.store.next_follow_up_id
        self._record_then_reply(session, msg, rec, "follow_up_sync_received", echo=req.customer_id)

    def _status_change(self, session: Session, msg: Inbound) -> None:
        key, code = self._desktop(session)
        req = read(msg.data, StatusChange)
        acct = self._owned_account(key, req.line_account_id)
        status = req.online_status
        now = self.env.now_ms()
        rec = {"t": "crm_status", "g": key, "id": acct, "status": status, "time": now}
        self._record_then_reply(session, msg, rec, "account_status_updated")
        if self._single:
            self._announce_status(key, code, [acct], status, now)

    def _announce_status(self, key: str, code: str | None, accounts: list[str], status: str, now: int) -> None:
        self.commit.after_commit(lambda: self._status_changed(key, code, accounts, status, now))

    def _status_changed(self, key: str, code: str | None, accounts: list[str], status: str, now: int) -> None:
        dashboards = self.dashboards(key)
        if not dashboards:
            return
        group_id = self.group_id(key)  # as it came (int or string)
        for acct in accounts:
            change = {"line_account_id": acct, "online_status": status, "group_id": group_id, "timestamp": now}
            self.broker.fan_out(dashboards, encode("account_status_change", change, now))
        self.push_group_stats(key, code, dashboards)

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
        try:
            self.commit.record({"t": "crm_offline", "g": key, "ids": ids, "time": now})
        except ProtocolError:  # a cluster node without Redis: the accounts stay as they were
            return
        if self._single:
            self._announce_status(key, code, ids, "offline", now)

    # -- a cluster node's live effects ------------------------------------------------

    def _applied_here(self, rec: dict[str, Any], result: Any, conn: str | None) -> None:
        """(Cluster mode: a `crm_*` record from the shared log was applied.) This
        node's dashboards of the group get what a single node announces."""
        if rec.get("retry"):  # a retry changed nothing
            return
        kind, key = rec["t"], rec["g"]
        if kind == "crm_accounts":
            self.push_group_stats(key, rec.get("by"))
        elif kind == "crm_incoming":
            self._incoming_counted(key, None, rec, result)
        elif kind == "crm_status":
            self._status_changed(key, None, [rec["id"]], rec["status"], rec["time"])
        elif kind == "crm_offline":
            self._status_changed(key, None, rec["ids"], "offline", rec["time"])
