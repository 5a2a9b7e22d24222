"""What one group commit of `fsync = "always"` costs, in its two parts, without a server.

`storage.journal.FileStorage` commits a batch of journal lines by handing
`write + fsync` to a worker thread with `trio.to_thread.run_sync` and waiting for
it. At 5,000 direct messages/s that is ~470 commits/s (one per arrival burst of
the load generator), so a commit's fixed costs matter. This measures them apart:

- hand-off: one trio -> worker thread -> trio round trip with a no-op function,
  through `trio.to_thread.run_sync` (what the storage does) and through a
  dedicated thread fed by a queue that reports back with the trio token (the
  leanest alternative in pure Python). CPU of the whole process and of the trio
  thread, and wall time, per round trip.
- disk: one commit of 10 journal-sized lines (2,000 bytes), as the storage does
  it (append + `fsync`), with `fdatasync`, and as an overwrite of a file zeroed
  beforehand + `fdatasync` (no size change, so no metadata to commit). CPU of
  the calling thread and wall time per commit.

Variants run interleaved, `--rounds` times each; medians are printed. Linux
(`fdatasync`); the files go to a temporary directory under --dir.

Usage: python benchmarks/commit_costs.py [--handoffs 5000] [--commits 2000]
       [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import trio

LINE = b'{"n":1,"kind":"msg","payload":"' + b"x" * 166 + b'"}\n'  # 200 bytes
BATCH = LINE * 10
ZEROED_BYTES = 16 << 20


def _nothing() -> None:
    pass


async def _to_thread(n: int) -> None:
    limiter = trio.CapacityLimiter(1)  # as FileStorage: its own thread slot
    for _ in range(n):
        await trio.to_thread.run_sync(_nothing, limiter=limiter)


async def _dedicated(n: int) -> None:
    token = trio.lowlevel.current_trio_token()
    jobs: queue.SimpleQueue[trio.Event | None] = queue.SimpleQueue()

    def worker() -> None:
        while (done := jobs.get()) is not None:
            _nothing()
            token.run_sync_soon(done.set)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        for _ in range(n):
            done = trio.Event()
            jobs.put(done)
            await done.wait()
    finally:
        jobs.put(None)
    await trio.to_thread.run_sync(thread.join)


def handoff(kind: str, n: int) -> dict[str, float]:
    """Per round trip: process CPU, trio-thread CPU, wall (µs)."""
    run = {"to_thread": _to_thread, "dedicated": _dedicated}[kind]

    async def main() -> dict[str, float]:
        p0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
        await run(n)
        p1, t1, w1 = time.process_time(), time.thread_time(), time.perf_counter()
        return {"process_cpu": (p1 - p0) / n * 1e6, "trio_thread_cpu": (t1 - t0) / n * 1e6,
                "wall": (w1 - w0) / n * 1e6}  # fmt: skip

    return trio.run(main)


def commits(kind: str, n: int, directory: str) -> dict[str, float]:
    """Per commit of BATCH: CPU of this thread and wall (µs)."""
    path = os.path.join(directory, f"journal-{kind}")
    if kind == "zeroed_fdatasync":
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        zeros = b"\0" * (1 << 20)
        for _ in range(ZEROED_BYTES >> 20):
            os.write(fd, zeros)
        os.fsync(fd)
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
    sync: Callable[[int], None] = os.fsync if kind == "append_fsync" else os.fdatasync
    offset = 0
    try:
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(n):
            if kind == "zeroed_fdatasync":
                os.pwrite(fd, BATCH, offset)
                offset = (offset + len(BATCH)) % (ZEROED_BYTES - len(BATCH))
            else:
                os.write(fd, BATCH)
            sync(fd)
        c1, w1 = time.thread_time(), time.perf_counter()
    finally:
        os.close(fd)
        os.unlink(path)
    return {"thread_cpu": (c1 - c0) / n * 1e6, "wall": (w1 - w0) / n * 1e6}


def _median_table(title: str, results: dict[str, list[dict[str, float]]]) -> None:
    print(title)
    for kind, runs in results.items():
        cells = ", ".join(f"{key} {statistics.median(r[key] for r in runs):.1f}" for key in runs[0])
        print(f"  {kind:<18} {cells}  (µs, median of {len(runs)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handoffs", type=int, default=5000, help="round trips per run")
    parser.add_argument("--commits", type=int, default=2000, help="commits per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the files go")
    args = parser.parse_args(argv)
    hand: dict[str, list[dict[str, float]]] = {"to_thread": [], "dedicated": []}
    disk: dict[str, list[dict[str, float]]] = {
        "append_fsync": [], "append_fdatasync": [], "zeroed_fdatasync": []
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="commit-costs-", dir=args.dir) as directory:
        for _ in range(args.rounds):
            for kind in hand:
                hand[kind].append(handoff(kind, args.handoffs))
            for kind in disk:
                disk[kind].append(commits(kind, args.commits, directory))
    _median_table("hand-off, one round trip trio -> thread -> trio:", hand)
    _median_table(f"disk, one commit of {len(BATCH):,} bytes:", disk)


if __name__ == "__main__":
    main()
