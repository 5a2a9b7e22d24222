"""Requests and their replies, and the outbound queue (no I/O).

A request is a frame with an `id`; the hub answers it with a message carrying
the same `id` (an `error` one when refused). `RequestBook` numbers requests
and matches replies; `Outbox` holds what waits to be written.

Invariants:

- Ids are `<random prefix>-<counter>`: unique within the client and, through
  the prefix, across restarts of the program, so a hub that de-duplicates by
  id never mistakes a new request for an old one.
- A request is resolved once: by its reply, by a timeout, or by the
  connection's or client's end; later replies with its id are ordinary messages.
- The queue limit counts what the application queued; frames the client
  itself adds (sync, re-joins, requests moved back after a reconnect) never
  make a call fail.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from wsserver.client.errors import ConnectionLost, QueueFull, RequestError

__all__ = ["Outbox", "Request", "RequestBook"]


@attrs.define(eq=False)
class Request:
    """One request in flight or in the queue."""

    id: str
    type: str
    frame: dict[str, Any]
    text: str
    resend: bool = False
    sent: bool = False
    done: bool = False
    reply: dict[str, Any] | None = None
    error: BaseException | None = None
    on_done: Callable[[], None] | None = None

    def finish(self, reply: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done, self.reply, self.error = True, reply, error
        if self.on_done is not None:
            self.on_done()


class RequestBook:
    """The open requests of one client, by id."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or secrets.token_hex(4)
        self._counter = 0
        self._open: dict[str, Request] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[Request]:
        return iter(list(self._open.values()))

    def new(self, mtype: str, data: Any, fields: dict[str, Any] | None = None, *, resend: bool = False) -> Request:
        """A new open request; `fields` are extra top-level keys of the frame."""
        self._counter += 1
        rid = f"{self.prefix}-{self._counter}"
        frame: dict[str, Any] = {"type": mtype}
        if data is not None:
            frame["data"] = data
        if fields:
            frame.update(fields)
        frame["id"] = rid
        # encoded now, so a value JSON cannot carry fails the call, not the connection
        request = Request(rid, mtype, frame, json.dumps(frame, ensure_ascii=False), resend=resend)
        self._open[rid] = request
        return request

    def match(self, msg: dict[str, Any]) -> Request | None:
        """Resolve the open request `msg` answers, if any, and return it."""
        rid = msg.get("id")
        if not isinstance(rid, str):
            return None
        request = self._open.pop(rid, None)
        if request is None:
            return None
        if msg.get("type") == "error":
            request.finish(msg, RequestError(msg))
        else:
            request.finish(msg)
        return request

    def withdraw(self, request: Request, error: BaseException) -> None:
        """Give up on `request` (timeout, cancellation)."""
        self._open.pop(request.id, None)
        request.finish(error=error)

    def connection_lost(self, code: int | None, reason: str, *, resend: bool) -> list[Request]:
        """The connection ended: requests written on it are sent again when they
        may be (and `resend` allows it), else they fail with `ConnectionLost`.
        Returns those to send again, oldest first."""
        again = []
        for request in list(self._open.values()):
            if not request.sent:
                continue
            request.sent = False
            if resend and request.resend:
                again.append(request)
            else:
                self.withdraw(request, ConnectionLost(code, reason))
        return again

    def close_all(self, error: Callable[[], BaseException]) -> None:
        """Fail every open request (the client is done), each with its own `error()`."""
        for request in list(self._open.values()):
            self.withdraw(request, error())


Item = Request | str  # a request, or an encoded frame that expects no reply


class Outbox:
    """Frames waiting to be written, in order; bounded by `limit` for the
    application's own frames."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("queue_limit must be >= 1")
        self.limit = limit
        self._items: deque[Item] = deque()
        self.on_push: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Item, *, force: bool = False) -> None:
        """Queue at the end; raises `QueueFull` over the limit unless `force`."""
        if not force and len(self._items) >= self.limit:
            raise QueueFull(f"outbound queue full ({self.limit} frames)")
        self._items.append(item)
        if self.on_push is not None:
            self.on_push()

    def push_front(self, items: Iterable[Item]) -> None:
        """Put `items` before everything queued, keeping their order."""
        self._items.extendleft(reversed(list(items)))
        if self._items and self.on_push is not None:
            self.on_push()

    def pop(self) -> Item | None:
        """The next frame to write (withdrawn requests are skipped), or None."""
        while self._items:
            item = self._items.popleft()
            if isinstance(item, Request) and item.done:
                continue
            return item
        return None

    def remove(self, item: Item) -> None:
        try:
            self._items.remove(item)
        except ValueError:
            pass

    def clear(self) -> list[Item]:
        items = list(self._items)
        self._items.clear()
        return items
