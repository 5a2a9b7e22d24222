"""Tests for wsserver.core.limits: the inbound token bucket, the abuse counter and the
throttle of failed credentials per client IP.

Time is a plain float passed in, so a minute of traffic is tested in microseconds.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wsserver.core.limits import AbuseCounter, FailureThrottle, TokenBucket


def takes(bucket: TokenBucket, now: float, n: int) -> int:
    """How many of `n` messages at time `now` get through."""
    return sum(bucket.take(now) for _ in range(n))


def test_a_fresh_connection_may_send_a_full_burst_at_once():
    bucket = TokenBucket(rate=50, burst=100)
    assert takes(bucket, 0.0, 100) == 100
    assert bucket.take(0.0) is False


def test_tokens_come_back_at_rate_per_second_of_elapsed_time():
    bucket = TokenBucket(rate=10, burst=5)
    assert takes(bucket, 0.0, 5) == 5
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # one token after 0.1 s at 10/s
    assert bucket.take(0.1) is False
    assert takes(bucket, 0.4, 10) == 3


def test_a_long_pause_refills_no_more_than_the_burst():
    bucket = TokenBucket(rate=10, burst=5)
    takes(bucket, 0.0, 5)
    assert takes(bucket, 3600.0, 100) == 5


def test_messages_at_the_rate_all_pass_forever():
    bucket = TokenBucket(rate=2, burst=1)
    assert all(bucket.take(i * 0.5) for i in range(1000))


def test_messages_faster_than_the_rate_are_dropped_after_the_burst():
    bucket = TokenBucket(rate=1, burst=3)
    accepted = sum(bucket.take(i * 0.1) for i in range(100))  # 10/s for 10 s
    assert accepted == 3 + 9  # the burst, then one per second


def test_refused_attempts_do_not_spend_tokens():
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.take(0.0)
    assert takes(bucket, 0.5, 50) == 0
    assert bucket.take(1.0) is True


def test_burst_of_one_allows_one_message_per_token():
    bucket = TokenBucket(rate=100, burst=1)
    assert takes(bucket, 0.0, 3) == 1
    assert takes(bucket, 0.01, 3) == 1


def test_abuse_is_declared_after_limit_refusals_in_a_row():
    counter = AbuseCounter(limit=3)
    assert counter.refused() is False
    assert counter.refused() is False
    assert counter.refused() is True


def test_an_accepted_message_ends_a_run_of_refusals():
    counter = AbuseCounter(limit=3)
    counter.refused()
    counter.refused()
    counter.accepted()
    assert counter.refused() is False
    assert counter.refused() is False
    assert counter.refused() is True


def test_abuse_limit_of_one_closes_at_the_first_refusal():
    assert AbuseCounter(limit=1).refused() is True


# Steps between takes: often zero (bursts), sometimes long pauses.
_steps = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=5.0, allow_nan=False)),
    min_size=1,
    max_size=300,
)


@given(
    rate=st.floats(min_value=0.1, max_value=1000.0, allow_nan=False),
    burst=st.integers(min_value=1, max_value=200),
    steps=_steps,
)
def test_no_window_ever_accepts_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, steps: list[float]
):
    bucket = TokenBucket(rate=rate, burst=burst)
    times: list[float] = []
    now = 0.0
    for step in steps:
        now += step
        times.append(now)
    accepted = [t for t in times if bucket.take(t)]

    # Every window [t0, t1] that starts at an accepted take is the tightest one.
    for i, t0 in enumerate(accepted):
        for j in range(i, len(accepted)):
            t1 = accepted[j]
            count = j - i + 1
            assert count <= burst + rate * (t1 - t0) + 1e-6, (t0, t1, count)


@given(
    rate=st.floats(min_value=0.1, max_value=100.0, allow_nan=False),
    burst=st.integers(min_value=1, max_value=50),
    steps=_steps,
)
def test_tokens_stay_between_zero_and_burst(rate: float, burst: int, steps: list[float]):
    bucket = TokenBucket(rate=rate, burst=burst)
    now = 0.0
    for step in steps:
        now += step
        bucket.take(now)
        assert 0.0 <= bucket.tokens <= burst


# --- failed credentials per client IP ---------------------------------------------------

LIMIT, WINDOW = 10, 60.0


def fail(throttle: FailureThrottle, ip: str, now: float, n: int = 1) -> None:
    for _ in range(n):
        throttle.failed(ip, now, LIMIT, WINDOW)


def blocked(throttle: FailureThrottle, ip: str, now: float) -> bool:
    return throttle.blocked(ip, now, LIMIT, WINDOW)


def test_an_ip_is_blocked_after_max_failures_until_its_window_ends():
    throttle = FailureThrottle()
    fail(throttle, "10.0.0.1", 0.0, 9)
    assert not blocked(throttle, "10.0.0.1", 1.0)
    fail(throttle, "10.0.0.1", 30.0)
    assert blocked(throttle, "10.0.0.1", 30.0)
    assert blocked(throttle, "10.0.0.1", 59.9)
    assert not blocked(throttle, "10.0.0.1", 60.0)  # the window opened at the first failure
    assert len(throttle) == 0  # and the expired entry is gone


def test_other_ips_are_not_affected():
    throttle = FailureThrottle()
    fail(throttle, "10.0.0.1", 0.0, LIMIT)
    fail(throttle, "10.0.0.2", 0.0, LIMIT - 1)
    assert blocked(throttle, "10.0.0.1", 1.0)
    assert not blocked(throttle, "10.0.0.2", 1.0)
    assert not blocked(throttle, "10.0.0.3", 1.0)


def test_failures_of_an_ended_window_are_forgotten():
    throttle = FailureThrottle()
    fail(throttle, "10.0.0.1", 0.0, LIMIT - 1)
    fail(throttle, "10.0.0.1", 61.0, LIMIT - 1)  # a new window: counts from one again
    assert not blocked(throttle, "10.0.0.1", 62.0)
    fail(throttle, "10.0.0.1", 62.0)
    assert blocked(throttle, "10.0.0.1", 62.0)


def test_max_failures_zero_turns_the_throttle_off():
    throttle = FailureThrottle()
    for _ in range(1000):
        throttle.failed("10.0.0.1", 0.0, 0, WINDOW)
    assert not throttle.blocked("10.0.0.1", 0.0, 0, WINDOW)
    assert len(throttle) == 0


def test_a_changed_limit_applies_to_the_window_already_open():
    throttle = FailureThrottle()
    fail(throttle, "10.0.0.1", 0.0, 3)
    assert throttle.blocked("10.0.0.1", 1.0, 3, WINDOW)  # a reload lowered max_failures
    assert not throttle.blocked("10.0.0.1", 1.0, 4, WINDOW)


def test_memory_is_bounded_expired_windows_go_first_then_the_oldest():
    throttle = FailureThrottle(max_ips=3)
    fail(throttle, "a", 0.0, LIMIT)
    fail(throttle, "b", 10.0, LIMIT)
    fail(throttle, "c", 20.0, LIMIT)
    fail(throttle, "d", 30.0)  # full: "a", whose window opened first, makes room
    assert len(throttle) == 3
    assert not blocked(throttle, "a", 30.0)
    assert blocked(throttle, "b", 30.0) and blocked(throttle, "c", 30.0)
    fail(throttle, "e", 75.0)  # "b" (ended at 70) goes without pushing anyone out early
    assert len(throttle) == 3
    assert blocked(throttle, "c", 75.0)


@given(st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(0, 10)), max_size=200))
def test_the_throttle_never_tracks_more_than_max_ips(events: list[tuple[str, float]]):
    throttle = FailureThrottle(max_ips=4)
    now = 0.0
    for ip, dt in events:
        now += dt
        throttle.failed(ip, now, 2, 5.0)
        assert len(throttle) <= 4
