"""The Python client of the hub (SPEC section 9), on trio and trio-websocket.

- `connect(url, token=.. | activation_code=.. | get_token=.., ...)`: an async
  context manager running a `Client` that stays connected: states and a
  `state` event, full-jitter backoff, close codes that end it (4003, 4004,
  4001 after one new token), liveness from the hub's pings, a bounded queue
  while disconnected, `send_message` de-duplicated by `client_msg_id`, `sync`
  from the last seen `seq` after every reconnect, `token_expiring` -> `refresh`.
- `SyncClient`: seed 002's API for programs that do not run trio; trio runs
  in a background thread.
- The errors of `wsserver.client.errors`; `ConnectionState` (seed 002's
  `ConnectionStatus`), `StateChange`, `Backoff`.

Invariant: importing this package never imports the server (`wsserver.net`,
`wsserver.core`, `wsserver.api`); a program that only talks to a hub carries
none of it. `docs/CLIENTS.md` describes the behaviour.
"""

from wsserver.client.backoff import Backoff
from wsserver.client.client import Client, MessageStream, connect
from wsserver.client.errors import (
    ClientClosed,
    ClientError,
    ConnectionLost,
    QueueFull,
    RequestError,
    RequestTimeout,
)
from wsserver.client.policy import ConnectionState, ConnectionStatus, StateChange
from wsserver.client.sync import SyncClient

__all__ = [
    "Backoff",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionLost",
    "ConnectionState",
    "ConnectionStatus",
    "MessageStream",
    "QueueFull",
    "RequestError",
    "RequestTimeout",
    "StateChange",
    "SyncClient",
    "connect",
]
