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

With `--stalls SECONDS` it runs the three disk variants side by side instead
(one thread each, a commit every 2 ms) and reports their stalls (commits over
10 ms) and how many of them happened while both other variants stalled too:
stalls of the device, not of one way of writing.

Usage: python benchmarks/commit_costs.py [--handoffs 5000] [--commits 2000]
       [--rounds 3] [--dir /tmp]
       python benchmarks/commit_costs.py --stalls 180
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
DISK_KINDS = ("append_fsync", "append_fdatasync", "zeroed_fdatasync")


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


class _Journal:
    """One journal file written the way `kind` names; `commit` makes BATCH durable."""

    def __init__(self, kind: str, directory: str) -> None:
        self.path = os.path.join(directory, f"journal-{kind}")
        self.zeroed = kind == "zeroed_fdatasync"
        if self.zeroed:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            zeros = b"\0" * (1 << 20)
            for _ in range(ZEROED_BYTES >> 20):
                os.write(self.fd, zeros)
            os.fsync(self.fd)
        else:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)
        self.sync: Callable[[int], None] = os.fsync if kind == "append_fsync" else os.fdatasync
        self.offset = 0

    def commit(self) -> None:
        if self.zeroed:
            os.pwrite(self.fd, BATCH, self.offset)
            self.offset = (self.offset + len(BATCH)) % (ZEROED_BYTES - len(BATCH))
        else:
            os.write(self.fd, BATCH)
        self.sync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
        os.unlink(self.path)


def commits(kind: str, n: int, directory: str) -> dict[str, float]:
    """Per commit of BATCH: CPU of this thread and wall (µs)."""
    journal = _Journal(kind, directory)
    try:
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(n):
            journal.commit()
        c1, w1 = time.thread_time(), time.perf_counter()
    finally:
        journal.close()
    return {"thread_cpu": (c1 - c0) / n * 1e6, "wall": (w1 - w0) / n * 1e6}


STALL = 0.010  # a commit slower than this is a stall


def stalls(seconds: float, directory: str) -> None:
    """The disk variants side by side, one thread each, a commit every 2 ms for
    `seconds`: their latencies, and whether their stalls (commits over 10 ms)
    happen at the same moments (the device) or apart (the file system's own
    metadata commits, which only `append_fsync` needs)."""
    kinds = list(DISK_KINDS)
    seen: dict[str, list[tuple[float, float]]] = {}
    end = time.monotonic() + seconds

    def probe(kind: str) -> None:
        journal, out = _Journal(kind, directory), []
        try:
            while time.monotonic() < end:
                t = time.monotonic()
                journal.commit()
                out.append((t, time.monotonic() - t))
                time.sleep(0.002)
        finally:
            journal.close()
        seen[kind] = out

    threads = [threading.Thread(target=probe, args=(kind,)) for kind in kinds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"disk variants side by side for {seconds:g} s, a commit every 2 ms each:")
    for kind, r in stall_report(seen).items():
        print(f"  {kind:<18} commits {r['commits']:,}, p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms, over 10 ms "
              f"{r['stalls']} (of them {r['shared']} while both others stalled too)")  # fmt: skip


def stall_report(seen: dict[str, list[tuple[float, float]]]) -> dict[str, dict[str, float]]:
    """Per variant, from its commits' (start, duration) in seconds: the count,
    p50/p99/max in ms, the stalls, and the stalls that overlap a stall of every
    other variant."""
    slow = {kind: _slow(commits) for kind, commits in seen.items()}
    report: dict[str, dict[str, float]] = {}
    for kind, commits in seen.items():
        lat = sorted(d for _, d in commits)
        others = [spans for other, spans in slow.items() if other != kind]
        shared = sum(
            all(any(a < e2 and a2 < e for a2, e2 in spans) for spans in others)
            for a, e in slow[kind]
        )
        report[kind] = {
            "commits": len(lat),
            "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1e3,
            "max_ms": lat[-1] * 1e3,
            "stalls": len(slow[kind]),
            "shared": shared,
        }
    return report


def _slow(commits: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(t, t + d) for t, d in commits if d > STALL]


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
    parser.add_argument(
        "--stalls", type=float, metavar="SECONDS",
        help="instead: run the disk variants side by side for SECONDS and compare their stalls",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.stalls:
        with tempfile.TemporaryDirectory(prefix="commit-costs-", dir=args.dir) as directory:
            stalls(args.stalls, directory)
        return
    hand: dict[str, list[dict[str, float]]] = {"to_thread": [], "dedicated": []}
    disk: dict[str, list[dict[str, float]]] = {kind: [] for kind in DISK_KINDS}
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
