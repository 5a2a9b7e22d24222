"""The issue-18 cluster benchmark still runs: a tiny fan-out against one process,
`serve --workers 2` and two nodes, each cluster on a real redis-server the
benchmark starts itself (tests/redis_server.py), and the picows load generator.

Only that every message arrived on every side, through both workers and both
nodes, and that the table comes out; not the figures.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the harness reads /proc"
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _cluster_bench():
    spec = importlib.util.spec_from_file_location(
        "wsserver_cluster_bench", BENCHMARKS / "cluster_bench.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs classes look their module up
    spec.loader.exec_module(module)
    return module


def test_cluster_fanout_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    module = _cluster_bench()
    module.bench.QUIET_WAIT = 0  # do not wait for an idle machine
    args = module.parser().parse_args(
        ["fanout", "--connections", "20", "--publishes", "5", "--runs", "1", "--timeout", "30"]
    )
    report = module.BENCHES["fanout"](args)
    for side in ("one", "workers", "nodes"):
        (run,) = report.raw[side]
        assert run["delivered"] == run["expected"] == 100, (side, run)
        assert not run["timed_out"]
    for side in ("workers", "nodes"):
        # the publish's node delivered to its own share only: the rest came over the bus
        assert 0 < report.raw[side][0]["reached_per_publish"] < 20, report.raw[side]
    module.bench.print_table(report)
    out = capsys.readouterr().out
    assert "--workers 2: delivered messages/s" in out and "one process" in out
