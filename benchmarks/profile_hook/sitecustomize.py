"""Profiling hook for benchmarks/cluster_profile.py (never part of the product).

On this directory's path, a process with `WSBENCH_PROFILE=<prefix>` starts
cProfile at the first SIGUSR2 and writes `<prefix>.<pid>.prof` at the second
(the harness sends them around the measured window only).
"""

import os

_prefix = os.environ.get("WSBENCH_PROFILE")
if _prefix:
    import cProfile
    import signal

    _prof = cProfile.Profile()
    _state = {"on": False}

    def _toggle(_signum: int, _frame: object) -> None:
        if not _state["on"]:
            _state["on"] = True
            _prof.enable()
        else:
            _prof.disable()
            _prof.dump_stats(f"{_prefix}.{os.getpid()}.prof")

    signal.signal(signal.SIGUSR2, _toggle)
