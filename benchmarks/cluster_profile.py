"""Where a cluster's fan-out spends its time: cluster_bench.py's fan-out on two
nodes (own ports), each node profiled over the measured window only.

Each node runs with benchmarks/profile_hook on its path (cProfile started and
dumped on SIGUSR2, see there) and/or with `strace -c -f` attached for the
window; the publishes go to node A, node B gets them over the bus. Prints
each node's top functions (cumulative and own time) and syscall counts, so A
and B can be compared per delivered message. Not a benchmark: profiling
slows the nodes down; compare the two nodes, not absolute times.

Usage (under the shared lock):
  python benchmarks/cluster_profile.py --connections 5000 --publishes 200 [--strace] [--no-cprofile]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

import bench  # noqa: E402
import cluster_bench  # noqa: E402


def connections(port: int) -> int:
    with urllib.request.urlopen(f"http://{bench.HOST}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("wsserver_connections{"))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--publishes", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--strace", action="store_true", help="also count syscalls (strace -c -f)")
    ap.add_argument("--no-cprofile", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--publisher", default="process", choices=["process", "loop"],
                    help="where the publishes come from (loadgen.py's fanout; default %(default)s)")
    ap.add_argument("--server-src", default=str(HERE.parent))
    args = ap.parse_args()
    bench._raise_nofile()
    out = Path(tempfile.mkdtemp(prefix="wsprof-"))
    hook = str(HERE / "profile_hook")
    env_extra = {"PYTHONPATH": os.pathsep.join([hook, args.server_src])}
    if not args.no_cprofile:
        env_extra["WSBENCH_PROFILE"] = str(out / "node")
    params: dict[str, Any] = {"connections": args.connections, "publishes": args.publishes, "rate": 0.0,
                              "payload_bytes": 150, "timeout": 120,
                              "publisher": args.publisher}  # fmt: skip
    with cluster_bench.redis() as r, contextlib_exit() as stack:
        servers = [
            stack.enter_context(bench.running(
                "wsserver", args.server_src,
                extra_env={**cluster_bench.node_env(r.url, f"n{i + 1}"), **env_extra}))
            for i in range(args.nodes)
        ]  # fmt: skip
        for s in servers:
            cluster_bench.wait_nodes(s.port, args.nodes)
        nodes = cluster_bench.Nodes(servers)
        result: dict[str, Any] = {}
        t = threading.Thread(target=lambda: result.update(bench.drive(nodes, "fanout", dict(params))))
        t.start()
        while connections(servers[-1].port) < args.connections // args.nodes:
            time.sleep(0.05)
        time.sleep(1.0)  # the warm-up publish
        straces = []
        conns = [connections(s.port) for s in servers]
        cpu0 = [bench.proc_cpu(s.pid) for s in servers]
        for i, s in enumerate(servers):
            if not args.no_cprofile:
                os.kill(s.pid, signal.SIGUSR2)
            if args.strace:
                straces.append(subprocess.Popen(["strace", "-c", "-f", "-o", str(out / f"strace.{i}"),
                                                 "-p", str(s.pid)], stderr=subprocess.DEVNULL))  # fmt: skip
        t.join()
        cpu = [bench.proc_cpu(s.pid) - c for s, c in zip(servers, cpu0, strict=True)]
        for p in straces:
            p.send_signal(signal.SIGINT)
            p.wait()
        if not args.no_cprofile:
            for s in servers:
                os.kill(s.pid, signal.SIGUSR2)
            time.sleep(2)
        print(json.dumps({k: result.get(k) for k in ("msgs_per_s", "server_cpu_us_per_msg",
                                                      "server_kernel_us_per_msg", "elapsed_s")}))  # fmt: skip
        for i, s in enumerate(servers):
            frames = args.publishes * conns[i]
            print(f"\n===== node {'AB'[i] if i < 2 else i} (pid {s.pid}): {cpu[i]:.2f} s CPU over the window, "
                  f"{1e6 * cpu[i] / frames:.2f} µs per frame delivered ({frames:,})")
            prof = out / f"node.{s.pid}.prof"
            if prof.exists():
                st = pstats.Stats(str(prof))
                st.sort_stats("tottime").print_stats(args.top)
                st.sort_stats("cumulative").print_stats(args.top)
            if args.strace:
                print((out / f"strace.{i}").read_text()[:3000])
    print(f"(files in {out})")
    return 0


def contextlib_exit() -> Any:
    import contextlib

    return contextlib.ExitStack()


if __name__ == "__main__":
    sys.exit(main())
