"""When the outbox wakes a waiting webhook sender, and when its round may not wait
to gather more (core/webhooks.py), without I/O.

New durable events wake it (tests/test_webhooks_core.py); an answer wakes it
only when the sender has something to do about it: the lane answered holds
another event, a failed attempt's retry may fall due before the sender's
planned wake-up, or lanes were left waiting for room in flight. Any other
answer leaves it asleep. A round that hands out the head of a lane holding
more than `HOT_LANE` events says so (`hot`): the sender's next round then
goes as soon as it is woken, so that a busy principal is not held to the
pace of the rounds."""

from __future__ import annotations

import json
from typing import Any

from tests.test_hub import send
from tests.test_webhooks_core import Rig
from wsserver.core.webhook_commands import WebhookDelivery, WebhookDone
from wsserver.core.webhook_schedule import HOT_LANE
from wsserver.protocol.webhook import event_body


def answer(rig: Rig, delivery: WebhookDelivery, ok: bool = True) -> int:
    """Report one attempt; the sender's wake-ups so far."""
    rig.hub.execute(WebhookDone(delivery.seq, delivery.lane, ok))
    return rig.wakes


def data_of(delivery: WebhookDelivery) -> Any:
    """The event's data as the receiver gets it (a `message` event is kept encoded)."""
    return json.loads(event_body(delivery.event))["data"]


def messages(rig: Rig, sender: str, to: int, count: int) -> None:
    for k in range(count):
        send(rig.hub, sender, "send_message", {"to_user_id": to, "text": f"m{k}"})


def test_an_answer_wakes_the_sender_when_its_lane_holds_another_event() -> None:
    rig = Rig(webhooks__events=["message"])
    rig.start()
    a = rig.connect(1)
    messages(rig, a, 2, 1)
    messages(rig, a, 3, 2)
    to_2, to_3 = rig.due().deliveries  # one per lane; the sender now waits
    assert (data_of(to_2)["to_user_id"], data_of(to_3)["to_user_id"]) == (2, 3)
    assert answer(rig, to_2) == 0  # user 2's lane is empty now
    assert answer(rig, to_3) == 1  # user 3's holds its second message
    [again] = rig.due().deliveries
    assert data_of(again)["text"] == "m1"
    assert answer(rig, again) == 1


def test_a_round_is_hot_while_a_lane_handed_out_holds_more_than_hot_lane_events() -> None:
    rig = Rig(webhooks__events=["message"])
    rig.start()
    a = rig.connect(1)
    messages(rig, a, 2, HOT_LANE + 1)  # the head and HOT_LANE behind it
    messages(rig, a, 3, 1)
    batch = rig.due()
    assert len(batch.deliveries) == 2 and batch.hot
    for delivery in batch.deliveries:
        answer(rig, delivery)
    batch = rig.due()  # the head and HOT_LANE - 1 behind it
    assert len(batch.deliveries) == 1 and not batch.hot


def test_a_failed_attempt_wakes_the_sender_for_its_retry() -> None:
    rig = Rig(webhooks__events=["message"])
    rig.start()
    messages(rig, rig.connect(1), 2, 1)
    [delivery] = rig.due().deliveries
    wait = rig.due().wait  # (only the event's expiry is planned)
    assert wait is not None and wait > 3600
    assert answer(rig, delivery, ok=False) == 1  # it plans its sleep anew
    batch = rig.due()
    assert batch.deliveries == () and batch.wait is not None and 0 < batch.wait <= 0.5


def test_an_answer_wakes_the_sender_when_lanes_wait_for_room_in_flight() -> None:
    rig = Rig(webhooks__events=["message"])
    rig.start()
    a = rig.connect(1)
    for to in (2, 3, 4):
        messages(rig, a, to, 1)
    first, second = rig.due(limit=2).deliveries  # as many as it could take: user 4's waits
    assert answer(rig, first) == 1
    [third] = rig.due(limit=5).deliveries  # fewer than it could take: nothing waits for room
    assert data_of(third)["to_user_id"] == 4
    assert answer(rig, second) == 1
    assert answer(rig, third) == 1
