"""A real HTTP receiver of webhook events for the tests: a trio server on a free
loopback port, speaking HTTP/1.1 with h11 (keep-alive included), that keeps
every request it gets and answers each with the status `answer(request)` picks
(or never answers, while `hang` is set)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import attrs
import h11
import trio


@attrs.define
class Received:
    """One request as the receiver got it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    at: float  # trio time
    status: int = 0  # what the receiver answered (0: nothing)

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    def signed_by(self, secret: str) -> bool:
        """The check a receiver makes (docs/API.md): HMAC-SHA256 of "<timestamp>.<body>"."""
        timestamp = self.headers["x-wsserver-timestamp"].encode()
        mac = hmac.new(secret.encode(), timestamp + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-wsserver-signature", ""), "sha256=" + mac)


class Receiver:
    """`await nursery.start(receiver.serve)` listens; `url` is where to POST."""

    def __init__(self, answer: Callable[[Received], int] | None = None) -> None:
        self.answer = answer or (lambda request: 204)
        self.hang = False  # take requests but never answer them
        self.requests: list[Received] = []
        self.port = 0
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received, answered 2xx or not, in arrival order."""
        return [r.event for r in self.requests]

    def delivered(self) -> list[dict[str, Any]]:
        """The events of the requests answered 2xx."""
        return [r.event for r in self.requests if r.status // 100 == 2]

    async def wait_for(self, done: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until `done()` holds (re-checked at each request)."""
        with trio.fail_after(timeout):
            while not done():
                await self._changed.wait()

    async def serve(self, port: int = 0, *, task_status: trio.TaskStatus[Receiver] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started(self)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed or PAUSED
                        return
                assert request is not None
                received = Received(
                    request.method.decode(),
                    request.target.decode(),
                    {k.decode().lower(): v.decode() for k, v in request.headers},
                    body,
                    trio.current_time(),
                )
                status = 0 if self.hang else self.answer(received)
                received.status = status
                self.requests.append(received)
                self._changed.set()
                self._changed = trio.Event()
                if self.hang:
                    await trio.sleep_forever()
                await stream.send_all(
                    conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
                    + conn.send(h11.EndOfMessage())
                )
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.ProtocolError):
            return
