"""The HTTP layer over memory streams, with a real h11 client on the other end."""

from __future__ import annotations

import functools
import json
import logging

import attrs
import h11
import pytest
import trio
import trio.testing

from wsserver.api import bodies
from wsserver.api.routes import json_reply
from wsserver.net.http import (
    ConnectionGone,
    HttpError,
    HttpRequest,
    HttpResponse,
    RequestHead,
    Router,
    read_request_head,
    respond_and_close,
    serve_http,
)
from wsserver.shapes import Shape

MAX_HEADER = 16 * 1024
MAX_BODY = 1024


# --------------------------------------------------------------------------- harness


async def user_online(req: HttpRequest) -> HttpResponse:
    return json_reply({"user_id": req.params["user_id"], "is_online": False})


@attrs.define
class Echo(Shape):
    type: str


async def echo(req: HttpRequest) -> HttpResponse:
    bodies.read(req, Echo, 32)
    return json_reply(bodies.read(req, dict[str, object], 32))


async def boom(req: HttpRequest) -> HttpResponse:
    raise RuntimeError("handler bug")


def make_router() -> Router:
    router = Router()
    router.add("GET", "/api/users/{user_id}/online", user_online)
    router.add("POST", "/api/echo", echo)
    router.add("GET", "/boom", boom)
    return router


async def run_server(
    stream: trio.abc.Stream,
    router: Router,
    done: list[tuple[object, ...]] | None = None,
    *,
    locale: str = "en",
    **kw: float,
) -> None:
    """What the listener does for a plain HTTP connection (texts in English unless
    `locale` says otherwise)."""
    async with stream:
        try:
            head, conn, _ = await read_request_head(stream, max_header_bytes=MAX_HEADER)
        except ConnectionGone:
            return
        except HttpError as err:
            await respond_and_close(stream, err.response(locale))
            return
        await serve_http(
            stream,
            head,
            conn,
            router,
            remote="127.0.0.1",
            max_body_bytes=MAX_BODY,
            max_header_bytes=MAX_HEADER,
            locale=locale,
            on_request_done=None if done is None else (lambda *a: done.append(a)),
            **kw,
        )


@attrs.define
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class Client:
    """An h11 client on one end of a memory stream pair."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def send_head(self, method: str, target: str, headers: list[tuple[str, str]]) -> None:
        request = h11.Request(method=method, target=target, headers=[("Host", "t"), *headers])
        await self.stream.send_all(self.conn.send(request) or b"")

    async def send_body(self, data: bytes, *, end: bool = True) -> None:
        out = (self.conn.send(h11.Data(data=data)) or b"") if data else b""
        if end:
            out += self.conn.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(out)

    async def receive(self) -> Reply:
        response: h11.Response | None = None
        body = bytearray()
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some())
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                headers = {k.decode(): v.decode() for k, v in response.headers}
                return Reply(response.status_code, headers, bytes(body))
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        hdrs = list(headers or [])
        if body:
            hdrs.append(("Content-Length", str(len(body))))
        await self.send_head(method, target, hdrs)
        await self.send_body(body)
        return await self.receive()

    async def read_to_eof(self) -> bytes:
        data = bytearray()
        while chunk := await self.stream.receive_some():
            data += chunk
        return bytes(data)


async def one_request(method: str, target: str, body: bytes = b"", **kw: object) -> Reply:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        reply = await client.request(method, target, body, **kw)  # type: ignore[arg-type]
        await client_stream.aclose()
    return reply


# --------------------------------------------------------------------------- replies


async def test_get_route_with_param_returns_seed_reply_shape() -> None:
    reply = await one_request("GET", "/api/users/u%201/online?x=1")
    assert reply.status == 200
    assert reply.json() == {
        "code": 0,
        "message": "success",
        "data": {"user_id": "u 1", "is_online": False},
    }
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    assert reply.headers["content-length"] == str(len(reply.body))
    assert reply.headers["server"] == "wsserver"


async def test_post_json_is_echoed_in_data() -> None:
    payload = {"type": "notice", "text": "你好"}
    reply = await one_request("POST", "/api/echo", json.dumps(payload).encode())
    assert reply.status == 200
    assert reply.json() == {"code": 0, "message": "success", "data": payload}
    assert "你好".encode() in reply.body  # not \\u-escaped


async def test_unknown_path_is_404() -> None:
    reply = await one_request("GET", "/nope")
    assert reply.status == 404
    assert reply.json() == {"code": 404, "message": "not found"}


async def test_wrong_method_is_405_with_allow() -> None:
    reply = await one_request("DELETE", "/api/users/1/online")
    assert reply.status == 405
    assert reply.json() == {"code": 405, "message": "method not allowed"}
    assert reply.headers["allow"] == "GET, HEAD"


async def test_head_is_answered_like_get_without_body() -> None:
    reply = await one_request("HEAD", "/api/users/7/online")
    get = await one_request("GET", "/api/users/7/online")
    assert reply.status == 200
    assert reply.body == b""
    assert reply.headers["content-length"] == str(len(get.body))


async def test_bad_json_is_400_without_field() -> None:
    reply = await one_request("POST", "/api/echo", b"{not json")
    assert reply.status == 400
    assert reply.json() == {"code": 400, "message": "invalid JSON body"}


async def test_non_utf8_body_is_invalid_json() -> None:
    reply = await one_request("POST", "/api/echo", '{"type":"é"}'.encode("latin-1"))
    assert reply.json() == {"code": 400, "message": "invalid JSON body"}


async def test_missing_field_is_400_naming_the_field() -> None:
    reply = await one_request("POST", "/api/echo", b'{"text":"hi"}')
    assert reply.status == 400
    assert reply.json() == {"code": 400, "message": "missing field: type", "field": "type"}


async def test_handler_exception_is_500_logged_and_next_request_works(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        with caplog.at_level(logging.ERROR, logger="wsserver.http"):
            reply = await client.request("GET", "/boom?token=secret-token")
        assert reply.status == 500
        assert reply.json() == {"code": 500, "message": "internal server error"}
        again = await client.request("GET", "/api/users/2/online")
        assert again.status == 200
        await client_stream.aclose()
    assert "handler failed: GET /boom" in caplog.text
    assert "secret-token" not in caplog.text


async def test_keep_alive_serves_two_requests_and_reports_each() -> None:
    done: list[tuple[object, ...]] = []
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router(), done)
        client = Client(client_stream)
        first = await client.request("GET", "/api/users/1/online?token=abc")
        second = await client.request("POST", "/api/echo", b'{"type":"x"}')
        assert (first.status, second.status) == (200, 200)
        await client_stream.aclose()
    assert [(d[0], d[1], d[2]) for d in done] == [
        ("GET", "/api/users/1/online", 200),
        ("POST", "/api/echo", 200),
    ]
    assert done[1][4] == len(b'{"type":"x"}')
    assert done[1][5] == len(second.body)


async def test_pipelined_requests_are_answered_in_order() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    raw = (
        b"GET /api/users/a/online HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /api/users/b/online HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        await client_stream.send_all(raw)
        client = Client(client_stream)
        client.conn.send(h11.Request(method="GET", target="/", headers=[("Host", "t")]))
        client.conn.send(h11.EndOfMessage())
        first = await client.receive()
        client.conn.start_next_cycle()
        client.conn.send(h11.Request(method="GET", target="/", headers=[("Host", "t")]))
        client.conn.send(h11.EndOfMessage())
        second = await client.receive()
        assert await client.read_to_eof() == b""
    assert first.json()["data"]["user_id"] == "a"  # type: ignore[index]
    assert second.json()["data"]["user_id"] == "b"  # type: ignore[index]
    assert second.headers["connection"] == "close"


async def test_connection_close_ends_the_connection() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        reply = await client.request(
            "GET", "/api/users/1/online", headers=[("Connection", "close")]
        )
        assert reply.status == 200
        assert await client.read_to_eof() == b""


async def test_idle_keep_alive_connection_is_closed_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        serve = functools.partial(run_server, idle_timeout=5.0)
        nursery.start_soon(serve, server_stream, make_router())
        client = Client(client_stream)
        await client.request("GET", "/api/users/1/online")
        answered = trio.current_time()
        assert await client.read_to_eof() == b""
        assert trio.current_time() - answered == pytest.approx(5.0)


async def test_client_that_pipelines_and_never_reads_is_dropped_after_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # lockstep: a write completes only when the peer reads it, as on a full socket
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    requests = b"GET /api/users/1/online HTTP/1.1\r\nHost: t\r\n\r\n" * 50
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            serve = functools.partial(run_server, write_timeout=5.0)
            nursery.start_soon(serve, server_stream, make_router())
            await client_stream.send_all(requests)
            sent = trio.current_time()
        # the nursery ended: the server gave up on the reader and closed
    assert trio.current_time() - sent == pytest.approx(5.0)
    # what the cut-short write had handed over, then the end: nothing more is served
    assert (await Client(client_stream).read_to_eof()).count(b"HTTP/1.1 200 ") <= 1


async def test_a_refusal_to_a_peer_that_does_not_read_ends_after_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _silent_client, server_stream = trio.testing.lockstep_stream_pair()
    refusal = HttpError(429, "too_many_ip_connections").response()
    with trio.fail_after(60):
        await respond_and_close(server_stream, refusal, write_timeout=5.0)
    assert trio.current_time() == pytest.approx(5.0)


# --------------------------------------------------------------------------- limits


async def test_body_over_limit_by_content_length_is_413_before_it_is_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        await client.send_head("POST", "/api/echo", [("Content-Length", str(MAX_BODY * 100))])
        reply = await client.receive()  # no body bytes sent at all
        assert reply.status == 413
        assert reply.json() == {"code": 413, "message": "request body too large"}
        assert reply.headers["connection"] == "close"
        assert await client.read_to_eof() == b""
        await client_stream.aclose()


async def test_chunked_body_over_limit_is_413_once_limit_is_crossed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        await client.send_head("POST", "/api/echo", [("Transfer-Encoding", "chunked")])
        await client.send_body(b"x" * (MAX_BODY + 1), end=False)  # the body never ends
        reply = await client.receive()
        assert reply.status == 413
        assert await client.read_to_eof() == b""
        await client_stream.aclose()


async def test_chunked_body_within_limit_is_read() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        await client.send_head("POST", "/api/echo", [("Transfer-Encoding", "chunked")])
        await client.send_body(b'{"type":', end=False)
        await client.send_body(b'"t"}')
        reply = await client.receive()
        assert reply.json() == {"code": 0, "message": "success", "data": {"type": "t"}}
        await client_stream.aclose()


@pytest.mark.parametrize("piece", [1024, 64 * 1024], ids=["in-pieces", "one-read"])
async def test_20_kib_header_is_431(piece: int, autojump_clock: trio.testing.MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    raw = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20 * 1024 + b"\r\n\r\n"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        for i in range(0, len(raw), piece):
            await client_stream.send_all(raw[i : i + piece])
        response = await Client(client_stream).read_to_eof()
    assert response.startswith(b"HTTP/1.1 431 ")
    assert response.endswith(b'{"code":431,"message":"request header fields too large"}')


async def test_431_on_a_follow_up_request(autojump_clock: trio.testing.MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        await client.request("GET", "/api/users/1/online")
        await client_stream.send_all(
            b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20 * 1024 + b"\r\n\r\n"
        )
        response = await client.read_to_eof()
    assert response.startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize("first", [True, False], ids=["first-request", "follow-up"])
async def test_content_length_with_transfer_encoding_is_400_and_nothing_after_it_is_served(
    first: bool, autojump_clock: trio.testing.MockClock
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    smuggled = (
        b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        b"GET /api/users/smuggled/online HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        client = Client(client_stream)
        if not first:
            assert (await client.request("GET", "/api/users/1/online")).status == 200
        await client_stream.send_all(smuggled)
        response = await client.read_to_eof()
    assert response.startswith(b"HTTP/1.1 400 ")
    assert response.count(b"HTTP/1.1") == 1
    assert b"\r\nConnection: close\r\n" in response
    assert response.endswith(
        b'{"code":400,"message":"Content-Length and Transfer-Encoding in one request"}'
    )


async def test_garbage_is_400(autojump_clock: trio.testing.MockClock) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server, server_stream, make_router())
        await client_stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        response = await Client(client_stream).read_to_eof()
    assert response.startswith(b"HTTP/1.1 400 ")
    assert response.endswith(b'{"code":400,"message":"malformed request"}')


async def test_peer_closing_before_a_full_head_is_connection_gone() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.send_all(b"GET /api HTTP/1.1\r\nHo")
    await client_stream.aclose()
    with pytest.raises(ConnectionGone):
        await read_request_head(server_stream, max_header_bytes=MAX_HEADER)


async def test_peer_closing_without_a_byte_is_connection_gone() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.aclose()
    with pytest.raises(ConnectionGone):
        await read_request_head(server_stream, max_header_bytes=MAX_HEADER)


# --------------------------------------------------------------------------- upgrade hand-off


async def test_read_request_head_returns_every_byte_read() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    raw = b"POST /api/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
    await client_stream.send_all(raw)
    head, conn, received = await read_request_head(server_stream, max_header_bytes=MAX_HEADER)
    assert (head.method, head.path) == ("POST", "/api/echo")
    assert received == raw
    assert conn.their_state is h11.SEND_BODY


async def test_refused_upgrade_gets_a_json_error_and_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = Client(client_stream)
    upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")]
    await client.send_head("GET", "/ws", upgrade)
    await client.send_body(b"")
    head, conn, _ = await read_request_head(server_stream, max_header_bytes=MAX_HEADER)
    assert head.is_websocket_upgrade
    async with trio.open_nursery() as nursery:
        refusal = HttpError(401, "token_expired").response("en")
        nursery.start_soon(functools.partial(respond_and_close, conn=conn), server_stream, refusal)
        reply = await client.receive()
        await client_stream.aclose()
    assert reply.status == 401
    assert reply.json() == {"code": 401, "message": "token expired"}
    assert reply.headers["connection"] == "close"


# --------------------------------------------------------------------------- pieces


def head_of(method: str, target: str, headers: list[tuple[str, str]] | None = None) -> RequestHead:
    request = h11.Request(method=method, target=target, headers=[("Host", "t"), *(headers or [])])
    return RequestHead.from_h11(request)


def test_request_head_decodes_path_and_query_first_value_wins() -> None:
    head = head_of("GET", "/api/rooms/a%20b/members?group_id=1&group_id=2&q=%E4%BD%A0&e=")
    assert head.target == "/api/rooms/a%20b/members?group_id=1&group_id=2&q=%E4%BD%A0&e="
    assert head.path == "/api/rooms/a b/members"
    assert head.raw_path == "/api/rooms/a%20b/members"
    assert head.query == {"group_id": "1", "q": "你", "e": ""}


def test_request_head_header_lookup_is_case_insensitive_first_wins() -> None:
    head = head_of("GET", "/", [("X-API-Key", "k1"), ("x-api-key", "k2")])
    assert head.header("X-Api-Key") == "k1"
    assert head.header("missing") is None


def test_request_head_with_bad_percent_encoding_is_400() -> None:
    with pytest.raises(HttpError) as info:
        head_of("GET", "/api/%ff")
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", [("Upgrade", "WebSocket"), ("Connection", "keep-alive, Upgrade")], True),
        ("GET", [("Upgrade", "websocket"), ("Connection", "upgrade")], True),
        ("POST", [("Upgrade", "websocket"), ("Connection", "upgrade")], False),
        ("GET", [("Upgrade", "websocket"), ("Connection", "keep-alive")], False),
        ("GET", [("Upgrade", "h2c"), ("Connection", "upgrade")], False),
        ("GET", [], False),
    ],
)
def test_is_websocket_upgrade(method: str, headers: list[tuple[str, str]], expected: bool) -> None:
    assert head_of(method, "/ws", headers).is_websocket_upgrade is expected


@pytest.mark.parametrize("literal_first", [True, False])
def test_literal_segment_beats_parameter_whatever_the_order(literal_first: bool) -> None:
    router = Router()
    routes = [("/api/rooms/stats", user_online), ("/api/rooms/{room}", echo)]
    for pattern, handler in routes if literal_first else reversed(routes):
        router.add("GET", pattern, handler)
    assert router.resolve("GET", "/api/rooms/stats") == (user_online, {})
    assert router.resolve("GET", "/api/rooms/lobby") == (echo, {"room": "lobby"})


def test_route_parameter_is_one_decoded_segment() -> None:
    router = make_router()
    assert router.resolve("GET", "/api/users/a%2Fb/online")[1] == {"user_id": "a/b"}
    with pytest.raises(HttpError) as info:
        router.resolve("GET", "/api/users/a/b/online")
    assert info.value.status == 404


def test_other_method_on_a_literal_falls_back_to_the_parameter_route() -> None:
    router = Router()
    router.add("POST", "/api/rooms/stats", echo)
    router.add("GET", "/api/rooms/{room}", user_online)
    assert router.resolve("GET", "/api/rooms/stats") == (user_online, {"room": "stats"})
    with pytest.raises(HttpError) as info:
        router.resolve("DELETE", "/api/rooms/stats")
    assert info.value.status == 405
    assert info.value.headers == (("Allow", "GET, HEAD, POST"),)


def test_duplicate_route_is_refused() -> None:
    router = make_router()
    with pytest.raises(ValueError, match="already registered"):
        router.add("GET", "/api/users/{user_id}/online", user_online)
    with pytest.raises(ValueError, match="parameter names"):
        router.add("POST", "/api/users/{id}/online", user_online)


def test_json_reply_and_error_reply_are_compact_utf8() -> None:
    assert (
        json_reply({"a": "你"}).body == '{"code":0,"message":"success","data":{"a":"你"}}'.encode()
    )
    err = HttpError(400, "field_missing", field="type").response("en")
    assert err.status == 400
    assert err.body == b'{"code":400,"message":"missing field: type","field":"type"}'
