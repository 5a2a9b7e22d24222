"""A real HTTP receiver of webhook events for the tests: a trio server on a free
loopback port, speaking HTTP/1.1 with h11 (keep-alive and pipelined requests
included: it reads what has come, up to 64 KiB at once, and answers the
requests found in it one after the other), that keeps every request it gets
and answers each with the status `answer(request)` picks (or never answers,
while `hang` is set; or closes the connection instead of answering once it
answered `break_after` requests on it, once; or answers the next `malformed`
requests with bytes that are no HTTP answer, closing their connections)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import attrs
import h11
import trio


def joined(headers: Any) -> dict[str, str]:
    """Header fields by lower-case name, a repeated one's values joined with ", "
    as HTTP combines them (so a field sent twice shows)."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.decode().lower()
        out[key] = f"{out[key]}, {value.decode()}" if key in out else value.decode()
    return out


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
        self.break_after: int | None = None  # close a connection after this many answers (once)
        self.malformed = 0  # answer this many requests with garbage (and close)
        self.per_read: list[int] = []  # requests found whole in each read, per read
        self.connections = 0
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
        async with stream:
            await self._serve(stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        self.connections += 1
        answered = 0
        read = -1  # this connection's last read, in per_read
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
                        read = len(self.per_read)
                        self.per_read.append(0)
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
                if read >= 0:
                    self.per_read[read] += 1
                if self.break_after is not None and answered >= self.break_after:
                    self.break_after = None
                    return  # closed with this request (and any behind it) unanswered
                received = Received(
                    request.method.decode(),
                    request.target.decode(),
                    joined(request.headers),
                    body,
                    trio.current_time(),
                )
                if self.malformed:
                    self.malformed -= 1
                    self.requests.append(received)
                    await stream.send_all(b"HTTP/1.1 OOPS\r\n\r\n")
                    return
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
                answered += 1
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.ProtocolError):
            return
