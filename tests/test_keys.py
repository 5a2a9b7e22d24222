"""Opaque ids (SPEC 2): the message store's keys are injective whatever the ids
hold, so no id can reach into another group, another principal's mailbox, or a
push meant for "any group".

Property tests on `core.keys`, then the collisions the old `"|"`-joined keys
allowed, on the sans-IO hub and on a real server.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import token, ws_connect
from tests.test_direct import data_of, dm, login, make, online
from tests.test_hub import send, user
from wsserver.core.keys import (
    SYSTEM,
    WILDCARD,
    conversation_key,
    dedup_key,
    principal_key,
    push_key,
    split_key,
    split_parts,
)

# ids of any text, with the characters a key could trip over made likely
ids = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(["|", "\\", "*", "\n", ">", "a", ":"]), max_size=6),
    st.sampled_from(["", "*", "\\*", "|", "\\", "\\|", "acme", "acme|1", "system"]),
)
triples = st.tuples(ids, ids, ids)


@settings(max_examples=500)
@given(a=triples, b=triples)
def test_distinct_principals_have_distinct_keys_that_split_back(a: Any, b: Any) -> None:
    assert split_key(principal_key(*a)) == a
    assert (principal_key(*a) == principal_key(*b)) == (a == b)


@settings(max_examples=300)
@given(group=st.one_of(st.none(), ids), user_type=st.one_of(st.none(), ids), user_id=ids, other=triples)
def test_a_push_mailbox_is_never_a_principal_unless_it_names_one(
    group: str | None, user_type: str | None, user_id: str, other: Any
) -> None:
    key = push_key(group, user_type, user_id)
    assert split_key(key) == (group, user_type, user_id)
    if group is None or user_type is None:  # "any": no principal has that key, not even "*"
        assert key != principal_key(*other)
        assert WILDCARD in key
    else:
        assert key == principal_key(group, user_type, user_id)


@settings(max_examples=500)
@given(a=triples, b=triples, c=triples, d=triples)
def test_conversation_keys_are_order_free_and_distinct_per_pair(a: Any, b: Any, c: Any, d: Any) -> None:
    ka, kb, kc, kd = (principal_key(*t) for t in (a, b, c, d))
    assert conversation_key(ka, kb) == conversation_key(kb, ka)
    assert split_parts(conversation_key(ka, kb)) == list(min(a, b, key=principal_key_of) + max(a, b, key=principal_key_of))
    same_pair = {ka, kb} == {kc, kd}
    assert (conversation_key(ka, kb) == conversation_key(kc, kd)) == same_pair


def principal_key_of(t: Any) -> str:
    return principal_key(*t)


@settings(max_examples=300)
@given(a=triples, b=triples)
def test_push_conversations_never_meet_a_principals(a: Any, b: Any) -> None:
    ka, kb = principal_key(*a), principal_key(*b)
    pushes = conversation_key(SYSTEM, ka)
    assert pushes != conversation_key(ka, kb)
    assert (pushes == conversation_key(SYSTEM, kb)) == (ka == kb)


@settings(max_examples=500)
@given(a=triples, b=triples, cmid_a=ids, cmid_b=ids)
def test_dedup_keys_are_distinct_per_sender_and_client_msg_id(a: Any, b: Any, cmid_a: str, cmid_b: str) -> None:
    ka = dedup_key(principal_key(*a), cmid_a)
    kb = dedup_key(principal_key(*b), cmid_b)
    assert split_parts(ka) == [*a, cmid_a]
    assert (ka == kb) == ((a, cmid_a) == (b, cmid_b))


def test_plain_ids_keep_the_keys_of_format_1() -> None:
    assert principal_key("1", "", "42") == "1||42"
    assert principal_key("g:1", "staff", "u 7\n") == "g:1|staff|u 7\n"


# -- the collisions of "|"-joined keys, on the hub ------------------------------------

# The old key was f"{group}|{user_type}|{user_id}": a user of group "acme" naming
# to_user_type "1" and to_user_id "|v" built "acme|1||v", the key of user "v"
# (no user_type) of group "acme|1".
ATTACKER = user("mallory", group_id="acme")
VICTIM = user("v", group_id="acme|1")
EXPLOIT = {"to_user_type": "1", "to_user_id": "|v"}


def test_an_id_with_a_bar_does_not_reach_a_user_of_another_group():
    hub = make()
    a, a_out = online(hub, ATTACKER)
    _, v_out = online(hub, VICTIM)
    send(hub, a, "send_message", {**EXPLOIT, "message": "hello from acme"})
    send(hub, a, "typing", {**EXPLOIT, "typing": True})
    assert data_of(a_out, "message_sent")  # stored, for ("acme", "1", "|v")
    assert v_out.frames == []
    _, _, pushed = login(hub, user("|v", group_id="acme", user_type="1"))
    assert [f["data"]["text"] for f in pushed] == ["hello from acme"]


def test_an_offline_message_with_a_bar_id_stays_out_of_the_other_groups_mailbox_and_history():
    hub = make()
    a, _ = online(hub, ATTACKER)
    send(hub, a, "send_message", {**EXPLOIT, "message": "boxed"})
    v, v_out, pushed = login(hub, VICTIM)
    assert pushed == []
    send(hub, v, "sync", {"last_seq": 0})
    assert v_out.of_type("new_message") == []
    assert v_out.last["data"]["last_seq"] == 0
    send(hub, v, "message_delivered", {"message_id": 1})
    assert v_out.last["data"]["code"] == "forbidden"


def test_a_push_for_group_star_is_not_a_push_for_any_group():
    hub = make()
    assert hub.direct.persist_push("*", None, "u7", "notice", {"for": "group *"})
    _, _, elsewhere = login(hub, user("u7", group_id=1))
    assert elsewhere == []
    _, _, in_star = login(hub, user("u7", group_id="*"))
    assert [(f["type"], f["data"]) for f in in_star] == [("notice", {"for": "group *"})]


def test_a_message_to_a_user_of_group_star_waits_for_that_group_only():
    hub = make()
    admin, _ = online(hub, user("boss", group_id=1, role="admin"))
    dm(hub, admin, "u7", "for the star group", to_group_id="*")
    _, _, other = login(hub, user("u7", group_id=2))
    assert other == []
    _, _, star = login(hub, user("u7", group_id="*"))
    assert [f["data"]["text"] for f in star] == ["for the star group"]


# -- the same collision on a real server ---------------------------------------------


async def _recv(ws: Any) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await ws.get_message())  # type: ignore[no-any-return]


async def test_a_user_of_acme_cannot_message_or_type_to_a_user_of_group_acme_bar_1(live_server: Any) -> None:
    server = await live_server()
    cfg = server.config
    attacker = token(cfg, user_id="mallory", group_id="acme")
    victim = token(cfg, user_id="v", group_id="acme|1")
    friend = token(cfg, user_id="f", group_id="acme|1")
    async with (
        ws_connect(f"{server.url}/ws?token={victim}") as v,
        ws_connect(f"{server.url}/ws?token={attacker}") as a,
        ws_connect(f"{server.url}/ws?token={friend}") as f,
    ):
        for ws in (v, a, f):
            assert (await _recv(ws))["type"] == "connected"
        await a.send_message(json.dumps({"type": "typing", "data": {**EXPLOIT, "typing": True}}))
        await a.send_message(json.dumps({"type": "send_message", "data": {**EXPLOIT, "message": "psst"}}))
        assert (await _recv(a))["type"] == "message_sent"
        # a message the victim may get, sent after the attack: it must be the first
        await f.send_message(json.dumps({"type": "send_message", "data": {"to_user_id": "v", "message": "hi"}}))
        first = await _recv(v)
        assert (first["type"], first["data"]["text"]) == ("new_message", "hi")
