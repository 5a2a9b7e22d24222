"""Two versions of wsserver on the same direct-message load, interleaved: did a change help?

The machine is shared and its speed drifts within minutes, so one run of each
version says little. This runs A and B alternately (A B, B A, A B, ...), each on
fresh servers started by `bench.py`'s machinery, and prints every run, the
medians, and B's server CPU per message over A's pair by pair (the two runs of
a pair follow each other, so their ratio drifts less) with their median. A version is a directory holding a `wsserver` package (for an older
commit: `git archive COMMIT wsserver | tar -x -C DIR`), or `-` for the one
installed (the checkout).

Loads (the `dm` benchmark's scenario, 2,500 pairs unless --pairs):
  closed  every user keeps one message unacknowledged; `fsync = "interval"`
          (--fsync to change): messages/s and server CPU per message.
  open    5,000 messages/s offered (--rate), `fsync = "always"`: p50/p99
          send→deliver, server CPU per message, and the journal fsyncs over 10 ms
          (from /metrics), which decide the p99 more than the server does.

A version's server gets extra environment with `--env-a` / `--env-b
KEY=VALUE` (repeatable), so one checkout can be compared with itself under
two configurations; `--sink` starts `webhook_sink.py` (a receiver answering
every event 204, in its own process) and sets `WSSERVER_WEBHOOKS_URL` of both
to it (`--sink-fast`: the same with `webhook_sink.py --fast`). With a sink,
each run also shows the events the server delivered (`hooks_sent`, from its
/metrics once the load ended) and those still queued (`hooks_queued`).

Usage: python benchmarks/ab.py closed /tmp/base - [--runs 4] [--seconds 10]
       python benchmarks/ab.py closed - - --sink --env-b 'WSSERVER_WEBHOOKS_EVENTS=["message"]'
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench

SHOWN = ("msgs_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_msg", "fsyncs", "fsyncs_over_10ms", "hooks_sent", "hooks_queued")


def webhook_counts(server: bench.Server) -> dict[str, float]:
    """With `--sink`: the events the server delivered so far and those still queued
    (its /metrics), to read B's CPU against how much of its webhook work it did."""
    with urllib.request.urlopen(f"http://{bench.HOST}:{server.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("wsserver_webhooks_sent_total "):
            out["hooks_sent"] = float(line.split()[-1])
        elif line.startswith("wsserver_webhooks_queue "):
            out["hooks_queued"] = float(line.split()[-1])
    return out


def start_sink(fast: bool) -> tuple[subprocess.Popen[str], str]:
    """`webhook_sink.py` (`--fast` when `fast`) in its own process, and its URL."""
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "webhook_sink.py"), *(["--fast"] if fast else [])],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert sink.stdout is not None
    port = sink.stdout.readline().split()[-1]
    return sink, f"http://127.0.0.1:{port}/hooks"


def run_ab(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    params: dict[str, Any] = {
        "pairs": args.pairs,
        "window": 1 if args.load == "closed" else 0,
        "rate": 0 if args.load == "closed" else args.rate,
        "duration": args.seconds,
        "warmup": args.warmup,
        "timeout": args.timeout,
    }
    fsync = args.fsync or ("interval" if args.load == "closed" else "always")
    versions = {"A": args.a, "B": args.b}
    sources = {name: None if src == "-" else src for name, src in versions.items()}
    out: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    envs = {"A": dict(e.split("=", 1) for e in args.env_a), "B": dict(e.split("=", 1) for e in args.env_b)}
    sink = None
    if args.sink or args.sink_fast:
        sink, url = start_sink(args.sink_fast)
        for env in envs.values():
            env.setdefault("WSSERVER_WEBHOOKS_URL", url)
    try:
        for run in range(args.runs):
            for name in ("A", "B") if run % 2 == 0 else ("B", "A"):
                with bench.running("wsserver", sources[name], fsync, envs[name]) as server:
                    result = bench.drive_dm(server, fsync, params)
                    if sink is not None:
                        result.update(webhook_counts(server))
                out[name].append(result)
                shown = {k: round(result[k], 2) for k in SHOWN if result.get(k) is not None}
                print(f"run {run + 1} {name} ({versions[name]}): {shown}", flush=True)
    finally:
        if sink is not None:
            sink.terminate()
            print(f"webhook sink: {sink.communicate()[0].strip()}")
    for name in ("A", "B"):
        medians = {
            k: round(statistics.median(r[k] for r in out[name]), 2)
            for k in SHOWN
            if all(r.get(k) is not None for r in out[name])
        }
        print(f"median of {args.runs} {name} ({versions[name]}): {medians}")
    ratios = [
        b["server_cpu_us_per_msg"] / a["server_cpu_us_per_msg"]
        for a, b in zip(out["A"], out["B"], strict=True)
        if a.get("server_cpu_us_per_msg") and b.get("server_cpu_us_per_msg")
    ]
    if ratios:  # each pair ran back to back: their ratio drifts less than the medians'
        shown = ", ".join(f"{r:.3f}" for r in ratios)
        print(f"server CPU per message, B/A pair by pair: {shown}; median {statistics.median(ratios):.3f}")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("load", choices=("closed", "open"))
    p.add_argument("a", help="version A: a directory holding wsserver, or - for the installed one")
    p.add_argument("b", help="version B, the same way")
    p.add_argument("--runs", type=int, default=4, help="runs of each version (default 4)")
    p.add_argument("--pairs", type=int, default=2500)
    p.add_argument("--rate", type=float, default=5000.0, help="messages/s offered (open)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument("--fsync", choices=("always", "interval", "never"), help="default by load")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    p.add_argument("--env-a", action="append", default=[], help="KEY=VALUE for version A's server")
    p.add_argument("--env-b", action="append", default=[], help="KEY=VALUE for version B's server")
    p.add_argument("--sink", action="store_true", help="a webhook receiver for both (webhooks.url)")
    p.add_argument("--sink-fast", action="store_true", help="--sink, answering with `webhook_sink.py --fast`")
    return p


def main(argv: list[str] | None = None) -> None:
    run_ab(parser().parse_args(argv))


if __name__ == "__main__":
    main()
