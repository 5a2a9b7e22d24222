"""`wsserver serve --workers N`: N server processes on one port, one node each.

The parent starts N children, each the same `serve` command plus
`--worker I` (1..N): a worker opens its listeners with SO_REUSEPORT (the
kernel spreads new connections over them), keeps its state in
`<storage.dir>/worker-I` (its own node id and journal) and joins the cluster
at `cluster.redis_url` like any node, so the workers share delivery and
presence through Redis (docs/CLUSTER.md). The parent serves nothing itself.

Supervision: SIGTERM or SIGINT to the parent stops every worker gracefully
(SIGTERM each, wait) and the parent exits 0. A worker that dies on its own is
started again after a pause; one that dies again within `FLAPPING` seconds
of its start, `MAX_FAILURES` times in a row, stops them all and the parent
exits 1 (a worker that cannot start, e.g. a bad TLS key, is not retried forever).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["FLAPPING", "MAX_FAILURES", "child_command", "run_workers", "worker_dir"]

log = logging.getLogger("wsserver.workers")

FLAPPING = 10.0
"""A worker that dies sooner than this after its start counts as failing to start."""

MAX_FAILURES = 3
"""Failed starts in a row of one worker after which the parent gives up."""

STOP_TIMEOUT = 30.0
"""Seconds a worker gets to stop gracefully before it is killed."""


def can_reuse_port() -> bool:
    """True where SO_REUSEPORT spreads connections over processes (Linux, the BSDs)."""
    return hasattr(socket, "SO_REUSEPORT")


def worker_dir(storage_dir: str, index: int) -> str:
    """The data directory of worker `index`."""
    return str(Path(storage_dir) / f"worker-{index}")


def child_command(argv: Sequence[str], index: int) -> list[str]:
    """The command of worker `index`: this program again with `argv` (the
    parent's `serve` arguments, without `--workers`) and `--worker index`."""
    program = sys.argv[0]
    if program.endswith("__main__.py") or not program:
        base = [sys.executable, "-m", "wsserver"]
    else:  # a pyz or the console script
        base = [sys.executable, program]
    return [*base, "serve", *argv, "--worker", str(index)]


def run_workers(argv: Sequence[str], count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT (0) or until one keeps failing (1)."""
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            log.info("signal %s received: stopping %d workers", signal.Signals(signum).name, count)
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    failures: dict[int, int] = dict.fromkeys(range(1, count + 1), 0)

    def start(index: int) -> None:
        procs[index] = subprocess.Popen(child_command(argv, index))
        started[index] = time.monotonic()
        log.info("worker %d started (pid %d)", index, procs[index].pid)

    for index in range(1, count + 1):
        start(index)
    status = 0
    while not stopping:
        time.sleep(0.1)
        for index, proc in list(procs.items()):
            code = proc.poll()
            if code is None or stopping:
                continue
            quick = time.monotonic() - started[index] < FLAPPING
            failures[index] = failures[index] + 1 if quick else 1
            log.error("worker %d (pid %d) exited with %d", index, proc.pid, code)
            if failures[index] >= MAX_FAILURES:
                log.error("worker %d keeps failing: stopping all workers", index)
                stopping, status = True, 1
                break
            time.sleep(min(5.0, 0.5 * failures[index]))
            start(index)
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for proc in procs.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.info("all workers stopped")
    return status
