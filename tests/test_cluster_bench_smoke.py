"""The issue-18 cluster benchmark still runs: a tiny fan-out against one process,
`serve --workers 2` and two nodes, each cluster on a real redis-server the
benchmark starts itself (tests/redis_server.py), and the picows load generator.

Only that every message arrived on every side, through both workers and both
nodes, and that the table comes out; not the figures.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the harness reads /proc"
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _cluster_bench():
    spec = importlib.util.spec_from_file_location(
        "wsserver_cluster_bench", BENCHMARKS / "cluster_bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs classes look their module up
    spec.loader.exec_module(module)
    return module


def test_cluster_fanout_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    module = _cluster_bench()
    module.bench.QUIET_WAIT = 0  # do not wait for an idle machine
    args = module.parser().parse_args(
        ["fanout", "--connections", "20", "--publishes", "5", "--runs", "1", "--timeout", "30"]
    )
    report = module.BENCHES["fanout"](args)
    for side in ("one", "workers", "nodes"):
        (run,) = report.raw[side]
        assert run["delivered"] == run["expected"] == 100, (side, run)
        assert not run["timed_out"]
    for side in ("workers", "nodes"):
        # the publish's node delivered to its own share only: the rest came over the bus
        assert 0 < report.raw[side][0]["reached_per_publish"] < 20, report.raw[side]
    module.bench.print_table(report)
    out = capsys.readouterr().out
    assert "--workers 2: delivered messages/s" in out and "one process" in out


def test_cluster_fanout_smoke_with_picows_frames() -> None:
    module = _cluster_bench()
    module.bench.QUIET_WAIT = 0
    args = module.parser().parse_args(
        ["fanout", "--connections", "10", "--publishes", "3", "--runs", "1", "--timeout", "30",
         "--receiver", "frames"]
    )  # fmt: skip
    report = module.BENCHES["fanout"](args)
    for side in ("one", "workers", "nodes"):
        (run,) = report.raw[side]
        assert run["receiver"] == "frames"
        assert run["delivered"] == run["expected"] == 30, (side, run)


def test_cluster_fanout_counts_every_frame_on_every_side() -> None:
    module = _cluster_bench()
    module.bench.QUIET_WAIT = 0
    args = module.parser().parse_args(
        ["fanout", "--connections", "10", "--publishes", "3", "--runs", "1", "--timeout", "30"]
    )
    report = module.BENCHES["fanout"](args)
    for side in ("one", "workers", "nodes"):
        (run,) = report.raw[side]
        assert run["receiver"] == "count"
        assert run["receiver_invalid"] == 0 and run["delivered"] == 30, (side, run)
        assert run["frame_length"] == 150 + 4  # 16-bit length header
        assert run["publish_to_last_p99_ms"] > 0


# -- the counting receiver on a byte stream of our own ------------------------------------


def _receiver():
    spec = importlib.util.spec_from_file_location(
        "wsserver_counting_receiver", BENCHMARKS / "counting_receiver.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = (
        bytes([0x80 | opcode, n]) if n < 126 else bytes([0x80 | opcode, 126]) + n.to_bytes(2, "big")
    )
    return head + payload


def _publish(seq: int, width: int = 150) -> bytes:
    body = b'{"type":"bench","data":{"seq":%d,"pad":"' % seq
    return _frame(1, body + b"x" * (width - len(body) - 2) + b'"}')


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _feed(counter, stream: bytes, cuts: list[int]) -> None:
    bounds = [0, *cuts, len(stream)]
    for a, b in itertools.pairwise(bounds):
        buf = counter.get_buffer(-1)
        buf[: b - a] = stream[a:b]
        counter.buffer_updated(b - a)


def _run(stream_after_greeting: bytes, cuts: list[int], expect: int):
    import asyncio

    mod = _receiver()
    full: list[int] = []

    async def main():
        c = mod.Counter(b"", expect, full.append)
        transport = _Transport()
        c.connection_made(transport)
        head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        greeting = _frame(1, b'{"type":"connected","data":{}}')
        stream = head + greeting + _publish(-1) + stream_after_greeting
        _feed(
            c,
            stream,
            [len(head) - 3, len(head) + 5] + [len(head) + len(greeting) + 154 + x for x in cuts],
        )
        return c, transport

    return asyncio.run(main()), full


def test_counting_receiver_counts_frames_cut_anywhere_and_answers_a_ping() -> None:
    body = b"".join(_publish(k) for k in range(20))
    ping = _frame(0x9, b"hb")
    stream = body[: 154 * 7] + ping + body[154 * 7 :]
    # reads that end inside a header, inside a payload, inside the ping, on a boundary
    cuts = [1, 3, 154 * 2 + 2, 154 * 7 + 1, 154 * 7 + 3, 154 * 12 + 4, 154 * 15]
    (c, transport), full = _run(stream, cuts, 20)
    assert (c.length, c.frames, c.pings, c.valid()) == (154, 20, 1, True)
    assert full == [c]
    (pong,) = transport.written[1:]  # after the handshake request: one masked pong
    assert pong[0] == 0x8A and pong[1] == 0x80 | 2
    assert bytes(b ^ pong[2 + (i & 3)] for i, b in enumerate(pong[6:])) == b"hb"
    # one read holding the ping among the frames: the strided check fails, the walk counts
    (c, transport), full = _run(stream, [0], 20)
    assert (c.frames, c.pings, c.valid(), len(transport.written)) == (20, 1, True, 2)


def test_counting_receiver_rejects_a_short_stream_or_a_frame_of_another_length() -> None:
    body = b"".join(_publish(k) for k in range(5))
    (c, _), full = _run(body[:-10], [200], 5)
    assert c.frames == 5 and c.skip == 10 and not c.valid()  # bytes still owed: invalid
    odd = _publish(3, width=149)
    for cuts in ([], [0]):  # read frame by frame, or in one read from a frame start
        (c, _), full = _run(body[: 154 * 3] + odd + body[154 * 3 :], cuts, 6)
        assert (c.frames, c.bad, c.valid()) == (5, 1, False) and full == [], cuts
