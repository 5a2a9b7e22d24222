"""The client's connection states and what it does after each way a connection ends.

Everything that decides "reconnect, ask for a new token, or stop" lives here,
as plain objects: the trio shell (`client.py`) reports how a connection ended
(`Ended`) and follows the `Decision`.

States: `connecting` (the first attempt) -> `connected` (the hub said
`connected` / `auth_success`) -> `reconnecting` (lost; waiting or retrying)
-> `connected` ... and `disconnected`, the end: closed by the application, or
a close a retry cannot fix.

| how it ended | decision |
|---|---|
| 4003 kicked, 4004 replaced | stop (`disconnected`) |
| 4001 / HTTP 401 credentials refused or expired | once per success: a new token from `get_token`, then at once again; else stop |
| HTTP 4xx at the handshake other than 401, 408, 425, 429 | stop (wrong path, origin refused: a retry sends the same) |
| 1002, 1003, 1007, 1008, 1009, 1010: the hub refused something we sent | reconnect, and in-flight requests are not sent again (one of them may be the cause) |
| anything else: 1000, 1001, 1006, 1011, 1013, 4000, 4002, 4008, 4029, network errors, HTTP 429/5xx, no data for `liveness_timeout` | reconnect after the backoff delay |

Invariants:

- The backoff counter restarts after a connection that stayed connected for
  `stable_after` seconds, so a hub that accepts and drops at once is still
  retried ever more slowly.
- `get_token` is asked at most once per run of 4001s: a 4001 right after a
  fresh token stops; any successful connection renews the chance.
- `max_retries` exhausted stops, with the last close code.
"""

from __future__ import annotations

import enum

import attrs

from wsserver.client.backoff import Backoff

__all__ = ["ConnectionState", "ConnectionStatus", "Decision", "Ended", "Next", "ReconnectPolicy", "StateChange"]

KICKED = 4003
REPLACED = 4004
AUTH_FAILED = 4001
FINAL_CODES = frozenset({KICKED, REPLACED})
# the hub closed because of a frame we sent: sending the in-flight ones again could loop
REFUSED_FRAME_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
RETRY_HTTP = frozenset({408, 425, 429})


class ConnectionState(enum.StrEnum):
    """Where the client is; `.value` is the name used on the wire and in docs."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


ConnectionStatus = ConnectionState  # seed 002's name


@attrs.frozen
class Ended:
    """How one connection attempt ended.

    `code` is the WebSocket close code, None when there was no close frame to
    read (refused at the handshake, network error, liveness timeout).
    """

    code: int | None = None
    reason: str = ""
    http_status: int | None = None
    connected: bool = False
    uptime: float = 0.0
    by_client: bool = False

    @property
    def status(self) -> int | None:
        """The close code, else the HTTP status of a refused handshake."""
        return self.code if self.code is not None else self.http_status

    @property
    def auth_refused(self) -> bool:
        return self.code == AUTH_FAILED or self.http_status == 401


class Next(enum.Enum):
    RETRY = "retry"
    NEW_TOKEN = "new_token"
    STOP = "stop"


@attrs.frozen
class Decision:
    """What to do after a connection ended: `next`, after `delay` seconds;
    `resend` says whether in-flight resendable requests go out again."""

    next: Next
    delay: float = 0.0
    resend: bool = True
    attempt: int = 0


@attrs.frozen
class StateChange:
    """The payload of a `state` event: the new `state`, the `previous` one, and
    for a loss the close `code` (the HTTP status when the handshake was
    refused, None for a network error), `reason`, and when reconnecting the
    `delay` before the next attempt and its number (`attempt`, from 1)."""

    state: ConnectionState
    previous: ConnectionState
    code: int | None = None
    reason: str = ""
    delay: float | None = None
    attempt: int = 0


@attrs.define
class ReconnectPolicy:
    """The decisions of SPEC section 9 for one client."""

    backoff: Backoff = attrs.Factory(Backoff)
    can_refresh_token: bool = False
    stable_after: float = 10.0
    _token_asked: bool = False

    def after(self, ended: Ended) -> Decision:
        """Decide what follows `ended` (a connection the application did not close)."""
        if ended.connected:
            self._token_asked = False
            if ended.uptime >= self.stable_after:
                self.backoff.reset()
        if ended.code in FINAL_CODES:
            return Decision(Next.STOP)
        if ended.auth_refused:
            if self.can_refresh_token and not self._token_asked:
                self._token_asked = True
                return Decision(Next.NEW_TOKEN, 0.0, attempt=self.backoff.attempt)
            return Decision(Next.STOP)
        status = ended.http_status
        if status is not None and 400 <= status < 500 and status not in RETRY_HTTP:
            return Decision(Next.STOP)
        delay = self.backoff.next_delay()
        if delay is None:
            return Decision(Next.STOP)
        return Decision(
            Next.RETRY, delay, resend=ended.code not in REFUSED_FRAME_CODES, attempt=self.backoff.attempt
        )
