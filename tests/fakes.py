"""Stand-ins for the hub's clock and journal in the sans-IO tests: a wall clock the
test moves by hand, and a journal in memory whose durability the test may hold back."""

from __future__ import annotations

import json
from typing import Any


class Clock:
    """A wall clock (seconds since the epoch) the test moves by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Journal:
    """Keeps every record as storage gives it back (a JSON copy, numbered `n`), so a
    restart can replay them. Durable up to `durable_upto`: everything appended, unless
    the test holds it back (`hold`, or `durable_upto = n` to set it by hand)."""

    def __init__(self, hold: int | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.hold = hold

    @property
    def durable_upto(self) -> int:
        return len(self.records) if self.hold is None else self.hold

    @durable_upto.setter
    def durable_upto(self, n: int) -> None:
        self.hold = n

    def append(self, record: dict[str, Any]) -> int:
        assert "n" not in record, "storage numbers records itself"
        n = len(self.records) + 1
        self.records.append(json.loads(json.dumps({"n": n, **record})))
        return n

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Nothing to keep."""
