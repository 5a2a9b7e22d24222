"""Everything the outside may ask of the hub, one class per request.

The hub is reached through its actor only (`wsserver.net.actor.HubActor`),
and the actor carries these commands and nothing else: no closures, no
methods of the hub. A `Command[R]` is answered with an `R` (`HubActor.call`)
or not at all (`tell`); `Hub.execute` runs it through one table from command
class to the hub's method.

The value types a command carries (`Target`, and the name patterns its
fields must match: `TYPE_NAME`, and `ROOM_NAME`, the wire format's) live
here too, so that the HTTP API and the embedding API can build commands
without importing the hub.

Commands that one part sends and one component answers are declared apart:
the HTTP API's questions about live connections (`Kick`, `Stats`, ...) in
`core.admin_commands`, the webhook sender's in `core.webhook_commands`, the
shared log's in `core.log_commands`, the cluster's in `core.cluster_commands`.

Invariants:

- A command is a value: built by the caller, read by the hub, never changed
  by either. Most are frozen attrs classes; `Handle` (one per client message)
  is a plain slotted class, as cheap to build as the tuple it replaced.
- Callbacks a command carries (`AfterCommit`, `Reconfigure.on_switch`,
  `AddHandler`) run inside the actor and must not block.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs

from wsserver.protocol.messages import ROOM_NAME

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.core.identity import Identity
    from wsserver.core.session import Outlet, Refusal  # noqa: F401 (in a string)
    from wsserver.protocol.envelope import Inbound

__all__ = [
    "ROOM_NAME",
    "TYPE_NAME",
    "AddHandler",
    "Admit",
    "AfterCommit",
    "AfterStored",
    "Authenticate",
    "BackendSend",
    "CloseAll",
    "CloseSession",
    "Command",
    "CrmPage",
    "DeleteCode",
    "Forget",
    "Handle",
    "HostRequest",
    "ListCodes",
    "Midnight",
    "NextMidnight",
    "OpenSession",
    "Publish",
    "PublishResult",
    "PushTask",
    "PutCode",
    "Reconfigure",
    "Release",
    "Restore",
    "SendAs",
    "TakeSnapshot",
    "Target",
    "TaskList",
    "UpdateDevice",
]

R_co = TypeVar("R_co", covariant=True)

TYPE_NAME = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
"""A message type a backend may publish (SPEC 4.5)."""



class Command(Generic[R_co]):
    """Something the outside asks of the hub; `R_co` is its answer."""

    __slots__ = ()


# -- connections ---------------------------------------------------------------------


class Handle(Command[None]):
    """Route one authenticated client message (the per-message command).

    A plain slotted class, not attrs: it is built once per message, and a frozen
    attrs class costs clearly more to build than the tuple this replaced, where
    this one costs about the same. Treat it as frozen."""

    __slots__ = ("conn_id", "msg")

    def __init__(self, conn_id: str, msg: Inbound) -> None:
        self.conn_id = conn_id
        self.msg = msg

    def __repr__(self) -> str:
        return f"Handle({self.conn_id!r}, {self.msg!r})"


@attrs.frozen
class Admit(Command["Refusal | Identity | None"]):
    """Take a new connection: a `Refusal`, else the identity the hub settled on
    (a desktop client's group comes from its code), or None when it is admitted
    still to authenticate."""

    outlet: Outlet
    conn_id: str
    ip: str
    user_agent: str = ""
    identity: Identity | None = None
    device_id: str | None = None


@attrs.frozen
class Authenticate(Command["Refusal | Identity"]):
    """Bind an admitted connection to its principal (first-message auth): a
    `Refusal`, or the identity the hub settled on."""

    conn_id: str
    identity: Identity
    device_id: str | None = None
    device_info: Any = None
    request_id: Any = None


@attrs.frozen
class OpenSession(Command[dict[str, Any]]):
    """Open (or re-open) a chat session (`core.sessions`); answers its stored form."""

    session_id: Any
    group_id: Any
    participants: list[dict[str, Any]]


@attrs.frozen
class CloseSession(Command[bool]):
    """End a chat session; False when the group has no such session."""

    session_id: Any
    group_id: Any


@attrs.frozen
class UpdateDevice(Command[None]):
    """Seed 002's `register` on a connection its handshake authenticated, for
    the same user: keep its `device_id` / `device_info` (those given) and
    answer `registered`, echoing `request_id`."""

    conn_id: str
    device_id: str | None = None
    device_info: Any = None
    request_id: Any = None


@attrs.frozen
class Forget(Command[None]):
    """Forget a connection whose close is decided (rooms, presence, counts). Idempotent."""

    conn_id: str


@attrs.frozen
class CloseAll(Command[None]):
    """Ask every connection to close (server shutdown)."""

    code: int
    reason: str


# -- durability and time -------------------------------------------------------------


@attrs.frozen
class Release(Command[None]):
    """Announce what became durable (the storage's writer moved on)."""


@attrs.frozen
class AfterCommit(Command[None]):
    """Run `callback` once every record appended so far is durable (at once if it is)."""

    callback: Callable[[], object]


@attrs.frozen
class AfterStored(Command[None]):
    """Like `AfterCommit`; `callback(stored)` also says whether every record
    appended so far was stored (False when a cluster's shared log refused one
    meanwhile: what was asked may not have happened)."""

    callback: Callable[[bool], object]


@attrs.frozen
class TakeSnapshot(Command[int]):
    """Queue a snapshot of the durable state; answers the journal number it reflects.
    With `if_changed`, only when records were appended since the last one."""

    if_changed: bool = False


@attrs.frozen
class Restore(Command[int]):
    """Rebuild the durable state at start-up from a snapshot's state (or None)
    and the records after it, written in format `version`, in the data directory
    of node `node`; answers the journal number restored to."""

    state: dict[str, Any] | None
    records: list[dict[str, Any]]
    version: int
    node: str = ""
    """The id of this node (kept with the data directory), when known."""


@attrs.frozen
class NextMidnight(Command[int]):
    """Milliseconds until the next day starts in `crm.timezone`."""


@attrs.frozen
class Midnight(Command[None]):
    """A new day began: every CRM dashboard gets its zeroed "today" counters."""


@attrs.frozen
class Reconfigure(Command[int]):
    """Run with `config` from now on (a reload); answers how many connections
    were closed for an activation code that is gone, disabled or moved.
    `on_switch` runs in the same step, so that what the network layer reads
    (its own config, the token verifier) changes between the same two commands."""

    config: Config
    on_switch: Callable[[], None] | None = None


@attrs.frozen
class AddHandler(Command[None]):
    """Handle client messages of `type` with `fn` (an embedding host's own type).
    ValueError for a type the hub already handles."""

    type: str
    fn: Callable[[HostRequest], None]


# -- the HTTP API and the embedding host ---------------------------------------------


@attrs.frozen
class Target:
    """Who a publish reaches: users, a group, a room of a group, or everyone.

    Exactly one form is meant: `user_ids` (one or more users; `group_id` then
    narrows to that group), `room` (in the group `group_id`; `None` is the
    scope of connections without a group), `group_id` alone, `everyone`, or
    `activation_code` (the desktop connections of that one code).
    `user_type`, when given, narrows any form to principals of that type;
    `connections` to the dashboards (token connections) or the devices
    (desktop clients) of a group.
    """

    user_ids: tuple[Any, ...] = ()
    group_id: Any = None
    room: str | None = None
    everyone: bool = False
    user_type: Any = None
    connections: str | None = None  # "dashboard" | "device"
    activation_code: str | None = None

    @property
    def kind(self) -> str:
        """`"users"`, `"room"`, `"code"`, `"group"` or `"all"`."""
        if self.user_ids:
            return "users"
        if self.activation_code is not None:
            return "code"
        if self.room is not None:
            return "room"
        if self.everyone:
            return "all"
        return "group"


@attrs.frozen
class PublishResult:
    """Connections that took the frame, and mailboxes it was queued in."""

    delivered: int
    queued: int


@attrs.frozen
class Publish(Command[PublishResult]):
    """One message for a target; `persist` queues it for offline users. `here`:
    this node's connections only (every node of a cluster runs the publish
    itself: the Redis publish channel); not with `persist`."""

    type: str
    data: Any
    target: Target
    persist: bool = False
    here: bool = False


@attrs.frozen
class SendAs(Command["BackendSend"]):
    """A direct message the business backend sends on a user's behalf
    (`POST /api/messages`): `data` is a `send_message` body, the sender the
    user (`user_id`, `user_type`) of `group_id`. Answered at once with the
    `BackendSend` whose `reply` the hub fills once the message is durable."""

    user_id: Any
    user_type: Any
    group_id: Any
    username: str | None
    data: dict[str, Any]


class BackendSend(Protocol):
    """What a `SendAs` is answered with: the `error` the send was refused
    with (`code`, catalogue `key`, `field`, `params`), else `reply`, the
    `message_sent` data, set once the message is durable."""

    error: tuple[str, str, str | None, dict[str, Any]] | None
    reply: dict[str, Any] | None


@attrs.frozen
class CrmPage(Command["dict[str, Any]"]):
    """`{group_id, items, has_more, next_after}`: a group's `customers`,
    `follow_ups` or `incoming` records numbered above `after`, at most `limit`."""

    group: str
    kind: str
    after: int = 0
    limit: int = 100


@attrs.frozen
class ListCodes(Command["list[dict[str, Any]]"]):
    """Every effective activation code with its live connection count."""


@attrs.frozen
class PutCode(Command["tuple[bool, int]"]):
    """Create or replace an activation code; answers (created, connections closed)."""

    code: str
    group_id: Any
    name: str = ""
    enabled: bool = True


@attrs.frozen
class DeleteCode(Command["int | None"]):
    """Remove an activation code; the connections closed, or None if unknown."""

    code: str


# -- latest task states (SPEC 6.1) ---------------------------------------------------


@attrs.frozen
class PushTask(Command[PublishResult]):
    """Seed 001's task update: keep `data` as the latest state of its task (`task_id`
    in `data`) for the target's user, and push `type` (`<task_type>_start`,
    `_progress` or `_complete`) to the user's connections."""

    type: str
    data: dict[str, Any]
    target: Target


@attrs.frozen
class TaskList(Command["list[dict[str, Any]]"]):
    """The latest states of a user's tasks that are running or recently completed."""

    user_id: Any
    user_type: Any = None
    group_id: Any = None


class HostRequest(Protocol):
    """A client message of a host-defined type, as an `AddHandler` function gets
    it inside the actor (`core.host.Request` is the hub's): who sent it, and how
    to answer. Valid only while the handler runs."""

    @property
    def type(self) -> str:
        """The message type."""

    @property
    def id(self) -> Any:
        """The request `id` the client sent, or None."""

    @property
    def data(self) -> Any:
        """The message's `data`."""

    @property
    def conn_id(self) -> str:
        """The sender's connection id."""

    @property
    def identity(self) -> Identity:
        """The sender's identity."""

    @property
    def raw(self) -> dict[str, Any]:
        """The whole message object as the client sent it."""

    def reply(self, type: str, data: Any = None) -> None:
        """Send `{type, data}` to the sender's connection, echoing the request `id`."""

    def error(self, message: str, *, code: str = "invalid_message", field: str | None = None) -> None:
        """Answer with an `error` shaped like the hub's own; ValueError for an unknown `code`."""

    def publish(self, publish: Publish) -> PublishResult:
        """Publish as `POST /api/publish` does, from inside the handler."""
