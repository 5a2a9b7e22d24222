"""The webhook signature (`protocol.webhook.signature`, SPEC 6.2): the HMAC-SHA256 the
stdlib's `hmac` computes, for any secret (long ones are hashed first), timestamp
and body."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from wsserver.protocol.webhook import signature


def expected(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), b"%d.%s" % (timestamp, body), hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=200), st.integers(0, 2**40), st.binary(max_size=2000))
def test_the_signature_is_the_stdlib_s_hmac(secret: str, timestamp: int, body: bytes) -> None:
    assert signature(secret, timestamp, body) == expected(secret, timestamp, body)


def test_keys_at_and_around_the_block_size_and_repeated_use() -> None:
    for size in (1, 63, 64, 65, 128, 1000):
        secret = "k" * size
        for body in (b"", b"{}", b"x" * 100):
            assert signature(secret, 1765000000, body) == expected(secret, 1765000000, body)
            assert signature(secret, 1765000000, body) == expected(secret, 1765000000, body)  # copies, not the pad
    assert signature("é" * 40, 1, b"{}") == expected("é" * 40, 1, b"{}")  # 80 bytes of UTF-8
