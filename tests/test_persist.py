"""Server pushes kept for offline users (`POST /api/publish` with `persist`)."""

from __future__ import annotations

from tests.test_direct import login, make
from tests.test_hub import user


def test_persisted_push_reaches_the_user_on_connect_once_in_any_group() -> None:
    hub = make()
    assert hub.direct.persist_push(None, None, "u7", "system_notification", {"title": "hi"})
    assert hub.direct.persist_push(2, None, "u7", "plan_expiring", {"days_left": 3})
    _, _, pushed = login(hub, user("u7", group_id=1))
    assert [(f["type"], f["offline"]) for f in pushed] == [("system_notification", True)]
    assert pushed[0]["data"] == {"title": "hi"} and isinstance(pushed[0]["message_id"], int)
    _, _, again = login(hub, user("u7", group_id=1))
    assert again == []  # a push leaves the mailbox once pushed
    _, _, in_group_2 = login(hub, user("u7", group_id=2))
    assert [f["type"] for f in in_group_2] == ["plan_expiring"]


def test_persisted_push_for_a_user_type_skips_other_types() -> None:
    hub = make()
    hub.direct.persist_push(None, 2, 5, "new_feedback", {"id": 1})
    _, _, as_user = login(hub, user(5, user_type=1))
    assert as_user == []
    _, _, as_merchant = login(hub, user(5, user_type=2))
    assert [f["type"] for f in as_merchant] == ["new_feedback"]


def test_pushes_and_direct_messages_arrive_in_the_order_they_were_sent() -> None:
    hub = make()
    sender, _, _ = login(hub, user("a"))
    hub.direct.persist_push(None, None, "b", "notification", {"n": 1})
    from tests.test_hub import send

    send(hub, sender, "send_message", {"to_user_id": "b", "message": "after the push"})
    hub.direct.persist_push(None, None, "b", "notification", {"n": 2})
    _, _, pushed = login(hub, user("b"))
    assert [f["type"] for f in pushed] == ["notification", "new_message", "notification"]
