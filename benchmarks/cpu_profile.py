"""Where the server's CPU goes under the direct-message load, by Python function.

One server under `ab.py open`'s load (2,500 pairs, `--rate` messages/s,
`fsync = "always"`), recorded by `perf record --call-graph dwarf` over a
window after the warm-up. CPython's perf support (Python 3.12 or newer, on
here through `PYTHONPERFSUPPORT=1`) names each Python function in the native
stack, so every sample, a real CPU sample of the process (its kernel time
included), is charged to the innermost Python function running, C callees
included; a sample without one is named by its C symbol. Printed: the top
functions by share, and with `--match REGEX` the share of the functions whose
name or module matches (e.g. the webhook code's part of the server's CPU,
free of the run-to-run drift that CPU totals suffer on a shared machine);
`--save FILE` keeps the counts and `--against FILE` prints the largest
differences from another run's (the same window and rate: comparable counts).

Unlike micro-benchmarks this shows what code costs inside the busy server,
where caches are cold: there a function often costs several times what it
costs in a loop of its own. Not a benchmark: perf's unwinding slows the
server a little; compare shares, not times.

Needs `perf` and a Python >= 3.12 holding wsserver and its test extras, which
also runs this script (its server and load generator use the same Python):

  python3.12 -m venv /tmp/v312 && /tmp/v312/bin/pip install -e '.[test]'
  /tmp/v312/bin/python benchmarks/cpu_profile.py --sink-fast \\
      --env 'WSSERVER_WEBHOOKS_EVENTS=["user_online","message"]' --match 'webhook|http_pipeline'
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ab
import bench


def shares(data: str) -> tuple[int, collections.Counter[str]]:
    """Samples in `data` (a perf.data file), and by the function charged."""
    script = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True, check=True).stdout
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for sample in script.split("\n\n"):
        symbols = [line.split(None, 1)[1] if " " in line.strip() else "?" for line in sample.strip().splitlines() if line.strip()]
        if not symbols:
            continue
        total += 1
        python = next((s for s in symbols if s.startswith("py::")), None)
        if python is None:
            counts[f"[C] {symbols[0]}"] += 1
            continue
        name, _, where = python[4:].partition(":")
        counts[f"{name} ({where.split('/wsserver/')[-1].split('site-packages/')[-1]})"] += 1
    return total, counts


def profile(args: argparse.Namespace) -> tuple[int, collections.Counter[str]]:
    env = dict(item.split("=", 1) for item in args.env)
    env["PYTHONPERFSUPPORT"] = "1"
    params: dict[str, Any] = {
        "pairs": args.pairs, "window": 0, "rate": args.rate, "duration": args.seconds + 4,
        "warmup": 2.0, "timeout": 120.0,
    }  # fmt: skip
    sink = None
    if args.sink_fast:
        sink, url = ab.start_sink(True)
        env.setdefault("WSSERVER_WEBHOOKS_URL", url)
    where = tempfile.mkdtemp(prefix="wsbench-perf-")
    data = str(Path(where) / "perf.data")
    try:
        with bench.running("wsserver", None, "always", env) as server:
            pid = server.pids()[0]

            def record() -> None:
                time.sleep(params["warmup"] + 2)
                subprocess.run(
                    ["perf", "record", "-q", "-F", str(args.frequency), "--call-graph", "dwarf,16384",
                     "-p", str(pid), "-o", data, "--", "sleep", str(args.seconds)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                )  # fmt: skip

            recorder = threading.Thread(target=record)
            recorder.start()
            result = bench.drive_dm(server, "always", params)
            recorder.join()
        print(f"server CPU per message {result['server_cpu_us_per_msg']:.2f} µs (perf attached), {result['msgs_per_s']:.0f} messages/s")
        return shares(data)
    finally:
        if sink is not None:
            sink.terminate()
        shutil.rmtree(where, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    p.add_argument("--sink-fast", action="store_true", help="a webhook receiver (`webhook_sink.py --fast`) as webhooks.url")
    p.add_argument("--rate", type=float, default=4000.0, help="messages/s offered")
    p.add_argument("--pairs", type=int, default=2500)
    p.add_argument("--seconds", type=float, default=8.0, help="seconds recorded")
    p.add_argument("--frequency", type=int, default=499, help="samples per second")
    p.add_argument("--match", help="a regular expression: the share of the functions it matches")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--save", help="write the samples by function to this JSON file")
    p.add_argument("--against", help="a --save file of another run (the same --seconds and --rate): print the difference")
    args = p.parse_args(argv)
    if sys.version_info < (3, 12):
        raise SystemExit("needs Python 3.12 or newer (CPython's perf support)")
    total, counts = profile(args)
    print(f"{total} samples")
    if args.save:
        Path(args.save).write_text(json.dumps({"total": total, "counts": counts}))
    if args.against:
        other = json.loads(Path(args.against).read_text())
        before: dict[str, int] = other["counts"]
        print(f"against {args.against}: {other['total']} -> {total} samples; the largest differences:")
        names = sorted(set(before) | set(counts), key=lambda k: abs(counts[k] - before.get(k, 0)), reverse=True)
        for name in names[: args.top]:
            print(f"  {counts[name] - before.get(name, 0):+6d} ({before.get(name, 0)} -> {counts[name]})  {name}")
    if args.match:
        matched = {k: v for k, v in counts.items() if re.search(args.match, k)}
        print(f"matching {args.match!r}: {sum(matched.values()) / total * 100:.1f} % of the server's CPU")
        for name, n in sorted(matched.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {n / total * 100:5.2f} %  {name}")
    print("top:")
    for name, n in counts.most_common(args.top):
        print(f"  {n / total * 100:5.2f} %  {name}")


if __name__ == "__main__":
    main()
