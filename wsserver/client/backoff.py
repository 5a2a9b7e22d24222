"""Full-jitter exponential backoff, as a plain object (no I/O, no clock).

The delay before reconnect attempt `n` (counting from 0 after the last stable
connection) is `random(0, min(cap, base * 2**n))`: the ceiling doubles from
`base` up to `cap`, and the delay is drawn uniformly below it, so thousands of
clients dropped by one server restart do not come back in lock-step.

Invariants:

- Every delay lies in `[0, cap]`.
- `max_retries` (None = unlimited) bounds the attempts since the last
  `reset()`; past it `next_delay()` answers None, meaning "give up".
- The random source is injected (`random(low, high) -> float`), so tests
  can make the sequence deterministic.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

import attrs

__all__ = ["Backoff"]

_MAX_EXPONENT = 62  # 2**62 * base is past any cap; keeps the float finite


@attrs.define
class Backoff:
    """The reconnect delays of one client."""

    base: float = 0.5
    cap: float = 30.0
    max_retries: int | None = None
    random: Callable[[float, float], float] = _random.uniform
    attempt: int = 0

    def __attrs_post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("backoff needs 0 < base <= cap")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError("max_retries must be >= 0 or None")

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt `attempt` may wait."""
        exponent: int = min(attempt, _MAX_EXPONENT)
        return min(self.cap, self.base * float(2**exponent))

    def next_delay(self) -> float | None:
        """The delay before the next attempt, or None when retries are exhausted."""
        if self.max_retries is not None and self.attempt >= self.max_retries:
            return None
        high = self.ceiling(self.attempt)
        self.attempt += 1
        # clamp: an injected source must not push a delay out of [0, ceiling]
        return min(high, max(0.0, float(self.random(0.0, high))))

    def reset(self) -> None:
        """Start again from `base` (after a connection that stayed up)."""
        self.attempt = 0
