"""Where a cluster node's CPU goes under cross-node direct messages (issue 18).

Runs cluster_bench.py's `dm` load (node A -> node B on a fresh Redis) once,
with each node under cProfile (`python -m cProfile -o ... -m wsserver serve`),
and prints each node's top functions by own time and by cumulative time, and
the load generator's result (p50/p99, CPU per message; cProfile's overhead
inflates both: compare profiles with each other, not with cluster_bench.py).

Usage:
  flock /tmp/wsbench.lock python benchmarks/cluster_profile_dm.py --pairs 1000 --rate 2000 --seconds 5
  python benchmarks/cluster_profile_dm.py --out /tmp/prof --top 40   # keeps node1.prof, node2.prof
"""

from __future__ import annotations

import argparse
import contextlib
import pstats
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

import bench  # noqa: E402
import cluster_bench  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=2000)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", default="", help="directory for the .prof files (default: a temporary one)")
    ap.add_argument("--server-src", default=None)
    args = ap.parse_args(argv)
    bench._raise_nofile()
    out = Path(args.out or tempfile.mkdtemp(prefix="wsprof-"))
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    real_executable = sys.executable

    class Profiled(str):
        """`sys.executable` for the server's Popen: python -m cProfile -o <file>."""

    def start(*a: Any, **kw: Any) -> bench.Server:
        path = out / f"node{len(paths) + 1}.prof"
        paths.append(path)
        orig = bench.subprocess.Popen

        def popen(cmd: list[str], **pkw: Any) -> Any:
            if cmd[:3] == [real_executable, "-m", "wsserver"]:
                cmd = [real_executable, "-m", "cProfile", "-o", str(path), *cmd[1:]]
            return orig(cmd, **pkw)

        bench.subprocess.Popen = popen  # type: ignore[assignment]
        try:
            return start_orig(*a, **kw)
        finally:
            bench.subprocess.Popen = orig  # type: ignore[assignment]

    start_orig = bench.start_wsserver
    bench.start_wsserver = start  # type: ignore[assignment]
    params = {"pairs": args.pairs, "window": 0, "rate": args.rate, "one_way": True,
              "duration": args.seconds, "warmup": 2.0, "timeout": 60.0}  # fmt: skip
    ns = argparse.Namespace(server_src=args.server_src)
    with cluster_bench.nodes(ns, args.nodes) as (server, redis_pid):
        res = bench.drive(server, "dm", {**params, "aux_pids": [redis_pid]})
    keys = ("msgs_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_msg", "aux_cpu_us_per_msg")
    print({k: res.get(k) for k in keys})
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            print(f"\n===== {path} =====")
            st = pstats.Stats(str(path))
            st.sort_stats("tottime").print_stats(args.top)
            st.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
