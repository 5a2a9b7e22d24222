"""Activation codes changed at run time: durable, and closing what they no longer allow."""

from __future__ import annotations

from typing import Any

from tests.test_crm import CallCentre, Journal
from tests.test_hub import FakeOutlet
from wsserver.core.identity import Identity
from wsserver.errors import CloseCode


def admit(cc: CallCentre, code: str) -> tuple[Any, FakeOutlet]:
    outlet = FakeOutlet()
    cc.n += 1
    conn_id = f"z{cc.n}"
    assert cc.hub.admit(outlet, conn_id, "10.0.0.3") is None
    return cc.hub.authenticate(conn_id, Identity(activation_code=code)), outlet


def test_a_new_code_lets_its_desktop_client_in() -> None:
    cc = CallCentre()
    refusal, _ = admit(cc, "NEW1")
    assert refusal is not None and refusal.key == "activation_code_invalid"
    created, closed = cc.hub.activation_codes.put("NEW1", 3, "front desk", True)
    assert (created, closed) == (True, 0)
    refusal, outlet = admit(cc, "NEW1")
    assert refusal is None and outlet.frames[0]["data"]["group_id"] == 3


def test_disabling_a_code_closes_its_live_connections_with_4001() -> None:
    cc = CallCentre()
    _, live = cc.desktop("A1")
    _, other = cc.desktop("A2")
    created, closed = cc.hub.activation_codes.put("A1", 1, "", False)
    assert (created, closed) == (False, 1)
    assert live.closed == [(CloseCode.AUTH_FAILED, "activation_code_disabled")]
    assert other.closed == []
    refusal, _ = admit(cc, "A1")
    assert refusal is not None and refusal.key == "activation_code_disabled"


def test_deleting_a_code_from_the_config_closes_and_refuses_it() -> None:
    cc = CallCentre()
    _, live = cc.desktop("B1")
    assert cc.hub.activation_codes.delete("B1") == 1
    assert live.closed == [(CloseCode.AUTH_FAILED, "activation_code_invalid")]
    assert cc.hub.activation_codes.delete("B1") is None
    assert [c["code"] for c in cc.hub.activation_codes.listing()] == ["A1", "A2"]


def test_code_changes_survive_a_restart() -> None:
    journal = Journal()
    cc = CallCentre(journal=journal)
    codes = cc.hub.activation_codes
    codes.put("NEW1", 3, "n", True)
    snapshot = cc.hub.snapshot_state()
    codes.delete("A2")
    codes.put("A1", 1, "", False)
    later = [r for r in journal.records if r["n"] > snapshot["n"]]
    again = CallCentre()
    again.hub.restore(snapshot, later)
    assert again.hub.activation_codes.listing() == codes.listing()
    assert {c["code"]: c["enabled"] for c in again.hub.activation_codes.listing()} == {"A1": False, "B1": True, "NEW1": True}


def test_listing_counts_live_connections() -> None:
    cc = CallCentre()
    cc.desktop("A1")
    cc.desktop("A1")
    listing = {c["code"]: c for c in cc.hub.activation_codes.listing()}
    assert listing["A1"]["connections"] == 2 and listing["B1"]["connections"] == 0
    assert listing["B1"]["group_id"] == 2
