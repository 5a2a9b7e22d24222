"""The trio client against a real hub process: kill -9 and restart while messages
flow, backoff between real attempts, close codes that end it, token refresh,
a queued send delivered once, liveness."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from tests.conftest import http_request
from tests.hubprocess import API_KEY, CODE, Hub
from wsserver.client import Backoff, Client, ClientClosed, ConnectionState, StateChange, connect

FAST = {"backoff_base": 0.05, "backoff_cap": 0.3}
CONNECTED, RECONNECTING, DISCONNECTED = (
    ConnectionState.CONNECTED,
    ConnectionState.RECONNECTING,
    ConnectionState.DISCONNECTED,
)


async def started(hub: Hub) -> Hub:
    await trio.to_thread.run_sync(hub.start)
    return hub


async def connected(*clients: Client) -> None:
    with trio.fail_after(10):
        for client in clients:
            await client.wait_state(CONNECTED)


def states(client: Client) -> list[StateChange]:
    changes: list[StateChange] = []
    client.on("state", changes.append)
    return changes


class Collector:
    """The `new_message`s one client hands out, with an event per arrival."""

    def __init__(self, client: Client) -> None:
        self.data: list[dict[str, Any]] = []
        self._arrived = trio.Event()
        client.on("new_message", self._add)

    def _add(self, msg: dict[str, Any]) -> None:
        self.data.append(msg["data"])
        self._arrived.set()
        self._arrived = trio.Event()

    async def until(self, count: int, timeout: float = 15) -> None:
        with trio.fail_after(timeout):
            while len(self.data) < count:
                await self._arrived.wait()


async def test_kill_9_and_restart_on_the_same_port_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        await started(hub)
        total, kills = 120, (40, 80)
        async with (
            connect(hub.url, token=hub.token(1), **FAST) as sender,
            connect(hub.url, token=hub.token(2), auto_ack=True, **FAST) as receiver,
        ):
            inbox = Collector(receiver)
            receiver_states = states(receiver)
            await connected(sender, receiver)
            confirmed: list[dict[str, Any]] = []
            reached = {i: trio.Event() for i in kills}

            async def send_all() -> None:
                for i in range(total):
                    confirmed.append(await sender.send_message(2, f"m{i}"))
                    if i in reached:
                        reached[i].set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                for i in kills:
                    await reached[i].wait()
                    hub.kill()  # SIGKILL while the sender keeps sending
                    await trio.to_thread.run_sync(hub.start)
            await inbox.until(total)
            assert [d["text"] for d in inbox.data] == [f"m{i}" for i in range(total)]
            seqs = [d["seq"] for d in inbox.data]
            assert seqs == sorted(set(seqs))
            assert receiver.last_seq == seqs[-1]
            assert len({c["message_id"] for c in confirmed}) == total
            assert RECONNECTING in [c.state for c in receiver_states]
            # nothing more comes after the sender is done: a ping's pong is the last word
            await receiver.request("ping")
            assert len(inbox.data) == total


async def test_reconnect_attempts_wait_the_growing_jittered_backoff_delays() -> None:
    attempts: list[float] = []
    enough = trio.Event()

    async def hang_up(stream: trio.SocketStream) -> None:  # a hub that is down
        attempts.append(trio.current_time())
        if len(attempts) == 7:
            enough.set()
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, hang_up, 0)
        port = listeners[0].socket.getsockname()[1]
        client = Client(f"ws://127.0.0.1:{port}/ws", token="t", backoff_base=0.05, backoff_cap=0.8,
                        random=random.Random(7).uniform)
        changes = states(client)
        nursery.start_soon(client.run)
        with trio.fail_after(10):
            await enough.wait()
        await client.aclose()
        nursery.cancel_scope.cancel()
    delays = [c.delay for c in changes if c.state is RECONNECTING][:6]
    expected = Backoff(0.05, 0.8, random=random.Random(7).uniform)
    assert delays == [expected.next_delay() for _ in range(6)]
    assert len(set(delays)) == 6  # jitter
    ceilings = [min(0.8, 0.05 * 2**n) for n in range(6)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert sum(delays[3:]) > sum(delays[:3])  # grows
    gaps = [b - a for a, b in itertools.pairwise(attempts)][:6]
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay - 0.01 <= gap <= delay + 0.3, (gaps, delays)


async def test_a_kicked_client_ends_disconnected_and_does_not_come_back(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        await started(hub)
        async with connect(hub.url, token=hub.token(5), **FAST) as client:
            changes = states(client)
            seen = client.messages()
            await connected(client)
            status, _, _ = await http_request(
                hub.address, "POST", "/api/users/5/kick",
                headers=[("X-API-Key", API_KEY), ("Content-Type", "application/json")], body=b'{"reason":"bye"}',
            )
            assert status == 200
            with trio.fail_after(5):
                await client.wait_state(DISCONNECTED)
                kinds = [msg["type"] async for msg in seen]  # the stream ends with the client
            assert "kicked" in kinds
            assert [(c.state, c.code) for c in changes] == [(CONNECTED, None), (DISCONNECTED, 4003)]
            assert client.closed_reason is not None and client.closed_reason.code == 4003
            with pytest.raises(ClientClosed):
                client.send("ping")


async def test_a_client_replaced_by_a_newer_connection_ends_disconnected(tmp_path: Path) -> None:
    with Hub(tmp_path, env={"WSSERVER_LIMITS_MAX_CONNECTIONS_PER_USER": "1"}) as hub:
        await started(hub)
        async with connect(hub.url, token=hub.token(6), **FAST) as old:
            changes = states(old)
            await connected(old)
            async with connect(hub.url, token=hub.token(6), **FAST) as new:
                with trio.fail_after(5):
                    await old.wait_state(DISCONNECTED)
                assert [(c.state, c.code) for c in changes] == [(CONNECTED, None), (DISCONNECTED, 4004)]
                await connected(new)  # and it stays: the old one does not come back to evict it
                await new.request("ping")
                assert new.state is CONNECTED
                with pytest.raises(ClientClosed) as info:
                    await old.send_message(1, "too late")
                assert info.value.code == 4004


async def test_a_refused_token_asks_get_token_once_and_a_second_refusal_ends_it(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        await started(hub)
        asked: list[int] = []

        async def fresh() -> str:
            asked.append(1)
            return hub.token(7)

        async with connect(hub.url, token="not-a-jwt", get_token=fresh, **FAST) as client:
            await connected(client)
            assert asked == [1] and client.user is not None and client.user["user_id"] == 7

        # with device_info the token travels in seed 002's `register`: a refusal is close 4001
        info = {"device_name": "My Computer", "device_type": "desktop", "platform": "Windows"}
        async with connect(hub.url, token="not-a-jwt", get_token=fresh, device_id="pc-9", device_info=info, **FAST) as client:
            changes = states(client)
            await connected(client)
            assert asked == [1, 1] and [(c.state, c.code) for c in changes] == [(RECONNECTING, 4001), (CONNECTED, None)]
            status, _, body = await http_request(hub.address, "GET", "/api/users/7/connections", headers=[("X-API-Key", API_KEY)])
            assert status == 200
            devices = json.loads(body)["data"]["connections"]
            assert [d["device_info"] for d in devices if d["device_id"] == "pc-9"] == [info]

        def stale() -> str:
            asked.append(2)
            return "still-not-a-jwt"

        async with connect(hub.url, token="not-a-jwt", get_token=stale, **FAST) as client:
            changes = states(client)
            with trio.fail_after(5):
                await client.wait_state(DISCONNECTED)
            assert asked == [1, 1, 2]
            # refused at the handshake: HTTP 401, the same as a 4001 close
            assert [(c.state, c.code) for c in changes] == [(RECONNECTING, 401), (DISCONNECTED, 401)]

        async with connect(hub.url, token="not-a-jwt", **FAST) as client:
            with trio.fail_after(5):
                await client.wait_state(DISCONNECTED)
            with pytest.raises(ClientClosed) as info:
                client.send("ping")
            assert info.value.code == 401


async def test_token_expiring_gets_a_new_token_and_refreshes(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        await started(hub)
        asked = []

        async def fresh() -> str:
            asked.append(1)
            return hub.token(8)

        # `token_expiring` comes 60 s before exp: at once for a token with 30 s left
        async with connect(hub.url, token=hub.token(8, ttl=30), get_token=fresh, **FAST) as client:
            refreshed = client.messages()
            with trio.fail_after(5):
                async for msg in refreshed:
                    if msg["type"] == "token_refreshed":
                        break
            assert asked == [1]
            assert msg["data"]["expires_at"] > 3000  # the new token's exp
            assert client.state is CONNECTED


async def test_a_message_sent_while_the_hub_is_down_is_delivered_once_when_it_returns(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        async with (
            connect(hub.url, token=hub.token(1), **FAST) as sender,
            connect(hub.url, token=hub.token(2), **FAST) as receiver,
        ):
            inbox = Collector(receiver)
            with trio.fail_after(5):
                await sender.wait_state(RECONNECTING)  # nobody listens yet
            async with trio.open_nursery() as nursery:
                sent: list[dict[str, Any]] = []

                async def send() -> None:
                    sent.append(await sender.send_message(2, "queued while down"))

                nursery.start_soon(send)
                await started(hub)
            await inbox.until(1)
            assert [d["text"] for d in inbox.data] == ["queued while down"]
            assert sent[0]["message_id"] == inbox.data[0]["message_id"] and "duplicate" not in sent[0]
            await receiver.request("ping")
            assert len(inbox.data) == 1


class CutProxy:
    """A TCP proxy to the hub that can swallow the hub's replies and cut connections."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.swallow = False
        self.scopes: list[trio.CancelScope] = []

    async def handle(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.port) as upstream:
            async with trio.open_nursery() as nursery:
                self.scopes.append(nursery.cancel_scope)

                async def pump(src: trio.SocketStream, dst: trio.SocketStream, down: bool) -> None:
                    try:
                        while data := await src.receive_some(65536):
                            if not (down and self.swallow):
                                await dst.send_all(data)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, client, upstream, False)
                nursery.start_soon(pump, upstream, client, True)

    def cut(self) -> None:
        self.swallow = False
        for scope in self.scopes:
            scope.cancel()
        self.scopes.clear()


async def test_a_send_whose_confirmation_was_lost_is_sent_again_and_delivered_once(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        await started(hub)
        proxy = CutProxy(hub.port)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, proxy.handle, 0)
            via_proxy = f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}/ws"
            async with (
                connect(via_proxy, token=hub.token(1), **FAST) as sender,
                connect(hub.url, token=hub.token(2), **FAST) as receiver,
            ):
                inbox = Collector(receiver)
                await connected(sender, receiver)
                proxy.swallow = True  # the hub stores it, the sender never hears `message_sent`
                result: list[dict[str, Any]] = []
                done = trio.Event()
                changes = states(sender)

                async def send() -> None:
                    result.append(await sender.send_message(2, "once"))
                    done.set()

                nursery.start_soon(send)
                await inbox.until(1)
                proxy.cut()
                with trio.fail_after(10):
                    await done.wait()
                assert [c.state for c in changes] == [RECONNECTING, CONNECTED]
                assert result[0]["duplicate"] is True
                assert result[0]["message_id"] == inbox.data[0]["message_id"]
                await receiver.request("ping")
                assert [d["text"] for d in inbox.data] == ["once"]
            nursery.cancel_scope.cancel()


async def test_a_silent_connection_is_replaced_after_the_liveness_timeout() -> None:
    connections = []
    second = trio.Event()

    async def silent_hub(request: WebSocketRequest) -> None:
        ws = await request.accept()
        connections.append(ws)
        await ws.send_message(json.dumps({"type": "connected", "data": {"user_id": 1}}))
        if len(connections) == 2:
            second.set()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, silent_hub, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/ws"
        client = Client(url, liveness_timeout=0.3, **FAST)
        changes = states(client)
        nursery.start_soon(client.run)
        with trio.fail_after(5):
            await second.wait()
        await client.aclose()
        nursery.cancel_scope.cancel()
    assert changes[0].state is CONNECTED
    assert changes[1].state is RECONNECTING and "no data" in changes[1].reason


async def test_the_hubs_pings_keep_an_idle_connection_alive(tmp_path: Path) -> None:
    with Hub(tmp_path, env={"WSSERVER_HEARTBEAT_INTERVAL": "0.1"}) as hub:
        await started(hub)
        async with connect(hub.url, token=hub.token(9), liveness_timeout=0.5, **FAST) as client:
            changes = states(client)
            await connected(client)
            await trio.sleep(1.5)  # three liveness timeouts without a single message
            assert [c.state for c in changes] == [CONNECTED]


async def test_a_desktop_client_authenticates_with_its_activation_code(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        await started(hub)
        async with connect(hub.url, activation_code=CODE, device_id="pc-1", **FAST) as desk:
            await connected(desk)
            assert desk.user is not None and desk.user["group_id"] == 7
            reply = await desk.request("customer_sync", {"customer_id": "c1", "name": "Ann"})
            assert reply["type"] == "customer_sync_received" and reply["data"]["customer_id"] == "c1"


async def test_a_client_resuming_from_a_saved_last_seq_pages_through_everything_it_missed(tmp_path: Path) -> None:
    # a send queue of 8 makes the hub push and sync in pages of 4
    with Hub(tmp_path, env={"WSSERVER_LIMITS_SEND_QUEUE": "8"}) as hub:
        await started(hub)
        async with connect(hub.url, token=hub.token(1), **FAST) as sender:
            async with connect(hub.url, token=hub.token(2), auto_ack=True, **FAST) as receiver:
                inbox = Collector(receiver)
                await connected(sender, receiver)
                for i in range(5):
                    await sender.send_message(2, f"m{i}")
                await inbox.until(5)
                saved = receiver.last_seq
            assert saved == 5
            for i in range(5, 35):  # while the receiver is away
                await sender.send_message(2, f"m{i}")
        async with connect(hub.url, token=hub.token(2), last_seq=saved, **FAST) as receiver:
            inbox = Collector(receiver)
            await inbox.until(30)  # 30 messages where a push or a sync page holds 4: it paged
            await receiver.request("ping")
            assert [d["text"] for d in inbox.data] == [f"m{i}" for i in range(5, 35)]
            assert receiver.last_seq == 35
