"""The client's decisions without I/O: backoff, what each close code leads to,
request/reply bookkeeping, the outbound queue, and the inbox's once-in-order rule."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from typing import Any

import pytest

import wsserver.client
from wsserver.client import Backoff, ClientClosed, ConnectionLost, QueueFull, RequestError
from wsserver.client.inbox import Inbox
from wsserver.client.policy import Ended, Next, ReconnectPolicy
from wsserver.client.requests import Outbox, RequestBook

# -- backoff ------------------------------------------------------------------------


def test_backoff_delays_stay_under_a_doubling_ceiling_capped_at_cap() -> None:
    backoff = Backoff(0.5, 30.0, random=random.Random(1).uniform)
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(12)]
    assert ceilings[:7] == [0.5, 1, 2, 4, 8, 16, 30]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert delay is not None and 0 <= delay <= ceiling


def test_backoff_grows_on_average_and_is_jittered() -> None:
    rng = random.Random(2)
    samples: dict[int, list[float]] = {n: [] for n in range(8)}
    for _ in range(400):
        backoff = Backoff(0.5, 30.0, random=rng.uniform)
        for n in range(8):
            delay = backoff.next_delay()
            assert delay is not None
            samples[n].append(delay)
    means = [sum(s) / len(s) for s in samples.values()]
    assert all(a < b for a, b in itertools.pairwise(means[:7]))  # grows until the cap
    assert 12 < means[7] < 18  # full jitter under the 30 s cap: uniform(0, 30) averages 15
    assert len(set(samples[3])) == 400  # no two clients wait the same


def test_backoff_uses_the_injected_random_source_and_clamps_it() -> None:
    calls: list[tuple[float, float]] = []

    def top(low: float, high: float) -> float:
        calls.append((low, high))
        return high * 2  # a broken source cannot push a delay past the ceiling

    backoff = Backoff(0.5, 2.0, random=top)
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert calls == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 2.0)]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_gives_up_after_max_retries() -> None:
    backoff = Backoff(0.5, 30.0, max_retries=2)
    assert backoff.next_delay() is not None
    assert backoff.next_delay() is not None
    assert backoff.next_delay() is None


# -- close codes --------------------------------------------------------------------


def policy(**kw: Any) -> ReconnectPolicy:
    return ReconnectPolicy(Backoff(0.5, 30.0, random=lambda lo, hi: hi), **kw)


@pytest.mark.parametrize("code", [4003, 4004])
def test_kicked_or_replaced_ends_in_disconnected(code: int) -> None:
    assert policy(can_refresh_token=True).after(Ended(code, connected=True)).next is Next.STOP


@pytest.mark.parametrize("code", [1000, 1001, 1006, 1011, 1013, 4000, 4002, 4008, 4029, None])
def test_other_closes_and_network_errors_reconnect_with_backoff(code: int | None) -> None:
    decision = policy().after(Ended(code))
    assert decision.next is Next.RETRY
    assert decision.delay == 0.5 and decision.resend


@pytest.mark.parametrize("code", [1002, 1007, 1008, 1009])
def test_a_close_for_a_refused_frame_reconnects_without_resending_in_flight_requests(code: int) -> None:
    decision = policy().after(Ended(code))
    assert decision.next is Next.RETRY and not decision.resend


def test_4001_asks_for_a_new_token_once_then_gives_up() -> None:
    p = policy(can_refresh_token=True)
    assert p.after(Ended(4001, connected=True)).next is Next.NEW_TOKEN
    assert p.after(Ended(None, http_status=401)).next is Next.STOP
    p = policy(can_refresh_token=True)
    assert p.after(Ended(None, http_status=401)).next is Next.NEW_TOKEN
    assert p.after(Ended(4001, connected=True)).next is Next.NEW_TOKEN  # a success renews the chance
    assert policy().after(Ended(4001)).next is Next.STOP  # no get_token


@pytest.mark.parametrize(("status", "next_"), [(403, Next.STOP), (404, Next.STOP), (429, Next.RETRY), (503, Next.RETRY)])
def test_handshake_refusals_stop_unless_a_retry_can_help(status: int, next_: Next) -> None:
    assert policy().after(Ended(None, http_status=status)).next is next_


def test_backoff_restarts_only_after_a_connection_that_stayed_up() -> None:
    p = policy(stable_after=10.0)
    assert [p.after(Ended(1006)).delay for _ in range(3)] == [0.5, 1.0, 2.0]
    assert p.after(Ended(1006, connected=True, uptime=1.0)).delay == 4.0  # up, but not for long
    assert p.after(Ended(1006, connected=True, uptime=10.0)).delay == 0.5


def test_max_retries_exhausted_stops() -> None:
    p = ReconnectPolicy(Backoff(0.5, 30.0, max_retries=1))
    assert p.after(Ended(1006)).next is Next.RETRY
    assert p.after(Ended(1006)).next is Next.STOP


# -- requests and the queue -----------------------------------------------------------


def test_a_reply_resolves_the_request_with_its_id_and_an_error_raises() -> None:
    book = RequestBook("abc")
    ping = book.new("ping", None)
    history = book.new("history", {"with_user_id": 2}, {"timestamp": 5})
    assert ping.id == "abc-1" and history.frame == {"type": "history", "data": {"with_user_id": 2}, "timestamp": 5, "id": "abc-2"}
    assert json.loads(history.text) == history.frame
    assert book.match({"type": "pong", "id": "abc-1"}) is ping and ping.reply == {"type": "pong", "id": "abc-1"}
    assert book.match({"type": "pong", "id": "abc-1"}) is None  # once
    refused = {"type": "error", "error": "no", "id": "abc-2", "data": {"code": "forbidden", "field": "with_user_id", "ref": "history"}}
    assert book.match(refused) is history
    assert isinstance(history.error, RequestError)
    assert (history.error.code, history.error.field, history.error.ref) == ("forbidden", "with_user_id", "history")
    assert len(book) == 0


def test_request_ids_differ_between_clients() -> None:
    assert RequestBook().new("ping", None).id != RequestBook().new("ping", None).id


def test_on_a_lost_connection_resendable_requests_go_again_and_the_others_fail() -> None:
    book = RequestBook("x")
    dm = book.new("send_message", {}, resend=True)
    crm = book.new("customer_sync", {})
    queued = book.new("ping", None)
    dm.sent = crm.sent = True
    assert book.connection_lost(1006, "gone", resend=True) == [dm]
    assert isinstance(crm.error, ConnectionLost) and crm.done
    assert not queued.done and not dm.done and not dm.sent
    dm.sent = True
    assert book.connection_lost(1009, "too big", resend=False) == []
    assert isinstance(dm.error, ConnectionLost)
    book.close_all(lambda: ClientClosed(4003, "kicked"))
    assert isinstance(queued.error, ClientClosed)


def test_the_queue_is_bounded_for_the_application_but_not_for_the_client() -> None:
    outbox = Outbox(2)
    outbox.push("a")
    outbox.push("b")
    with pytest.raises(QueueFull):
        outbox.push("c")
    outbox.push("sync", force=True)
    outbox.push_front(["r1", "r2"])
    assert [outbox.pop() for _ in range(6)] == ["r1", "r2", "a", "b", "sync", None]


def test_withdrawn_requests_are_skipped_by_the_writer() -> None:
    book, outbox = RequestBook("x"), Outbox(10)
    gone, kept = book.new("ping", None), book.new("ping", None)
    outbox.push(gone)
    outbox.push(kept)
    book.withdraw(gone, TimeoutError())
    assert outbox.pop() is kept


# -- the inbox ------------------------------------------------------------------------


def dm(seq: int, *, to: Any = 2, status: str = "sent", mid: int | None = None) -> dict[str, Any]:
    mid = seq if mid is None else mid
    return {"type": "new_message", "data": {"message_id": mid, "seq": seq, "to_user_id": to, "status": status, "text": f"m{seq}"}}


def texts(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["data"]["text"] for m in msgs]


def test_a_sync_hands_out_mailbox_live_and_synced_messages_once_in_seq_order() -> None:
    inbox = Inbox(last_seq=3)
    inbox.start(sync=True)
    inbox.identify(2, None)
    assert inbox.sync_request() == {"last_seq": 3}
    for msg in (dm(5), dm(6), dm(9)):  # the mailbox push, then a live one
        assert inbox.receive(msg).deliver == []
    cursor, got = inbox.sync_done({"last_seq": 6, "has_more": True})
    assert cursor == 6 and got.deliver == []
    for msg in (dm(2), dm(4), dm(5), dm(6), dm(7), dm(8), dm(9)):  # sync pages
        inbox.receive(msg)
    cursor, got = inbox.sync_done({"last_seq": 9, "has_more": False})
    assert cursor is None
    assert texts(got.deliver) == ["m4", "m5", "m6", "m7", "m8", "m9"]
    assert inbox.last_seq == 9
    assert inbox.receive(dm(9)).deliver == []  # a repeat
    assert texts(inbox.receive(dm(10)).deliver) == ["m10"]


def test_repeats_still_undelivered_are_acknowledged_again() -> None:
    inbox = Inbox(last_seq=5)
    inbox.start(sync=False)
    inbox.identify(2, None)
    got = inbox.receive(dm(4))
    assert got.deliver == [] and got.ack == [4]
    assert inbox.receive(dm(3, status="read")).ack == []


def test_a_fresh_inbox_hands_out_only_what_is_still_undelivered() -> None:
    inbox = Inbox()
    inbox.start(sync=True)
    inbox.identify(2, None)
    assert inbox.sync_request() == {"last_seq": 0}
    for msg in (dm(1, status="read"), dm(2, status="delivered"), dm(3)):
        inbox.receive(msg)
    _, got = inbox.sync_done({"last_seq": 3, "has_more": False})
    assert texts(got.deliver) == ["m3"] and inbox.last_seq == 3


def test_messages_this_principal_sent_do_not_move_last_seq_and_come_once() -> None:
    inbox = Inbox(last_seq=1)
    inbox.start(sync=False)
    inbox.identify(2, None)
    echo = dm(40, to=3, mid=77)  # to user 3, from this user's other tab
    assert inbox.receive(echo).deliver == [echo]
    assert inbox.receive(echo).deliver == []
    assert inbox.last_seq == 1


def test_user_type_is_part_of_the_recipient() -> None:
    inbox = Inbox(last_seq=0)
    inbox.start(sync=False)
    inbox.identify(5, 2)
    other = dm(3, to=5)  # user 5 without a type is another principal
    assert inbox.receive(other).ack == []
    mine = dm(4, to="5")
    mine["data"]["to_user_type"] = 2
    assert inbox.receive(mine).ack == [4] and inbox.last_seq == 4


def test_a_lost_connection_drops_what_the_unfinished_sync_held() -> None:
    inbox = Inbox(last_seq=0)
    inbox.start(sync=True)
    inbox.identify(2, None)
    inbox.receive(dm(1))
    inbox.lost()
    assert inbox.last_seq == 0
    inbox.start(sync=True)
    inbox.receive(dm(1))
    assert texts(inbox.finish_sync().deliver) == ["m1"]


# -- the package ----------------------------------------------------------------------


def test_importing_the_client_does_not_import_the_server() -> None:
    code = (
        "import json, sys, wsserver.client\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('wsserver'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out)
    assert "wsserver.client.sync" in loaded
    assert not [m for m in loaded if m.startswith(("wsserver.net", "wsserver.core", "wsserver.api", "wsserver.storage"))]


def test_the_public_api_is_exactly_what_all_lists() -> None:
    assert set(wsserver.client.__all__) == {
        "Backoff", "Client", "ClientClosed", "ClientError", "ConnectionLost", "ConnectionState",
        "ConnectionStatus", "MessageStream", "QueueFull", "RequestError", "RequestTimeout",
        "StateChange", "SyncClient", "connect",
    }
    assert wsserver.client.ConnectionStatus is wsserver.client.ConnectionState
    assert wsserver.client.ConnectionState.CONNECTED.value == "connected"
