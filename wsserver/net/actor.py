"""The hub actor: the one task that owns the `Hub`.

`HubActor` creates its `Hub` and keeps it private: connections, the HTTP API,
the embedding host and the server's timers reach it only with commands
(`wsserver.core.commands`) through `call` (request/reply), `tell` and
`tell_nowait` (fire and forget, ordered). Commands run one at a time, in
arrival order, so the hub needs no locks. A command must not block: the hub
only hands frames to outlets with non-blocking sends.

Commands are drained in batches, one scheduler trip per batch; after each
batch the `after_batch` hook runs (the server makes the batch's journal lines
durable when that cannot wait on the disk), then the hub announces what became
durable (`Hub.release`).

An unexpected exception in a command is logged and, for `call`, raised in the
caller; it never stops the actor.

This is the only module besides the tests that imports `wsserver.core.hub`
(`tests/test_imports.py` checks it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, KeysView
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from wsserver.core.commands import AddHandler, Command
from wsserver.core.hub import Hub, Journal

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.core.cluster_broker import ClusterOutlets

__all__ = ["INBOX_SIZE", "HubActor"]

log = logging.getLogger("wsserver.actor")

R = TypeVar("R")

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


class HubActor:
    """Owns a `Hub` and runs the commands sent to it, one at a time."""

    def __init__(
        self,
        config: Config,
        *,
        storage: Journal | None = None,
        clock: Callable[[], float] = time.time,
        after_batch: Callable[[], None] | None = None,
        cluster: ClusterOutlets | None = None,
    ) -> None:
        self._hub = Hub(config, clock=clock, storage=storage, cluster=cluster)
        self._after_batch = after_batch
        self._running = False
        self._send, self._receive = trio.open_memory_channel[tuple[Command[Any], _Reply | None]](INBOX_SIZE)

    @property
    def queue_depth(self) -> int:
        """Commands waiting in the inbox."""
        return self._send.statistics().current_buffer_used

    @property
    def message_types(self) -> KeysView[str]:
        """The client message types the hub handles (a live view: a host's
        `AddHandler` shows at once), for the metrics' type labels."""
        return self._hub.handlers.keys()

    async def call(self, command: Command[R]) -> R:
        """Run `command` in the actor and return its answer."""
        reply = _Reply()
        try:
            self._send.send_nowait((command, reply))
        except trio.WouldBlock:
            # The inbox is full: wait for room. The actor may even have answered
            # by the time this returns (then there is nothing to wait for).
            await self._send.send((command, reply))
        if not reply.done:
            reply.task = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(reply.abort)
        if reply.error is not None:
            raise reply.error
        return reply.value  # type: ignore[no-any-return]

    async def tell(self, command: Command[Any]) -> None:
        """Queue `command`; waits only while the inbox is full."""
        await self._send.send((command, None))

    def tell_nowait(self, command: Command[Any]) -> bool:
        """Queue `command` without waiting; False when the inbox is full."""
        try:
            self._send.send_nowait((command, None))
        except trio.WouldBlock:
            return False
        return True

    def execute_now(self, command: Command[R]) -> R:
        """Run `command` at once, in the caller's task, ahead of the inbox.

        Before `run` starts (loading the durable state), or for `AddHandler`
        (a host registering a handler from its own task) at any time: commands
        never await, so whenever another task runs the hub is between two
        commands. Anything else while the actor runs goes through the inbox,
        which keeps its order (RuntimeError)."""
        if self._running and not isinstance(command, AddHandler):
            raise RuntimeError(f"{type(command).__name__} must go through the inbox while the actor runs")
        return self._hub.execute(command)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor loop: drain the inbox in batches, one scheduler trip per batch,
        then run the `after_batch` hook and announce what became durable."""
        self._running = True
        task_status.started()
        receive = self._receive
        commands = self._hub.commands  # `Hub.execute`, without its frame per command
        release = self._hub.release
        after_batch = self._after_batch
        while True:
            item = await receive.receive()
            while True:
                command, reply = item
                try:
                    value = commands[command.__class__](command)
                except Exception as exc:
                    if reply is None:
                        log.exception("hub command %s failed", type(command).__name__)
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
            try:
                if after_batch is not None:
                    after_batch()
                release()
            except Exception:
                log.exception("hub actor's after-batch step failed")
