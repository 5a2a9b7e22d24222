"""The issue-8 benchmark harness still runs: a tiny fan-out against both servers.

Real processes and sockets (wsserver, the websockets reference server and the
picows load generator), 20 connections and 5 publishes: a few seconds. The
figures themselves are not checked, only that every message arrived on both
sides and that the table and the markdown come out.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the harness reads /proc"
)

# the load generator and the reference server come with the test extra; a
# missing install must fail here, not skip (uvloop has no Windows build, and
# the harness is Linux-only anyway)
if sys.platform.startswith("linux"):
    import picows  # noqa: F401
    import uvloop  # noqa: F401
    import websockets  # noqa: F401

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


def _load(name: str, filename: str):
    """A script of benchmarks/ as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCH.parent / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs classes look their module up
    spec.loader.exec_module(module)
    return module


def _bench():
    return _load("wsserver_bench", "bench.py")


def test_fanout_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    bench.QUIET_WAIT = 0  # do not wait for an idle machine
    args = bench.parser().parse_args(
        ["fanout", "--connections", "20", "--publishes", "5", "--runs", "1", "--timeout", "30"]
    )
    report = bench.BENCHES["fanout"](args)
    for side in ("wsserver", "reference"):
        (run,) = report.raw[side]
        assert run["delivered"] == run["expected"] == 100, (side, run)
        assert not run["timed_out"]
        assert run["reached_per_publish"] == 20
    assert not [note for note in report.notes if "stopped" in note]  # busy-machine notes may appear
    bench.print_table(report)
    text = bench.markdown(report)
    assert "| server CPU per delivered message (µs) |" in text
    assert "Fan-out, burst: 20 connections" in capsys.readouterr().out


def test_commit_costs_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/commit_costs.py runs its five variants and cleans up after itself."""
    module = _load("wsserver_commit_costs", "commit_costs.py")
    module.main(["--handoffs", "20", "--commits", "5", "--rounds", "1", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    for variant in ("to_thread", "dedicated", "append_fsync", "append_fdatasync",
                    "zeroed_fdatasync"):  # fmt: skip
        assert f"  {variant} " in out, out
    assert "process_cpu" in out and "thread_cpu" in out
    assert list(tmp_path.iterdir()) == []  # the temporary directory and its files are gone


def test_commit_costs_stall_report() -> None:
    """A stall counts as shared only when it overlaps a stall of every other variant."""
    module = _load("wsserver_commit_costs_report", "commit_costs.py")
    fast = [(t / 10, 0.001) for t in range(98)]
    seen = {
        "a": [*fast, (10.0, 0.03), (20.0, 0.02)],  # the second: only "b" stalls then
        "b": [*fast, (10.02, 0.015), (20.01, 0.015)],
        "c": [*fast, (9.99, 0.035), (30.0, 0.05)],  # starts before the others, ends inside
    }
    report = module.stall_report(seen)
    assert {k: (r["stalls"], r["shared"]) for k, r in report.items()} == {
        "a": (2, 1), "b": (2, 1), "c": (2, 1)
    }  # fmt: skip
    assert report["a"]["commits"] == 100
    assert report["c"]["max_ms"] == pytest.approx(50.0)
    assert report["a"]["p50_ms"] == pytest.approx(1.0)


def test_ab_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/ab.py runs two versions alternately: here the checkout given as a
    directory (A) and the installed package (B), a tiny closed loop each."""
    module = _load("wsserver_ab", "ab.py")
    root = str(BENCH.parent.parent)
    args = module.parser().parse_args(
        ["closed", root, "-", "--runs", "2", "--pairs", "3", "--seconds", "0.5",
         "--warmup", "0.2", "--timeout", "30"]
    )  # fmt: skip
    out = module.run_ab(args)
    assert [len(out["A"]), len(out["B"])] == [2, 2]
    for run in out["A"] + out["B"]:
        assert run["delivered"] > 0 and run["missing_after_drain"] == 0, run
    printed = capsys.readouterr().out
    assert printed.index("run 1 A") < printed.index("run 1 B")
    assert printed.index("run 2 B") < printed.index("run 2 A")  # the order alternates
    assert f"median of 2 A ({root})" in printed


def test_ab_open_loop_reports_the_journal_fsyncs() -> None:
    module = _load("wsserver_ab_open", "ab.py")
    args = module.parser().parse_args(
        ["open", "-", "-", "--runs", "1", "--pairs", "3", "--rate", "30", "--seconds", "0.5",
         "--warmup", "0.2", "--timeout", "30"]
    )  # fmt: skip
    out = module.run_ab(args)
    for run in out["A"] + out["B"]:
        assert run["missing_after_drain"] == 0, run
        assert run["fsyncs"] > 0 and run["fsyncs_over_10ms"] >= 0, run  # fsync="always"
