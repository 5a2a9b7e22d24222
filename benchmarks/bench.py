"""Issue 8 benchmarks: wsserver against a `websockets` reference server, in the same run.

Each benchmark starts its servers itself, one process each (wsserver via
`python -m wsserver serve`, the reference via `benchmarks/reference_server.py`,
a `websockets` asyncio server on the default asyncio loop), drives them with
`benchmarks/loadgen.py` (picows clients on uvloop, one process), reads the
server's CPU time (user + system, /proc/<pid>/stat) and RSS (/proc/<pid>/status)
and prints both sides, the ratio and the target. Figures are medians of
`--runs` runs; every run starts fresh servers. All traffic stays on 127.0.0.0/8;
each step has a timeout and every process started is stopped.

Benchmarks (subcommands; `all` runs every one):

  fanout     N connections (default 5,000), 100 publishes of ~150 bytes to all:
             wsserver `POST /api/publish {type, data, all: true}` vs the
             reference's `broadcast()`. Server CPU per delivered message
             (target: wsserver <= 0.5 x reference), delivered messages/s,
             time until every client got every message.
  sustained  the same at a fixed rate (default 20 publishes/s for 10 s).
  dm         2,500 pairs (5,000 users) sending `send_message` to each other.
             Closed loop (each user keeps --window messages unacknowledged):
             wsserver with fsync="interval" vs the reference relay (target:
             messages/s ratio >= 1.0), and wsserver with fsync="always".
             Open loop at --rate messages/s (default 5,000) against wsserver
             with fsync="always" (target: keeps the rate, p99 send->deliver < 10 ms).
  idle       15,000 idle authenticated connections (JWT in the query for
             wsserver): server RSS growth per connection (target <= 12 KB).
  handshake  open and close M connections (default 10,000), 64 at a time:
             connections/s, wsserver with JWT verification vs the reference's
             plain handshake (target: ratio >= 1.0).
  recovery   a data directory with a snapshot + journal of 1,000,000 records
             (made by benchmarks/recovery_data.py through the real hub, cached
             in --cache-dir), then `wsserver serve` from exec to
             "listening on" (target < 10 s). No reference.

Usage:
  python benchmarks/bench.py fanout [--connections 5000] [--publishes 100] [--runs 3]
  python benchmarks/bench.py all --runs 3 --markdown
  python benchmarks/bench.py fanout --connections 20 --publishes 5 --runs 1   # a smoke run
Options common to all: --runs N, --markdown (rows for docs/BENCHMARKS.md),
--server-src DIR (run the wsserver found in DIR instead of the installed one,
e.g. an exported older commit), --timeout S (per run), --quiet-wait S (before
each run, wait up to S seconds for the rest of the machine to go idle; runs
disturbed anyway are named under the table).

Needs the bench extra: pip install -e '.[bench]' (picows, uvloop, websockets).
Linux only (/proc). The machine's cores are shared by the server and the load
generator: compare CPU per message and ratios, not absolute rates, across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen.py"
REFERENCE = HERE / "reference_server.py"
RECOVERY_DATA = HERE / "recovery_data.py"
JWT_SECRET = "bench-secret-0123456789abcdef-0123456789abcdef"
API_KEY = "bench-key"
HOST = "127.0.0.1"
START_TIMEOUT = 60.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- servers --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _wsserver_env(server_src: str | None, fsync: str, log_level: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSSERVER_")}
    env.update(
        {
            "WSSERVER_AUTH_JWT_SECRET": JWT_SECRET,
            "WSSERVER_API_KEYS": json.dumps([API_KEY]),
            "WSSERVER_LIMITS_MAX_CONNECTIONS": "100000",
            "WSSERVER_LIMITS_MAX_CONNECTIONS_PER_IP": "0",
            "WSSERVER_LIMITS_MESSAGES_PER_SECOND": "100000",
            "WSSERVER_LIMITS_BURST": "100000",
            "WSSERVER_STORAGE_FSYNC": fsync,
            "WSSERVER_LOG_LEVEL": log_level,
        }
    )
    if server_src:
        env["PYTHONPATH"] = os.pathsep.join([server_src, *filter(None, [env.get("PYTHONPATH")])])
    return env


@attrs.define
class Server:
    """One server process: `kind` is "wsserver" or "reference"."""

    kind: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: str
    stderr_path: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ports(self) -> list[int]:
        """Where the clients connect (one port; a cluster of nodes has several)."""
        return [self.port]

    def pids(self) -> list[int]:
        """The processes whose CPU is the server's: this one, or the workers it
        started (`serve --workers N`: the parent only waits)."""
        path = f"/proc/{self.pid}/task/{self.pid}/children"
        try:
            children = [int(c) for c in Path(path).read_text().split()]
        except OSError:
            children = []
        return children or [self.pid]

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def stderr_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(Path(self.stderr_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_wsserver(
    server_src: str | None,
    fsync: str = "interval",
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> Server:
    """`wsserver serve` on a fresh data directory, log level warning (no access log).

    The port is chosen here, so readiness is GET /readyz rather than the
    info-level "listening on" line. `extra_args` go after `serve`'s own
    (e.g. `--workers 2`: then only one of the workers is known ready here).
    """
    workdir = tempfile.mkdtemp(prefix="wsbench-")
    port = _free_port()
    stderr_path = os.path.join(workdir, "stderr.log")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsserver", "serve", "--host", HOST, "--port", str(port),
             "--data-dir", os.path.join(workdir, "data"), *(extra_args or [])],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=workdir,  # not the checkout: --server-src decides which wsserver runs
            env={**_wsserver_env(server_src, fsync, "warning"), **(extra_env or {})},
            preexec_fn=_raise_nofile,
        )  # fmt: skip
    server = Server("wsserver", proc, port, workdir, stderr_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"wsserver exited with {proc.returncode}:\n{server.stderr_tail()}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("wsserver did not become ready")
        time.sleep(0.05)


def start_reference() -> Server:
    workdir = tempfile.mkdtemp(prefix="wsbench-ref-")
    stderr_path = os.path.join(workdir, "stderr.log")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(REFERENCE), "--host", HOST, "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=workdir,
            preexec_fn=_raise_nofile,
        )
    server = Server("reference", proc, 0, workdir, stderr_path)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        m = re.search(r"listening on [0-9.]+:(\d+)", Path(stderr_path).read_text(errors="replace"))
        if m:
            server.port = int(m.group(1))
            return server
        if proc.poll() is not None:
            raise RuntimeError(
                f"reference server exited with {proc.returncode}:\n{server.stderr_tail()}"
            )
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("reference server did not start")
        time.sleep(0.02)


@contextlib.contextmanager
def running(
    kind: str,
    server_src: str | None,
    fsync: str = "interval",
    extra_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> Iterator[Server]:
    server = (
        start_wsserver(server_src, fsync, extra_env, extra_args)
        if kind == "wsserver"
        else start_reference()
    )
    try:
        yield server
    finally:
        server.stop()


def drive(server: Server, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario of loadgen.py against `server`; its JSON result."""
    spec = {
        "scenario": scenario,
        "server": server.kind,
        "host": HOST,
        "port": server.port,
        "pid": server.pid,
        "ports": server.ports,
        "pids": server.pids(),
        "aux_pids": params.pop("aux_pids", []),
        "jwt_secret": JWT_SECRET,
        "api_key": API_KEY,
        "sources": params.pop("sources", 16),
        "params": params,
    }
    try:
        out = subprocess.run(
            [sys.executable, str(LOADGEN), json.dumps(spec)],
            capture_output=True,
            timeout=params["timeout"] + 120,
            preexec_fn=_raise_nofile,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"load generator timed out ({scenario} on {server.kind})") from exc
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(
            f"load generator failed ({scenario} on {server.kind}, exit {out.returncode}):\n"
            f"{out.stderr.decode(errors='replace')[-3000:]}\nserver:\n{server.stderr_tail()}"
        )
    if server.exited():
        raise RuntimeError(f"{server.kind} died during {scenario}:\n{server.stderr_tail()}")
    result: dict[str, Any] = json.loads(out.stdout.decode().strip().splitlines()[-1])
    return result


def fsync_histogram(server: Server) -> dict[float, float]:
    """wsserver's `wsserver_storage_fsync_seconds` buckets now: {upper bound s: count}."""
    with urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("wsserver_storage_fsync_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[math.inf if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def drive_with_fsyncs(server: Server, scenario: str, params: dict[str, Any]) -> dict[str, Any]:
    """`drive`, plus what wsserver's journal fsyncs did meanwhile (from its /metrics,
    over the whole run: connecting, warm-up, window and drain): how many, how many
    took over 10 ms, and the bucket bound the longest stayed under."""
    before = fsync_histogram(server)
    result = drive(server, scenario, params)
    after = fsync_histogram(server)
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(math.inf, 0.0)
    result["fsyncs"] = total
    result["fsyncs_over_10ms"] = total - counts.get(0.01, 0.0)
    result["fsync_longest_under_ms"] = 1000 * min(
        (b for b, c in counts.items() if c >= total), default=math.inf
    )
    return result


# -- results --------------------------------------------------------------------------


@attrs.define
class Row:
    """One line of a benchmark's table."""

    metric: str
    unit: str
    ws: float | None
    ref: float | None = None
    target: str = ""
    # how the ratio is read: "ws/ref" (lower wsserver is better as in CPU, or higher as in rates)
    ratio: bool = True
    met: bool | None = None
    digits: int = 1

    def ratio_value(self) -> float | None:
        if not self.ratio or self.ws is None or not self.ref:
            return None
        return self.ws / self.ref


@attrs.define
class Report:
    name: str
    title: str
    command: str
    rows: list[Row]
    notes: list[str] = attrs.field(factory=list)
    raw: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)  # every run's result, by side
    columns: tuple[str, str] = ("wsserver", "reference")  # what `ws` and `ref` of the rows are


def _fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "–"
    if v == math.inf:
        return "undelivered"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _verdict(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "NOT met"


def print_table(rep: Report) -> None:
    print(f"\n== {rep.title}")
    print(f"   {rep.command}")
    head = ("metric", *rep.columns, "ratio", "target", "")
    lines = [head]
    for r in rep.rows:
        ratio = r.ratio_value()
        lines.append(
            (
                f"{r.metric} ({r.unit})" if r.unit else r.metric,
                _fmt(r.ws, r.digits),
                _fmt(r.ref, r.digits) if r.ref is not None else "",
                f"{ratio:.2f}" if ratio is not None else "",
                r.target,
                _verdict(r),
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print(
            "   " + "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        )
    for note in rep.notes:
        print(f"   note: {note}")


def markdown(rep: Report) -> str:
    out = [f"### {rep.title}", "", f"Command: `{rep.command}`", ""]
    out.append(f"| metric | {rep.columns[0]} | {rep.columns[1]} | ratio | target | |")
    out.append("|---|---|---|---|---|---|")
    for r in rep.rows:
        ratio = r.ratio_value()
        out.append(
            f"| {r.metric}{f' ({r.unit})' if r.unit else ''} | {_fmt(r.ws, r.digits)} | "
            f"{_fmt(r.ref, r.digits) if r.ref is not None else ''} | "
            f"{f'{ratio:.2f}' if ratio is not None else ''} | {r.target} | {_verdict(r)} |"
        )
    if rep.notes:
        out.append("")
        out += [f"- {note}" for note in rep.notes]
    return "\n".join(out) + "\n"


def machine() -> str:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    return (
        f"{os.cpu_count()} cores, {mem_kb / 1048576:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; trio {v('trio')}, trio-websocket {v('trio-websocket')}, "
        f"wsproto {v('wsproto')}; reference websockets {v('websockets')} (asyncio loop); "
        f"client picows {v('picows')} + uvloop {v('uvloop')}"
    )


def med(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def repeat(
    runs: int,
    sides: list[tuple[str, Callable[[], dict[str, Any]]]],
) -> dict[str, list[dict[str, Any]]]:
    """Run every side `runs` times, alternating which goes first."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    for run in range(runs):
        order = sides if run % 2 == 0 else list(reversed(sides))
        for name, fn in order:
            log(f"  run {run + 1}/{runs}: {name} ...")
            wait_quiet()
            r = fn()
            log(f"    {json.dumps(r)}")
            other = r.get("other_cpu_share")
            if other is not None and other > BUSY:
                log(f"    warning: other processes used {other:.0%} of a core during this run")
            out[name].append(r)
    return out


QUIET_WAIT = 120.0
"""Seconds to wait, before each run, for other processes to leave the cores alone."""


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet() -> None:
    """Wait (up to QUIET_WAIT s) until the machine is idle: the cores are shared
    by the server and the load generator, anything else skews the run."""
    if QUIET_WAIT <= 0:
        return
    deadline = time.monotonic() + QUIET_WAIT
    said = False
    while True:
        b0, t0 = _busy_seconds(), time.monotonic()
        time.sleep(1.0)
        share = (_busy_seconds() - b0) / (time.monotonic() - t0)
        if share < BUSY:
            return
        if time.monotonic() > deadline:
            log(f"    the machine is still busy ({share:.0%} of a core): running anyway")
            return
        if not said:
            log(f"    waiting for the machine to be quiet ({share:.0%} of a core busy) ...")
            said = True


BUSY = 0.15
"""Share of a core used by processes other than the server and the load generator
during a measurement above which the run is flagged as disturbed."""


def _busy_notes(res: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A note per side whose runs were disturbed by other processes of the machine."""
    notes = []
    for name, rs in res.items():
        shares = [r["other_cpu_share"] for r in rs if r.get("other_cpu_share") is not None]
        bad = [x for x in shares if x > BUSY]
        if bad:
            notes.append(
                f"{name}: {len(bad)} of {len(shares)} runs disturbed, other processes used up "
                f"to {max(bad):.0%} of a core during the measurement"
            )
    return notes


# -- benchmarks -------------------------------------------------------------------------


def both_sides(args: argparse.Namespace, scenario: str, params: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """`scenario` with `params` against a fresh wsserver and a fresh reference,
    `args.runs` times each: the results by side ("wsserver", "reference")."""

    def side(kind: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            with running(kind, args.server_src) as server:
                return drive(server, scenario, dict(params))

        return run

    return repeat(args.runs, [("wsserver", side("wsserver")), ("reference", side("reference"))])


def bench_fanout(args: argparse.Namespace, sustained: bool) -> Report:
    if sustained:
        publishes = round(args.publish_rate * args.seconds)
        rate = args.publish_rate
    else:
        publishes, rate = args.publishes, 0.0
    params = {
        "connections": args.connections,
        "publishes": publishes,
        "rate": rate,
        "payload_bytes": args.payload_bytes,
        "timeout": args.timeout,
    }

    res = both_sides(args, "fanout", params)
    ws, ref = res["wsserver"], res["reference"]
    cpu_ws, cpu_ref = med(ws, "server_cpu_us_per_msg"), med(ref, "server_cpu_us_per_msg")
    ratio = cpu_ws / cpu_ref if cpu_ws and cpu_ref else None
    rows = [
        Row("server CPU per delivered message", "µs", cpu_ws, cpu_ref,
            "ratio ≤ 0.50", met=None if ratio is None else ratio <= 0.5, digits=2),
        Row("  of which in the kernel (sends, loopback TCP)", "µs", med(ws, "server_kernel_us_per_msg"),
            med(ref, "server_kernel_us_per_msg"), digits=2),
        Row("delivered messages/s", "", med(ws, "msgs_per_s"), med(ref, "msgs_per_s")),
        Row("first publish → last delivery", "ms", _ms(med(ws, "elapsed_s")), _ms(med(ref, "elapsed_s"))),
        Row("one publish → its last delivery p50", "ms", med(ws, "publish_to_last_p50_ms"),
            med(ref, "publish_to_last_p50_ms")),
        Row("one publish → its last delivery p99", "ms", med(ws, "publish_to_last_p99_ms"),
            med(ref, "publish_to_last_p99_ms")),
        Row("server CPU share", "% of a core", _pct(med(ws, "server_cpu_share")),
            _pct(med(ref, "server_cpu_share")), ratio=False, digits=0),
        Row("load generator CPU share", "% of a core", _pct(med(ws, "client_cpu_share")),
            _pct(med(ref, "client_cpu_share")), ratio=False, digits=0),
    ]  # fmt: skip
    notes = _problems(
        res,
        lambda r: r["delivered"] != r["expected"] or r["timed_out"],
        lambda r: (f"stopped at the {args.timeout:g} s timeout: {r['published']} of {r['publishes']} "
                   f"publishes sent, {r['delivered']:,} of {r['connections'] * r['published']:,} "
                   "of their messages delivered (figures are over what was delivered)"),
    )  # fmt: skip
    if sustained:
        for name, rs in res.items():
            lag = max((r["publish_lag_s"] for r in rs), default=0.0)
            if lag > 0.1:
                notes.append(
                    f"{name} did not keep the rate: its publishes fell behind the schedule by up "
                    f"to {lag:.1f} s (each publish waits for the previous one's reply)"
                )
        title = (f"Fan-out, sustained: {args.connections:,} connections, {args.publish_rate:g} publishes/s "
                 f"for {args.seconds:g} s (~{args.payload_bytes} B frames)")  # fmt: skip
        cmd = (f"python benchmarks/bench.py sustained --connections {args.connections} "
               f"--publish-rate {args.publish_rate:g} --seconds {args.seconds:g} --runs {args.runs}")  # fmt: skip
    else:
        title = (f"Fan-out, burst: {args.connections:,} connections, {publishes} publishes "
                 f"(~{args.payload_bytes} B frames)")  # fmt: skip
        cmd = (f"python benchmarks/bench.py fanout --connections {args.connections} "
               f"--publishes {publishes} --runs {args.runs}")  # fmt: skip
    return Report(
        "sustained" if sustained else "fanout",
        title,
        _cmd(cmd, args),
        rows,
        notes + _busy_notes(res),
        res,
    )


def drive_dm(server: Server, fsync: str, params: dict[str, Any]) -> dict[str, Any]:
    """The `dm` scenario against `server`; for wsserver with fsync="always" also
    its journal's fsyncs (`drive_with_fsyncs`), which decide the p99 there."""
    if server.kind == "wsserver" and fsync == "always":
        return drive_with_fsyncs(server, "dm", dict(params))
    return drive(server, "dm", dict(params))


def bench_dm(args: argparse.Namespace) -> Report:
    closed = {
        "pairs": args.pairs,
        "window": args.window,
        "rate": 0,
        "duration": args.seconds,
        "warmup": 2.0,
        "timeout": args.timeout,
    }
    opened = {**closed, "rate": args.rate, "window": 0}

    def side(kind: str, fsync: str, params: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            with running(kind, args.server_src, fsync) as server:
                return drive_dm(server, fsync, params)

        return run

    res = repeat(
        args.runs,
        [
            ("ws_interval", side("wsserver", "interval", closed)),
            ("reference", side("reference", "interval", closed)),
            ("ws_always", side("wsserver", "always", closed)),
            ("ws_always_open", side("wsserver", "always", opened)),
            ("reference_open", side("reference", "interval", opened)),
        ],
    )
    wi, ref, wa = res["ws_interval"], res["reference"], res["ws_always"]
    wo, ro = res["ws_always_open"], res["reference_open"]
    rate_wi, rate_ref = med(wi, "msgs_per_s"), med(ref, "msgs_per_s")
    rate_wa = med(wa, "msgs_per_s")
    open_rate, open_p99 = med(wo, "msgs_per_s"), med(wo, "p99_ms")
    rows = [
        Row("closed loop, fsync=interval: messages/s", "", rate_wi, rate_ref, "ratio ≥ 1.00",
            met=None if not (rate_wi and rate_ref) else rate_wi / rate_ref >= 1.0, digits=0),
        Row("  p50 send→deliver", "ms", med(wi, "p50_ms"), med(ref, "p50_ms")),
        Row("  p99 send→deliver", "ms", med(wi, "p99_ms"), med(ref, "p99_ms")),
        Row("  server CPU per message", "µs", med(wi, "server_cpu_us_per_msg"),
            med(ref, "server_cpu_us_per_msg")),
        Row("closed loop, fsync=always: messages/s", "", rate_wa, None, "≥ 5,000", ratio=False,
            met=None if rate_wa is None else rate_wa >= 5000, digits=0),
        Row("  p50 send→deliver", "ms", med(wa, "p50_ms"), None, ratio=False),
        Row("  p99 send→deliver", "ms", med(wa, "p99_ms"), None, ratio=False),
        Row("  server CPU per message", "µs", med(wa, "server_cpu_us_per_msg"), None, ratio=False),
        Row(f"open loop at {args.rate:g}/s, fsync=always: messages/s", "", open_rate,
            med(ro, "msgs_per_s"), f"≥ {0.98 * args.rate:,.0f}", ratio=False,
            met=None if open_rate is None else open_rate >= 0.98 * args.rate, digits=0),
        Row("  p50 send→deliver", "ms", med(wo, "p50_ms"), med(ro, "p50_ms"), ratio=False, digits=2),
        Row("  p99 send→deliver", "ms", open_p99, med(ro, "p99_ms"), "< 10 ms", ratio=False,
            met=None if open_p99 is None else open_p99 < 10, digits=2),
        Row("  server CPU per message", "µs", med(wo, "server_cpu_us_per_msg"),
            med(ro, "server_cpu_us_per_msg"), ratio=False),
        Row("  journal fsyncs in the run", "", med(wo, "fsyncs"), None, ratio=False, digits=0),
        Row("  journal fsyncs over 10 ms in the run", "", med(wo, "fsyncs_over_10ms"), None,
            ratio=False, digits=0),
        Row("  longest journal fsync, under", "ms", med(wo, "fsync_longest_under_ms"), None,
            ratio=False, digits=0),
    ]  # fmt: skip
    notes = [
        "fsync=always: a message is delivered only after the fsync of its group commit, so "
        "an fsync that stalls holds every message sent meanwhile (fsyncs counted from "
        "wsserver's /metrics over the whole run: connecting, warm-up, window, drain)",
        f"closed loop: every user keeps {args.window} message(s) unacknowledged, so "
        f"{2 * args.pairs * args.window:,} are in flight and the latency is mostly queueing; "
        "the open-loop reference column is the websockets relay at the same rate (no journal), "
        "for scale"
    ]
    notes += _problems(
        {"wsserver open loop": wo, "reference open loop": ro},
        lambda r: r["missing_after_drain"] > 0,
        lambda r: (f"{r['missing_after_drain']:,} of the {r['window_sent']:,} messages sent in "
                   "the window were not delivered 5 s after it (counted as infinitely late)"),
    )  # fmt: skip
    title = f"Direct messages: {args.pairs:,} pairs ({2 * args.pairs:,} users), {args.seconds:g} s per run"
    cmd = (f"python benchmarks/bench.py dm --pairs {args.pairs} --window {args.window} "
           f"--rate {args.rate:g} --seconds {args.seconds:g} --runs {args.runs}")  # fmt: skip
    return Report("dm", title, _cmd(cmd, args), rows, notes + _busy_notes(res), res)


def bench_idle(args: argparse.Namespace) -> Report:
    params = {"connections": args.connections, "warm": 100, "settle": 3.0, "timeout": args.timeout}

    res = both_sides(args, "idle", params)
    ws, ref = res["wsserver"], res["reference"]
    kb_ws, kb_ref = _kb(med(ws, "kb_per_conn")), _kb(med(ref, "kb_per_conn"))
    rows = [
        Row("server RSS per idle connection", "KB", kb_ws, kb_ref, "wsserver ≤ 12 KB",
            met=None if kb_ws is None else kb_ws <= 12.0),
        Row("server RSS with all connections", "MB", _mb(med(ws, "rss_after_kb")),
            _mb(med(ref, "rss_after_kb"))),
        Row("connections opened per second", "", med(ws, "connects_per_s"), med(ref, "connects_per_s"),
            digits=0),
    ]  # fmt: skip
    notes = ["KB and MB of 1,000 and 1,000,000 bytes (VmRSS is in KiB); 100 connections are "
             "opened first and not counted, so one-time costs stay out"]  # fmt: skip
    notes += _problems(res, lambda r: r["held_at_end"] != r["connections"],
                       lambda r: f"{r['held_at_end']} of {r['connections']} still open at the end")  # fmt: skip
    title = f"Idle connections: {args.connections:,} authenticated (JWT in the query for wsserver)"
    cmd = f"python benchmarks/bench.py idle --connections {args.connections} --runs {args.runs}"
    return Report("idle", title, _cmd(cmd, args), rows, notes, res)


def bench_handshake(args: argparse.Namespace) -> Report:
    params = {
        "connections": args.connections,
        "concurrency": args.concurrency,
        "timeout": args.timeout,
    }

    res = both_sides(args, "handshake", params)
    ws, ref = res["wsserver"], res["reference"]
    c_ws, c_ref = med(ws, "conns_per_s"), med(ref, "conns_per_s")
    rows = [
        Row("connections/s (open, greeting, close)", "", c_ws, c_ref, "ratio ≥ 1.00",
            met=None if not (c_ws and c_ref) else c_ws / c_ref >= 1.0, digits=0),
        Row("server CPU per connection", "µs", med(ws, "server_cpu_us_per_conn"),
            med(ref, "server_cpu_us_per_conn"), digits=0),
        Row("connect → greeting p50", "ms", med(ws, "connect_p50_ms"), med(ref, "connect_p50_ms"),
            digits=2),
        Row("connect → greeting p99", "ms", med(ws, "connect_p99_ms"), med(ref, "connect_p99_ms"),
            digits=2),
    ]  # fmt: skip
    notes = _problems(res, lambda r: r["errors"] > 0, lambda r: f"{r['errors']} connections failed")
    title = (f"Handshakes: {args.connections:,} connections opened and closed, "
             f"{args.concurrency} at a time (wsserver verifies a JWT, the reference none)")  # fmt: skip
    cmd = (f"python benchmarks/bench.py handshake --connections {args.connections} "
           f"--concurrency {args.concurrency} --runs {args.runs}")  # fmt: skip
    return Report("handshake", title, _cmd(cmd, args), rows, notes + _busy_notes(res), res)


def _recovery_data(args: argparse.Namespace) -> tuple[Path, str]:
    """The cached data directory for `args.records` records (made once)."""
    cache = (
        Path(args.cache_dir)
        / f"recovery-{args.records}-{args.journal_records}-{_format_hash(args)}"
    )
    done = cache / "made.txt"
    if not done.exists():
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        log(f"  writing {args.records:,} records to {cache} (once; cached) ...")
        out = subprocess.run(
            [sys.executable, str(RECOVERY_DATA), str(cache / "data"), "--total", str(args.records),
             "--journal", str(args.journal_records)],
            capture_output=True, cwd=cache, timeout=3600,
            env=_wsserver_env(args.server_src, "never", "warning"),
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(
                f"recovery_data.py failed:\n{out.stderr.decode(errors='replace')[-3000:]}"
            )
        done.write_text(out.stdout.decode())
    return cache / "data", done.read_text().strip()


def _format_hash(args: argparse.Namespace) -> str:
    """A short hash of the wsserver sources that decide the data format (core/, storage/):
    cached data made by another version is not reused."""
    import hashlib
    import importlib.util

    if args.server_src:
        pkg = Path(args.server_src) / "wsserver"
    else:
        spec = importlib.util.find_spec("wsserver")
        assert spec is not None and spec.origin is not None
        pkg = Path(spec.origin).parent
    h = hashlib.sha256()
    for path in sorted([*pkg.glob("core/*.py"), *pkg.glob("storage/*.py")]):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:8]


def bench_recovery(args: argparse.Namespace) -> Report:
    data, made = _recovery_data(args)
    log(f"  {made}")
    results = []
    for run in range(args.runs):
        workdir = tempfile.mkdtemp(prefix="wsbench-rec-")
        try:
            target = Path(workdir) / "data"
            shutil.copytree(data, target)
            wait_quiet()
            results.append(_time_startup(args, target, workdir))
            log(f"  run {run + 1}/{args.runs}: {json.dumps(results[-1])}")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    t = med(results, "listening_s")
    rows = [
        Row("exec → \"listening on\"", "s", t, None, "< 10 s", ratio=False,
            met=None if t is None else t < 10, digits=2),
        Row("exec → \"state loaded\"", "s", med(results, "loaded_s"), None, ratio=False, digits=2),
        Row("server RSS once listening", "MB", _mb(med(results, "rss_kb")), None, ratio=False, digits=0),
        Row("server CPU until listening", "s", med(results, "cpu_s"), None, ratio=False, digits=2),
    ]  # fmt: skip
    notes = [f"data: {made} (page cache warm: the directory was just copied)"]
    title = (f"Recovery: start-up from a snapshot + journal of {args.records:,} records "
             f"({args.journal_records:,} in the journal)")  # fmt: skip
    cmd = (f"python benchmarks/bench.py recovery --records {args.records} "
           f"--journal-records {args.journal_records} --runs {args.runs}")  # fmt: skip
    raw = {"wsserver": results}
    return Report("recovery", title, _cmd(cmd, args), rows, notes + _busy_notes(raw), raw)


def _time_startup(args: argparse.Namespace, data: Path, workdir: str) -> dict[str, Any]:
    """Start `wsserver serve` on `data` and time it to "listening on" (info log on stderr)."""
    busy0 = _busy_seconds()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsserver", "serve", "--host", HOST, "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir,
        env=_wsserver_env(args.server_src, "interval", "info"),
    )  # fmt: skip
    assert proc.stderr is not None
    loaded = listening = None
    buf = b""
    deadline = t0 + args.timeout
    try:
        while listening is None:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(f"no 'listening on' within {args.timeout} s")
            ready, _, _ = select.select([proc.stderr], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                raise RuntimeError(
                    f"wsserver exited ({proc.wait()}):\n{buf.decode(errors='replace')[-2000:]}"
                )
            now = time.perf_counter()
            buf += chunk
            if loaded is None and b"state loaded" in buf:
                loaded = now - t0
            if b"listening on" in buf:
                listening = now - t0
        rss = proc_rss_kb(proc.pid)
        cpu = proc_cpu(proc.pid)
        other = (_busy_seconds() - busy0 - cpu) / listening
    finally:
        proc.kill()  # nothing to keep: the copy is thrown away
        proc.wait(10)
    return {
        "listening_s": listening,
        "loaded_s": loaded,
        "rss_kb": rss,
        "cpu_s": cpu,
        "other_cpu_share": other,
    }


# -- helpers -----------------------------------------------------------------------------


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def _kb(kib: float | None) -> float | None:
    """KiB (what /proc reports as kB) to KB of 1,000 bytes."""
    return None if kib is None else kib * 1.024


def _mb(kb: float | None) -> float | None:
    return None if kb is None else kb * 1.024 / 1000


def _problems(
    res: dict[str, list[dict[str, Any]]],
    bad: Callable[[dict[str, Any]], bool],
    say: Callable[[dict[str, Any]], str],
) -> list[str]:
    return [
        f"{name}, run {i + 1}: {say(r)}"
        for name, rs in res.items()
        for i, r in enumerate(rs)
        if bad(r)
    ]


def _cmd(cmd: str, args: argparse.Namespace) -> str:
    if args.server_src:
        cmd += f" --server-src {args.server_src}"
    return cmd


BENCHES: dict[str, Callable[[argparse.Namespace], Report]] = {
    "fanout": lambda a: bench_fanout(a, sustained=False),
    "sustained": lambda a: bench_fanout(a, sustained=True),
    "dm": bench_dm,
    "idle": bench_idle,
    "handshake": bench_handshake,
    "recovery": bench_recovery,
}



def fanout_target(p: argparse.ArgumentParser) -> None:
    """`--connections`: the receivers of every publish (fanout, sustained)."""
    p.add_argument(
        "--connections",
        type=int,
        default=5000,
        help="WebSocket connections receiving every publish (default %(default)s)",
    )


def frame_size(p: argparse.ArgumentParser) -> None:
    """`--payload-bytes`: the size of each delivered frame (fanout, sustained)."""
    p.add_argument(
        "--payload-bytes",
        type=int,
        default=150,
        help="size of each delivered frame in bytes (default %(default)s)",
    )


def common(p: argparse.ArgumentParser, runs: int = 3, timeout: float = 120) -> None:
    """The options every benchmark takes (here and in cluster_bench.py)."""
    p.add_argument(
        "--runs",
        type=int,
        default=runs,
        help=f"runs per side; medians are shown (default {runs})",
    )
    p.add_argument(
        "--markdown", action="store_true", help="also print markdown for docs/BENCHMARKS.md"
    )
    p.add_argument(
        "--server-src", metavar="DIR", help="import wsserver from DIR (e.g. an exported commit)"
    )
    p.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per run (default {timeout:g})"
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT,
        metavar="S",
        help="before each run, wait up to S seconds for other processes to go quiet "
        f"(default {QUIET_WAIT:g}; 0 = do not wait)",
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")

    p = sub.add_parser("fanout", help="burst fan-out vs broadcast()")
    fanout_target(p)
    p.add_argument(
        "--publishes",
        type=int,
        default=100,
        help="publishes, sent one after the other (default %(default)s)",
    )
    frame_size(p)
    common(p, timeout=300)
    p = sub.add_parser("sustained", help="fan-out at a fixed publish rate")
    fanout_target(p)
    p.add_argument(
        "--publish-rate", type=float, default=20, help="publishes per second (default %(default)s)"
    )
    p.add_argument(
        "--seconds", type=float, default=10, help="seconds of publishing (default %(default)s)"
    )
    frame_size(p)
    common(p, timeout=300)
    p = sub.add_parser("dm", help="direct messages vs a websockets relay")
    p.add_argument(
        "--pairs",
        type=int,
        default=2500,
        help="pairs of users (two connections each) (default %(default)s)",
    )
    p.add_argument(
        "--window", type=int, default=1, help="unacknowledged messages per user (closed loop)"
    )
    p.add_argument("--rate", type=float, default=5000, help="messages/s of the open-loop run")
    p.add_argument(
        "--seconds",
        type=float,
        default=10,
        help="seconds measured per run, after 2 s of warm-up (default %(default)s)",
    )
    common(p)
    p = sub.add_parser("idle", help="memory per idle connection")
    p.add_argument(
        "--connections",
        type=int,
        default=15000,
        help="idle connections to hold (default %(default)s)",
    )
    common(p, timeout=300)
    p = sub.add_parser("handshake", help="connections per second")
    p.add_argument(
        "--connections",
        type=int,
        default=10000,
        help="connections to open and close (default %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="connections in progress at once (default %(default)s)",
    )
    common(p, timeout=300)
    p = sub.add_parser("recovery", help="start-up time from 1M records")
    p.add_argument(
        "--records",
        type=int,
        default=1_000_000,
        help="records in snapshot + journal (default %(default)s)",
    )
    p.add_argument(
        "--journal-records",
        type=int,
        default=100_000,
        help="of which in the journal after the snapshot (default %(default)s)",
    )
    p.add_argument(
        "--cache-dir",
        default=os.path.join(tempfile.gettempdir(), "wsserver-bench"),
        help="where the generated data directory is kept between runs (default %(default)s)",
    )
    common(p, timeout=300)
    p = sub.add_parser("all", help="every benchmark at its default size")
    common(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    if not sys.platform.startswith("linux"):
        print("bench.py needs Linux (/proc)", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    global QUIET_WAIT
    QUIET_WAIT = args.quiet_wait
    _raise_nofile()
    if args.bench == "all":
        names = list(BENCHES)
        reports = []
        for name in names:
            sub_args = parser().parse_args(
                [name, "--runs", str(args.runs), "--quiet-wait", str(args.quiet_wait)]
                + (["--server-src", args.server_src] if args.server_src else [])
            )
            log(f"{name} ...")
            reports.append(BENCHES[name](sub_args))
            print_table(reports[-1])
    else:
        log(f"{args.bench} ...")
        reports = [BENCHES[args.bench](args)]
        print_table(reports[0])
    if args.markdown:
        print()
        print(f"Date: {datetime.date.today().isoformat()}. Machine: {machine()}.")
        print()
        for rep in reports:
            print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
