"""The foreground process of `wsserver serve` and `wsserver.run()`: one trio run
with its signals, systemd's notifications, the garbage collector's tuning and
the exit status.

- SIGINT, SIGTERM and Windows' Ctrl+Break (SIGBREAK) stop the service
  gracefully; SIGHUP, where it exists, reloads it. A reload that fails is
  logged and the running configuration kept: it never ends the process.
- systemd (`wsserver.ops.systemd.Notifier`, a no-op without `$NOTIFY_SOCKET`)
  hears READY=1 once the service listens with its state loaded, RELOADING=1
  then READY=1 around a reload, STOPPING=1, and the watchdog's pings after
  each `status()`, which the server answers through its hub actor (a stuck
  actor stops the pings, and systemd restarts the service).
- The exit status is 0 after a clean stop, 2 when the service cannot start
  for a reason of the `cannot_start` type (an unusable data directory:
  logged as `cannot start: ...`); anything else propagates.

The service is given, not imported (`Service`, which `net.server.Server`
implements): operations do not depend on the network layer. Its log lines
are the server's (logger `wsserver.server`).
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from wsserver.ops.logging import setup_logging
from wsserver.ops.systemd import Notifier

if TYPE_CHECKING:
    from wsserver.config import Config

__all__ = ["Service", "run_process", "tune_gc"]

log = logging.getLogger("wsserver.server")


class Service(Protocol):
    """What the process runs (`net.server.Server`)."""

    async def serve(self, *, task_status: trio.TaskStatus[Any] = ...) -> None:
        """Run until `stop()`; report through `task_status` once listening."""

    def stop(self) -> None:
        """Begin a graceful stop."""

    async def reload(self) -> object:
        """Load the configuration again and apply what may change live."""

    async def status(self) -> str:
        """A one-line status (systemd's STATUS=); a round trip through the service."""


def tune_gc() -> None:
    """Keep the cyclic garbage collector out of the hot path of a long-lived server.

    Loaded state and start-up objects never die: `gc.freeze()` moves them out
    of every future collection, and higher thresholds make collections of the
    many short-lived per-message objects rarer (they are mostly freed by
    reference counting anyway). Only for a process of our own: an embedding
    host keeps its GC settings.
    """
    # The loaded state is already in the oldest generation (`storage.gcpause`):
    # collect only the young ones, not the whole (possibly GB-sized) heap.
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_process(
    config: Config,
    make_service: Callable[[], Service],
    *,
    cannot_start: type[Exception],
) -> int:
    """Run the service `make_service()` builds (inside the trio run) in the
    foreground until SIGINT/SIGTERM (Ctrl+C, Ctrl+Break); 0 on a clean stop, 2
    when it fails with `cannot_start`. wsserver's loggers are set up from
    `config.log` first."""
    setup_logging(config.log.level, config.log.format)
    try:
        trio.run(functools.partial(_main, make_service))
    except (cannot_start, ExceptionGroup) as exc:
        err = _find(exc, cannot_start)
        if err is None:
            raise
        log.error("cannot start: %s", err)
        return 2
    return 0


def _find(exc: BaseException, kind: type[Exception]) -> Exception | None:
    """The exception of type `kind` in `exc`, looking inside exception groups (trio nurseries)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None


async def _main(make_service: Callable[[], Service]) -> None:
    service = make_service()
    notifier = Notifier()  # a no-op unless systemd gave us $NOTIFY_SOCKET
    # SIGBREAK exists only on Windows (Ctrl+Break), SIGHUP only on POSIX.
    names = ("SIGINT", "SIGTERM", "SIGBREAK", "SIGHUP")
    signals = [getattr(signal, n) for n in names if hasattr(signal, n)]
    reload_signal = getattr(signal, "SIGHUP", None)

    async def watch(received: Any) -> None:
        async for signum in received:
            log.info("signal %s received", signal.Signals(signum).name)
            if signum == reload_signal:
                notifier.reloading()
                try:
                    await service.reload()
                except Exception:  # a reload must never take the server down
                    log.exception("reload failed, keeping the running configuration")
                notifier.ready(await service.status())
            else:
                notifier.stopping()
                service.stop()

    async def serve(task_status: trio.TaskStatus[None]) -> None:
        try:
            await service.serve(task_status=task_status)
        finally:
            notifier.stopping()
        nursery.cancel_scope.cancel()

    try:
        with trio.open_signal_receiver(*signals) as received:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, received)
                await nursery.start(serve)  # listening, with the durable state loaded
                notifier.ready(await service.status())
                nursery.start_soon(notifier.keepalive, service.status)
    finally:
        notifier.close()
