"""A scripted day of a small call centre (seed 000, SPEC 4.4), without I/O:
two groups, desktop clients and dashboards, syncs, incomings with duplicates,
status changes, a client that drops, midnight in Asia/Shanghai, and a restart."""

from __future__ import annotations

import datetime
import json
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes import Clock, Journal
from tests.test_hub import FakeOutlet, send, user
from wsserver.config import load_config
from wsserver.core.crm import mask_code
from wsserver.core.hub import Hub
from wsserver.core.identity import Identity

SHANGHAI = ZoneInfo("Asia/Shanghai")
CODES = [
    {"code": "A1", "group_id": 1},
    {"code": "A2", "group_id": 1},
    {"code": "B1", "group_id": 2},
]


class CallCentre:
    def __init__(self, clock: Clock | None = None, journal: Journal | None = None, **overrides: Any) -> None:
        self.clock = clock or Clock(datetime.datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI).timestamp())
        self.journal = journal or Journal()
        config = load_config(None, env={}, overrides={"activation_codes": CODES, **overrides})
        self.hub = Hub(config, clock=self.clock, storage=self.journal)
        self.n = 0

    def connect(self, identity: Identity) -> tuple[str, FakeOutlet]:
        self.n += 1
        conn_id, outlet = f"k{self.n}", FakeOutlet()
        assert self.hub.admit(outlet, conn_id, "10.0.0.9") is None
        assert self.hub.authenticate(conn_id, identity) is None
        return conn_id, outlet

    def desktop(self, code: str) -> tuple[str, FakeOutlet]:
        conn_id, outlet = self.connect(Identity(activation_code=code))
        assert outlet.take()[0]["type"] == "auth_success"
        return conn_id, outlet

    def dashboard(self, user_id: Any, group: Any, role: str | None = "dashboard") -> tuple[str, FakeOutlet]:
        conn_id, outlet = self.connect(user(user_id, group_id=group, role=role))
        frames = outlet.take()
        assert [f["type"] for f in frames] == ["connected", "group_stats_update"]
        return conn_id, outlet


def stats(outlet: FakeOutlet) -> dict[str, Any]:
    """The newest group_stats_update's counters (without the timestamp)."""
    data = dict(outlet.of_type("group_stats_update")[-1]["data"])
    data.pop("timestamp")
    return data


def counters(total_accounts: int, online: int, total: int, today: int, dup: int, today_dup: int, code: Any) -> dict[str, Any]:
    return {
        "activation_code": code,
        "total_accounts": total_accounts,
        "online_accounts": online,
        "total_incoming": total,
        "today_incoming": today,
        "duplicate_incoming": dup,
        "today_duplicate": today_dup,
    }


def test_dashboard_gets_group_stats_right_after_connected() -> None:
    cc = CallCentre()
    _, d1 = cc.connect(user("boss", group_id=1, role="dashboard"))
    frames = d1.take()
    assert [f["type"] for f in frames] == ["connected", "group_stats_update"]
    assert frames[1]["data"]["activation_code"] == "A1"
    assert frames[1]["data"]["total_accounts"] == 0


def test_a_day_in_the_call_centre() -> None:
    cc = CallCentre()
    hub = cc.hub
    a1, a1_out = cc.desktop("A1")
    a2, a2_out = cc.desktop("A2")
    b1, b1_out = cc.desktop("B1")
    _, d1 = cc.dashboard("boss1", 1)
    _, d2 = cc.dashboard("boss2", 2)

    # 1. A1 syncs two accounts
    send(hub, a1, "sync_line_accounts", [
        {"line_account_id": "acc1", "name": "Amy", "online_status": "online"},
        {"line_account_id": "acc2", "online_status": "offline"},
    ], id="s1")
    result = a1_out.last
    assert result["type"] == "sync_result" and result["id"] == "s1"
    assert result["data"]["success"] is True
    assert (result["data"]["created_count"], result["data"]["updated_count"]) == (2, 0)
    assert [a["line_account_id"] for a in result["data"]["accounts"]] == ["acc1", "acc2"]
    assert stats(d1) == counters(2, 1, 0, 0, 0, 0, "A1")
    assert d2.take() == []  # another group's dashboard sees nothing

    # 2. an upsert: acc2 updated, acc3 created, acc1 kept
    send(hub, a1, "sync_line_accounts", [{"line_account_id": "acc2", "online_status": "online"}, {"line_account_id": "acc3"}])
    assert (a1_out.last["data"]["created_count"], a1_out.last["data"]["updated_count"]) == (1, 1)
    assert stats(d1) == counters(3, 2, 0, 0, 0, 0, "A1")

    # 3. incomings: the same incoming_line_id is a duplicate anywhere in the group
    d1.take()
    send(hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "L1", "nickname": "x"})
    assert a1_out.last["data"] == {"line_account_id": "acc1", "incoming_line_id": "L1", "status": "processed", "duplicate": False}
    frames = d1.take()
    assert [f["type"] for f in frames] == ["incoming_update", "account_stats_update", "group_stats_update"]
    assert frames[0]["data"]["nickname"] == "x" and frames[0]["data"]["duplicate"] is False
    acct = dict(frames[1]["data"])
    acct.pop("timestamp")
    assert acct == {"line_id": "acc1", "total_incoming": 1, "today_incoming": 1, "duplicate_incoming": 0, "today_duplicate": 0}
    send(hub, a2, "incoming", {"line_account_id": "acc2", "incoming_line_id": "L1"})
    assert a2_out.last["data"]["duplicate"] is True
    assert stats(d1) == counters(3, 2, 2, 2, 1, 1, "A2")
    send(hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "L2"})
    assert stats(d1) == counters(3, 2, 3, 3, 1, 1, "A1")

    # group 2 has its own accounts and its own duplicates
    send(hub, b1, "sync_line_accounts", [{"line_account_id": "acc1", "online_status": "online"}])
    send(hub, b1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "L1"})
    assert b1_out.last["data"]["duplicate"] is False
    assert stats(d2) == counters(1, 1, 1, 1, 0, 0, "B1")
    assert stats(d1) == counters(3, 2, 3, 3, 1, 1, "A1")  # unchanged by group 2

    # 4. status change
    d1.take()
    send(hub, a1, "account_status_change", {"line_account_id": "acc1", "online_status": "offline"})
    assert a1_out.last["data"] == {"line_account_id": "acc1", "online_status": "offline", "status": "updated"}
    frames = d1.take()
    assert frames[0]["type"] == "account_status_change"
    assert {k: v for k, v in frames[0]["data"].items() if k != "timestamp"} == {
        "line_account_id": "acc1", "online_status": "offline", "group_id": 1,
    }
    assert frames[1]["type"] == "group_stats_update"
    assert {k: v for k, v in frames[1]["data"].items() if k != "timestamp"} == counters(3, 1, 3, 3, 1, 1, "A1")

    # 5. customers keep their customer_db_id; follow-ups are numbered
    send(hub, a1, "customer_sync", {"customer_id": "c-9", "name": "Wang"})
    first = a1_out.last["data"]
    send(hub, a2, "customer_sync", {"customer_id": "c-9", "phone": "123"})
    again = a2_out.last["data"]
    assert first["customer_db_id"] == again["customer_db_id"] and again["status"] == "processed"
    assert hub.crm.store.groups["1"]["customers"]["c-9"] == {"customer_db_id": first["customer_db_id"], "name": "Wang", "phone": "123"}
    send(hub, a1, "follow_up_sync", {"customer_id": "c-9", "note": "call back"})
    f1 = a1_out.last["data"]["follow_up_id"]
    send(hub, a1, "follow_up_sync", {"customer_id": "c-9", "note": "done"})
    assert a1_out.last["data"] == {"customer_id": "c-9", "follow_up_id": f1 + 1, "status": "processed"}

    # 6. midnight in Shanghai: today's counters start again, totals stay
    cc.clock.advance(14 * 3600 + 1)  # 10:00 -> next day 00:00:01
    hub.crm.midnight()
    assert stats(d1) == counters(3, 1, 3, 0, 1, 0, "A1")
    send(hub, a1, "incoming", {"line_account_id": "acc3", "incoming_line_id": "L2"})
    assert stats(d1) == counters(3, 1, 4, 1, 2, 1, "A1")

    # 7. A1's last connection drops: the accounts it synced go offline; A2 stays
    d1.take()
    hub.close(a1)
    frames = d1.take()
    changes = [f["data"]["line_account_id"] for f in frames if f["type"] == "account_status_change"]
    assert sorted(changes) == ["acc2", "acc3"]  # acc1 was already offline
    assert all(f["data"]["online_status"] == "offline" for f in frames if f["type"] == "account_status_change")
    assert [f["data"]["online_accounts"] for f in frames if f["type"] == "group_stats_update"] == [0]

    # 8. a restart: snapshot + later records give the same counters
    snapshot = hub.snapshot_state()
    send(hub, a2, "incoming", {"line_account_id": "acc2", "incoming_line_id": "L9"})
    after = [r for r in cc.journal.records if r["n"] > snapshot["n"]]
    restarted = CallCentre(clock=cc.clock)
    restarted.hub.restore(snapshot, after)
    now = hub.now_ms()
    for group in ("1", "2"):
        assert restarted.hub.crm.group_stats(group, now) == hub.crm.group_stats(group, now)
    assert restarted.hub.crm.to_state() == hub.crm.to_state()
    replayed = CallCentre(clock=cc.clock)
    replayed.hub.restore(None, cc.journal.records)
    assert replayed.hub.crm.to_state() == hub.crm.to_state()


def test_only_group_administrators_see_the_activation_code_other_members_get_it_masked() -> None:
    cc = CallCentre()
    hub = cc.hub
    a1, _ = cc.desktop("A1")
    seen = {
        role: cc.dashboard(f"u-{role}", 1, role=role)[1] for role in ("admin", "dashboard", None, "user")
    }

    def codes() -> dict[str | None, set[Any]]:
        return {role: {f["data"]["activation_code"] for f in out.of_type("group_stats_update")} for role, out in seen.items()}

    # every kind of update: sync, incoming, status change, midnight, the client leaving
    send(hub, a1, "sync_line_accounts", [{"line_account_id": "acc1", "online_status": "online"}])
    send(hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "L1"})
    send(hub, a1, "account_status_change", {"line_account_id": "acc1", "online_status": "busy"})
    hub.crm.midnight()
    hub.close(a1)
    assert codes() == {"admin": {"A1"}, "dashboard": {"A1"}, None: {"A*"}, "user": {"A*"}}
    _, late = cc.connect(user("late", group_id=1))  # the greeting is masked too
    assert late.of_type("group_stats_update")[0]["data"]["activation_code"] == "A*"
    # masked or not, the counters are the same
    clear, masked = seen["dashboard"].of_type("group_stats_update"), seen["user"].of_type("group_stats_update")
    assert len(clear) == len(masked) == 5
    for a, b in zip(clear, masked, strict=True):
        assert {**a["data"], "activation_code": None} == {**b["data"], "activation_code": None}


def test_dashboard_roles_name_who_administers_the_crm_admins_always_do() -> None:
    cc = CallCentre(**{"crm.dashboard_roles": ["supervisor"]})
    frames = {role: cc.dashboard(f"u-{role}", 1, role=role)[1] for role in ("supervisor", "dashboard", "admin")}
    a1, _ = cc.desktop("A1")
    send(cc.hub, a1, "sync_line_accounts", [{"line_account_id": "acc1"}])
    shown = {role: out.of_type("group_stats_update")[-1]["data"]["activation_code"] for role, out in frames.items()}
    assert shown == {"supervisor": "A1", "dashboard": "A*", "admin": "A1"}


def test_a_masked_code_keeps_at_most_four_characters_of_its_first_half() -> None:
    assert mask_code("HG66OP88") == "HG66****"
    assert mask_code("SECRETCODE42") == "SECR********"
    assert mask_code("ABCDEF") == "ABC***"
    assert mask_code("A1") == "A*"
    assert mask_code("X") == "*"
    assert mask_code(None) is None


def test_a_client_with_two_connections_keeps_its_accounts_online_until_the_last_goes() -> None:
    cc = CallCentre()
    first, _out = cc.desktop("A1")
    second, _ = cc.desktop("A1")
    send(cc.hub, first, "sync_line_accounts", [{"line_account_id": "x", "online_status": "online"}])
    cc.hub.close(first)
    assert cc.hub.crm.store.groups["1"]["accounts"]["x"]["online_status"] == "online"
    cc.hub.close(second)
    assert cc.hub.crm.store.groups["1"]["accounts"]["x"]["online_status"] == "offline"


def test_offline_on_disconnect_can_be_turned_off() -> None:
    cc = CallCentre(**{"crm.offline_on_disconnect": False})
    a1, _ = cc.desktop("A1")
    send(cc.hub, a1, "sync_line_accounts", [{"line_account_id": "x", "online_status": "online"}])
    cc.hub.close(a1)
    assert cc.hub.crm.store.groups["1"]["accounts"]["x"]["online_status"] == "online"


def test_dashboards_get_the_group_id_as_it_came_when_its_code_is_gone() -> None:
    # "007" is not the number 7: with its code deleted, the id is the one the
    # dashboards' tokens carry
    cc = CallCentre(activation_codes=[{"code": "Z7", "group_id": "007"}])
    desk, _ = cc.desktop("Z7")
    send(cc.hub, desk, "sync_line_accounts", [{"line_account_id": "x", "online_status": "online"}])
    _, dash = cc.dashboard("boss", "007")
    assert cc.hub.activation_codes.delete("Z7") == 1
    cc.hub.close(desk)
    change = dash.of_type("account_status_change")[-1]["data"]
    assert (change["online_status"], change["group_id"]) == ("offline", "007")


def test_bad_crm_payloads_get_errors_naming_the_field_and_change_nothing() -> None:
    cc = CallCentre()
    hub = cc.hub
    a1, out = cc.desktop("A1")
    b1, _bout = cc.desktop("B1")
    send(hub, a1, "sync_line_accounts", [{"line_account_id": "mine"}])
    send(hub, b1, "sync_line_accounts", [{"line_account_id": "theirs"}])
    before = hub.crm.to_state()
    records = len(cc.journal.records)
    cases: list[tuple[str, Any, str, str]] = [
        ("incoming", {"incoming_line_id": "L"}, "invalid_message", "line_account_id"),
        ("incoming", {"line_account_id": 5.5, "incoming_line_id": "L"}, "invalid_message", "line_account_id"),
        ("incoming", {"line_account_id": "mine"}, "invalid_message", "incoming_line_id"),
        ("incoming", {"line_account_id": "theirs", "incoming_line_id": "L"}, "forbidden", "line_account_id"),
        ("incoming", {"line_account_id": "nobody", "incoming_line_id": "L"}, "not_found", "line_account_id"),
        ("incoming", "not an object", "invalid_message", "data"),
        ("account_status_change", {"line_account_id": "mine"}, "invalid_message", "online_status"),
        ("account_status_change", {"line_account_id": "mine", "online_status": 1}, "invalid_message", "online_status"),
        ("account_status_change", {"line_account_id": "theirs", "online_status": "online"}, "forbidden", "line_account_id"),
        ("sync_line_accounts", {"nope": 1}, "invalid_message", "data"),
        ("sync_line_accounts", [{"name": "no id"}], "invalid_message", "data[0].line_account_id"),
        ("sync_line_accounts", [{"line_account_id": "ok"}, 7], "invalid_message", "data[1]"),
        ("customer_sync", {"name": "x"}, "invalid_message", "customer_id"),
        ("follow_up_sync", {"customer_id": ["x"]}, "invalid_message", "customer_id"),
    ]
    for mtype, data, code, field_name in cases:
        send(hub, a1, mtype, data)
        err = out.last
        assert err["type"] == "error", (mtype, data)
        assert err["data"]["code"] == code and err["data"]["field"] == field_name, (mtype, data, err)
        assert err["data"]["ref"] == mtype
    assert hub.crm.to_state() == before
    assert len(cc.journal.records) == records


def test_dashboards_cannot_send_desktop_messages() -> None:
    cc = CallCentre()
    d1, out = cc.dashboard("boss", 1)
    send(cc.hub, d1, "sync_line_accounts", [{"line_account_id": "x"}])
    assert out.last["data"]["code"] == "forbidden"
    assert cc.hub.crm.store.groups.get("1") is None


def test_replies_wait_for_the_journal() -> None:
    journal = Journal(hold=0)  # nothing durable until the test says so
    cc = CallCentre(journal=journal)
    a1, out = cc.desktop("A1")
    _, d1 = cc.dashboard("boss", 1)
    send(cc.hub, a1, "sync_line_accounts", [{"line_account_id": "x"}])
    assert out.take() == [] and d1.take() == []
    journal.durable_upto = len(journal.records)
    cc.hub.release()
    assert out.last["type"] == "sync_result"
    assert d1.last["type"] == "group_stats_update"


def test_next_midnight_is_computed_in_the_crm_timezone() -> None:
    cc = CallCentre()
    now = datetime.datetime(2026, 11, 23, 23, 59, 30, tzinfo=SHANGHAI)
    assert cc.hub.crm.ms_to_next_midnight(int(now.timestamp() * 1000)) == 30_000
    assert cc.hub.crm.day(int(now.timestamp() * 1000)) == "2026-11-23"
    utc_evening = datetime.datetime(2026, 11, 23, 17, 0, tzinfo=datetime.UTC)  # 01:00 in Shanghai
    assert cc.hub.crm.day(int(utc_evening.timestamp() * 1000)) == "2026-11-24"


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def test_a_snapshot_of_a_deeply_nested_customer_value_is_taken_and_stays_detached() -> None:
    # A record a journal may still hold from before depth was checked on input.
    cc = CallCentre()
    hub = cc.hub
    hub.restore(None, [
        {"n": 1, "t": "crm_accounts", "g": "1", "by": "A1", "accounts": [{"line_account_id": "acc1", "online_status": "online"}], "time": 1},
        {"n": 2, "t": "crm_customer", "g": "1", "customer_id": "c1", "db_id": 1, "fields": {"notes": _nested(600)}},
    ])  # fmt: skip
    a1, _ = cc.desktop("A1")
    state = hub.snapshot_state()  # copy.deepcopy raised RecursionError here
    notes = state["crm"]["groups"]["1"]["customers"]["c1"]["notes"]
    for _ in range(600):
        notes = notes[0]
    assert notes == "bottom"
    # what `apply` changes in place does not reach the snapshot taken before
    send(hub, a1, "account_status_change", {"line_account_id": "acc1", "online_status": "busy"})
    send(hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "U1"})
    send(hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "U1"})
    group = state["crm"]["groups"]["1"]
    assert group["accounts"]["acc1"]["online_status"] == "online"
    assert group["totals"] == {} and group["days"] == {} and group["seen"] == {}
    later = hub.crm.to_state()["groups"]["1"]
    assert later["accounts"]["acc1"]["online_status"] == "busy"
    assert later["totals"] == {"": [2, 1], "acc1": [2, 1]}
    hub.crm.apply({"t": "crm_incoming", "g": "1", "acct": "acc1", "line": "U2", "day": "2026-11-23", "time": 2})
    assert later["totals"] == {"": [2, 1], "acc1": [2, 1]}
    assert list(later["days"].values()) == [{"": [2, 1], "acc1": [2, 1]}]


def test_a_retry_is_answered_from_a_snapshot_too_and_counts_again_after_the_dedup_window() -> None:
    cc = CallCentre()
    a1, a1_out = cc.desktop("A1")
    send(cc.hub, a1, "sync_line_accounts", [{"line_account_id": "acc1"}], id="s")
    send(cc.hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "L1"}, id="i1")
    first = a1_out.last
    assert first["data"]["duplicate"] is False
    # restart from a snapshot alone (nothing in the journal after it)
    state = json.loads(json.dumps(cc.hub.snapshot_state()))
    journal = Journal()  # numbering on after the snapshot's records
    journal.records = [{}] * state["n"]  # durable up to them, and on as records come
    hub = Hub(cc.hub.config, clock=cc.clock, storage=journal)
    hub.restore(state, [])
    cc.hub = hub
    a1, a1_out = cc.desktop("A1")
    send(hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "L1"}, id="i1")
    assert (a1_out.last["id"], a1_out.last["data"]) == ("i1", first["data"])
    assert hub.crm.group_stats("1", hub.now_ms())["total_incoming"] == 1
    # a refused request is no request: its retry is tried again
    send(hub, a1, "incoming", {"line_account_id": "nope", "incoming_line_id": "L2"}, id="i2")
    assert a1_out.last["type"] == "error"
    send(hub, a1, "sync_line_accounts", [{"line_account_id": "nope"}], id="s2")
    send(hub, a1, "incoming", {"line_account_id": "nope", "incoming_line_id": "L2"}, id="i2")
    assert a1_out.last["type"] == "incoming_received"
    # after messages.dedup_window the same id is a new request
    cc.clock.advance(hub.config.messages.dedup_window + 1)
    send(hub, a1, "incoming", {"line_account_id": "acc1", "incoming_line_id": "L1"}, id="i1")
    assert a1_out.last["data"]["duplicate"] is True
    assert hub.crm.group_stats("1", hub.now_ms())["total_incoming"] == 3
