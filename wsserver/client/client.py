"""The trio client: one connection to the hub at a time, kept up for the application.

    async with wsserver.client.connect(url, token=...) as c:
        c.on("message_status", print)
        sent = await c.send_message(2, "hello")        # the `message_sent` data
        async for msg in c.messages():                 # everything the hub sends
            ...

The decisions (states, close codes, backoff, requests, the inbox's `seq`) are
the plain objects of `policy`, `backoff`, `requests` and `inbox`; the loop of
connections is `session.Connection`; this module is what the application calls.

Invariants:

- One task (`run`) owns the connection loop; the application's calls only
  queue frames and wait for replies, so any number of tasks may call at once.
- Handlers registered with `on()` run as `dispatch` says: a plain function
  inline, in order; an async one as a task of its own (it may `await
  c.request(...)`).
- When the client ends (`aclose`, or a close a retry cannot fix), every open
  request fails with `ClientClosed`, queued frames are dropped, and every
  `messages()` iterator ends.
"""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from wsserver.client.backoff import Backoff
from wsserver.client.dispatch import Dispatcher, Handler, MessageStream
from wsserver.client.errors import ClientClosed
from wsserver.client.inbox import Inbox
from wsserver.client.policy import ConnectionState, Ended, ReconnectPolicy
from wsserver.client.requests import Outbox, RequestBook
from wsserver.client.session import CLOSE_TIMEOUT, Connection, TokenSource
from wsserver.client.transport import parse_url

__all__ = ["Client", "MessageStream", "connect"]

_DEFAULT: Any = object()


class Client(Connection):
    """A client of the hub that stays connected (SPEC section 9); see `connect`.

    Credentials: `token` (a JWT, in the handshake's `Authorization` header with
    `?device_id=`; in seed 002's `register` first message when `device_info` or
    `user_id` is given), or `get_token` (called for the first token, after a
    4001, and on `token_expiring`; plain or async), or `activation_code`
    (seed 000's desktop clients, header `X-Activation-Code`). `last_seq` resumes the
    inbox where a previous run left it (None: only what is still undelivered).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        activation_code: str | None = None,
        get_token: TokenSource | None = None,
        device_id: str | None = None,
        device_info: Mapping[str, Any] | None = None,
        user_id: Any = None,
        last_seq: int | None = None,
        auto_ack: bool = False,
        queue_limit: int = 1000,
        request_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retries: int | None = None,
        stable_after: float = 10.0,
        liveness_timeout: float = 65.0,
        connect_timeout: float = 10.0,
        random: Callable[[float, float], float] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        message_buffer: int = 1000,
    ) -> None:
        if activation_code is not None and (token is not None or get_token is not None):
            raise ValueError("give a token (or get_token) or an activation_code, not both")
        uses_token = token is not None or get_token is not None
        # A JWT goes in the handshake's Authorization header (never in a URL, and a
        # refusal is an HTTP 401 at once); only seed 002's `register` first message
        # can carry `device_info` (and a `user_id` to check), so it is used for those.
        self._register = uses_token and (device_info is not None or user_id is not None)
        self._bearer = uses_token and not self._register
        query = {} if self._register or device_id is None else {"device_id": device_id}
        self._target = parse_url(url, query)
        self.url = url
        self._token = token
        self._activation_code = activation_code
        self._get_token = get_token
        self._device_id = device_id
        self._device_info = dict(device_info) if device_info is not None else None
        self._user_id = user_id
        self._auto_ack = auto_ack
        self._request_timeout = request_timeout
        self._liveness_timeout = liveness_timeout
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        backoff = Backoff(backoff_base, backoff_cap, max_retries)
        if random is not None:
            backoff.random = random
        self._policy = ReconnectPolicy(backoff, get_token is not None, stable_after)
        self._inbox = Inbox(last_seq)
        self._book = RequestBook()
        self._outbox = Outbox(queue_limit)
        self._outbox.on_push = self._wake_writer
        self._dispatch = Dispatcher(message_buffer)
        self._rooms = {}
        self._state = ConnectionState.CONNECTING
        self._state_changed = trio.Event()
        self._writer_wake = trio.Event()
        self._progress = trio.Event()
        self._close_requested = trio.Event()
        self._finished = trio.Event()
        self._started = False
        self._nursery = None
        self._session = None
        self._ws = None
        self._end = None
        self._connected_at = None
        self._last_data = 0.0
        self._sync = None
        self._internal = []
        self.user = None
        """The `connected` (or `auth_success`) data of the current or last connection."""
        self.closed_reason: Ended | None = None
        """How the client ended, once it has."""

    # -- what the application sees -------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def last_seq(self) -> int | None:
        """The highest inbox `seq` handed to the application; persist it and pass it
        back as `last_seq=` to resume without missing or repeating a message."""
        return self._inbox.last_seq

    def on(self, mtype: str, fn: Handler | None = None) -> Any:
        """Call `fn(msg)` for every message of type `mtype` ("*" = every message,
        "state" = every `StateChange`). Usable as a decorator."""
        if fn is None:
            return lambda f: self.on(mtype, f)
        self._dispatch.on(mtype, fn)
        return fn

    def off(self, mtype: str, fn: Handler) -> None:
        self._dispatch.off(mtype, fn)

    def messages(self) -> MessageStream:
        """Every message the hub sends from now on, except replies that a
        `request()` took and repeats the inbox dropped."""
        return self._dispatch.stream()

    def send(self, mtype: str, data: Any = None, **fields: Any) -> None:
        """Queue `{"type", "data", **fields}`; it goes out once connected. No reply is awaited."""
        frame: dict[str, Any] = {"type": mtype}
        if data is not None:
            frame["data"] = data
        frame.update(fields)
        self.send_frame(frame)

    def send_frame(self, frame: Mapping[str, Any]) -> None:
        """Queue a frame exactly as given (what `wsserver client` does with stdin)."""
        self._check_open()
        self._outbox.push(json.dumps(dict(frame), ensure_ascii=False))

    async def request(
        self, mtype: str, data: Any = None, *, timeout: float | None = _DEFAULT, resend: bool = False, **fields: Any
    ) -> dict[str, Any]:
        """Send a request with an `id` and return the hub's reply (the whole message).

        Raises `RequestError` for an `error` reply, `RequestTimeout` after
        `timeout` seconds (default `request_timeout`; None waits as long as the
        client lives), `QueueFull`, `ConnectionLost` when the connection drops
        after it went out (unless `resend`: for requests the hub de-duplicates,
        it is then sent again with the same id), `ClientClosed`.
        """
        self._check_open()
        request = self._book.new(mtype, data, fields, resend=resend)
        return await self._await(request, self._request_timeout if timeout is _DEFAULT else timeout)

    async def send_message(self, to_user_id: Any, text: str, *, timeout: float | None = None, **extra: Any) -> dict[str, Any]:
        """A direct message (SPEC 4.3); returns the `message_sent` data.

        It carries a fresh `client_msg_id` (give your own in `extra` to retry
        safely across runs) and is sent again after a reconnect until the hub
        confirms it: the hub stores it once and answers a repeat with
        `duplicate: true`. `to_user_id=None` with `session_id=` in `extra`
        addresses a session. No timeout by default: it waits while the client lives.
        """
        data: dict[str, Any] = {} if to_user_id is None else {"to_user_id": to_user_id}
        data["message"] = text
        data["client_msg_id"] = uuid.uuid4().hex
        data.update(extra)
        reply = await self.request("send_message", data, timeout=timeout, resend=True)
        sent = reply.get("data")
        return sent if isinstance(sent, dict) else {}

    def mark_delivered(self, message_id: Any) -> None:
        """Queue the `message_delivered` receipt for a message this principal received."""
        self.send("message_delivered", {"message_id": message_id})

    def mark_read(self, message_id: Any) -> None:
        """Queue the `message_read` receipt (implies delivered)."""
        self.send("message_read", {"message_id": message_id})

    async def join_room(self, room: str, *, timeout: float | None = _DEFAULT) -> dict[str, Any]:
        """Join `room` (its `room_joined` reply); it is joined again after every reconnect."""
        reply = await self.request("join_room", {"room": room}, timeout=timeout)
        self._rooms[room] = None
        return reply

    async def leave_room(self, room: str, *, timeout: float | None = _DEFAULT) -> dict[str, Any]:
        self._rooms.pop(room, None)
        return await self.request("leave_room", {"room": room}, timeout=timeout)

    async def wait_state(self, *states: ConnectionState) -> ConnectionState:
        """Wait until the state is one of `states` (now or later) and return it."""
        while self._state not in states:
            await self._state_changed.wait()
        return self._state

    async def flush(self) -> None:
        """Wait until everything queued so far has been written (or the client ended)."""
        while len(self._outbox) and not self._finished.is_set():
            if self._progress.is_set():
                self._progress = trio.Event()
            await self._progress.wait()

    async def aclose(self) -> None:
        """Close with 1000 and end the client; returns once it has ended."""
        self._close_requested.set()
        if self._started:
            await self._finished.wait()

    # -- the connection loop ----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and stay connected until `aclose()` or a close that ends it."""
        if self._started:
            raise RuntimeError("a Client runs once")
        self._started = True
        end = Ended(None, "the client was stopped")
        async with trio.open_nursery() as nursery:
            self._nursery = self._dispatch.nursery = nursery
            task_status.started()
            try:
                end = await self._keep_connected()
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                    scope.shield = True
                    await self._finish(end)
                nursery.cancel_scope.cancel()

    async def _finish(self, ended: Ended) -> None:
        self.closed_reason = ended
        self._book.close_all(lambda: ClientClosed(ended.status, ended.reason))
        self._outbox.clear()
        self._dispatch.close()
        self._finished.set()
        self._progress.set()
        if self._state is not ConnectionState.DISCONNECTED:
            await self._set_state(ConnectionState.DISCONNECTED, code=ended.status, reason=ended.reason)

    def _check_open(self) -> None:
        if self._finished.is_set() or self._close_requested.is_set():
            end = self.closed_reason
            raise ClientClosed(end.status if end else 1000, end.reason if end else "closed by the client")

@asynccontextmanager
async def connect(url: str, **options: Any) -> AsyncIterator[Client]:
    """Run a `Client` for the body of an `async with`; see `Client` for the options.

    It returns at once (the connection opens in the background: use
    `wait_state(ConnectionState.CONNECTED)` to wait for it) and closes the
    client with 1000 when the body ends.
    """
    client = Client(url, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        try:
            yield client
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT + 1) as scope:
                scope.shield = True
                await client.aclose()
            nursery.cancel_scope.cancel()
