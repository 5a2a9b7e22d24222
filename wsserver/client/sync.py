"""Seed 002's client API for programs that do not run trio.

    client = SyncClient("ws://127.0.0.1:8080/ws", token=jwt, device_id="pc-1")
    client.on_message(lambda data: print("收到消息:", data["text"]))
    client.on_status_change(lambda status: print("状态变化:", status.value))
    client.start()
    client.send_message(to_user_id=2, message="Hello").result(timeout=10)
    client.stop()

Threads: `start()` starts two daemon threads. `wsserver-client` runs trio
(`trio.run`) with one `Client`; every call from the application goes in
through `trio.from_thread` with that run's token, so any thread may call any
method. `wsserver-client-callbacks` runs every callback, one at a time, in the
order the events happened; a callback may call the client (even the blocking
`request`), and a slow one delays later callbacks, never the connection.

Invariants:

- `stop()` closes the connection with 1000 and joins both threads (the
  callbacks thread after the last callback, `on_status_change(disconnected)`
  included); called from a callback, it joins the trio thread only.
- Calls after `stop()` (or before `start()`) raise `ClientClosed`.
- `send_message` never blocks: it queues and returns a
  `concurrent.futures.Future` of the `message_sent` data.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

import trio

from wsserver.client.client import Client
from wsserver.client.errors import ClientClosed
from wsserver.client.policy import ConnectionStatus, StateChange

__all__ = ["SyncClient"]

log = logging.getLogger("wsserver.client")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class SyncClient:
    """Seed 002's `WebSocketClient` on the hub: `start`/`stop` (`connect`/`disconnect`),
    `on_connect`, `on_disconnect`, `on_message`, `on_status_change`, `send_message`,
    `send_message_delivered`, `send_message_read`, `is_connected`, `get_status`.
    Options are those of `Client`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        user_id: Any = None,
        activation_code: str | None = None,
        get_token: Callable[[], str] | None = None,
        device_id: str | None = None,
        device_info: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self._credentials: dict[str, Any] = {
            "token": token,
            "user_id": user_id,
            "activation_code": activation_code,
            "device_id": device_id,
            "device_info": device_info,
        }
        self._get_token = get_token
        self._options = options
        self._lock = threading.Lock()
        self._callbacks_of: dict[str, list[Callable[..., Any]]] = {}
        self._client: Client | None = None
        self._thread: threading.Thread | None = None
        self._callback_thread: threading.Thread | None = None
        self._callbacks: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._trio_token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None

    # -- callbacks (seed 002's names) -------------------------------------------------

    def _add(self, kind: str, fn: F) -> F:
        with self._lock:
            self._callbacks_of.setdefault(kind, []).append(fn)
        return fn

    def on_connect(self, fn: F) -> F:
        """`fn()` each time the hub accepts the connection (first time and reconnects)."""
        return self._add("@connect", fn)

    def on_disconnect(self, fn: F) -> F:
        """`fn()` each time a connection that was up is lost (or closed)."""
        return self._add("@disconnect", fn)

    def on_message(self, fn: F) -> F:
        """`fn(data)` for every `new_message`, with its data (seed 002's fields)."""
        return self._add("@message", fn)

    def on_status_change(self, fn: F) -> F:
        """`fn(status)` with the new `ConnectionStatus` on every change."""
        return self._add("@status", fn)

    def on(self, mtype: str, fn: Callable[..., Any] | None = None) -> Any:
        """`fn(msg)` with the whole message for every message of `mtype` ("*" = all).
        Usable as a decorator."""
        if fn is None:
            return lambda f: self._add(mtype, f)
        return self._add(mtype, fn)

    def _post(self, kind: str, *args: Any) -> None:
        with self._lock:
            fns = list(self._callbacks_of.get(kind, ()))
        for fn in fns:
            self._callbacks.put((fn, args))

    def _state_changed(self, change: StateChange) -> None:  # on the trio thread
        self._post("@status", change.state)
        if change.state is ConnectionStatus.CONNECTED:
            self._post("@connect")
        elif change.previous is ConnectionStatus.CONNECTED:
            self._post("@disconnect")

    def _message(self, msg: dict[str, Any]) -> None:  # on the trio thread
        mtype = msg.get("type")
        if mtype == "new_message":
            self._post("@message", msg.get("data"))
        if isinstance(mtype, str) and not mtype.startswith("@"):
            self._post(mtype, msg)
        self._post("*", msg)

    def _run_callbacks(self) -> None:
        while True:
            item = self._callbacks.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:
                log.exception("a SyncClient callback failed")

    # -- life ---------------------------------------------------------------------------

    def connect(
        self, user_id: Any = None, token: str | None = None, device_id: str | None = None, device_info: Mapping[str, Any] | None = None
    ) -> None:
        """Seed 002's `connect(user_id, token, device_id, device_info)`: set what is given, then `start()`."""
        for key, value in (("user_id", user_id), ("token", token), ("device_id", device_id), ("device_info", device_info)):
            if value is not None:
                self._credentials[key] = value
        self.start()

    def start(self) -> None:
        """Start the client's threads; returns once trio runs (the connection opens in the background)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("SyncClient already started")
            options = dict(self._options)
            if self._get_token is not None:
                get_token = self._get_token

                async def token_in_a_thread() -> str:  # it may block on the network
                    return await trio.to_thread.run_sync(get_token)

                options["get_token"] = token_in_a_thread
            client = Client(self.url, **self._credentials, **options)
            client.on("state", self._state_changed)
            client.on("*", self._message)
            self._client = client
            self._callbacks = queue.SimpleQueue()
            ready = threading.Event()
            self._callback_thread = threading.Thread(
                target=self._run_callbacks, name="wsserver-client-callbacks", daemon=True
            )
            self._thread = threading.Thread(target=self._run_trio, args=(client, ready), name="wsserver-client", daemon=True)
            self._callback_thread.start()
            self._thread.start()
        ready.wait()

    def _run_trio(self, client: Client, ready: threading.Event) -> None:
        async def main() -> None:
            self._trio_token = trio.lowlevel.current_trio_token()
            self._stop_event = trio.Event()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(client.run)
                ready.set()
                await self._stop_event.wait()
                await client.aclose()
                nursery.cancel_scope.cancel()

        try:
            trio.run(main)
        except BaseException:
            log.exception("the client's trio thread failed")
        finally:
            ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection (1000) and join the client's threads."""
        with self._lock:
            thread, callback_thread, stop_event = self._thread, self._callback_thread, self._stop_event
            self._thread = self._callback_thread = None
        if thread is None:
            return
        if stop_event is not None:
            try:
                trio.from_thread.run_sync(stop_event.set, trio_token=self._trio_token)
            except trio.RunFinishedError:
                pass
        thread.join(timeout)
        self._callbacks.put(None)
        if callback_thread is not None and callback_thread is not threading.current_thread():
            callback_thread.join(timeout)

    disconnect = stop  # seed 002's name

    # -- state ----------------------------------------------------------------------------

    def get_status(self) -> ConnectionStatus:
        client = self._client
        return client.state if client is not None else ConnectionStatus.DISCONNECTED

    def is_connected(self) -> bool:
        return self.get_status() is ConnectionStatus.CONNECTED

    @property
    def last_seq(self) -> int | None:
        """See `Client.last_seq`: persist it and pass it back as `last_seq=`."""
        client = self._client
        return client.last_seq if client is not None else self._options.get("last_seq")

    @property
    def user(self) -> dict[str, Any] | None:
        """The `connected` data of the current or last connection."""
        client = self._client
        return client.user if client is not None else None

    # -- calls ----------------------------------------------------------------------------

    def _in_trio(self, fn: Callable[[], T]) -> T:
        if self._thread is None or self._trio_token is None:
            raise ClientClosed(None, "the client is not running (start() it)")
        try:
            return trio.from_thread.run_sync(fn, trio_token=self._trio_token)
        except trio.RunFinishedError:
            raise ClientClosed(None, "the client has stopped") from None

    def _client_now(self) -> Client:
        client = self._client
        if client is None:
            raise ClientClosed(None, "the client is not running (start() it)")
        return client

    def _submit(self, call: Callable[[], Awaitable[T]]) -> Future[T]:
        future: Future[T] = Future()

        async def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(await call())
            except trio.Cancelled:
                future.set_exception(ClientClosed(None, "the client has stopped"))
                raise
            except Exception as exc:
                future.set_exception(exc)

        def spawn() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(run)

        self._in_trio(spawn)
        return future

    def send_message(
        self,
        session_id: Any = None,
        message: str | None = None,
        role: str | None = None,
        message_type: str = "text",
        *,
        to_user_id: Any = None,
        reply_to_message_id: int | None = None,
        **extra: Any,
    ) -> Future[dict[str, Any]]:
        """Seed 002's `send_message`; on the hub a message needs `to_user_id` (or a
        hub session's `session_id`). `role` is accepted and not sent: the hub takes
        the sender's role from the token (`chat_role`). Returns at once with a
        Future of the `message_sent` data."""
        if message is None:
            raise ValueError("message is required")
        if to_user_id is None and session_id is None:
            raise ValueError("to_user_id (or session_id) is required")
        fields = dict(extra)
        fields["message_type"] = message_type
        if session_id is not None:
            fields["session_id"] = session_id
        if reply_to_message_id is not None:
            fields["reply_to_message_id"] = reply_to_message_id
        client = self._client_now()
        return self._submit(lambda: client.send_message(to_user_id, message, **fields))

    def send_message_delivered(self, message_id: Any, user_id: Any = None) -> None:
        """Seed 002's delivered receipt; `user_id` is accepted for compatibility (the hub knows who sends)."""
        client = self._client_now()
        self._in_trio(lambda: client.mark_delivered(message_id))

    def send_message_read(self, message_id: Any, user_id: Any = None) -> None:
        """Seed 002's read receipt (implies delivered)."""
        client = self._client_now()
        self._in_trio(lambda: client.mark_read(message_id))

    def send(self, mtype: str, data: Any = None, **fields: Any) -> None:
        """Queue any message; no reply is awaited."""
        client = self._client_now()
        self._in_trio(lambda: client.send(mtype, data, **fields))

    def request(self, mtype: str, data: Any = None, *, timeout: float | None = 10.0, **fields: Any) -> dict[str, Any]:
        """Send a request and block until its reply (see `Client.request`)."""
        client = self._client_now()
        return self._submit(lambda: client.request(mtype, data, timeout=timeout, **fields)).result()
