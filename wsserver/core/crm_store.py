"""The CRM's durable state (seed 000), per group, without I/O.

`MemoryCrmStore` keeps it in this process, event-sourced like the direct
messages: each change is a `crm_*` record that `apply()` folds in, at run time
and at replay. It implements `core.stores.CrmStore`, what the CRM workflow
(`core.crm`) asks of its state.

Counters:
- an incoming is a duplicate when its `incoming_line_id` was already seen in
  the group (in any account);
- counts are kept per calendar day (the caller names the day, in
  `crm.timezone`), so a new day starts at zero without any job;
- per account and per group: total, today, duplicate, today's duplicates.

Isolation: account ids are unique per group, not globally.

Every incoming is also kept as a record (`incoming_id`, numbered across groups
like follow-ups, the desktop's fields, `duplicate`), and the reads page the
customers, follow-ups and incoming records of a group by their number
(`page`): each list is in the order of its numbers, which only grow. Groups
and snapshots from before the incoming records start with none.

In place, `apply` changes only a group's dicts, its account dicts and its
counter lists; everything else is replaced whole (`to_state` relies on it).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

__all__ = ["PAGES", "RECORD_TYPES", "MemoryCrmStore"]

RECORD_TYPES = (
    "crm_accounts",
    "crm_status",
    "crm_incoming",
    "crm_customer",
    "crm_follow_up",
    "crm_offline",
)


def _new_group() -> dict[str, Any]:
    return {
        "accounts": {},  # line_account_id -> account dict
        "seen": {},  # incoming_line_id -> {"acct", "time"} (first sighting)
        "days": {},  # "YYYY-MM-DD" -> {"all": [incoming, duplicate], acct_id: [incoming, duplicate]}
        "totals": {},  # acct_id -> [incoming, duplicate]; "" for the group
        "customers": {},  # customer_id -> {"customer_db_id", ...fields}
        "follow_ups": [],  # {"follow_up_id", "customer_id", ...fields}
        "incoming": [],  # {"incoming_id", "line_account_id", "incoming_line_id", "duplicate", "time", ...fields}
    }


PAGES = {
    # kind -> (the group's list or dict of records, the number field)
    "customers": ("customers", "customer_db_id"),
    "follow_ups": ("follow_ups", "follow_up_id"),
    "incoming": ("incoming", "incoming_id"),
}


class MemoryCrmStore:
    """The CRM state of every group, in dicts."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {}
        self.next_customer_db_id = 1
        self.next_follow_up_id = 1
        self.next_incoming_id = 1

    def group(self, key: str) -> dict[str, Any]:
        """A group's state, created empty on first use."""
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = _new_group()
        return g

    # -- durable state -----------------------------------------------------------

    def apply(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Fold one `crm_*` record into the state. What depends on the state is
        answered: the accounts a sync `created`, an incoming's `duplicate`, a
        customer's `customer_db_id`, a follow-up's `follow_up_id`. A cluster node's customer or follow-up record
        comes without its id (`core.replicated`): it is decided here, from the
        state, and written into the record (a customer's fields merged into the
        known ones likewise); a single node's carries the one its sender decided
        from the same state."""
        kind = rec["t"]
        g = self.group(rec["g"])
        if kind == "crm_accounts":
            created = 0
            for acct in rec["accounts"]:
                old = g["accounts"].get(acct["line_account_id"])
                created += old is None
                g["accounts"][acct["line_account_id"]] = {**(old or {}), **acct, "synced_by": rec.get("by")}
            return {"created": created}
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
            answer: dict[str, Any] = {"duplicate": dup}
            if "fields" in rec:  # (records from before incoming records have none)
                iid = rec.get("id")
                if iid is None:  # a cluster node's record: decided here, from the state
                    iid = rec["id"] = self.next_incoming_id
                entry = {**rec["fields"], "incoming_id": iid, "line_account_id": acct}
                entry.update(incoming_line_id=line, duplicate=dup, time=rec["time"])
                g.setdefault("incoming", []).append(entry)
                self.next_incoming_id = max(self.next_incoming_id, iid + 1)
                answer["incoming_id"] = iid
            day = g["days"].setdefault(rec["day"], {})
            for counts in (
                day.setdefault("", [0, 0]),
                day.setdefault(acct, [0, 0]),
                g["totals"].setdefault("", [0, 0]),
                g["totals"].setdefault(acct, [0, 0]),
            ):
                counts[0] += 1
                counts[1] += dup
            return answer
        elif kind == "crm_customer":
            if "db_id" not in rec:
                known = g["customers"].get(rec["customer_id"])
                rec["db_id"] = known["customer_db_id"] if known else self.next_customer_db_id
                if known:
                    rec["fields"] = {**{k: v for k, v in known.items() if k != "customer_db_id"}, **rec["fields"]}
            g["customers"][rec["customer_id"]] = {"customer_db_id": rec["db_id"], **rec["fields"]}
            self.next_customer_db_id = max(self.next_customer_db_id, rec["db_id"] + 1)
            return {"customer_db_id": rec["db_id"]}
        elif kind == "crm_follow_up":
            if "id" not in rec:
                rec["id"] = self.next_follow_up_id
            g["follow_ups"].append(
                {"follow_up_id": rec["id"], "customer_id": rec["customer_id"], **rec["fields"]}
            )
            self.next_follow_up_id = max(self.next_follow_up_id, rec["id"] + 1)
            return {"follow_up_id": rec["id"]}
        else:
            raise ValueError(f"unknown CRM record {kind!r}")
        return None

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
                "incoming": list(g.get("incoming", ())),
            }
            for key, g in self.groups.items()
        }
        return {
            "groups": groups,
            "next_customer_db_id": self.next_customer_db_id,
            "next_follow_up_id": self.next_follow_up_id,
            "next_incoming_id": self.next_incoming_id,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""
        self.groups = state["groups"]
        self.next_customer_db_id = state["next_customer_db_id"]
        self.next_follow_up_id = state["next_follow_up_id"]
        self.next_incoming_id = state.get("next_incoming_id", 1)

    # -- reading -------------------------------------------------------------------

    def group_keys(self) -> list[str]:
        """The groups with CRM state."""
        return list(self.groups)

    def has_group(self, key: str) -> bool:
        """Whether a group has CRM state."""
        return key in self.groups

    def accounts(self, key: str) -> Mapping[str, dict[str, Any]]:
        """A group's accounts by id, as stored (the group is created empty on
        first use, as every step of the workflow always did)."""
        accounts: dict[str, dict[str, Any]] = self.group(key)["accounts"]
        return accounts

    def account_elsewhere(self, key: str, acct: str) -> bool:
        """Whether another group than `key` has an account `acct`."""
        return any(acct in g["accounts"] for k, g in self.groups.items() if k != key)

    def seen(self, key: str, line: str) -> bool:
        """Whether an incoming `line` was already seen in the group."""
        return line in self.group(key)["seen"]

    def customer(self, key: str, customer_id: str) -> dict[str, Any] | None:
        """A group's customer (`customer_db_id` and its fields), or None."""
        found: dict[str, Any] | None = self.group(key)["customers"].get(customer_id)
        return found

    def group_stats(self, key: str, day: str) -> dict[str, Any]:
        """The counters of `group_stats_update` (without `activation_code`/`timestamp`)."""
        g = self.groups.get(key) or _new_group()
        today = g["days"].get(day, {}).get("", [0, 0])
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

    def account_stats(self, key: str, acct: str, day: str) -> dict[str, Any]:
        """The counters of `account_stats_update` (without `timestamp`)."""
        g = self.groups.get(key) or _new_group()
        today = g["days"].get(day, {}).get(acct, [0, 0])
        total = g["totals"].get(acct, [0, 0])
        return {
            "line_id": acct,
            "total_incoming": total[0],
            "today_incoming": today[0],
            "duplicate_incoming": total[1],
            "today_duplicate": today[1],
        }

    def account_list(self, key: str) -> list[dict[str, Any]]:
        """A group's accounts as the HTTP API lists them (without `synced_by`)."""
        g = self.groups.get(key)
        if g is None:
            return []
        return [{k: v for k, v in a.items() if k != "synced_by"} for a in g["accounts"].values()]

    def page(self, key: str, kind: str, after: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` of a group's `kind` records (`PAGES`) numbered above
        `after`, in order, and whether more follow."""
        g = self.groups.get(key)
        if g is None:
            return [], False
        name, number = PAGES[kind]
        found = g.get(name, ())
        items = list(found.values()) if isinstance(found, dict) else found
        start = bisect.bisect_right(items, after, key=lambda item: item[number])
        page = items[start : start + limit]
        if isinstance(found, dict):  # customers are kept by their id: give it back
            ids = list(found)[start : start + limit]
            page = [{"customer_id": cid, **item} for cid, item in zip(ids, page, strict=True)]
        return page, len(items) > start + limit
