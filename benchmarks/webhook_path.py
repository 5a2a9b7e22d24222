"""What a `message` webhook event costs on its way through the code, without I/O.

The hub as the tests build it (no sockets, no journal files, `encode_record`
run on every record as the journal would) takes 4,000 direct messages to 500
recipients; then the outbox is emptied the way the sender does it: hand-outs
(`WebhookDue`), the requests built as `net.webhooks` builds them (body,
headers shared per event name: `net.webhooks.encode_requests`), 64 canned
`204` answers parsed per exchange (`ResponseReader.next_run`), and the acknowledgements
(`WebhookDoneMany`). Printed: µs per event of each part (the minimum and the
median of --runs), and the making as the difference of the messages' cost
with `message` on and off (of the minimums, and the median of the runs'
differences: either runs first in turn), each run in a process of its own.
What is not here is the trio side: the tasks,
the hub commands' round trips, the system calls (`webhook_events.py`).

With --memory: the bytes and the objects the GC tracks that a message event
holds while it waits in the outbox (4,000 messages made, none delivered).

Usage: python benchmarks/webhook_path.py [--runs 7] [--src DIR] [--memory]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 4000
PIPELINE = 64  # (`webhooks.pipeline`'s default)
ANSWER = b"HTTP/1.1 204 No Content\r\nDate: Mon, 07 Dec 2026 06:00:00 GMT\r\n\r\n"


def once(events: list[str]) -> dict[str, float]:
    """Seconds of each part for MESSAGES messages (and their events, if on)."""
    from benchmarks.journal_bytes import CountingJournal
    from tests.test_hub import send
    from tests.test_webhooks_core import Rig
    from wsserver.core.webhook_commands import WebhookDoneMany, WebhookDue
    from wsserver.net.http_client import Target
    from wsserver.net.http_pipeline import RequestTemplate, ResponseReader
    from wsserver.net.webhooks import encode_requests
    from wsserver.storage.base import encode_record

    rig = Rig(CountingJournal(encode_record), webhooks__events=events, webhooks__max_queue=10**7)  # type: ignore[arg-type]
    rig.start()
    senders = [rig.connect(i, group_id=5) for i in range(1, 101)]
    for i in range(1, 501):
        rig.connect(1000 + i, group_id=5)
    hub = rig.hub
    spent = dict.fromkeys(("make", "hand-out", "request", "answer", "acknowledgement"), 0.0)
    gc.disable()
    try:
        started = time.perf_counter()
        for k in range(MESSAGES):
            data: dict[str, Any] = {"to_user_id": 1001 + k % 500, "text": "hello there, a message of some length"}
            send(hub, senders[k % 100], "send_message", data)
        spent["make"] = time.perf_counter() - started
        if "message" not in events:
            return spent
        template = RequestTemplate.of(Target.parse("http://127.0.0.1:9/hooks"))
        reader = ResponseReader()  # (one per connection)
        while True:
            t0 = time.perf_counter()
            batch = hub.execute(WebhookDue(1024))
            spent["hand-out"] += time.perf_counter() - t0
            if not batch.deliveries:
                return spent
            for i in range(0, len(batch.deliveries), PIPELINE):
                deliveries = batch.deliveries[i : i + PIPELINE]
                t1 = time.perf_counter()
                b"".join(encode_requests(template, deliveries, "", 1765000000))
                t2 = time.perf_counter()
                reader.feed(ANSWER * len(deliveries))
                statuses: list[int] = []
                while (run := reader.next_run(len(deliveries))) is not None:
                    statuses += [run[0].status] * run[1]
                t3 = time.perf_counter()
                ok = tuple(200 <= status < 300 for status in statuses)
                hub.execute(WebhookDoneMany(tuple(deliveries), ok))
                t4 = time.perf_counter()
                spent["request"] += t2 - t1
                spent["answer"] += t3 - t2
                spent["acknowledgement"] += t4 - t3
    finally:
        gc.enable()


def memory(events: list[str]) -> tuple[float, float]:
    """Bytes (tracemalloc) and objects the GC tracks that MESSAGES messages leave
    behind, per message: the stored messages and, with `message` on, their events
    waiting in the outbox."""
    from tests.test_hub import send
    from tests.test_webhooks_core import Rig

    rig = Rig(webhooks__events=events, webhooks__max_queue=10**7)
    rig.start()
    senders = [rig.connect(i, group_id=5) for i in range(1, 101)]
    for i in range(1, 501):
        rig.connect(1000 + i, group_id=5)
    gc.collect()
    tracked = len(gc.get_objects())
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for k in range(MESSAGES):
        data: dict[str, Any] = {"to_user_id": 1001 + k % 500, "text": "hello there, a message of some length"}
        send(rig.hub, senders[k % 100], "send_message", data)
    gc.collect()
    grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    return grown / MESSAGES, (len(gc.get_objects()) - tracked) / MESSAGES


def in_child(events: list[str], src: str | None) -> dict[str, float]:
    """`once(events)` in a fresh process: each run starts from the same heap (in one
    process a run's cost depends on what the runs before it left behind)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(events), *(["--src", src] if src else [])]
    return dict(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--src", help="a directory holding the wsserver package to measure")
    p.add_argument("--memory", action="store_true", help="what a queued message event holds, instead")
    p.add_argument("--child", help=argparse.SUPPRESS)  # (one run, in_child's)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.src:
        sys.path.insert(0, args.src)
    if args.memory:
        (off, off_tracked), (on, on_tracked) = memory(["user_online"]), memory(["message"])
        print(f"per message, message off: {off:.0f} bytes, {off_tracked:.2f} objects the GC tracks; on: {on:.0f}, {on_tracked:.2f}")
        print(f"a queued message event: {on - off:.0f} bytes, {on_tracked - off_tracked:.2f} tracked objects")
        return
    if args.child:
        once(json.loads(args.child))  # (a warm-up: the first run in a process pays its imports)
        print(json.dumps(once(json.loads(args.child))))
        return
    runs: dict[tuple[str, str], list[float]] = {}
    for run in range(args.runs):
        order = (["user_online"], ["message"])
        for events in order if run % 2 else order[::-1]:  # (either first in turn)
            for part, seconds in in_child(events, args.src).items():
                runs.setdefault((events[-1], part), []).append(seconds / MESSAGES * 1e6)
    best = {key: min(values) for key, values in runs.items()}
    made = best[("message", "make")] - best[("user_online", "make")]
    # (a run's on and off follow each other: the median of their differences)
    paired = statistics.median(on - off for on, off in zip(runs[("message", "make")], runs[("user_online", "make")], strict=True))
    print(f"a direct message, message off: {best[('user_online', 'make')]:.2f} µs; on: {best[('message', 'make')]:.2f}")
    print(f"  making the event: {made:.2f} µs (the runs' differences: median {paired:.2f})")
    total = made
    for part in ("hand-out", "request", "answer", "acknowledgement"):
        values = runs[("message", part)]
        total += best[("message", part)]
        print(f"  {part}: {best[('message', part)]:.2f} µs (median {statistics.median(values):.2f})")
    print(f"per event, without I/O: {total:.2f} µs")


if __name__ == "__main__":
    main()
