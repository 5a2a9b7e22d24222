"""RFC 6455 framing (`wsserver.protocol.frames`): the parser against wsproto's
client as the oracle, every violation's close code, and the server frames."""

from __future__ import annotations

import os
import struct

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol

from wsserver.errors import CloseCode
from wsserver.protocol.frames import (
    Close,
    Event,
    FrameError,
    FrameParser,
    Ping,
    Pong,
    close_frame,
    ping_frame,
    pong_frame,
    text_frame,
    unmask,
)


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None, rsv: int = 0) -> bytes:
    """A masked client frame built by hand (for frames wsproto refuses to build)."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv | opcode
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + mask + unmask(payload, mask)


def feed_all(parser: FrameParser, data: bytes, cuts: list[int]) -> list[Event]:
    """Feed `data` split at `cuts` (as TCP reads would split it)."""
    out: list[Event] = []
    last = 0
    for cut in [*sorted(set(c % (len(data) + 1) for c in cuts)), len(data)]:
        out += parser.feed(data[last:cut])
        last = cut
    return out


messages = st.lists(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=70_000),
        st.builds(Ping, st.binary(max_size=125)),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(messages, st.lists(st.integers(min_value=0, max_value=200_000), max_size=8), st.integers(1, 5))
def test_parser_reads_what_wsproto_clients_send_however_it_is_cut(
    msgs: list[str | bytes | Ping], cuts: list[int], pieces: int
) -> None:
    proto = FrameProtocol(client=True, extensions=[])
    wire = b""
    for msg in msgs:
        if isinstance(msg, Ping):
            wire += proto.ping(msg.payload)
            continue
        # a data message in `pieces` fragments, built by wsproto's client
        payload = msg
        step = max(1, len(payload) // pieces)
        chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [payload]
        for i, chunk in enumerate(chunks):
            wire += proto.send_data(chunk, fin=i == len(chunks) - 1)
    wire += proto.close(1000, "bye")
    parser = FrameParser(max_message_size=1 << 20)
    got = feed_all(parser, wire, cuts)
    assert got == [*msgs, Close(1000, "bye")]
    assert parser.closed and parser.feed(b"more") == []


def test_control_frames_may_come_between_fragments() -> None:
    wire = (
        client_frame(0x1, b"hel", fin=False)
        + client_frame(0x9, b"are you there")
        + client_frame(0xA, b"")
        + client_frame(0x0, b"lo", fin=True)
    )
    assert FrameParser(100).feed(wire) == [Ping(b"are you there"), Pong(b""), "hello"]


def test_a_utf8_character_split_across_fragments_is_fine() -> None:
    data = "汉字".encode()
    wire = client_frame(0x1, data[:2], fin=False) + client_frame(0x0, data[2:])
    assert FrameParser(100).feed(wire) == ["汉字"]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (bytes((0x81, 0x03)) + b"abc", 1002),  # unmasked
        (client_frame(0x1, b"x", rsv=0x40), 1002),  # RSV1 without an extension
        (client_frame(0x3, b"x"), 1002),  # reserved data opcode
        (client_frame(0xB, b"x"), 1002),  # reserved control opcode
        (client_frame(0x9, b"x", fin=False), 1002),  # fragmented ping
        (client_frame(0x9, b"x" * 126), 1002),  # control frame over 125 bytes
        (client_frame(0x0, b"x"), 1002),  # continuation without a message
        (client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"), 1002),  # new message mid-message
        (client_frame(0x8, b"\x03"), 1002),  # 1-byte close payload
        (client_frame(0x8, struct.pack("!H", 1005)), 1002),  # reserved close code
        (client_frame(0x8, struct.pack("!H", 999)), 1002),
        (client_frame(0x8, struct.pack("!H", 5000)), 1002),
        (client_frame(0x1, b"\xff\xfe"), 1007),  # not UTF-8
        (client_frame(0x1, b"\xed\xa0\x80"), 1007),  # an encoded surrogate is not UTF-8 either
        (client_frame(0x8, struct.pack("!H", 1000) + b"\xff"), 1007),  # close reason not UTF-8
        (client_frame(0x2, b"x" * 101), 1009),  # over the limit
        (client_frame(0x1, b"x" * 60, fin=False) + client_frame(0x0, b"x" * 60), 1009),  # fragments add up
    ],
)
def test_each_violation_has_its_close_code(wire: bytes, code: int) -> None:
    with pytest.raises(FrameError) as err:
        FrameParser(100).feed(wire)
    assert err.value.code == code and isinstance(err.value.code, CloseCode)


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    head = struct.pack("!BBQ", 0x82, 0x80 | 127, 10**9) + b"mask"
    with pytest.raises(FrameError) as err:
        FrameParser(65536).feed(head)  # no payload sent: decided before buffering it
    assert err.value.code == 1009


def test_valid_close_frames() -> None:
    assert FrameParser(10).feed(client_frame(0x8, b"")) == [Close(1005, "")]
    assert FrameParser(10).feed(client_frame(0x8, struct.pack("!H", 4001) + "再见".encode())) == [
        Close(4001, "再见")
    ]


def test_an_incomplete_frame_waits_for_its_bytes() -> None:
    wire = client_frame(0x1, b"x" * 300)
    parser = FrameParser(1000)
    for i in range(len(wire) - 1):
        assert parser.feed(wire[i : i + 1]) == []
    assert parser.buffered == len(wire) - 1
    assert parser.feed(wire[-1:]) == ["x" * 300]
    assert parser.buffered == 0


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 100_000])
def test_server_frames_match_wsproto(n: int) -> None:
    payload = b"y" * n
    proto = FrameProtocol(client=False, extensions=[])
    assert text_frame(payload) == proto.send_data(payload.decode(), fin=True)
    if n <= 125:
        assert ping_frame(payload) == proto.ping(payload)
        assert pong_frame(payload) == proto.pong(payload)


def test_close_frames_match_wsproto_and_cut_long_reasons_on_a_character_boundary() -> None:
    proto = FrameProtocol(client=False, extensions=[])
    assert close_frame(4008, "slow consumer") == proto.close(4008, "slow consumer")
    assert close_frame(None) == b"\x88\x00"
    long = close_frame(1000, "字" * 100)
    assert len(long) <= 2 + 125
    reason = long[4:].decode("utf-8")  # still valid UTF-8 after the cut
    assert set(reason) == {"字"}


def test_control_frame_events_are_frozen_values() -> None:
    for event in (Ping(b""), Pong(b""), Close(1000, "")):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(event, attrs.fields(type(event))[0].name, None)
    assert Ping(b"x") == Ping(b"x") and Ping(b"x") != Pong(b"x")
    assert repr(Close(1000, "bye")) == "Close(code=1000, reason='bye')"


def test_text_and_binary_messages_are_their_str_and_bytes() -> None:
    events = FrameParser(100).feed(client_frame(0x1, b"ab") + client_frame(0x2, b"ab"))
    assert events == ["ab", b"ab"] and [type(e) for e in events] == [str, bytes]
