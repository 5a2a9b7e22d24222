"""Background tasks that cannot stop the server (SPEC 5).

The tasks a server runs besides its connections (snapshots, the midnight
timer, the storage writer, the connections' timer task, the fan-out flusher)
report to one `Background`. A failure is logged with the task's name, counted
(`on_failure`: `wsserver_background_failures_total{task}`), marks the task
failing (`/readyz` answers 503 naming it, with a short reason) and is retried
after a backoff that doubles from `FIRST_DELAY` up to `MAX_DELAY`; a success
clears the mark and the backoff.

Invariants:

- Only `Exception` is caught: `trio.Cancelled`, `KeyboardInterrupt` and
  `SystemExit` always go through, so a cancelled server still stops.
- A task that fails before it reported itself started (`nursery.start`) is not
  retried: that is the server's wiring, and its caller gets the exception.
- A restarted long-running task (`keep_running`) counts as recovered once it
  has run, without failing again, as long as it waited before the restart.
- The first failure of a streak is logged with its traceback, the repeats in
  one line each (a full disk retried for hours stays readable).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import attrs
import trio

__all__ = ["FIRST_DELAY", "MAX_DELAY", "Background"]

log = logging.getLogger("wsserver.background")

FIRST_DELAY: Final = 0.5
"""Seconds before the first retry of a failed task."""
MAX_DELAY: Final = 30.0
"""The backoff doubles up to this many seconds."""
_REASON_CHARS: Final = 200


class _Run(Protocol):
    def __call__(self, *, task_status: Any = ...) -> Awaitable[None]: ...


@attrs.define
class _Failing:
    """A task that failed and has not succeeded since."""

    reason: str
    failures: int  # in a row
    delay: float  # before the next retry
    healthy_at: float = math.inf  # (keep_running) trio time it counts as recovered


class _Started:
    """A `task_status` that remembers whether the task reported itself started,
    and forwards only the first report (a restarted task reports again)."""

    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self._status = status
        self.done = False

    def started(self, value: None = None) -> None:
        if not self.done:
            self.done = True
            self._status.started(value)


def _reason(exc: BaseException) -> str:
    """`Type: message`, printable and short: it goes to `/readyz` and the log."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = "".join(c if c.isprintable() else " " for c in text)
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


class Background:
    """The health of a server's background tasks: which are failing, and why.

    `on_failure(task)` runs at each failure (the server counts it in its
    metrics). `first_delay` and `max_delay` bound the backoff.
    """

    def __init__(
        self,
        on_failure: Callable[[str], None] | None = None,
        *,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self._on_failure = on_failure
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._failing: dict[str, _Failing] = {}

    def failed(self, task: str, exc: BaseException) -> float:
        """Log, count and mark one failure of `task`; returns the seconds to wait
        before retrying it."""
        reason = _reason(exc)
        entry = self._failing.get(task)
        if entry is None:
            entry = self._failing[task] = _Failing(reason, 1, self.first_delay)
            log.error(
                "background task %s failed, retrying in %.1f s: %s", task, entry.delay, reason,
                exc_info=exc,
            )  # fmt: skip
        else:
            entry.reason = reason
            entry.failures += 1
            entry.delay = min(entry.delay * 2, self.max_delay)
            entry.healthy_at = math.inf
            log.error(
                "background task %s failed again (%d in a row), retrying in %.1f s: %s",
                task, entry.failures, entry.delay, reason,
            )  # fmt: skip
        if self._on_failure is not None:
            self._on_failure(task)
        return entry.delay

    def recovered(self, task: str) -> None:
        """`task` succeeded: clear its mark and its backoff."""
        entry = self._failing.pop(task, None)
        if entry is not None:
            log.info("background task %s recovered after %d failure(s)", task, entry.failures)

    def failing(self) -> dict[str, str]:
        """The tasks failing now, each with a short reason (for `/readyz`)."""
        if not self._failing:
            return {}
        now = trio.current_time()
        for task, entry in list(self._failing.items()):
            if now >= entry.healthy_at:
                self.recovered(task)
        return {task: entry.reason for task, entry in self._failing.items()}

    async def supervised(self, task: str, round_: Callable[[], Awaitable[object]]) -> None:
        """Run `round_()` again and again, forever: each return is a success; an
        exception is a failure (logged, counted, marked), and the round runs
        again after the backoff."""
        while True:
            try:
                await round_()
            except Exception as exc:
                await trio.sleep(self.failed(task, exc))
            else:
                if self._failing:
                    self.recovered(task)

    async def keep_running(
        self,
        task: str,
        run: _Run,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the long-running `run(task_status=...)` (a loop that only ends when
        cancelled); when it raises after it started, it is a failure and `run`
        starts again after the backoff."""
        status = _Started(task_status)
        while True:
            try:
                await run(task_status=status)
                return
            except Exception as exc:
                if not status.done:
                    raise
                delay = self.failed(task, exc)
            await trio.sleep(delay)
            entry = self._failing.get(task)
            if entry is not None:
                entry.healthy_at = trio.current_time() + delay
