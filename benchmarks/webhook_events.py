"""What a `message` webhook event costs the server, without the WebSocket load around it.

The direct-message benchmarks (`ab.py open ... --sink-fast`) measure the event
inside a server that also carries 5,000 connections and a load generator on
the same cores: on a shared machine their run-to-run spread is larger than
the event's cost. This runs the hub actor, its journal
(`storage.journal`, `fsync = "always"`) and the real webhook sender
(`net.webhooks`) in one trio process, no connection: a feeder sends direct
messages through the hub (`SendAs`, as `POST /api/messages` does) at a fixed
rate, and the events go to
`webhook_sink.py --fast` in its own process. Printed: this process's CPU per
message with `message` off and on (interleaved, `--runs` each), and the
medians.

Usage: python benchmarks/webhook_events.py [--rate 4000] [--seconds 5] [--runs 3] [--src DIR] [--set webhooks.pipeline=64]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent
TICK = 0.005  # seconds between two batches of messages


def cpu() -> tuple[float, float]:
    """(user, system) seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def run_once(url: str, events: list[str], rate: float, seconds: float, settings: dict[str, str]) -> dict[str, float]:
    import trio

    from wsserver.config import load_config
    from wsserver.core.commands import SendAs
    from wsserver.net.actor import HubActor
    from wsserver.net.durability import Durability
    from wsserver.net.webhooks import WebhookSender
    from wsserver.ops.background import Background
    from wsserver.ops.metrics import Metrics
    from wsserver.ops.process import tune_gc
    from wsserver.storage.journal import FileStorage

    overrides: dict[str, object] = {"webhooks.url": url, "webhooks.events": events}
    data = tempfile.mkdtemp(prefix="wsbench-events-")
    overrides.update({"storage.dir": data, "storage.fsync": "always"})
    overrides.update({k: json.loads(v) for k, v in settings.items()})
    config = load_config(None, env={}, overrides=overrides)
    metrics = Metrics()
    background = Background(metrics.background_failed)
    storage = FileStorage(data, config.storage.fsync, fsync_fd=metrics.timed_fsync, health=background)
    durability = Durability(storage, background)
    actor = HubActor(config, storage=storage, after_batch=durability.after_batch)
    durability.load(actor, data)
    host = SimpleNamespace(config=config, actor=actor, metrics=metrics)
    sender = WebhookSender(host)  # type: ignore[arg-type]
    out: dict[str, float] = {}

    async def feed(count: int, pairs: int = 500) -> int:
        per_tick = max(1, round(rate * TICK))
        sent = 0
        deadline = trio.current_time()
        while sent < count:
            for _ in range(per_tick):
                k = sent % pairs
                data = {"to_user_id": 100_000 + k, "text": "hello there, a message of some length"}
                await actor.call(SendAs(k, None, None, None, data))
                sent += 1
            deadline += TICK
            await trio.sleep_until(deadline)
        return sent

    gc_time = [0.0, 0.0]  # (seconds in collections, when the running one started)

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]

    gc.callbacks.append(timed)

    async def main() -> None:
        tune_gc()  # as `wsserver serve` does
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            await durability.start(nursery, actor)
            await nursery.start(sender.run)
            await feed(int(rate))  # a second of warm-up
            started, before, gc_before = time.perf_counter(), cpu(), gc_time[0]
            sent = await feed(int(rate * seconds))
            # the events of the window delivered (the queue drained) count in it
            with trio.move_on_after(10):
                while True:
                    stats = host.metrics.registry.get_sample_value("wsserver_webhooks_queue")
                    if not stats:
                        break
                    await trio.sleep(0.01)
            after = cpu()
            out["user_us_per_msg"] = (after[0] - before[0]) / sent * 1e6
            out["sys_us_per_msg"] = (after[1] - before[1]) / sent * 1e6
            out["cpu_us_per_msg"] = out["user_us_per_msg"] + out["sys_us_per_msg"]
            out["gc_us_per_msg"] = (gc_time[0] - gc_before) / sent * 1e6
            out["seconds"] = time.perf_counter() - started
            out["sent"] = host.metrics.registry.get_sample_value("wsserver_webhooks_sent_total") or 0.0
            sender.stop()
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=4000.0, help="direct messages per second")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--src", help="a directory holding the wsserver package to measure")
    p.add_argument("--set", action="append", default=[], help="KEY=JSON, a config override (e.g. webhooks.pipeline=64)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # (a child run: "URL|events")
    args = p.parse_args(argv)
    if args.src:
        sys.path.insert(0, args.src)
    if args.one:
        url, events = args.one.split("|", 1)
        settings = dict(item.split("=", 1) for item in args.set)
        result = run_once(url, events.split(",") if events else [], args.rate, args.seconds, settings)
        print(result["gc_us_per_msg"], result["user_us_per_msg"], result["sys_us_per_msg"])
        return
    sink = subprocess.Popen([sys.executable, str(ROOT / "webhook_sink.py"), "--fast"], stdout=subprocess.PIPE, text=True)
    assert sink.stdout is not None
    url = f"http://127.0.0.1:{sink.stdout.readline().split()[-1]}/hooks"
    configs = {"off": "user_online", "on": "user_online,message"}
    results: dict[str, list[float]] = {name: [] for name in configs}
    try:
        for run in range(args.runs):
            for name in configs if run % 2 == 0 else list(configs)[::-1]:
                child = [sys.executable, __file__, "--one", f"{url}|{configs[name]}", "--rate", str(args.rate), "--seconds", str(args.seconds)]
                if args.src:
                    child += ["--src", args.src]
                for item in args.set:
                    child += ["--set", item]
                collecting, user, system = map(float, subprocess.run(child, check=True, capture_output=True, text=True).stdout.split()[-3:])
                results[name].append(user + system)
                print(
                    f"run {run + 1} {name}: {user + system:.2f} µs per message "
                    f"(user {user:.2f}, system {system:.2f}; the cyclic GC {collecting:.2f})",
                    flush=True,
                )
    finally:
        sink.terminate()
    off, on = (statistics.median(results[name]) for name in configs)
    print(f"median off {off:.2f}, on {on:.2f} µs per message: the event +{on - off:.2f} µs (+{(on / off - 1) * 100:.1f} %)")


if __name__ == "__main__":
    main()
