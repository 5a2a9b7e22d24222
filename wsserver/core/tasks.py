"""The latest state of each user's tasks (SPEC 6.1; seed 001's progress bars), without I/O.

`TaskStates` is a component of the hub. Every task update pushed through seed
001's API (`POST /api/websocket/task/progress`, the `PushTask` command) is
kept as the task's latest state, a `task` record through the commit log,
and pushed to the user's connections in the same command. So a user who
connects gets the current state of each of their running (and recently
completed) tasks right after `connected` (`greet`), with no gap and no
repeat against the live pushes, and `GET /api/users/{user_id}/tasks` lists
them (`TaskList`).

Pushed `_progress` frames carry their task as a coalescing key
(`protocol.coalesce`): a connection whose queue backs up keeps only the
newest progress of a task waiting; `_start` and `_complete` frames are never
replaced and nothing moves across them.

Invariants of `MemoryTaskStore`:

- One entry per (user id, task id), both compared in string form: the
  record of its last update (`user_id`, `user_type`, `group_id` as the push
  named them, `type`, `data`, `time`); a user's entries are in the order of
  their last update.
- A completed task (`_complete`) is kept `messages.task_state_ttl` after its
  completion; a running one until it completes, but at most `STALE_AFTER_MS`
  after its last update; a user keeps at most `MAX_TASKS_PER_USER` (the least
  recently updated go first). Expired entries are never shown, and are
  removed by the records that follow (purging uses each record's time, so
  replay removes exactly what the run removed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from wsserver.core.broker import Broker
from wsserver.core.commands import PublishResult, PushTask, TaskList
from wsserver.core.commit import CommitLog
from wsserver.core.env import Env
from wsserver.core.session import Session
from wsserver.core.stores import TaskStore
from wsserver.protocol.coalesce import keyed
from wsserver.protocol.envelope import encode, id_key

__all__ = ["MAX_TASKS_PER_USER", "STALE_AFTER_MS", "MemoryTaskStore", "TaskStates"]

MAX_TASKS_PER_USER = 100
STALE_AFTER_MS = 7 * 86_400_000
"""A running task not updated for this long is forgotten (its backend gave up)."""

_NONE: Mapping[str, dict[str, Any]] = {}


def _done(entry: dict[str, Any]) -> bool:
    return bool(entry["type"].endswith("_complete"))


def _matches(narrowed: Any, given: Any, exact: bool) -> bool:
    """An entry's `user_type` or `group_id` (None: the update named none) against a
    connection's (`exact`) or a filter's (None: any)."""
    if narrowed is None or (given is None and not exact):
        return True
    return id_key(narrowed) == id_key(given)


class MemoryTaskStore:
    """The latest task states, in memory; `ttl_ms` is `messages.task_state_ttl`."""

    record_types: tuple[str, ...] = ("task",)

    def __init__(self, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms
        self.users: dict[str, dict[str, dict[str, Any]]] = {}
        # (expires at, user, task) of completed entries, in completion order (derived)
        self._expiring: deque[tuple[int, str, str]] = deque()

    def tasks_of(self, user: str) -> Mapping[str, dict[str, Any]]:
        """A user's entries by task id, least recently updated first."""
        return self.users.get(user, _NONE)

    def live(self, entry: dict[str, Any], now: int) -> bool:
        """Whether `entry` is still kept at `now`."""
        if _done(entry):
            return int(entry["time"]) + self.ttl_ms > now
        return int(entry["time"]) + STALE_AFTER_MS > now

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold a `task` record: the task's latest state."""
        now = rec["time"]
        self._purge(now)
        user = id_key(rec["user_id"])
        task = id_key(rec["data"]["task_id"])
        entries = self.users.setdefault(user, {})
        entries.pop(task, None)  # the last updated goes last
        entries[task] = rec
        if _done(rec):
            self._expiring.append((now + self.ttl_ms, user, task))
        for name in [t for t, e in entries.items() if not self.live(e, now)]:
            del entries[name]
        while len(entries) > MAX_TASKS_PER_USER:
            del entries[next(iter(entries))]
        if not entries:
            del self.users[user]

    def _purge(self, now: int) -> None:
        expiring = self._expiring
        while expiring and expiring[0][0] <= now:
            at, user, task = expiring.popleft()
            entries = self.users.get(user)
            entry = None if entries is None else entries.get(task)
            if entry is not None and _done(entry) and entry["time"] + self.ttl_ms == at:
                del entries[task]  # type: ignore[union-attr]
                if not entries:
                    del self.users[user]

    def to_state(self) -> dict[str, Any]:
        """A detached, JSON-able copy (records are never changed once stored)."""
        return {"users": {user: list(entries.values()) for user, entries in self.users.items()}}

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the state with a snapshot's."""
        self.users = {}
        expiring = []
        for user, entries in state["users"].items():
            kept = self.users[user] = {}
            for rec in entries:
                task = id_key(rec["data"]["task_id"])
                kept[task] = rec
                if _done(rec):
                    expiring.append((rec["time"] + self.ttl_ms, user, task))
        self._expiring = deque(sorted(expiring))


class TaskStates:
    """Seed 001's task updates: kept, pushed, replayed on connect, listed."""

    def __init__(
        self, commit: CommitLog, broker: Broker, env: Env, store: TaskStore | None = None
    ) -> None:
        self.commit = commit
        self.broker = broker
        self.env = env
        if store is None:  # the TTL is read once (`messages.*` are restart keys)
            store = MemoryTaskStore(int(env.config.messages.task_state_ttl * 1000))
        self.store: TaskStore = store
        self.record_types = store.record_types
        self.commands: dict[type[Any], Any] = {PushTask: self.push, TaskList: self.listing}

    # -- durable state (the store's) ----------------------------------------------------

    def apply(self, rec: dict[str, Any]) -> None:
        """Fold a `task` record into the store."""
        self.store.apply(rec)

    def to_state(self) -> dict[str, Any]:
        """The snapshot of the store."""
        return self.store.to_state()

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the store's state with a snapshot's."""
        self.store.load_state(state)

    # -- commands -----------------------------------------------------------------------

    def push(self, cmd: PushTask) -> PublishResult:
        """`PushTask`: keep the update as its task's latest state for each targeted
        user, then push it to their connections (a `_progress` frame coalescing)."""
        target = cmd.target
        now = self.env.now_ms()
        for user_id in dict.fromkeys(target.user_ids):
            self.commit.record(
                {
                    "t": "task",
                    "user_id": user_id,
                    "user_type": target.user_type,
                    "group_id": target.group_id,
                    "type": cmd.type,
                    "data": cmd.data,
                    "time": now,
                }
            )
        frame = self._frame(cmd.type, cmd.data, now)
        return PublishResult(self.broker.to_target(target, frame), 0)

    def _frame(self, mtype: str, data: dict[str, Any], now: int, **extra: Any) -> str:
        key = ("task", data.get("task_type"), id_key(data["task_id"]))
        wire = encode(mtype, data, now, extra=extra or None)
        return keyed(wire, key, replaces=mtype.endswith("_progress"))

    def _entries(
        self, user_id: Any, user_type: Any, group_id: Any, *, exact: bool
    ) -> list[dict[str, Any]]:
        """A user's live entries. `exact`: those a connection of `user_type` in
        `group_id` was sent (an update narrowed to a type or group reached only
        those); else `user_type` and `group_id` filter, None matching any."""
        now = self.env.now_ms()
        store = self.store
        out = []
        for entry in store.tasks_of(id_key(user_id)).values():
            if not store.live(entry, now):
                continue
            if not _matches(entry["user_type"], user_type, exact) or not _matches(
                entry["group_id"], group_id, exact
            ):
                continue
            out.append(entry)
        return out

    def listing(self, cmd: TaskList) -> list[dict[str, Any]]:
        """`TaskList`: the user's live task states, least recently updated first."""
        return [
            {
                "task_id": e["data"]["task_id"],
                "task_type": e["data"].get("task_type"),
                "type": e["type"],
                "status": e["data"].get("status"),
                "completed": _done(e),
                "updated_at": e["time"],
                "user_type": e["user_type"],
                "group_id": e["group_id"],
                "data": e["data"],
            }
            for e in self._entries(cmd.user_id, cmd.user_type, cmd.group_id, exact=False)
        ]

    # -- on connect -----------------------------------------------------------------------

    def greet(self, session: Session) -> None:
        """(A connection authenticated.) The latest state of each of the user's
        running or recently completed tasks, each as the message it was pushed as,
        marked `"latest": true`."""
        ident = session.identity
        if ident is None or ident.is_device:
            return
        entries = self._entries(ident.user_id, ident.user_type, ident.group_id, exact=True)
        now = self.env.now_ms()
        for e in entries:
            self.broker.send(session, self._frame(e["type"], e["data"], now, latest=True))

