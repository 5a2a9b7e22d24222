"""Inbound limits as plain state machines (sans-IO, time passed in).

`TokenBucket` is the rate limit of SPEC section 5: `rate` tokens per second up
to `burst`; a message that finds no token is dropped with `rate_limited`.
`AbuseCounter` decides when dropping is no longer enough and the connection is
closed: `limit` drops in a row with no accepted message between them.
`FailureThrottle` counts failed credentials per client IP (SPEC section 2) so
that guessing activation codes or API keys is slowed to a few tries a window.
"""

from __future__ import annotations

import attrs

MAX_THROTTLED_IPS = 65536
"""How many client IPs `FailureThrottle` tracks at most (bounded memory)."""


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


@attrs.define(slots=True)
class FailureThrottle:
    """Failed credentials per client IP, in fixed windows.

    An IP's window opens with its first failure and lasts `window` seconds;
    once `limit` failures fall in it, `blocked()` is True until it ends,
    whatever the IP presents (a valid credential too: a guesser must not learn
    that a guess was right). Attempts refused while blocked are not failures:
    the block ends with the window. A new failure after the window opens a new
    one. `limit` 0 turns the throttle off. `limit` and `window` are passed on
    each call, so a reload applies at once.

    Memory is bounded: entries are kept in the order their windows opened, so
    the expired ones are always at the front and are dropped as new failures
    come; with `max_ips` IPs still in their windows, a new IP replaces the one
    whose window opened first (the nearest to being let go anyway).
    """

    max_ips: int = MAX_THROTTLED_IPS
    # ip -> (window start, failures in it); dict order = order of window start
    _windows: dict[str, tuple[float, int]] = attrs.field(factory=dict, init=False)

    def blocked(self, ip: str, now: float, limit: int, window: float) -> bool:
        """True when `ip` reached `limit` failures in its current window."""
        entry = self._windows.get(ip)
        if entry is None or limit <= 0:
            return False
        start, failures = entry
        if now - start >= window:
            del self._windows[ip]
            return False
        return failures >= limit

    def failed(self, ip: str, now: float, limit: int, window: float) -> None:
        """Count one failed credential of `ip`."""
        if limit <= 0:
            return
        windows = self._windows
        entry = windows.get(ip)
        if entry is not None and now - entry[0] < window:
            windows[ip] = (entry[0], entry[1] + 1)  # keeps its place in the order
            return
        if entry is not None:
            del windows[ip]  # its window ended: a new one opens at the end
        self._prune(now, window)
        windows[ip] = (now, 1)

    def _prune(self, now: float, window: float) -> None:
        """Drop expired windows from the front, then the oldest until there is room."""
        windows = self._windows
        while windows:
            ip, (start, _) = next(iter(windows.items()))
            if now - start < window and len(windows) < self.max_ips:
                return
            del windows[ip]

    def __len__(self) -> int:
        """How many IPs are tracked."""
        return len(self._windows)
