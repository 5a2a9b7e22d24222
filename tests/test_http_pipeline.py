"""The webhook sender's pipelined HTTP/1.1 client (net/http_pipeline.py): the
answer parser on its own (sans-IO), then exchanges against real receivers on
loopback sockets: several requests per write and per read, a connection broken
in the middle of a pipeline, malformed and short answers."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.hubprocess import free_port
from tests.test_http_client import serve_tls
from tests.webhook_receiver import Receiver
from wsserver.net.http_client import Target
from wsserver.net.http_pipeline import (
    MAX_HEAD,
    MalformedResponse,
    PipelinedClient,
    RequestTemplate,
    ResponseReader,
)


def answers(data: bytes, max_answer: int = 65536, step: int = 0, most: int = 0) -> list[tuple[int, bool]]:
    """The answers a reader finds in `data`, fed whole or `step` bytes at a time,
    one by one (`next`) or, with `most`, in runs of `most` at most (`next_run`)."""
    reader = ResponseReader(max_answer)
    out = []
    pieces = [data] if not step else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        reader.feed(piece)
        if not most:
            while (answer := reader.next()) is not None:
                out.append((answer.status, answer.reusable))
            continue
        while (run := reader.next_run(most)) is not None:
            answer, n = run
            assert 1 <= n <= most
            out += [(answer.status, answer.reusable)] * n
    return out


NO_CONTENT = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"


@pytest.mark.parametrize("most", [0, 1, 3])
@pytest.mark.parametrize("step", [0, 1, 7])
def test_answers_in_one_read_or_cut_anywhere_are_found_in_order(step: int, most: int) -> None:
    data = (
        NO_CONTENT
        + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        + b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
        + b"HTTP/1.1 500 Oops\r\ncontent-length:  2 \r\n\r\nno"
        + b"HTTP/1.1 201\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert answers(data, step=step, most=most) == [(204, True), (200, True), (202, True), (500, True), (201, False)]


@pytest.mark.parametrize("most", [0, 1, 2, 64])
@pytest.mark.parametrize("step", [0, 1, 5])
def test_a_head_like_the_last_one_says_what_it_said_and_a_new_one_is_read_afresh(step: int, most: int) -> None:
    """(A receiver answers alike: the reader remembers the last head it parsed.)"""
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
    data = (
        NO_CONTENT * 3
        + ok + b"abc" + ok + b"xyz"
        + b"HTTP/1.1 100 Continue\r\n\r\n" + ok + b"123"
        + NO_CONTENT
        + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
    )  # fmt: skip
    assert answers(data, step=step, most=most) == [(204, True)] * 3 + [(200, True)] * 3 + [(204, True), (200, False)]
    with pytest.raises(MalformedResponse):  # a bad head after good ones is still refused
        answers(NO_CONTENT * 2 + b"HTTP/1.1 20x\r\n\r\n", most=most)


def test_a_run_of_answers_equal_to_the_last_one_is_taken_at_once() -> None:
    reader = ResponseReader()
    reader.feed(NO_CONTENT * 10 + NO_CONTENT[:-3])
    first = reader.next_run(64)
    assert first is not None and first[1] == 1  # parsed: nothing to compare with yet
    run = reader.next_run(4)
    assert run is not None and run[0] is first[0] and run[1] == 4  # `most` at most
    run = reader.next_run(64)
    assert run is not None and run[1] == 5
    assert reader.next_run(64) is None  # the next one is not whole yet
    reader.feed(NO_CONTENT[-3:] + b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n" + NO_CONTENT)
    assert [(a.status, n) for a, n in iter(lambda: reader.next_run(64), None)] == [(204, 1), (503, 1), (204, 1)]
    # an answer with a body: equal bytes, equal answer; another body is read afresh
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    reader.feed(ok + b"ok" + ok + b"ok" + ok + b"no" + ok + b"ok")
    assert [(a.status, n) for a, n in iter(lambda: reader.next_run(64), None)] == [(200, 1), (200, 1), (200, 1), (200, 1)]
    reader.feed((ok + b"ok") * 3)
    assert [(a.status, n) for a, n in iter(lambda: reader.next_run(64), None)] == [(200, 3)]
    # in the middle of an answer, bytes like the last answer are its body's
    reader.feed(NO_CONTENT * 2 + b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(NO_CONTENT))
    assert [(a.status, n) for a, n in iter(lambda: reader.next_run(64), None)] == [(204, 1), (204, 1)]
    reader.feed(NO_CONTENT)
    assert [(a.status, n) for a, n in iter(lambda: reader.next_run(64), None)] == [(201, 1)]


@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(st.integers(0, 6), max_size=30),
    cuts=st.lists(st.integers(1, 60), max_size=20),
    most=st.integers(1, 8),
)
def test_runs_find_what_one_by_one_finds_however_the_bytes_are_cut(picks: list[int], cuts: list[int], most: int) -> None:
    pool = [
        NO_CONTENT,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
        b"HTTP/1.1 100 Continue\r\n\r\n" + NO_CONTENT,
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(NO_CONTENT), NO_CONTENT),  # a body like an answer
    ]
    data = b"".join(pool[i] for i in picks)
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(data[at : at + cut])
        at += cut
    pieces.append(data[at:])
    one, runs = ResponseReader(), ResponseReader()
    expected: list[int] = []
    found: list[int] = []
    for piece in pieces:
        one.feed(piece)
        runs.feed(piece)
        while (answer := one.next()) is not None:
            expected.append(answer.status)
        while (run := runs.next_run(most)) is not None:
            found += [run[0].status] * run[1]
    assert found == expected and len(found) == len(picks)


def test_answers_that_end_their_connection() -> None:
    assert answers(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n") == [(200, False)]
    assert answers(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n") == [(200, True)]
    # a body too long to read: its status counts, the connection is not reused
    assert answers(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, max_answer=10) == [(200, False)]
    # no length: the body ends with the connection
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body")
    assert reader.next() is None
    answer = reader.at_close()
    assert answer is not None and (answer.status, answer.reusable) == (200, False)
    # a close before an answer is whole: no answer
    short = ResponseReader()
    short.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert short.next() is None and short.at_close() is None


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * (MAX_HEAD + 10),  # no end in sight
    ],
)
def test_a_malformed_answer_is_a_defined_failure(data: bytes) -> None:
    with pytest.raises(MalformedResponse):
        answers(data)


def test_a_request_is_the_template_its_headers_and_its_body() -> None:
    template = RequestTemplate.of(Target.parse("http://u:p@example.com:8080/in?k=1"))
    wire = template.request([("X-Event", "message")], b'{"a":1}')
    head, _, body = wire.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /in?k=1 HTTP/1.1"
    assert b"Host: example.com:8080" in lines and b"Authorization: Basic dTpw" in lines
    assert lines[-2:] == [b"X-Event: message", b"Content-Length: 7"]
    assert body == b'{"a":1}'
    with pytest.raises(ValueError):
        template.request([("X-Event", "a\r\nInjected: 1")], b"")


async def receiver(nursery: trio.Nursery, **kwargs: Any) -> Receiver:
    return await nursery.start(Receiver(**kwargs).serve)  # type: ignore[no-any-return]


def requests(template: RequestTemplate, first: int, n: int) -> list[bytes]:
    return [template.request([("X-N", str(i))], b'{"n":%d}' % i) for i in range(first, first + n)]


async def test_pipelined_requests_reach_a_receiver_several_per_read_and_are_answered_in_order() -> None:
    statuses_of = {3: 500, 7: 404}
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery, answer=lambda r: statuses_of.get(r.event["n"], 204))
        target = Target.parse(rec.url)
        template = RequestTemplate.of(target)
        async with PipelinedClient(target, 2) as client:
            for first in (0, 16):  # the second exchange reuses the kept-alive connection
                statuses: list[int] = []
                assert await client.exchange(requests(template, first, 16), statuses) is None
                assert statuses == [statuses_of.get(n, 204) for n in range(first, first + 16)]
            assert client.opened == 1
        assert [r.event["n"] for r in rec.requests] == list(range(32))
        assert max(rec.per_read) > 1, rec.per_read  # the receiver read several requests at once
        nursery.cancel_scope.cancel()


async def test_a_connection_broken_mid_pipeline_resends_the_unanswered_requests_in_order() -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        rec.break_after = 5  # answers 5, then closes with the other 11 unanswered
        target = Target.parse(rec.url)
        template = RequestTemplate.of(target)
        async with PipelinedClient(target, 1) as client:
            statuses: list[int] = []
            assert await client.exchange(requests(template, 0, 16), statuses) is None
            assert statuses == [204] * 16
            assert client.opened == 2
        assert [r.event["n"] for r in rec.requests] == list(range(16))  # none lost, none twice, in order
        nursery.cancel_scope.cancel()


async def raw_server(nursery: trio.Nursery, answer: bytes, close: bool = True) -> tuple[str, list[int]]:
    """A server that answers each connection's first read with `answer` (then
    closes it, if `close`); counts its connections."""
    opened: list[int] = []

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            opened.append(1)
            await stream.receive_some(65536)
            await stream.send_all(answer)
            if not close:
                await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/hooks", opened


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 204 No Content\r\n\r\nGARBAGE\r\n\r\n", "malformed answer"),  # the 2nd answer is not HTTP
        (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Le", "closed by the receiver"),  # cut short
        (b"", "closed by the receiver"),  # closed without a word
    ],
)
async def test_a_malformed_or_short_answer_fails_the_unanswered_requests_after_one_resend(answer: bytes, why: str) -> None:
    async with trio.open_nursery() as nursery:
        url, opened = await raw_server(nursery, answer)
        target = Target.parse(url)
        async with PipelinedClient(target, 1) as client:
            statuses: list[int] = []
            error = await client.exchange(requests(RequestTemplate.of(target), 0, 4), statuses)
        assert error is not None and error.startswith("network") and why in error, error
        first = [204] if answer else []
        assert statuses == first * 2  # one answer per connection, the rest failed
        assert len(opened) == 2  # the first connection and one resend
        nursery.cancel_scope.cancel()


async def test_a_receiver_that_cannot_be_reached_is_a_network_failure() -> None:
    target = Target.parse(f"http://127.0.0.1:{free_port()}/hooks")
    async with PipelinedClient(target, 1) as client:
        statuses: list[int] = []
        error = await client.exchange(requests(RequestTemplate.of(target), 0, 2), statuses)
    assert error is not None and error.startswith("network:") and statuses == []


async def test_pipelined_requests_over_https_and_an_untrusted_certificate(tmp_path: Path) -> None:
    rec = Receiver()
    async with trio.open_nursery() as nursery:
        cert = await serve_tls(rec, nursery, tmp_path)
        target = Target.parse(f"https://localhost:{rec.port}/hooks")
        template = RequestTemplate.of(target)
        async with PipelinedClient(target, 1, tls=ssl.create_default_context(cafile=str(cert))) as client:
            statuses: list[int] = []
            assert await client.exchange(requests(template, 0, 8), statuses) is None
            assert statuses == [204] * 8 and client.opened == 1
        async with PipelinedClient(target, 1) as untrusting:  # the default context: nobody vouches for it
            statuses = []
            error = await untrusting.exchange(requests(template, 8, 2), statuses)
            assert error is not None and error.startswith("network:") and statuses == []
        assert [r.event["n"] for r in rec.requests] == list(range(8))
        nursery.cancel_scope.cancel()
