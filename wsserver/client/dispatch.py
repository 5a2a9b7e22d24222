"""Handing what arrives to the application: `on()` handlers and `messages()` streams.

Invariants:

- Handlers of a type run in the order they were registered, then the `"*"`
  ones, then each open stream gets the message.
- A plain handler is called inline, in the order messages arrive; an async
  one (anything that returns an awaitable) runs as its own task in the
  client's nursery, so it may wait on the client (a `request()`) without
  holding up the messages that carry the answer.
- A handler's exception is logged and changes nothing else.
- A stream whose buffer is full holds delivery back until it is read (so no
  message is lost to a slow reader); a stream closed by its reader is
  dropped; `close()` ends every stream after what it already holds.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["Dispatcher", "Handler", "MessageStream"]

log = logging.getLogger("wsserver.client")

Handler = Callable[[Any], Any]


class MessageStream:
    """An async iterator over the messages the hub sends, from the moment it was
    made; it ends when the client ends. Close it (or use `async with`) when you
    stop reading: an unread stream's buffer, once full, holds the connection up."""

    def __init__(self, receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self._receive = receive

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._receive.aclose()

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Dispatcher:
    """The handlers and streams of one client."""

    def __init__(self, buffer: int) -> None:
        self.buffer = buffer
        self.nursery: trio.Nursery | None = None  # where async handlers run
        self._handlers: dict[str, list[Handler]] = {}
        self._streams: list[trio.MemorySendChannel[dict[str, Any]]] = []
        self._closed = False

    def on(self, key: str, fn: Handler) -> None:
        self._handlers.setdefault(key, []).append(fn)

    def off(self, key: str, fn: Handler) -> None:
        if fn in self._handlers.get(key, []):
            self._handlers[key].remove(fn)

    def stream(self) -> MessageStream:
        send, receive = trio.open_memory_channel[dict[str, Any]](self.buffer)
        if self._closed:
            send.close()
        else:
            self._streams.append(send)
        return MessageStream(receive)

    def emit(self, key: str, arg: Any) -> None:
        """Call the handlers of `key` (no streams): the `state` events."""
        for fn in list(self._handlers.get(key, ())):
            self._call(fn, arg)

    async def deliver(self, msg: dict[str, Any]) -> None:
        """Hand one message to its handlers and to every open stream."""
        mtype = msg.get("type")
        key = mtype if isinstance(mtype, str) else ""
        for fn in [*self._handlers.get(key, ()), *self._handlers.get("*", ())]:
            self._call(fn, msg)
        for channel in list(self._streams):
            try:
                await channel.send(msg)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._streams.remove(channel)

    def close(self) -> None:
        """End every stream (the client has ended)."""
        self._closed = True
        for channel in self._streams:
            channel.close()
        self._streams.clear()

    def _call(self, fn: Handler, arg: Any) -> None:
        try:
            result = fn(arg)
        except Exception:
            log.exception("a message handler failed")
            return
        if inspect.isawaitable(result) and self.nursery is not None:
            self.nursery.start_soon(_guarded, result)


async def _guarded(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("a message handler failed")
