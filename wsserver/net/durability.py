"""The server's side of durability: the storage's writer task, the hub actor's
after-batch write, telling the hub what became durable, the snapshot timer,
and the state's loading at start and last snapshot at stop.

The core decides what is recorded and holds announcements until their
records are durable (`core.commit`); the storage writes the files
(`storage.journal`). This module connects the two through the hub actor:

- After each batch of commands the actor calls `after_batch`: under
  `fsync = "interval"` or `"never"` the batch's journal lines are written to
  the page cache there and then, and the actor has the hub release their
  announcements right after, in the same scheduler tick.
- Records that become durable later (fsyncs, `"always"`, a retried write)
  are announced with a `Release` command, sent without waiting; if the actor's
  inbox is full it is busy anyway and releases after its batch.
- Every `storage.snapshot_interval` a snapshot is taken if anything changed
  (the hub builds it between two commands, the storage's thread writes it);
  one that cannot be taken is retried after the backoff, and the journal
  keeps every record meanwhile. At stop, a last snapshot is taken even while
  the server is being cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from wsserver._version import STATE_VERSION
from wsserver.core.commands import Release, Restore, TakeSnapshot
from wsserver.storage.gcpause import gc_paused
from wsserver.storage.node import node_id

if TYPE_CHECKING:
    from wsserver.net.actor import HubActor
    from wsserver.ops.background import Background
    from wsserver.storage.journal import FileStorage

__all__ = ["Durability"]

log = logging.getLogger("wsserver.server")


class Durability:
    """Connects the hub actor and the storage (see the module docstring).

    `after_batch` is the actor's hook, so this object exists before the actor;
    the methods that talk to the actor are given it.
    """

    def __init__(self, storage: FileStorage, background: Background) -> None:
        self.storage = storage
        self._background = background
        self._in_after_batch = False

    def load(self, actor: HubActor, where: str) -> None:
        """Load the durable state (before serving): the snapshot and the journal,
        migrated when they are of an older format.

        A new directory gets a snapshot at once, a migrated one before any new
        record: the journal never mixes formats, and a journal without a
        snapshot is always an old one (`storage.journal`). Queued before any
        append, the snapshot is written before anything appended later; a crash
        before it leaves the old files as they were.
        """
        loaded = self.storage.load()  # StorageError stops start-up, files untouched
        node = node_id(where)
        with gc_paused():  # everything restored stays alive: no collection can free any
            actor.execute_now(Restore(loaded.state, loaded.records, loaded.version, node))
        if loaded.state is None or loaded.version != STATE_VERSION:
            actor.execute_now(TakeSnapshot())
        log.info(
            "state loaded from %s: %d journal records after the snapshot%s",
            where,
            len(loaded.records),
            "" if loaded.version == STATE_VERSION else f" (format {loaded.version}, migrated)",
        )

    async def start(self, nursery: trio.Nursery, actor: HubActor) -> None:
        """Start the storage's writer task in `nursery` and announce what becomes
        durable to `actor` from now on."""
        # the writer retries failed disk steps itself; this restarts it after a bug
        await nursery.start(self._background.keep_running, "storage", self.storage.run)
        release = Release()  # told each time records become durable

        def durable(n: int) -> None:
            # Wake the actor when records become durable; if its inbox is
            # full it is busy anyway and releases after the batch. Records made
            # durable by after_batch itself are released there.
            if not self._in_after_batch:
                actor.tell_nowait(release)

        self.storage.on_durable(durable)

    def after_batch(self) -> None:
        """(Actor hook, after each batch of commands, before the hub announces what
        became durable.) Without fsync the batch's records are written at once."""
        self._in_after_batch = True
        try:
            self.storage.write_now()  # a failed write is the writer task's to report and retry
        finally:
            self._in_after_batch = False

    async def snapshots(self, actor: HubActor, interval: Callable[[], float]) -> None:
        """Compact the journal every `interval()` seconds (`storage.snapshot_interval`,
        read each time: a reload may change it) when there were changes. A
        snapshot that cannot be taken is retried after the backoff and the
        interval (`Background.supervised`); the journal keeps every record
        meanwhile. (Writing it is the storage's: `storage.snapshot`.)"""

        async def snapshot() -> None:
            await trio.sleep(interval())
            await actor.call(TakeSnapshot(if_changed=True))

        await self._background.supervised("snapshots", snapshot)

    async def close(self, actor: HubActor) -> None:
        """At stop, shielded from cancellation: a last snapshot, then the storage
        writes what it holds and closes."""
        with trio.CancelScope(shield=True):
            try:
                await actor.call(TakeSnapshot())
            except Exception as exc:  # the journal keeps every record: the next start replays it
                self._background.failed("snapshots", exc)
            await self.storage.close()
