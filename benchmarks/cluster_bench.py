"""Issue 18 benchmarks: wsserver's cluster mode against one process, in the same run.

The machinery is bench.py's (servers started fresh for every run, the
picows load generator, server CPU from /proc, medians of `--runs`, the
quiet-machine wait); what is added here is the cluster: a real
`redis-server` per run (tests/redis_server.py: its own port and directory,
`appendonly yes`, `appendfsync everysec`), and the nodes on it. The load
generator connects connection i to the i-th node's port (round robin) and
sums the CPU of every server process; Redis's CPU is shown apart.

Benchmarks (subcommands; `all` runs both):

  fanout  N connections (default 5,000), 100 publishes of ~150 bytes to all
          (`POST /api/publish {all: true}` to one node, one after the other,
          from a process of their own: `--publisher loop` sends them from the
          clients' event loop as bench.py does, where each publish waits behind
          the frames being read, so the load generator's reading paces them;
          read by counting_receiver.py, raw reads counted by the frames' one
          length: `--receiver frames` reads them with picows, a callback per frame),
          against
          - one `wsserver serve` process (no Redis),
          - `serve --workers 2`: one port (SO_REUSEPORT spreads the
            connections), two worker processes, nodes of one cluster
            (target: delivered messages/s >= 1.6 x one process),
          - two `wsserver serve` nodes on their own ports, the connections
            split between them.
          Server CPU per delivered message (summed over the workers/nodes).
  dm      direct messages in an open loop at --rate (default 2,000/s): of each
          pair of users only the first sends, to the second. Two nodes, the
          senders on node A and their receivers on node B (every message
          crosses Redis: target p99 send->deliver < 10 ms), against the same
          load on one node of a cluster (the same Redis log, no crossing), and
          for scale on one process without Redis (storage.fsync "interval").

Usage:
  python benchmarks/cluster_bench.py all --runs 3 --markdown
  python benchmarks/cluster_bench.py fanout --connections 200 --publishes 5 --runs 1 --quiet-wait 0
  python benchmarks/cluster_bench.py dm --pairs 100 --rate 500 --seconds 1 --runs 1 --quiet-wait 0

Needs what bench.py needs, and Debian's redis-server. Linux only. Run from
the checkout (tests/redis_server.py is imported from it).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

import bench  # noqa: E402
from bench import HOST, Report, Row, Server, med, running  # noqa: E402

from tests.redis_server import RedisServer  # noqa: E402

# -- the cluster ------------------------------------------------------------------------


@contextlib.contextmanager
def redis() -> Iterator[RedisServer]:
    """A fresh redis-server (AOF, appendfsync everysec) in its own directory."""
    workdir = tempfile.mkdtemp(prefix="wsbench-redis-")
    server = RedisServer(Path(workdir) / "redis", appendfsync="everysec")
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@attrs.define
class Nodes:
    """Several `wsserver serve` nodes of one cluster, driven as one server by
    `bench.drive`: the clients spread over their ports, their CPU summed."""

    servers: list[Server]
    kind: str = "wsserver"

    @property
    def port(self) -> int:
        return self.servers[0].port  # where the HTTP publishes go

    @property
    def pid(self) -> int:
        return self.servers[0].pid

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def pids(self) -> list[int]:
        return [pid for s in self.servers for pid in s.pids()]

    def exited(self) -> bool:
        return any(s.exited() for s in self.servers)

    def stderr_tail(self, n: int = 20) -> str:
        return "\n".join(f"[node {i + 1}]\n{s.stderr_tail(n)}" for i, s in enumerate(self.servers))


def wait_nodes(port: int, count: int, timeout: float = bench.START_TIMEOUT) -> None:
    """Until the node at `port` lists `count` live nodes (`GET /api/nodes`): each
    has joined the cluster, so a run does not start while one is still starting."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        req = urllib.request.Request(
            f"http://{HOST}:{port}/api/nodes", headers={"X-API-Key": bench.API_KEY}
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as r:
                body = json.loads(r.read())
            seen = len(body.get("data", body)["nodes"])
            if seen >= count:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"only {seen} of {count} nodes joined within {timeout:g} s")


def node_env(redis_url: str, name: str | None = None) -> dict[str, str]:
    env = {"WSSERVER_CLUSTER_REDIS_URL": redis_url}
    if name:
        env["WSSERVER_CLUSTER_NODE_NAME"] = name
    return env


@contextlib.contextmanager
def workers(args: argparse.Namespace, count: int) -> Iterator[tuple[Server, int]]:
    """`serve --workers count` on a fresh Redis: the server and Redis's pid."""
    with redis() as r:
        assert r.proc is not None
        with running("wsserver", args.server_src, extra_env=node_env(r.url),
                     extra_args=["--workers", str(count)]) as server:  # fmt: skip
            wait_nodes(server.port, count)
            yield server, r.proc.pid


@contextlib.contextmanager
def nodes(args: argparse.Namespace, count: int) -> Iterator[tuple[Nodes, int]]:
    """`count` separate nodes (own ports) on a fresh Redis: them and Redis's pid."""
    with redis() as r, contextlib.ExitStack() as stack:
        assert r.proc is not None
        servers = [
            stack.enter_context(
                running("wsserver", args.server_src, extra_env=node_env(r.url, f"n{i + 1}"))
            )
            for i in range(count)
        ]
        for s in servers:
            wait_nodes(s.port, count)
        yield Nodes(servers), r.proc.pid


Side = Callable[[], dict[str, Any]]


def on_one_process(args: argparse.Namespace, scenario: str, params: dict[str, Any]) -> Side:
    def run() -> dict[str, Any]:
        with running("wsserver", args.server_src) as server:
            return bench.drive(server, scenario, dict(params))

    return run


def on_cluster(
    make: Callable[[argparse.Namespace, int], contextlib.AbstractContextManager[tuple[Any, int]]],
    args: argparse.Namespace,
    count: int,
    scenario: str,
    params: dict[str, Any],
) -> Side:
    def run() -> dict[str, Any]:
        with make(args, count) as (server, redis_pid):
            return bench.drive(server, scenario, {**params, "aux_pids": [redis_pid]})

    return run


# -- benchmarks -------------------------------------------------------------------------


def bench_fanout(args: argparse.Namespace) -> Report:
    params = {
        "connections": args.connections,
        "publishes": args.publishes,
        "rate": 0.0,
        "payload_bytes": args.payload_bytes,
        "timeout": args.timeout,
        "publisher": args.publisher,
        "receiver": args.receiver,
    }
    res = bench.repeat(
        args.runs,
        [
            ("one", on_one_process(args, "fanout", params)),
            ("workers", on_cluster(workers, args, 2, "fanout", params)),
            ("nodes", on_cluster(nodes, args, 2, "fanout", params)),
        ],
    )
    one, wk, nd = res["one"], res["workers"], res["nodes"]
    rate_one, rate_wk = med(one, "msgs_per_s"), med(wk, "msgs_per_s")
    rows = [
        Row("--workers 2: delivered messages/s", "", rate_wk, rate_one, "ratio ≥ 1.60",
            met=None if not (rate_wk and rate_one) else rate_wk / rate_one >= 1.6, digits=0),
        Row("  server CPU per delivered message (both workers)", "µs",
            med(wk, "server_cpu_us_per_msg"), med(one, "server_cpu_us_per_msg"), digits=2),
        Row("  Redis CPU per delivered message", "µs", med(wk, "aux_cpu_us_per_msg"), None,
            ratio=False, digits=2),
        Row("  first publish → last delivery", "ms", bench._ms(med(wk, "elapsed_s")),
            bench._ms(med(one, "elapsed_s"))),
        Row("  one publish → its last delivery p99", "ms", med(wk, "publish_to_last_p99_ms"),
            med(one, "publish_to_last_p99_ms")),
        Row("  server CPU share", "% of a core", bench._pct(med(wk, "server_cpu_share")),
            bench._pct(med(one, "server_cpu_share")), ratio=False, digits=0),
        Row("  load generator CPU share", "% of a core", bench._pct(med(wk, "client_cpu_share")),
            bench._pct(med(one, "client_cpu_share")), ratio=False, digits=0),
        Row("  load generator CPU per delivered message", "µs", med(wk, "client_cpu_us_per_msg"),
            med(one, "client_cpu_us_per_msg"), digits=2),
        Row("  frames per read (≈ frames per server write)", "", med(wk, "frames_per_read"),
            med(one, "frames_per_read"), ratio=False, digits=2),
        Row("2 nodes, 2 ports: delivered messages/s", "", med(nd, "msgs_per_s"), rate_one,
            digits=0),
        Row("  server CPU per delivered message (both nodes)", "µs",
            med(nd, "server_cpu_us_per_msg"), med(one, "server_cpu_us_per_msg"), digits=2),
        Row("  Redis CPU per delivered message", "µs", med(nd, "aux_cpu_us_per_msg"), None,
            ratio=False, digits=2),
        Row("  one publish → its last delivery p99", "ms", med(nd, "publish_to_last_p99_ms"),
            med(one, "publish_to_last_p99_ms")),
    ]  # fmt: skip
    notes = [
        "the publishes go to one node (for --workers, to the worker the kernel picks); it "
        "delivers to its own connections and hands the frame to the bus once, the other "
        "node delivers it to its own",
        "the 2 cores are shared by the server processes, Redis and the load generator",
        "the publishes come from "
        + ("a process of their own (the load generator's CPU includes it)" if args.publisher == "process"
           else "the receiving clients' event loop (each waits behind the frames being read)"),
        "the clients "
        + ("count bytes (counting_receiver.py: raw reads, every frame's header checked for the "
           "one length learnt from the warm-up publish; a run is valid only if each connection "
           "got exactly the publishes, nothing left over)" if args.receiver == "count"
           else "read every frame with picows (a Python callback per frame)"),
    ]
    notes += bench._problems(
        res,
        lambda r: r["delivered"] != r["expected"] or r["timed_out"] or r.get("receiver_invalid"),
        lambda r: (
            f"{r['delivered']:,} of {r['expected']:,} messages delivered"
            + (" (timed out)" if r["timed_out"] else "")
            + (f", {r['receiver_invalid']:,} connections with a wrong count, leftover bytes or "
               "a bad frame" if r.get("receiver_invalid") else "")
        ),
    )
    title = (f"Cluster fan-out, burst: {args.connections:,} connections, {args.publishes} "
             f"publishes (~{args.payload_bytes} B frames), cluster vs one process")  # fmt: skip
    cmd = (f"python benchmarks/cluster_bench.py fanout --connections {args.connections} "
           f"--publishes {args.publishes} --runs {args.runs}"
           + (" --publisher loop" if args.publisher == "loop" else "")
           + (" --receiver frames" if args.receiver == "frames" else ""))  # fmt: skip
    return Report("cluster-fanout", title, bench._cmd(cmd, args), rows,
                  notes + bench._busy_notes(res), res, columns=("cluster", "one process"))  # fmt: skip


def bench_dm(args: argparse.Namespace) -> Report:
    params = {
        "pairs": args.pairs,
        "window": 0,
        "rate": args.rate,
        "one_way": True,
        "duration": args.seconds,
        "warmup": 2.0,
        "timeout": args.timeout,
    }
    res = bench.repeat(
        args.runs,
        [
            ("two_nodes", on_cluster(nodes, args, 2, "dm", params)),
            ("one_node", on_cluster(nodes, args, 1, "dm", params)),
            ("no_redis", on_one_process(args, "dm", params)),
        ],
    )
    two, one, solo = res["two_nodes"], res["one_node"], res["no_redis"]
    rate2, p99 = med(two, "msgs_per_s"), med(two, "p99_ms")
    rows = [
        Row("messages/s delivered", "", rate2, med(one, "msgs_per_s"), f"≥ {0.98 * args.rate:,.0f}",
            ratio=False, met=None if rate2 is None else rate2 >= 0.98 * args.rate, digits=0),
        Row("p50 send→deliver", "ms", med(two, "p50_ms"), med(one, "p50_ms"), digits=2),
        Row("p99 send→deliver", "ms", p99, med(one, "p99_ms"), "< 10 ms",
            met=None if p99 is None else p99 < 10, digits=2),
        Row("max send→deliver", "ms", med(two, "max_ms"), med(one, "max_ms"), digits=2),
        Row("server CPU per message (all nodes)", "µs", med(two, "server_cpu_us_per_msg"),
            med(one, "server_cpu_us_per_msg")),
        Row("Redis CPU per message", "µs", med(two, "aux_cpu_us_per_msg"),
            med(one, "aux_cpu_us_per_msg")),
    ]  # fmt: skip
    notes = [
        f"{args.pairs:,} pairs of users; the first of each pair sends `send_message` to the "
        "second on a fixed schedule (round robin); with two nodes the senders are on node A, "
        "the receivers on node B",
        'for scale, one process without Redis (storage.fsync "interval"), same load: '
        f"p50 {bench._fmt(med(solo, 'p50_ms'), 2)} ms, p99 {bench._fmt(med(solo, 'p99_ms'), 2)} ms, "
        f"server CPU {bench._fmt(med(solo, 'server_cpu_us_per_msg'))} µs per message",
        "Redis with appendonly yes, appendfsync everysec (docs/CLUSTER.md: loses up to about "
        "one second if Redis crashes)",
    ]
    notes += bench._problems(
        res,
        lambda r: r["missing_after_drain"] > 0,
        lambda r: (f"{r['missing_after_drain']:,} of the {r['window_sent']:,} messages sent in "
                   "the window were not delivered 5 s after it (counted as infinitely late)"),
    )  # fmt: skip
    title = (f"Cluster direct messages: {args.rate:g}/s open loop for {args.seconds:g} s, "
             "node A → node B vs one node")  # fmt: skip
    cmd = (f"python benchmarks/cluster_bench.py dm --pairs {args.pairs} --rate {args.rate:g} "
           f"--seconds {args.seconds:g} --runs {args.runs}")  # fmt: skip
    return Report("cluster-dm", title, bench._cmd(cmd, args), rows,
                  notes + bench._busy_notes(res), res, columns=("2 nodes", "1 node"))  # fmt: skip


BENCHES: dict[str, Callable[[argparse.Namespace], Report]] = {
    "fanout": bench_fanout,
    "dm": bench_dm,
}


def fanout_options(p: argparse.ArgumentParser) -> None:
    bench.fanout_target(p)
    p.add_argument("--publishes", type=int, default=100,
                   help="publishes, sent one after the other (default %(default)s)")  # fmt: skip
    bench.frame_size(p)
    p.add_argument("--publisher", choices=["process", "loop"], default="process",
                   help="where the publishes come from: a process of their own (default), or "
                        "the receiving clients' event loop (as bench.py's fanout)")  # fmt: skip
    p.add_argument("--receiver", choices=["count", "frames"], default="count",
                   help="how the clients read: raw reads counted by the frames' one length "
                        "(default; counting_receiver.py), or picows, a callback per frame "
                        "(as bench.py's fanout)")  # fmt: skip


def dm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pairs", type=int, default=1000, help="pairs of users (default %(default)s)")
    p.add_argument("--rate", type=float, default=2000, help="messages/s sent (default %(default)s)")
    p.add_argument("--seconds", type=float, default=5,
                   help="seconds measured per run, after 2 s of warm-up (default %(default)s)")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="cluster_bench.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    p = sub.add_parser("fanout", help="fan-out: --workers 2 and 2 nodes vs one process")
    fanout_options(p)
    bench.common(p)
    p = sub.add_parser("dm", help="direct messages node A → node B vs one node")
    dm_options(p)
    bench.common(p)
    p = sub.add_parser("all", help="both")
    fanout_options(p)
    dm_options(p)
    bench.common(p)
    return ap


def main(argv: list[str] | None = None) -> int:
    if not sys.platform.startswith("linux"):
        print("cluster_bench.py needs Linux (/proc)", file=sys.stderr)
        return 2
    args = parser().parse_args(argv)
    bench.QUIET_WAIT = args.quiet_wait
    bench._raise_nofile()
    names = list(BENCHES) if args.bench == "all" else [args.bench]
    reports = []
    for name in names:
        bench.log(f"{name} ...")
        reports.append(BENCHES[name](args))
        bench.print_table(reports[-1])
    if args.markdown:
        print()
        print(f"Date: {datetime.date.today().isoformat()}. Machine: {bench.machine()}.")
        print()
        for rep in reports:
            print(bench.markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
