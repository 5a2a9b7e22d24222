"""The request-head fast path (`parse_plain_upgrade`): what it accepts it reads
exactly as h11 does, what it declines goes to h11, and a real socket server
takes it for browser-like upgrades and falls back for the rest."""

from __future__ import annotations

import socket

import h11
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from wsserver.net.http import HttpError, RequestHead, parse_plain_upgrade, read_request_head

BROWSER = (
    b"GET /ws?token=a.b.c&lang=zh-CN HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8765\r\n"
    b"Connection: Upgrade\r\n"
    b"Pragma: no-cache\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0\r\n"
    b"Upgrade: websocket\r\n"
    b"Origin: http://localhost:3000\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: zh-CN,zh;q=0.9\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"\r\n"
)


def by_h11(data: bytes) -> RequestHead:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return RequestHead.from_h11(event)


def same(fast: RequestHead, slow: RequestHead) -> None:
    assert (fast.method, fast.target, fast.path, fast.query, fast.headers, fast.http_version) == (
        slow.method,
        slow.target,
        slow.path,
        slow.query,
        slow.headers,
        slow.http_version,
    )


def test_a_browser_upgrade_is_read_as_h11_reads_it() -> None:
    fast = parse_plain_upgrade(BROWSER + b"\x81\x85trailing")
    assert fast is not None
    assert fast.size == len(BROWSER)
    same(fast, by_h11(BROWSER))
    assert fast.query == {"token": "a.b.c", "lang": "zh-CN"}


@pytest.mark.parametrize(
    "data",
    [
        BROWSER.replace(b"\r\n", b"\n"),  # bare LF line ends
        BROWSER.replace(b"Pragma: no-cache\r\n", b"Pragma: no-cache\r\n  folded\r\n"),  # obs-fold
        BROWSER.replace(b"Pragma", b"Host"),  # two Host headers
        BROWSER.replace(b"Host: 127.0.0.1:8765\r\n", b""),  # no Host
        BROWSER.replace(b"Pragma: no-cache", b"Content-Length: 0"),  # body headers
        BROWSER.replace(b"Pragma: no-cache", b"Transfer-Encoding: chunked"),
        BROWSER.replace(b"HTTP/1.1", b"HTTP/1.0"),
        BROWSER.replace(b"GET /ws", b"GET http://h/ws"),  # absolute-form
        BROWSER.replace(b"GET /ws", b"POST /ws"),
        BROWSER.replace(b"Pragma: no-cache", b"Pr agma: no-cache"),  # not a token
        BROWSER.replace(b"Pragma: no-cache", b"Pragma: no\x00cache"),  # a control character
        BROWSER.replace(b"Pragma: no-cache", b"Pragma no-cache"),  # no colon
        BROWSER.replace(b"GET /ws?", b"GET /ws%ff?"),  # percent-encoding that is not UTF-8
        BROWSER.replace(b"Upgrade: websocket\r\n", b""),  # not an upgrade
        BROWSER.replace(b"GET /ws", b"GET  /ws"),  # two spaces
        BROWSER[:-2],  # the head is not complete
    ],
)
def test_anything_else_is_left_to_h11(data: bytes) -> None:
    assert parse_plain_upgrade(data) is None


_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
names = st.text(_TCHAR, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in ("host", "content-length", "transfer-encoding", "upgrade", "connection")
)
values = st.binary(max_size=30).map(
    lambda b: bytes(c for c in b if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80)
)
targets = st.lists(
    st.sampled_from(["a", "Z", "9", "-", "%20", "%E4%B8%AD", "/", "?", "=", "&", "+", "~", "%2F", ";"]),
    max_size=12,
).map(lambda parts: "/" + "".join(parts))


@settings(max_examples=300, deadline=None)
@given(
    target=targets,
    extra=st.lists(st.tuples(names, values), max_size=8),
    pad=st.sampled_from([b"", b" ", b"\t", b"  "]),
    order=st.randoms(use_true_random=False),
)
def test_whatever_the_fast_path_accepts_h11_reads_the_same(target, extra, pad, order) -> None:  # type: ignore[no-untyped-def]
    lines = [
        b"Host:" + pad + b"example.com" + pad,
        b"Upgrade: websocket",
        b"Connection:" + pad + b"keep-alive, Upgrade",
        *(n.encode() + b":" + pad + v + pad for n, v in extra),
    ]
    order.shuffle(lines)
    data = b"GET " + target.encode() + b" HTTP/1.1\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
    fast = parse_plain_upgrade(data)
    try:
        slow = by_h11(data)
    except Exception as exc:  # h11.RemoteProtocolError, or our HttpError(400)
        assert fast is None, f"fast path accepted what h11 refuses ({exc!r})"
        return
    if fast is not None:
        same(fast, slow)
        assert fast.size == len(data)


def test_the_property_test_sees_accepted_heads() -> None:
    """Guard against a vacuous property: plain generated heads are accepted."""
    data = b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-A:  v \r\n\r\n"
    fast = parse_plain_upgrade(data)
    assert fast is not None
    same(fast, by_h11(data))


def socket_stream(sent: bytes) -> tuple[trio.SocketStream, socket.socket]:
    """A trio stream over one end of a socket pair; `sent` already on its way."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.sendall(sent)
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), b


async def test_a_socket_server_takes_the_fast_path_only_for_its_paths() -> None:
    stream, peer = socket_stream(BROWSER + b"frames")
    async with stream:
        head, conn, raw = await read_request_head(stream, max_header_bytes=16384, upgrade_paths=("/ws",))
        assert conn is None and raw[head.size :] == b"frames"
    peer.close()
    stream, peer = socket_stream(BROWSER + b"frames")
    async with stream:
        head, conn, raw = await read_request_head(stream, max_header_bytes=16384, upgrade_paths=("/other",))
        assert conn is not None and bytes(conn.trailing_data[0]) == b"frames"
        assert head.path == "/ws" and head.size == 0
    peer.close()


async def test_an_over_long_head_is_left_to_h11_for_its_431() -> None:
    stream, peer = socket_stream(BROWSER)
    async with stream:
        with pytest.raises(HttpError) as info:
            await read_request_head(stream, max_header_bytes=100, upgrade_paths=("/ws",))
        assert info.value.status == 431
    peer.close()
