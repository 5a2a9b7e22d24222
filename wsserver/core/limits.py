"""Per-connection inbound limits as plain state machines (sans-IO, time passed in).

`TokenBucket` is the rate limit of SPEC section 5: `rate` tokens per second up
to `burst`; a message that finds no token is dropped with `rate_limited`.
`AbuseCounter` decides when dropping is no longer enough and the connection is
closed: `limit` drops in a row with no accepted message between them.
"""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class TokenBucket:
    """A token bucket; `take(now)` is True when a message may pass."""

    rate: float
    burst: float
    tokens: float = attrs.field(default=-1.0)
    stamp: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float) -> bool:
        """Spend one token if there is one; refill by elapsed time first."""
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@attrs.define(slots=True)
class AbuseCounter:
    """Counts consecutive refusals; `refused()` is True once `limit` is reached."""

    limit: int
    run: int = 0

    def accepted(self) -> None:
        """An accepted message ends the run."""
        self.run = 0

    def refused(self) -> bool:
        """One more refusal; True when the connection should be closed."""
        self.run += 1
        return self.run >= self.limit
