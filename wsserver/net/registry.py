"""The registry actor: the one task that owns the `Hub`.

Connections and the HTTP API reach the hub only through `Registry.call`
(request/reply) and `Registry.tell` (fire and forget, ordered). Commands run
one at a time, in arrival order, so the hub needs no locks. A command must not
block: the hub only hands frames to outlets with non-blocking sends.

An unexpected exception in a command is logged and, for `call`, raised in the
caller; it never stops the actor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import trio

log = logging.getLogger("wsserver.registry")

T = TypeVar("T")

INBOX_SIZE = 4096


class _Reply:
    """A one-shot answer slot: the actor fills it and wakes the waiting caller
    directly (`trio.lowlevel.reschedule`, what `trio.Event` does inside, without
    an Event and its parking lot per call). `task` is set only while the caller
    waits; a caller cancelled meanwhile clears it, and the actor then only
    marks the answer `done`."""

    __slots__ = ("done", "error", "task", "value")

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        self.done = True
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


class Registry:
    """Runs commands against the state it owns, one at a time."""

    def __init__(self, state: Any, after_batch: Callable[[], None] | None = None) -> None:
        self.state = state
        self._after_batch = after_batch
        self._send, self._receive = trio.open_memory_channel[
            tuple[Callable[..., Any], tuple[Any, ...], _Reply | None]
        ](INBOX_SIZE)

    @property
    def queue_depth(self) -> int:
        """Commands waiting in the inbox."""
        return self._send.statistics().current_buffer_used

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in the actor and return its result."""
        reply = _Reply()
        try:
            self._send.send_nowait((fn, args, reply))
        except trio.WouldBlock:
            # The inbox is full: wait for room. The actor may even have answered
            # by the time this returns (then there is nothing to wait for).
            await self._send.send((fn, args, reply))
        if not reply.done:
            reply.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(reply.abort)
        if reply.error is not None:
            raise reply.error
        return reply.value  # type: ignore[no-any-return]

    async def tell(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue `fn(*args)` for the actor; waits only while the inbox is full."""
        await self._send.send((fn, args, None))

    def tell_nowait(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue without waiting; False when the inbox is full."""
        try:
            self._send.send_nowait((fn, args, None))
        except trio.WouldBlock:
            return False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor loop: drain the inbox in batches, one scheduler trip per batch,
        then run the `after_batch` hook (the hub releases what became durable)."""
        task_status.started()
        receive = self._receive
        while True:
            item = await receive.receive()
            while True:
                fn, args, reply = item
                try:
                    value = fn(*args)
                except Exception as exc:
                    if reply is None:
                        log.exception("registry command %s failed", getattr(fn, "__name__", fn))
                    else:
                        reply.error = exc
                else:
                    if reply is not None:
                        reply.value = value
                if reply is not None:
                    reply.wake()
                try:
                    item = receive.receive_nowait()
                except trio.WouldBlock:
                    break
            if self._after_batch is not None:
                try:
                    self._after_batch()
                except Exception:
                    log.exception("registry after-batch hook failed")
