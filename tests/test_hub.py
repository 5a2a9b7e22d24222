"""Tests for wsserver.core.hub: admitting connections, principals and their limits,
activation codes, and rooms (SPEC 2, 4.1, 4.2, 5), all without I/O.

A `FakeOutlet` stands in for a connection: it records every frame the hub hands
it (parsed back from JSON, as a client would) and every close request. The hub
runs on a fixed clock, so every `timestamp` is 1_000_000 ms.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from wsserver.config import load_config
from wsserver.core.broker import FANOUT_SOON
from wsserver.core.commands import Authenticate
from wsserver.core.hub import Hub
from wsserver.core.identity import Identity
from wsserver.core.session import Refusal
from wsserver.errors import CloseCode
from wsserver.protocol.envelope import decode

NOW = 1000.0
NOW_MS = 1_000_000

CODES = [
    {"code": "DESK-1", "group_id": 1, "name": "desk one"},
    {"code": "DESK-OFF", "group_id": 1, "enabled": False},
    {"code": "DESK-2", "group_id": "2"},
]


class FakeOutlet:
    """Records what the hub delivers and asks; never blocks, always accepts."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed: list[tuple[int, str]] = []
        self.closed_after_queued: list[tuple[int, str]] = []
        self.soon: list[bool] = []  # each delivery's `soon` flag

    def deliver(self, frame: str | bytes, soon: bool = False) -> bool:
        self.frames.append(json.loads(frame))
        self.soon.append(soon)
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    def close_after_queued(self, code: int, reason: str) -> None:
        self.closed_after_queued.append((code, reason))

    def of_type(self, mtype: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == mtype]

    @property
    def last(self) -> dict[str, Any]:
        assert self.frames, "nothing was delivered"
        return self.frames[-1]

    def take(self) -> list[dict[str, Any]]:
        """The frames received so far, forgetting them."""
        frames, self.frames = self.frames, []
        return frames


_ids = itertools.count(1)


def make_hub(**overrides: Any) -> Hub:
    values: dict[str, Any] = {"activation_codes": CODES}
    values.update(overrides)
    return Hub(load_config(None, env={}, overrides=values), clock=lambda: NOW)


def user(user_id: Any, group_id: Any = 1, **claims: Any) -> Identity:
    rooms = claims.pop("rooms", None)
    return Identity(
        user_id=user_id,
        group_id=group_id,
        username=claims.pop("username", f"name-{user_id}"),
        rooms=None if rooms is None else tuple(rooms),
        **claims,
    )


def connect(
    hub: Hub,
    identity: Identity,
    ip: str = "10.0.0.1",
    request_id: Any = None,
    device_id: str | None = None,
) -> tuple[str, FakeOutlet]:
    """Admit and authenticate one connection; its greeting is consumed."""
    outlet = FakeOutlet()
    conn_id = f"c{next(_ids)}"
    assert hub.admit(outlet, conn_id, ip) is None
    assert hub.authenticate(conn_id, identity, device_id, None, request_id) is None
    greetings = outlet.take()
    assert greetings[0]["type"] in ("connected", "auth_success")
    # a dashboard of a CRM group also gets its counters (SPEC 4.4); nothing else
    assert all(g["type"] == "group_stats_update" for g in greetings[1:]), greetings
    return conn_id, outlet


def send(hub: Hub, conn_id: str, mtype: str, data: Any = None, **top: Any) -> None:
    hub.handle(conn_id, decode(json.dumps({"type": mtype, "data": data, **top})))


def join(hub: Hub, conn_id: str, room: str, outlet: FakeOutlet, **data: Any) -> dict[str, Any]:
    send(hub, conn_id, "join_room", {"room": room, **data})
    reply = outlet.last
    assert reply["type"] == "room_joined", reply
    return reply


def error_of(outlet: FakeOutlet) -> dict[str, Any]:
    frame = outlet.last
    assert frame["type"] == "error", frame
    return frame


# --- greeting -------------------------------------------------------------------------


def test_token_user_is_greeted_with_connected_in_chinese():
    hub = make_hub()
    outlet = FakeOutlet()
    assert hub.admit(outlet, "conn-a", "10.0.0.1") is None
    assert hub.authenticate("conn-a", user(42, group_id=7)) is None
    assert outlet.frames == [
        {
            "type": "connected",
            "data": {
                "user_id": 42,
                "group_id": 7,
                "conn_id": "conn-a",
                "message": "WebSocket连接成功",
            },
            "timestamp": NOW_MS,
        }
    ]


def test_identity_given_at_the_handshake_is_greeted_on_admit():
    hub = make_hub()
    outlet = FakeOutlet()
    assert hub.admit(outlet, "conn-h", "10.0.0.1", identity=user("u1"), device_id="pc") is None
    greeting = outlet.frames[0]
    assert greeting["type"] == "connected"
    assert greeting["data"]["user_id"] == "u1"
    assert greeting["data"]["device_id"] == "pc"


def test_connected_carries_user_type_when_the_token_has_one():
    hub = make_hub()
    outlet = FakeOutlet()
    hub.admit(outlet, "c-ut", "10.0.0.1")
    hub.authenticate("c-ut", user("m1", user_type=2))
    assert outlet.frames[0]["data"]["user_type"] == 2


def test_desktop_client_is_greeted_with_auth_success_in_chinese():
    hub = make_hub()
    outlet = FakeOutlet()
    hub.admit(outlet, "desk", "10.0.0.2")
    assert hub.authenticate("desk", Identity(activation_code="DESK-1")) is None
    assert outlet.frames == [
        {
            "type": "auth_success",
            "data": {
                "group_id": 1,
                "activation_code": "DESK-1",
                "message": "认证成功，请同步Line账号列表",
            },
            "timestamp": NOW_MS,
        }
    ]


def test_greetings_are_in_english_when_the_locale_is_en():
    hub = make_hub(**{"server.locale": "en"})
    web, desk = FakeOutlet(), FakeOutlet()
    hub.admit(web, "web", "10.0.0.1")
    hub.admit(desk, "desk", "10.0.0.1")
    hub.authenticate("web", user(1))
    hub.authenticate("desk", Identity(activation_code="DESK-1"))
    assert web.frames[0]["data"]["message"] == "WebSocket connected"
    assert desk.last["data"]["message"] == "Authenticated, please sync your Line accounts"


def test_greeting_echoes_the_id_of_the_auth_message():
    hub = make_hub()
    outlet = FakeOutlet()
    hub.admit(outlet, "c-id", "10.0.0.1")
    hub.authenticate("c-id", user(1), request_id="auth-1")
    assert outlet.frames[0]["type"] == "connected" and outlet.frames[0]["id"] == "auth-1"


def test_greeting_without_a_request_id_has_no_id():
    hub = make_hub()
    outlet = FakeOutlet()
    hub.admit(outlet, "c-noid", "10.0.0.1")
    hub.authenticate("c-noid", user(1))
    assert "id" not in outlet.last


def test_activation_code_sets_the_codes_group_on_the_identity():
    hub = make_hub()
    outlet = FakeOutlet()
    hub.admit(outlet, "desk2", "10.0.0.2")
    ident = Identity(activation_code="DESK-2", group_id="forged")
    settled = hub.execute(Authenticate("desk2", ident))
    assert isinstance(settled, Identity) and settled.group_id == "2"
    assert hub.presence.sessions["desk2"].identity is settled
    assert ident.group_id == "forged"  # a value: what the connection presented is not changed
    assert outlet.last["data"]["group_id"] == "2"


def test_unknown_activation_code_is_refused_with_401():
    hub = make_hub()
    outlet = FakeOutlet()
    hub.admit(outlet, "bad", "10.0.0.2")
    refusal = hub.authenticate("bad", Identity(activation_code="NOPE"))
    assert refusal == Refusal(401, CloseCode.AUTH_FAILED, "activation_code_invalid")
    assert outlet.frames == []
    assert hub.presence.principals == {}


def test_disabled_activation_code_is_refused_as_disabled():
    hub = make_hub()
    hub.admit(FakeOutlet(), "off", "10.0.0.2")
    refusal = hub.authenticate("off", Identity(activation_code="DESK-OFF"))
    assert refusal == Refusal(401, CloseCode.AUTH_FAILED, "activation_code_disabled")


def test_refused_handshake_identity_leaves_nothing_behind():
    hub = make_hub()
    outlet = FakeOutlet()
    refusal = hub.admit(outlet, "gone", "10.0.0.9", identity=Identity(activation_code="NOPE"))
    assert refusal is not None and refusal.status == 401
    assert hub.presence.sessions == {} and hub.presence.per_ip == {} and hub.presence.principals == {}


# --- connection limits ----------------------------------------------------------------


def test_connection_over_the_total_limit_is_refused_with_503():
    hub = make_hub(**{"limits.max_connections": 2})
    assert hub.admit(FakeOutlet(), "a", "10.0.0.1", identity=user("a")) is None
    assert hub.admit(FakeOutlet(), "b", "10.0.0.2", identity=user("b")) is None
    refusal = hub.admit(FakeOutlet(), "c", "10.0.0.3", identity=user("c"))
    assert refusal == Refusal(503, CloseCode.OVER_CAPACITY, "over_capacity")
    assert set(hub.presence.sessions) == {"a", "b"}


def test_unauthenticated_connections_do_not_count_against_the_total_limit():
    hub = make_hub(**{"limits.max_connections": 2})
    for i in range(10):  # sockets that never authenticate
        assert hub.admit(FakeOutlet(), f"idle{i}", "10.0.0.9") is None
    assert hub.admit(FakeOutlet(), "a", "10.0.0.1", identity=user("a")) is None
    b_id, _ = connect(hub, user("b"))  # admitted pending, then a first-message auth
    assert hub.stats()["pending_connections"] == 10
    # the total is reached by authenticated connections only: now both ways are refused
    assert hub.admit(FakeOutlet(), "c", "10.0.0.3", identity=user("c")) == Refusal(
        503, CloseCode.OVER_CAPACITY, "over_capacity"
    )
    assert hub.authenticate("idle0", user("c")) == Refusal(503, CloseCode.OVER_CAPACITY, "over_capacity")
    hub.close(b_id)
    assert hub.authenticate("idle0", user("c")) is None
    assert hub.stats()["pending_connections"] == hub.presence.unauthenticated == 9


def test_unauthenticated_connections_over_max_pending_are_refused_with_503_users_still_get_in():
    hub = make_hub(**{"limits.max_pending": 2})
    assert hub.admit(FakeOutlet(), "p1", "10.0.0.1") is None
    assert hub.admit(FakeOutlet(), "p2", "10.0.0.1") is None
    assert hub.admit(FakeOutlet(), "p3", "10.0.0.1") == Refusal(
        503, CloseCode.OVER_CAPACITY, "too_many_pending"
    )
    assert hub.admit(FakeOutlet(), "u", "10.0.0.1", identity=user("u")) is None
    assert hub.authenticate("p1", user("v")) is None  # p1 is no longer pending: room for one
    assert hub.admit(FakeOutlet(), "p3", "10.0.0.1") is None
    hub.close("p2")
    hub.close("p3")
    assert hub.presence.unauthenticated == 0 == hub.stats()["pending_connections"]


def test_a_refused_handshake_identity_leaves_no_pending_connection_behind():
    hub = make_hub(**{"limits.max_pending": 1})
    refusal = hub.admit(FakeOutlet(), "bad", "10.0.0.1", identity=Identity(activation_code="NOPE"))
    assert refusal is not None and refusal.status == 401
    assert hub.presence.unauthenticated == 0
    assert hub.admit(FakeOutlet(), "p", "10.0.0.1") is None


def test_connection_over_the_per_ip_limit_is_refused_with_429():
    hub = make_hub(**{"limits.max_connections_per_ip": 2})
    assert hub.admit(FakeOutlet(), "a", "10.0.0.1") is None
    assert hub.admit(FakeOutlet(), "b", "10.0.0.1") is None
    refusal = hub.admit(FakeOutlet(), "c", "10.0.0.1")
    assert refusal is not None
    assert (refusal.status, refusal.key) == (429, "too_many_ip_connections")
    assert hub.admit(FakeOutlet(), "d", "10.0.0.2") is None
    assert hub.presence.per_ip == {"10.0.0.1": 2, "10.0.0.2": 1}


def test_closing_a_connection_makes_room_under_the_per_ip_limit():
    hub = make_hub(**{"limits.max_connections_per_ip": 1})
    hub.admit(FakeOutlet(), "a", "10.0.0.1")
    hub.close("a")
    assert hub.admit(FakeOutlet(), "b", "10.0.0.1") is None


def test_new_tab_over_the_per_user_limit_replaces_the_oldest_with_4004():
    hub = make_hub(**{"limits.max_connections_per_user": 2})
    first, first_out = connect(hub, user("u1"))
    second, second_out = connect(hub, user("u1"))
    third_out = FakeOutlet()
    hub.admit(third_out, "third", "10.0.0.1")

    assert hub.authenticate("third", user("u1")) is None

    assert first_out.closed == [(CloseCode.REPLACED, "replaced")]
    assert second_out.closed == []
    assert third_out.frames[0]["type"] == "connected"
    assert first not in hub.presence.sessions
    assert set(hub.presence.principals[("user", "", "u1")]) == {second, "third"}


def test_replaced_tab_leaves_its_rooms():
    hub = make_hub(**{"limits.max_connections_per_user": 1})
    old, old_out = connect(hub, user("u1"))
    other, other_out = connect(hub, user("u2"))
    join(hub, old, "lobby", old_out)
    join(hub, other, "lobby", other_out)
    other_out.take()

    connect(hub, user("u1"))

    assert [c for c, _ in old_out.closed] == [CloseCode.REPLACED]
    assert [m["user_id"] for m in hub.rooms.members(("1", "lobby"))] == ["u2"]
    assert other_out.of_type("user_left")[0]["data"]["user_id"] == "u1"


def test_new_tab_over_the_per_user_limit_is_refused_with_429_under_reject():
    hub = make_hub(**{"limits.max_connections_per_user": 1, "limits.per_user_policy": "reject"})
    first, first_out = connect(hub, user("u1"))
    hub.admit(FakeOutlet(), "second", "10.0.0.1")
    refusal = hub.authenticate("second", user("u1"))
    assert refusal == Refusal(429, CloseCode.OVER_CAPACITY, "too_many_user_connections")
    assert first_out.closed == []
    assert set(hub.presence.principals[("user", "", "u1")]) == {first}


def test_per_user_limit_does_not_count_other_users():
    hub = make_hub(**{"limits.max_connections_per_user": 1})
    _, first_out = connect(hub, user("u1"))
    connect(hub, user("u2"))
    connect(hub, user("u1", user_type=2))  # same id, another user type
    assert first_out.closed == []


def test_closing_frees_rooms_principals_and_ip_counts_and_is_idempotent():
    hub = make_hub()
    conn, outlet = connect(hub, user("u1"), ip="10.9.9.9")
    join(hub, conn, "lobby", outlet)
    assert hub.presence.rooms and hub.presence.principals and hub.presence.per_ip

    hub.close(conn)
    hub.close(conn)

    assert hub.presence.sessions == {}
    assert hub.presence.rooms == {}
    assert hub.presence.principals == {}
    assert hub.presence.per_ip == {}


def test_closing_one_tab_keeps_the_principal_and_its_other_tab():
    hub = make_hub()
    tab1, _ = connect(hub, user("u1"))
    tab2, _ = connect(hub, user("u1"))
    hub.close(tab1)
    assert set(hub.presence.principals[("user", "", "u1")]) == {tab2}
    assert hub.presence.per_ip == {"10.0.0.1": 1}


def test_closing_a_room_member_tells_the_others_user_left():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b"))
    join(hub, a, "lobby", a_out)
    join(hub, b, "lobby", b_out)
    a_out.take()
    hub.close(b)
    assert a_out.frames == [
        {
            "type": "user_left",
            "data": {"room": "lobby", "user_id": "b", "username": "name-b"},
            "timestamp": NOW_MS,
        }
    ]


def test_shutdown_asks_every_connection_to_close_with_1001():
    hub = make_hub()
    outlets = [connect(hub, user(f"u{i}"))[1] for i in range(3)]
    pending = FakeOutlet()
    hub.admit(pending, "not-yet-authenticated", "10.0.0.1")

    hub.close_all(CloseCode.GOING_AWAY, "shutting_down")

    for outlet in [*outlets, pending]:
        assert outlet.closed == [(1001, "shutting_down")]


# --- inbound messages -----------------------------------------------------------------


def test_unknown_message_type_gets_unknown_type_error_with_ref_and_id():
    hub = make_hub()
    conn, outlet = connect(hub, user("u1"))
    send(hub, conn, "dance", {"x": 1}, id="r5")
    assert outlet.frames == [
        {
            "type": "error",
            "error": "未知的消息类型: dance",
            "data": {"code": "unknown_type", "ref": "dance"},
            "id": "r5",
            "timestamp": NOW_MS,
        }
    ]


def test_bad_message_is_answered_only_to_its_sender():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    _, b_out = connect(hub, user("b"))
    send(hub, a, "join_room", {"room": "bad room"})
    assert error_of(a_out)["data"]["code"] == "invalid_message"
    assert b_out.frames == []
    assert hub.presence.sessions[a].outlet is a_out and a_out.closed == []


def test_messages_of_an_unauthenticated_connection_are_ignored():
    hub = make_hub()
    outlet = FakeOutlet()
    hub.admit(outlet, "anon", "10.0.0.1")
    send(hub, "anon", "join_room", "lobby")
    assert outlet.frames == []
    assert hub.presence.rooms == {}


# --- rooms ----------------------------------------------------------------------------


@pytest.mark.parametrize("data", ["chat:room001", {"room": "chat:room001"}])
def test_join_room_by_name_or_object_replies_room_joined_with_members(data: Any):
    hub = make_hub()
    conn, outlet = connect(hub, user("u1", username="alice"))
    send(hub, conn, "join_room", data, id=9)
    assert outlet.frames == [
        {
            "type": "room_joined",
            "data": {
                "room": "chat:room001",
                "members": [
                    {"user_id": "u1", "username": "alice", "user_type": None, "connections": 1}
                ],
            },
            "id": 9,
            "timestamp": NOW_MS,
        }
    ]


def test_room_name_of_128_allowed_characters_is_accepted():
    hub = make_hub()
    conn, outlet = connect(hub, user("u1"))
    name = ("Aa0_.:-" * 20)[:128]
    assert join(hub, conn, name, outlet)["data"]["room"] == name


@pytest.mark.parametrize(
    "data",
    [
        "",
        "x" * 129,
        "chat room",
        "chat/room",
        "房间",
        "lobby\n",
        "\nlobby",
        {"room": ""},
        {"room": "a b"},
        {"room": 5},
        {"room": ["lobby"]},
        {"room": None},
        {"name": "lobby"},
        5,
        None,
        ["lobby"],
    ],
)
def test_invalid_room_name_is_invalid_message_naming_room(data: Any):
    hub = make_hub()
    conn, outlet = connect(hub, user("u1"))
    send(hub, conn, "join_room", data)
    err = error_of(outlet)
    assert err["data"]["code"] == "invalid_message"
    assert err["data"]["field"] == "room"
    assert err["data"]["ref"] == "join_room"
    assert hub.presence.rooms == {}


def test_joiner_is_listed_with_existing_members():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b"))
    join(hub, a, "lobby", a_out)
    reply = join(hub, b, "lobby", b_out)
    assert sorted(m["user_id"] for m in reply["data"]["members"]) == ["a", "b"]


def test_others_see_user_joined_but_the_joiner_does_not():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b", username="bob"))
    join(hub, a, "lobby", a_out)
    a_out.take()

    join(hub, b, "lobby", b_out)

    assert a_out.frames == [
        {
            "type": "user_joined",
            "data": {"room": "lobby", "user_id": "b", "username": "bob"},
            "timestamp": NOW_MS,
        }
    ]
    assert b_out.of_type("user_joined") == []


def test_second_tab_of_same_user_does_not_repeat_user_joined():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b1, b1_out = connect(hub, user("b"))
    b2, b2_out = connect(hub, user("b"))
    join(hub, a, "lobby", a_out)
    join(hub, b1, "lobby", b1_out)
    a_out.take()
    b1_out.take()

    join(hub, b2, "lobby", b2_out)

    assert a_out.frames == []
    assert b1_out.frames == []


def test_leaving_with_another_tab_still_in_the_room_sends_no_user_left():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b1, b1_out = connect(hub, user("b"))
    b2, b2_out = connect(hub, user("b"))
    for conn, out in ((a, a_out), (b1, b1_out), (b2, b2_out)):
        join(hub, conn, "lobby", out)
    a_out.take()

    send(hub, b1, "leave_room", "lobby")

    assert a_out.frames == []
    assert b1_out.last["type"] == "room_left"
    members = hub.rooms.members(("1", "lobby"))
    assert {m["user_id"]: m["connections"] for m in members} == {"a": 1, "b": 1}


def test_leave_room_replies_room_left_and_others_get_user_left():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b", username="bob"))
    join(hub, a, "lobby", a_out)
    join(hub, b, "lobby", b_out)
    a_out.take()
    b_out.take()

    send(hub, b, "leave_room", {"room": "lobby"}, id="l1")

    assert b_out.frames == [
        {"type": "room_left", "data": {"room": "lobby"}, "id": "l1", "timestamp": NOW_MS}
    ]
    assert a_out.frames == [
        {
            "type": "user_left",
            "data": {"room": "lobby", "user_id": "b", "username": "bob"},
            "timestamp": NOW_MS,
        }
    ]


def test_last_member_leaving_removes_the_room():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    join(hub, a, "lobby", a_out)
    send(hub, a, "leave_room", "lobby")
    assert hub.presence.rooms == {}
    assert hub.presence.sessions[a].rooms == set()


def test_leaving_a_room_not_joined_is_not_found():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b"))
    join(hub, b, "lobby", b_out)
    send(hub, a, "leave_room", "lobby")
    err = error_of(a_out)
    assert err["data"] == {"code": "not_found", "ref": "leave_room", "field": "room"}
    assert [m["user_id"] for m in hub.rooms.members(("1", "lobby"))] == ["b"]


def test_room_message_reaches_every_other_member_connection_including_own_other_tab():
    hub = make_hub()
    a1, a1_out = connect(hub, user("a", username="alice", user_type=1))
    a2, a2_out = connect(hub, user("a", username="alice", user_type=1))
    b, b_out = connect(hub, user("b"))
    _, outsider_out = connect(hub, user("c"))
    for conn, out in ((a1, a1_out), (a2, a2_out), (b, b_out)):
        join(hub, conn, "lobby", out)
    for out in (a1_out, a2_out, b_out):
        out.take()

    send(
        hub,
        a1,
        "room_message",
        {"room": "lobby", "text": "hi", "from": {"user_id": "admin"}, "extra": [1]},
        id="m1",
    )

    expected = {
        "type": "room_message",
        "data": {
            "text": "hi",
            "extra": [1],
            "room": "lobby",
            "from": {"user_id": "a", "username": "alice", "user_type": 1},
        },
        "timestamp": NOW_MS,
    }
    assert a2_out.frames == [expected]
    assert b_out.frames == [expected]
    assert outsider_out.frames == []
    assert a1_out.frames == [
        {
            "type": "room_message_ack",
            "data": {"room": "lobby", "delivered": 2},
            "id": "m1",
            "timestamp": NOW_MS,
        }
    ]


@pytest.mark.parametrize("others", [FANOUT_SOON - 2, FANOUT_SOON - 1])
def test_a_room_message_to_many_asks_for_delivery_soon_and_to_few_at_once(others: int):
    # the sender is skipped, so FANOUT_SOON - 1 others are the smallest "many"
    hub = make_hub()
    members = [connect(hub, user(f"u{i}")) for i in range(others + 1)]
    for conn, out in members:
        join(hub, conn, "lobby", out)
    for _, out in members:
        out.take()
        out.soon.clear()
    send(hub, members[0][0], "room_message", {"room": "lobby", "text": "hi"})
    many = others + 1 >= FANOUT_SOON  # the room's size decides, the sender included
    for _, out in members[1:]:
        assert out.of_type("room_message") and out.soon == [many]
    # a reply to one connection is never deferred
    assert members[0][1].soon == [False]


def test_room_message_with_content_alias_is_delivered():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b"))
    join(hub, a, "lobby", a_out)
    join(hub, b, "lobby", b_out)
    b_out.take()
    hub.handle(a, decode('{"type":"room_message","content":{"room":"lobby","text":"yo"}}'))
    assert b_out.last["data"]["text"] == "yo"


def test_room_message_from_a_non_member_is_forbidden_and_reaches_nobody():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b"))
    join(hub, b, "lobby", b_out)
    b_out.take()
    send(hub, a, "room_message", {"room": "lobby", "text": "sneak"})
    err = error_of(a_out)
    assert err["data"]["code"] == "forbidden"
    assert err["data"]["field"] == "room"
    assert b_out.frames == []


def test_room_message_whose_data_is_not_an_object_is_invalid():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    join(hub, a, "lobby", a_out)
    send(hub, a, "room_message", "lobby")
    assert error_of(a_out)["data"]["code"] == "invalid_message"


def test_same_room_name_in_two_groups_are_different_rooms():
    hub = make_hub()
    g1, g1_out = connect(hub, user("a", group_id=1))
    g1b, g1b_out = connect(hub, user("b", group_id="1"))  # "1" and 1 are the same group
    g2, g2_out = connect(hub, user("c", group_id=2))
    join(hub, g1, "chat:room001", g1_out)
    join(hub, g1b, "chat:room001", g1b_out)
    reply = join(hub, g2, "chat:room001", g2_out)
    assert [m["user_id"] for m in reply["data"]["members"]] == ["c"]
    assert g1_out.of_type("user_joined")[0]["data"]["user_id"] == "b"
    for out in (g1_out, g1b_out, g2_out):
        out.take()

    send(hub, g1, "room_message", {"room": "chat:room001", "text": "group one only"})

    assert g1b_out.of_type("room_message")[0]["data"]["text"] == "group one only"
    assert g2_out.frames == []
    assert g1_out.last["data"]["delivered"] == 1


def test_naming_another_group_is_forbidden_for_a_non_admin():
    hub = make_hub()
    c, g2_out = connect(hub, user("c", group_id=2))
    join(hub, c, "lobby", g2_out)
    g2_out.take()
    a, a_out = connect(hub, user("a", group_id=1))

    for mtype in ("join_room", "room_members", "room_message"):
        send(hub, a, mtype, {"room": "lobby", "group_id": 2, "text": "x"})
        err = error_of(a_out)
        assert err["data"] == {"code": "forbidden", "ref": mtype, "field": "group_id"}
    assert g2_out.frames == []
    assert [m["user_id"] for m in hub.rooms.members(("2", "lobby"))] == ["c"]


def test_naming_ones_own_group_is_allowed_in_either_id_form():
    hub = make_hub()
    a, a_out = connect(hub, user("a", group_id=1))
    reply = join(hub, a, "lobby", a_out, group_id="1")
    assert reply["data"]["room"] == "lobby"
    assert ("1", "lobby") in hub.presence.rooms


def test_admin_may_join_and_talk_in_another_groups_room():
    hub = make_hub()
    c, c_out = connect(hub, user("c", group_id=2))
    join(hub, c, "lobby", c_out)
    c_out.take()
    admin, admin_out = connect(hub, user("root", group_id=1, role="admin"))

    reply = join(hub, admin, "lobby", admin_out, group_id=2)
    send(hub, admin, "room_message", {"room": "lobby", "group_id": 2, "text": "hello g2"})

    assert sorted(m["user_id"] for m in reply["data"]["members"]) == ["c", "root"]
    assert [f["type"] for f in c_out.frames] == ["user_joined", "room_message"]
    assert c_out.frames[1]["data"]["text"] == "hello g2"
    assert ("1", "lobby") not in hub.presence.rooms


def test_rooms_allow_patterns_restrict_joins():
    hub = make_hub(**{"rooms.allow": ["chat:*", "news"]})
    a, a_out = connect(hub, user("a"))
    join(hub, a, "chat:room001", a_out)
    join(hub, a, "news", a_out)
    send(hub, a, "join_room", "secret")
    err = error_of(a_out)
    assert err["data"] == {"code": "forbidden", "ref": "join_room", "field": "room"}
    assert ("1", "secret") not in hub.presence.rooms


def test_rooms_allow_patterns_apply_to_admins_too():
    hub = make_hub(**{"rooms.allow": ["chat:*"]})
    a, a_out = connect(hub, user("root", role="admin"))
    send(hub, a, "join_room", "secret")
    assert error_of(a_out)["data"]["code"] == "forbidden"


def test_token_rooms_claim_restricts_joins_further():
    hub = make_hub(**{"rooms.allow": ["chat:*", "news"]})
    a, a_out = connect(hub, user("a", rooms=["chat:sales*"]))
    join(hub, a, "chat:sales-eu", a_out)
    send(hub, a, "join_room", "chat:hr")
    assert error_of(a_out)["data"]["code"] == "forbidden"
    send(hub, a, "join_room", "news")
    assert error_of(a_out)["data"]["code"] == "forbidden"


def test_empty_token_rooms_claim_allows_no_room():
    hub = make_hub()
    a, a_out = connect(hub, user("a", rooms=[]))
    send(hub, a, "join_room", "lobby")
    assert error_of(a_out)["data"]["code"] == "forbidden"


def test_too_many_rooms_on_one_connection_is_a_conflict():
    hub = make_hub(**{"limits.max_rooms_per_connection": 2})
    a, a_out = connect(hub, user("a"))
    join(hub, a, "r1", a_out)
    join(hub, a, "r2", a_out)
    join(hub, a, "r1", a_out)  # re-joining a room already held is fine
    send(hub, a, "join_room", "r3")
    err = error_of(a_out)
    assert err["data"] == {"code": "conflict", "ref": "join_room", "field": "room"}
    assert len(hub.presence.sessions[a].rooms) == 2
    # another connection has its own allowance
    b, b_out = connect(hub, user("b"))
    join(hub, b, "r3", b_out)


def test_full_room_refuses_one_more_member_with_conflict():
    hub = make_hub(**{"limits.max_room_members": 2})
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b"))
    c, c_out = connect(hub, user("c"))
    join(hub, a, "lobby", a_out)
    join(hub, b, "lobby", b_out)
    send(hub, c, "join_room", "lobby")
    assert error_of(c_out)["data"]["code"] == "conflict"
    assert len(hub.presence.rooms[("1", "lobby")]) == 2
    send(hub, b, "leave_room", "lobby")
    join(hub, c, "lobby", c_out)


def test_room_members_lists_each_user_once_with_its_connection_count():
    hub = make_hub()
    a1, a1_out = connect(hub, user("a", username="alice"))
    a2, a2_out = connect(hub, user("a", username="alice"))
    b, b_out = connect(hub, user("b", username="bob", user_type=2))
    for conn, out in ((a1, a1_out), (a2, a2_out), (b, b_out)):
        join(hub, conn, "lobby", out)
    b_out.take()

    send(hub, b, "room_members", {"room": "lobby"}, id="q")

    reply = b_out.last
    assert reply["type"] == "room_members"
    assert reply["id"] == "q"
    assert reply["data"]["room"] == "lobby"
    assert sorted(reply["data"]["members"], key=lambda m: m["user_id"]) == [
        {"user_id": "a", "username": "alice", "user_type": None, "connections": 2},
        {"user_id": "b", "username": "bob", "user_type": 2, "connections": 1},
    ]


def test_room_members_of_an_empty_allowed_room_is_empty():
    hub = make_hub()
    a, a_out = connect(hub, user("a"))
    send(hub, a, "room_members", "nobody-here")
    assert a_out.last["data"] == {"room": "nobody-here", "members": []}


def test_room_members_of_a_room_one_may_not_join_is_forbidden():
    hub = make_hub(**{"rooms.allow": ["public:*"]})
    a, a_out = connect(hub, user("a"))
    send(hub, a, "room_members", "secret")
    assert error_of(a_out)["data"]["code"] == "forbidden"


@pytest.mark.parametrize("mtype", ["join_room", "room_message", "room_members", "leave_room"])
def test_desktop_clients_cannot_use_rooms(mtype: str):
    hub = make_hub()
    desk, desk_out = connect(hub, Identity(activation_code="DESK-1"))
    send(hub, desk, mtype, {"room": "lobby", "text": "x"})
    err = error_of(desk_out)
    assert err["data"]["code"] == "forbidden"
    assert err["data"]["field"] == "room"
    assert hub.presence.rooms == {}


def test_no_user_joined_or_user_left_when_presence_events_are_off():
    hub = make_hub(**{"rooms.presence_events": False})
    a, a_out = connect(hub, user("a"))
    b, b_out = connect(hub, user("b"))
    join(hub, a, "lobby", a_out)
    a_out.take()
    join(hub, b, "lobby", b_out)
    send(hub, b, "leave_room", "lobby")
    join(hub, b, "lobby", b_out)
    hub.close(b)
    assert a_out.frames == []


def test_stats_count_connections_by_kind():
    hub = make_hub()
    connect(hub, user("a"))
    connect(hub, user("a"))
    connect(hub, Identity(activation_code="DESK-1"))
    hub.admit(FakeOutlet(), "pending", "10.0.0.1")
    stats = hub.stats()
    assert stats["connections"] == 4
    assert stats["user_connections"] == 2
    assert stats["device_connections"] == 1
    assert stats["pending_connections"] == 1
    assert stats["principals"] == 2


def test_a_failing_handler_answers_internal_and_the_hub_keeps_serving():
    hub = make_hub()
    conn_id, outlet = connect(hub, user("u1"))

    def broken(session: Any, msg: Any) -> None:
        raise RuntimeError("bug")

    hub.handlers["broken"] = broken
    send(hub, conn_id, "broken", id="b")
    err = error_of(outlet)
    assert err["data"]["code"] == "internal" and err["id"] == "b"
    join(hub, conn_id, "lobby", outlet)


def test_group_index_follows_connections():
    hub = make_hub()
    a, _ = connect(hub, user("u1", group_id=1))
    b, _ = connect(hub, user("u2", group_id="1"))
    c, _ = connect(hub, user("u3", group_id=2))
    assert set(hub.presence.by_group["1"]) == {a, b} and set(hub.presence.by_group["2"]) == {c}
    hub.close(a)
    hub.close(c)
    assert set(hub.presence.by_group["1"]) == {b} and "2" not in hub.presence.by_group
    hub.close(b)
    assert hub.presence.by_group == {}
