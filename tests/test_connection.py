"""Connection timing and flow control on memory streams with the autojump clock:
heartbeat timeout, auth timeout, token expiry and refresh, rate limits, slow consumers."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from wsproto.events import CloseConnection, TextMessage

from tests.conftest import MemoryClient, hub_of, token


def bearer(t: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {t}")]


async def test_silent_client_is_closed_4000_after_heartbeat_timeout(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(heartbeat__interval=30, heartbeat__timeout=60)
    client = await server.connect(headers=bearer(token(server.config)), auto_pong=False)
    assert (await client.recv())["type"] == "connected"
    start = trio.current_time()
    assert await client.closed() == 4000
    assert 59 <= trio.current_time() - start <= 62
    await trio.sleep(1)
    assert hub_of(server).presence.sessions == {}


async def test_client_answering_pings_stays_connected(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(heartbeat__interval=30, heartbeat__timeout=60)
    client = await server.connect(headers=bearer(token(server.config, ttl=36000)))
    assert (await client.recv())["type"] == "connected"
    await client.idle(600)
    await client.send({"type": "ping", "id": 7})
    pong = await client.recv()
    assert pong["type"] == "pong" and pong["id"] == 7


async def test_app_ping_sends_ping_messages_when_enabled(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(heartbeat__interval=30, heartbeat__app_ping=True)
    client = await server.connect(headers=bearer(token(server.config, ttl=36000)))
    await client.recv_type("connected")
    msg = await client.recv()
    assert msg["type"] == "ping"


async def test_unauthenticated_connection_is_closed_4002_after_auth_timeout(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(auth__timeout=10)
    client = await server.connect()
    start = trio.current_time()
    assert await client.closed() == 4002
    assert 9.9 <= trio.current_time() - start <= 11


async def test_first_message_auth_within_timeout_keeps_connection(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(auth__timeout=10)
    client = await server.connect()
    await trio.sleep(5)
    await client.send({"type": "auth", "data": {"token": token(server.config, ttl=36000)}, "id": "a1"})
    connected = await client.recv()
    assert connected["type"] == "connected" and connected["id"] == "a1"
    await client.idle(30)
    await client.send({"type": "ping"})
    assert (await client.recv())["type"] == "pong"


async def close_frame(client: MemoryClient) -> tuple[int, str]:
    """Read until the close frame: its code and reason."""
    while True:
        event = await client.next_event()
        if isinstance(event, CloseConnection):
            return event.code, event.reason


@pytest.mark.parametrize(
    ("locale", "reason"),
    [("zh-CN", "字段类型错误: device_info"), ("en", "wrong type for field: device_info")],
)
async def test_register_with_a_non_object_device_info_closes_4001_naming_the_field(
    memory_server: Any, autojump_clock: Any, locale: str, reason: str
) -> None:
    server = await memory_server(server__locale=locale)
    client = await server.connect()
    data = {"token": token(server.config), "device_info": "iPhone"}
    await client.send({"type": "register", "data": data})
    err = await client.recv()
    assert err["error"] == reason and err["data"]["field"] == "device_info"
    assert await close_frame(client) == (4001, reason)


async def test_token_expiry_warns_then_closes_4001(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(auth__expiry_grace=30)
    client = await server.connect(headers=bearer(token(server.config, ttl=300)))
    await client.recv_type("connected")
    start = trio.current_time()
    warning = await client.recv()
    assert warning["type"] == "token_expiring"
    assert 230 <= trio.current_time() - start <= 245  # 60 s before exp
    assert await client.closed() == 4001
    assert 325 <= trio.current_time() - start <= 335  # exp + grace


async def test_first_message_auth_warns_of_expiry_at_once(memory_server: Any, autojump_clock: Any) -> None:
    # a token 30 s from its exp is warned of at once; the connection's next
    # tick was still the auth timeout's (10 s later)
    server = await memory_server(auth__expiry_grace=30)
    client = await server.connect()
    start = trio.current_time()
    await client.send({"type": "auth", "data": {"token": token(server.config, ttl=30)}})
    await client.recv_type("connected")
    warning = await client.recv()
    assert warning["type"] == "token_expiring"
    assert trio.current_time() - start < 1


async def test_refresh_with_new_token_extends_the_session(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(auth__expiry_grace=30)
    client = await server.connect(headers=bearer(token(server.config, ttl=300, user_id=5)))
    await client.recv_type("connected")
    await client.recv_type("token_expiring")
    fresh = token(server.config, ttl=3600, user_id=5)
    await client.send({"type": "refresh", "data": {"token": fresh}, "id": "r"})
    reply = await client.recv()
    assert reply["type"] == "token_refreshed" and reply["id"] == "r"
    await client.idle(600)  # well past the old exp + grace
    await client.send({"type": "ping"})
    assert (await client.recv())["type"] == "pong"


async def test_refresh_for_another_user_is_forbidden(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server()
    client = await server.connect(headers=bearer(token(server.config, user_id=5)))
    await client.recv_type("connected")
    other = token(server.config, user_id=6)
    await client.send({"type": "refresh", "data": {"token": other}})
    err = await client.recv_type("error")
    assert err["data"]["code"] == "forbidden" and err["data"]["ref"] == "refresh"


async def test_flood_gets_rate_limited_then_closed_4029(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(limits__messages_per_second=10, limits__burst=20)
    client = await server.connect(headers=bearer(token(server.config)))
    await client.recv_type("connected")
    for _ in range(20):  # the burst passes
        await client.send({"type": "ping"})
    for _ in range(20):
        assert (await client.recv())["type"] == "pong"
    await client.send({"type": "ping"})
    err = await client.recv()
    assert err["type"] == "error" and err["data"]["code"] == "rate_limited"
    for _ in range(19):
        await client.send({"type": "ping"})
    assert await client.closed() == 4029


async def test_rate_limit_refills_over_time(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(limits__messages_per_second=10, limits__burst=5)
    client = await server.connect(headers=bearer(token(server.config, ttl=36000)))
    await client.recv_type("connected")
    for _round in range(3):
        for _ in range(5):
            await client.send({"type": "ping"})
        for _ in range(5):
            assert (await client.recv())["type"] == "pong"
        await trio.sleep(1)


async def test_client_that_stops_reading_is_closed_4008_and_frees_its_memory(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(limits__send_queue=4)
    slow = await server.connect(headers=bearer(token(server.config, user_id=1)), lockstep=True)
    await slow.recv_type("connected")
    other = await server.connect(headers=bearer(token(server.config, user_id=2)))
    other_id = (await other.recv_type("connected"))["data"]["conn_id"]
    # `slow` keeps sending pings but reads nothing; its pongs pile up.
    for _ in range(12):
        await slow.send({"type": "ping"})
    await trio.sleep(1)  # less than the close timeout: its close frame is not even written
    assert list(hub_of(server).presence.sessions) == [other_id]  # closed 4008: the hub forgot it at once
    # Now it reads: a few pongs, then the 4008 close, not all twelve pongs.
    pongs = 0
    while True:
        try:
            msg = await slow.recv()
        except AssertionError:
            break
        pongs += msg["type"] == "pong"
    assert slow.close_code == 4008
    assert pongs < 12
    # the other connection never noticed
    await other.send({"type": "ping"})
    assert (await other.recv())["type"] == "pong"
    await trio.sleep(1)
    assert len(hub_of(server).presence.sessions) == 1


async def test_client_that_never_reads_again_is_dropped_within_bounded_time(memory_server: Any, autojump_clock: Any) -> None:
    server = await memory_server(limits__send_queue=4)
    slow = await server.connect(headers=bearer(token(server.config)), lockstep=True)
    await slow.recv_type("connected")
    for _ in range(12):
        await slow.send({"type": "ping"})
    start = trio.current_time()
    while hub_of(server).presence.sessions:
        await trio.sleep(0.5)
    assert trio.current_time() - start <= 12  # send grace + close timeout


async def test_client_that_stops_reading_with_little_to_receive_is_closed_4008_after_write_timeout(
    memory_server: Any, autojump_clock: Any
) -> None:
    # far from a full queue: only the write timeout can notice this peer
    server = await memory_server(
        limits__write_timeout=20, heartbeat__interval=300, heartbeat__timeout=600
    )
    slow = await server.connect(headers=bearer(token(server.config)), lockstep=True)
    await slow.recv_type("connected")
    (session,) = hub_of(server).presence.sessions.values()
    for _ in range(3):  # then it reads nothing: the pongs wait on it
        await slow.send({"type": "ping"})
    await trio.sleep(19.9)
    assert session.outlet.closing is None
    await trio.sleep(0.2)
    assert session.outlet.closing is not None and session.outlet.closing[0] == 4008
    with trio.fail_after(5):  # what was left to write, then the close frame
        assert await slow.closed() == 4008


async def test_slow_reader_that_keeps_reading_is_not_closed_by_the_write_timeout(
    memory_server: Any, autojump_clock: Any
) -> None:
    server = await memory_server(
        limits__write_timeout=2, heartbeat__interval=300, heartbeat__timeout=600
    )
    slow = await server.connect(headers=bearer(token(server.config)), lockstep=True)
    await slow.recv_type("connected")
    # Always something waiting on it for 15 s, several write timeouts, but it
    # takes some every 1.5 s, less than one.
    for _ in range(10):
        await slow.send({"type": "ping"})
        await slow.send({"type": "ping"})
        await trio.sleep(1.5)
        await slow.read_some()
    assert len(hub_of(server).presence.sessions) == 1
    while slow.events:
        assert isinstance(await slow.next_event(), TextMessage)
