"""Durable direct-message throughput and latency against a real `wsserver serve`.

Starts the server as a subprocess on a temporary data directory, connects
PAIRS sender/recipient pairs, and has every sender push MESSAGES messages to
its recipient with at most WINDOW unacknowledged at a time. Measures:

- messages/s: acknowledged (`message_sent`) messages per second of wall time;
- send -> deliver latency: from the client's send to the recipient's
  `new_message`, p50 and p99 in milliseconds.

Usage: python benchmarks/durable_dm.py [--fsync always|interval|never]
       [--pairs 50] [--messages 200] [--window 8] [--runs 3]
Prints one line per run and the median of the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import trio
from trio_websocket import open_websocket_url

SECRET = "benchmark-secret-0123456789abcdef-0123456789"


def _token(user: int) -> str:
    import jwt

    return jwt.encode(
        {"user_id": user, "group_id": 1, "exp": int(time.time()) + 3600}, SECRET, "HS256"
    )


async def _start(fsync: str, data: str) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "WSSERVER_AUTH_JWT_SECRET": SECRET,
        "WSSERVER_STORAGE_FSYNC": fsync,
        "WSSERVER_LIMITS_MESSAGES_PER_SECOND": "100000",
        "WSSERVER_LIMITS_BURST": "100000",
        "WSSERVER_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsserver",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--data-dir",
            data,
        ],
        stderr=subprocess.PIPE,
        env={**env, "WSSERVER_LOG_LEVEL": "info"},
    )
    assert proc.stderr is not None
    while True:
        line = (await trio.to_thread.run_sync(proc.stderr.readline)).decode()
        if not line:
            raise RuntimeError("server did not start")
        m = re.search(r"listening on ([0-9.]+):(\d+)", line)
        if m:
            return proc, f"ws://{m.group(1)}:{m.group(2)}/ws?token="


async def _pair(base: str, idx: int, messages: int, window: int, latencies: list[float]) -> None:
    sender_id, recipient_id = 2 * idx + 1, 2 * idx + 2
    sent_at: dict[str, float] = {}
    async with (
        open_websocket_url(base + _token(recipient_id)) as rcv,
        open_websocket_url(base + _token(sender_id)) as snd,
    ):
        await rcv.get_message()
        await snd.get_message()
        free = trio.Semaphore(window)
        done = trio.Event()

        async def receive() -> None:
            got = 0
            while got < messages:
                msg = json.loads(await rcv.get_message())
                if msg["type"] == "new_message":
                    latencies.append(time.perf_counter() - sent_at[msg["data"]["text"]])
                    got += 1
            done.set()

        async def acks() -> None:
            acked = 0
            while acked < messages:
                msg = json.loads(await snd.get_message())
                if msg["type"] == "message_sent":
                    acked += 1
                    free.release()

        async with trio.open_nursery() as n:
            n.start_soon(receive)
            n.start_soon(acks)
            for i in range(messages):
                await free.acquire()
                text = f"{idx}:{i}"
                sent_at[text] = time.perf_counter()
                await snd.send_message(
                    json.dumps(
                        {
                            "type": "send_message",
                            "data": {
                                "to_user_id": recipient_id,
                                "message": text,
                                "client_msg_id": text,
                            },
                        }
                    )
                )
            await done.wait()


async def run_once(fsync: str, pairs: int, messages: int, window: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as data:
        proc, base = await _start(fsync, data)
        try:
            latencies: list[float] = []
            cpu0 = _cpu_seconds(proc.pid)
            t0 = time.perf_counter()
            async with trio.open_nursery() as n:
                for i in range(pairs):
                    n.start_soon(_pair, base, i, messages, window, latencies)
            elapsed = time.perf_counter() - t0
            server_cpu = _cpu_seconds(proc.pid) - cpu0
        finally:
            proc.send_signal(signal.SIGTERM)
            await trio.to_thread.run_sync(proc.wait)
    latencies.sort()
    return {
        "messages_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "messages": len(latencies),
        "server_cpu_us_per_msg": 1e6 * server_cpu / max(1, len(latencies)),
        "server_cpu_share": server_cpu / elapsed,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--fsync", default="always", choices=["always", "interval", "never"])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    results = []
    for run in range(args.runs):
        r = trio.run(run_once, args.fsync, args.pairs, args.messages, args.window)
        results.append(r)
        print(
            f"run {run + 1}: {r['messages_per_s']:.0f} msg/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
            f"  server CPU {r['server_cpu_us_per_msg']:.0f} us/msg ({100 * r['server_cpu_share']:.0f}% of a core)"
            f"  ({r['messages']} messages)"
        )
    keys = ("messages_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_msg")
    med = {k: statistics.median(r[k] for r in results) for k in keys}
    print(
        f"median of {args.runs}: {med['messages_per_s']:.0f} msg/s  p50 {med['p50_ms']:.2f} ms  p99 {med['p99_ms']:.2f} ms"
        f"  server CPU {med['server_cpu_us_per_msg']:.0f} us/msg"
        f"  (fsync={args.fsync}, pairs={args.pairs}, messages={args.messages}, window={args.window})"
    )


if __name__ == "__main__":
    main()
