"""Keeping one connection at a time up: the loop of connections behind a `Client`.

`Connection` is the half of `Client` that talks to the hub: it connects,
shakes hands, reads, writes the queue, watches liveness, and after each end
asks `ReconnectPolicy` what follows. `client.py` holds the other half, what
the application calls.

Invariants:

- Per connection one nursery holds trio-websocket's reader, our reader, the
  writer (started once the hub said `connected` / `auth_success`), the
  liveness watch and the close watch. Any of them ending ends the connection;
  the first reason recorded is the one the policy sees.
- Nothing queued is written before the hub authenticated the connection;
  then the order on the wire is `sync`, room re-joins, requests sent again,
  then the queue in the order it was filled.
- A frame the writer could not write goes back to the head of the queue.
- Everything the network can throw ends one connection (`ended_by`);
  anything else (a bug, a cancellation from outside) propagates.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from wsserver._version import __version__
from wsserver.client.dispatch import Dispatcher
from wsserver.client.errors import ClientClosed, QueueFull, RequestTimeout
from wsserver.client.inbox import Inbox, Received
from wsserver.client.policy import (
    ConnectionState,
    Decision,
    Ended,
    Next,
    ReconnectPolicy,
    StateChange,
)
from wsserver.client.requests import Outbox, Request, RequestBook
from wsserver.client.transport import Target, WatchedStream, ended_by, open_websocket

__all__ = ["CLOSE_TIMEOUT", "Connection", "TokenSource"]

log = logging.getLogger("wsserver.client")

TokenSource = Callable[[], "str | Awaitable[str]"]

CLOSE_TIMEOUT = 2.0  # seconds for our close frame to be answered


class Connection:
    """The connection loop; `Client` sets every attribute below."""

    _target: Target
    _token: str | None
    _activation_code: str | None
    _get_token: TokenSource | None
    _device_id: str | None
    _device_info: dict[str, Any] | None
    _user_id: Any
    _register: bool
    _bearer: bool
    _auto_ack: bool
    _request_timeout: float
    _liveness_timeout: float
    _connect_timeout: float
    _ssl_context: ssl.SSLContext | None
    _policy: ReconnectPolicy
    _inbox: Inbox
    _book: RequestBook
    _outbox: Outbox
    _dispatch: Dispatcher
    _rooms: dict[str, None]
    _state: ConnectionState
    _state_changed: trio.Event
    _writer_wake: trio.Event
    _progress: trio.Event
    _close_requested: trio.Event
    _nursery: trio.Nursery | None
    _session: trio.Nursery | None
    _ws: WebSocketConnection | None
    _end: Ended | None
    _connected_at: float | None
    _last_data: float
    _sync: Request | None
    _internal: list[Request]
    user: dict[str, Any] | None

    async def _keep_connected(self) -> Ended:
        if self._token is None and self._get_token is not None:
            failed = await self._fetch_token()
            if failed is not None:
                return failed
        while True:
            if self._close_requested.is_set():
                return Ended(1000, "closed by the client", by_client=True)
            ended = await self._attempt()
            if ended.by_client:
                return ended
            decision = self._policy.after(ended)
            self._connection_lost(ended, decision)
            if decision.next is Next.STOP:
                return ended
            if decision.next is Next.NEW_TOKEN:
                failed = await self._fetch_token()
                if failed is not None:
                    return failed
            await self._set_state(
                ConnectionState.RECONNECTING,
                code=ended.status,
                reason=ended.reason,
                delay=decision.delay,
                attempt=decision.attempt,
            )
            with trio.move_on_after(decision.delay):
                await self._close_requested.wait()

    async def _fetch_token(self) -> Ended | None:
        assert self._get_token is not None
        try:
            value = self._get_token()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            log.warning("get_token failed: %r", exc)
            return Ended(None, f"get_token failed: {exc!r}")
        if not isinstance(value, str) or not value:
            return Ended(None, "get_token returned no token")
        self._token = value
        return None

    def _headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"User-Agent", f"wsserver-client/{__version__}".encode())]
        if self._activation_code is not None:
            headers.append((b"X-Activation-Code", self._activation_code.encode()))
        if self._bearer and self._token is not None:
            headers.append((b"Authorization", f"Bearer {self._token}".encode()))
        return headers

    def _register_frame(self) -> str:
        data: dict[str, Any] = {"token": self._token}
        for key, value in (("user_id", self._user_id), ("device_id", self._device_id), ("device_info", self._device_info)):
            if value is not None:
                data[key] = value
        return json.dumps({"type": "register", "data": data}, ensure_ascii=False)

    async def _attempt(self) -> Ended:
        """One connection, from TCP connect to its end."""
        self._end = None
        self._connected_at = None
        self._inbox.start(sync=True)
        stream: WatchedStream | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._session = nursery
                nursery.start_soon(self._watch_close, nursery)
                with trio.fail_after(self._connect_timeout):
                    stream, ws = await open_websocket(
                        nursery, self._target, self._headers(), self._touch, ssl_context=self._ssl_context
                    )
                self._ws = ws
                self._touch()
                if self._register:
                    await ws.send_message(self._register_frame())
                nursery.start_soon(self._watch_liveness, nursery)
                self._set_end(await self._read(ws))
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            ended = ended_by(exc)
            if ended is None:
                raise
            self._set_end(ended)
        finally:
            self._ws = None
            self._session = None
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        end = self._end or Ended(None, "the connection ended")
        if self._connected_at is None:
            return end
        return attrs.evolve(end, connected=True, uptime=trio.current_time() - self._connected_at)

    def _set_end(self, ended: Ended) -> None:
        if self._end is None:  # the first reason wins: later ones are its consequences
            self._end = ended

    def _touch(self) -> None:
        self._last_data = trio.current_time()

    async def _watch_close(self, nursery: trio.Nursery) -> None:
        await self._close_requested.wait()
        self._set_end(Ended(1000, "closed by the client", by_client=True))
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(1000, "closed by the client")
        nursery.cancel_scope.cancel()

    async def _watch_liveness(self, nursery: trio.Nursery) -> None:
        """No data at all (not even a ping) for `liveness_timeout`: the link is dead."""
        while True:
            deadline = self._last_data + self._liveness_timeout
            if trio.current_time() >= deadline:
                self._set_end(Ended(None, f"no data from the hub for {self._liveness_timeout:g} s"))
                nursery.cancel_scope.cancel()
                return
            await trio.sleep_until(deadline)

    async def _read(self, ws: WebSocketConnection) -> Ended:
        while True:
            try:
                raw = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                return Ended(reason.code, reason.reason or "") if reason else Ended(None, "closed")
            if isinstance(raw, bytes):
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                log.warning("the hub sent a frame that is not JSON; ignored")
                continue
            if isinstance(msg, dict):
                await self._handle(msg)

    async def _write(self, ws: WebSocketConnection) -> None:
        while True:
            item = self._outbox.pop()
            if item is None:
                self._progress.set()
                self._writer_wake = trio.Event()
                await self._writer_wake.wait()
                continue
            if isinstance(item, Request):
                item.sent = True
            try:
                await ws.send_message(item.text if isinstance(item, Request) else item)
            except BaseException:
                # not written: first in line for the next connection
                if isinstance(item, Request):
                    item.sent = False
                self._outbox.push_front([item])
                raise

    def _wake_writer(self) -> None:
        self._writer_wake.set()

    # -- inbound --------------------------------------------------------------------

    async def _handle(self, msg: dict[str, Any]) -> None:
        mtype = msg.get("type")
        if mtype in ("connected", "auth_success") and self._connected_at is None:
            await self._greeted(msg)
            await self._dispatch.deliver(msg)
            return
        request = self._book.match(msg) if "id" in msg else None
        if request is not None:
            if request is self._sync:
                await self._synced(msg)
            elif request in self._internal and msg.get("type") == "error":
                log.warning("re-joining a room was refused: %s", msg.get("error"))
            return
        if mtype == "new_message":
            await self._hand_out(self._inbox.receive(msg))
            return
        if mtype == "token_expiring" and self._get_token is not None and self._nursery is not None:
            self._nursery.start_soon(self._refresh)
        await self._dispatch.deliver(msg)

    async def _greeted(self, msg: dict[str, Any]) -> None:
        """The hub authenticated this connection: start writing, sync, re-join."""
        assert self._session is not None and self._ws is not None
        self._connected_at = trio.current_time()
        data = msg.get("data")
        self.user = data if isinstance(data, dict) else {}
        first: list[Request] = []
        if msg.get("type") == "connected":
            self._inbox.identify(self.user.get("user_id"), self.user.get("user_type"))
            self._sync = self._book.new("sync", self._inbox.sync_request())
            first.append(self._sync)
        else:  # a desktop client has no inbox
            self._inbox.finish_sync()
        first += [self._book.new("join_room", {"room": room}) for room in self._rooms]
        self._internal = first
        self._outbox.push_front(first)
        self._session.start_soon(self._write, self._ws)
        await self._set_state(ConnectionState.CONNECTED)

    async def _synced(self, msg: dict[str, Any]) -> None:
        self._sync = None
        if msg.get("type") == "sync_done":
            cursor, received = self._inbox.sync_done(msg.get("data"))
            if cursor is not None:
                self._sync = self._book.new("sync", {"last_seq": cursor})
                self._internal.append(self._sync)
                self._outbox.push_front([self._sync])
                return
        else:
            log.warning("sync was refused: %s", msg.get("error"))
            received = self._inbox.finish_sync()
        await self._hand_out(received)

    async def _hand_out(self, received: Received) -> None:
        for msg in received.deliver:
            await self._dispatch.deliver(msg)
        if self._auto_ack:
            for message_id in received.ack:
                if message_id is not None:
                    frame = {"type": "message_delivered", "data": {"message_id": message_id}}
                    self._outbox.push(json.dumps(frame), force=True)

    async def _refresh(self) -> None:
        """`token_expiring`: a new token from `get_token`, sent as `refresh`; the
        hub's `token_refreshed` reply is handed out like any message."""
        if await self._fetch_token() is not None:
            return
        try:
            reply = await self._await(self._book.new("refresh", {"token": self._token}), self._request_timeout)
        except Exception as exc:  # the hub closes 4001 at expiry; that path asks again
            log.warning("token refresh failed: %r", exc)
            return
        await self._dispatch.deliver(reply)  # `token_refreshed`, for the application to see

    # -- state --------------------------------------------------------------------------

    async def _set_state(self, state: ConnectionState, **info: Any) -> None:
        change = StateChange(state, self._state, **info)
        self._state = state
        changed, self._state_changed = self._state_changed, trio.Event()
        changed.set()
        self._dispatch.emit("state", change)

    def _connection_lost(self, ended: Ended, decision: Decision) -> None:
        self._inbox.lost()
        self._sync = None
        for request in self._internal:
            if not request.sent:
                self._book.withdraw(request, ClientClosed(ended.code, "superseded"))
        self._internal = []
        resend = decision.resend and decision.next is not Next.STOP
        self._outbox.push_front(self._book.connection_lost(ended.code, ended.reason, resend=resend))

    async def _await(self, request: Request, timeout: float | None) -> dict[str, Any]:
        done = trio.Event()
        request.on_done = done.set
        try:
            self._outbox.push(request)
        except QueueFull as exc:
            self._book.withdraw(request, exc)
            raise
        seconds = math.inf if timeout is None else timeout
        try:
            with trio.fail_after(seconds):
                await done.wait()
        except trio.TooSlowError:
            error = RequestTimeout(f"no reply to {request.type} within {seconds:g} s")
            self._book.withdraw(request, error)
            self._outbox.remove(request)
            raise error from None
        except BaseException:
            self._book.withdraw(request, ClientClosed(None, "the caller stopped waiting"))
            self._outbox.remove(request)
            raise
        if request.error is not None:
            raise request.error
        assert request.reply is not None
        return request.reply
