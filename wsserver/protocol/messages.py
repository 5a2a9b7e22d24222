"""The client messages the hub handles, one shape each (SPEC 3 and 4; seeds 000-004).

Each class declares the `data` of one message type (or, for seed 003's
`message`, the message object itself): the fields, their rules
(`wsserver.shapes`: ids are non-empty strings or integers and never bools,
...), their other names on the wire and the fields passed through untouched.
The handlers structure a message with `read(data, Shape)` (or, per message,
the shape's generated function and `fault()`), and only then apply the rules
that need the hub (permissions, quotas, who is online).

Invariants:

- A fault is an `error` with code `invalid_message` and `field` naming it as
  today: a field of `data` by its own name (`to_user_id`), `data` itself, an
  item of a list `data[2]`, a field inside an item `data[2].line_account_id`,
  a field of a nested object dotted (`receiver.id`, seed 003's `data.text`);
  a missing field is `field_missing`, a wrong type `field_type`, a value
  breaking a constraint `field_invalid`, unless the field declares its key.
- Fields are checked in declaration order and the first fault is answered;
  the handler's own rules come after the shape's.

This module is sans-IO: no trio, no sockets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, overload

import attrs

from wsserver.errors import ErrorCode, ProtocolError
from wsserver.shapes import (
    ID,
    NULL_IS_WRONG,
    STR,
    Id,
    Length,
    Pattern,
    Range,
    Shape,
    ShapeError,
    structurer,
    wire,
)

__all__ = [
    "MAX_HISTORY_PAGE",
    "MAX_WATCHED",
    "ROOM_NAME",
    "Account",
    "Auth",
    "CustomerSync",
    "FollowUpSync",
    "History",
    "Incoming",
    "KickDevice",
    "Receipt",
    "Receiver",
    "Refresh",
    "Register",
    "RoomHistoryRequest",
    "RoomMessage",
    "RoomRef",
    "Seed003Data",
    "Seed003Message",
    "SendMessage",
    "StatusChange",
    "Sync",
    "Typing",
    "UserMessage",
    "WatchPresence",
    "Watched",
    "fault",
    "read",
    "with_receiver",
]

S = TypeVar("S", bound=Shape)

ROOM_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
"""A room name (SPEC 4.2)."""

MAX_HISTORY_PAGE = 100
MAX_WATCHED = 1000  # users one `watch_presence` names
MAX_CRM_ID = 256  # characters of an account, customer or incoming id

RoomName = Annotated[str, Pattern(ROOM_NAME)]
CrmId = Annotated[int | str, Length(1, MAX_CRM_ID)]
"""An account, customer or incoming id: a string or an integer, 1-256 characters as text."""
Status = Annotated[str, Length(1, 32)]
"""A Line account's `online_status`."""

_KEYS = {"missing": "field_missing", "type": "field_type", "invalid": "field_invalid"}


def fault(err: ShapeError, root: str = "") -> ProtocolError:
    """The `error` answering a shape fault: `invalid_message`, the field named
    from `root` (`data` itself and its items are named `data`, `data[2]`)."""
    if not root and (not err.path or isinstance(err.path[0], int)):
        root = "data"
    key = err.key if err.key is not None and err.kind != "missing" else _KEYS[err.kind]
    return ProtocolError(ErrorCode.INVALID_MESSAGE, key, field=err.dotted(root))


@overload
def read(value: object, shape: type[S], root: str = "") -> S: ...
@overload
def read(value: object, shape: Any, root: str = "") -> Any: ...
def read(value: object, shape: Any, root: str = "") -> Any:
    """`value` structured as `shape`; a fault is the `ProtocolError` to answer."""
    try:
        return structurer(shape)(value)
    except ShapeError as err:
        raise fault(err, root) from None


# -- first message and token refresh (SPEC 3) ---------------------------------------------


@attrs.define
class Auth(Shape):
    """`auth {token}`: the first message authenticates the connection."""

    token: str


@attrs.define
class Register(Shape):
    """Seed 002's `register {token, device_id?, device_info?, user_id?}`; a
    `user_id` must be the token's."""

    token: str
    device_id: int | str | None = None
    device_info: dict[str, Any] | None = None
    user_id: Any = None


@attrs.define
class Refresh(Shape):
    """`refresh {token}`: a new token for the same user."""

    token: str


# -- rooms (SPEC 4.2) ---------------------------------------------------------------------------


def _bare_room(value: object) -> Mapping[str, object]:
    # `data` may be the room name itself; anything else names no room
    return {"room": value} if STR.holds(value) else {}


@attrs.define
class RoomRef(Shape):
    """`join_room`, `leave_room`, `room_members`: `{room, group_id?}` or the bare
    room name; only an admin names another group's room."""

    room: RoomName = wire(key="invalid_room", key_for_type=True)
    group_id: Any = None

    bare = staticmethod(_bare_room)


@attrs.define
class RoomHistoryRequest(Shape):
    """`room_history {room, group_id?, before?, limit? (1-100)}`: a page of a room's
    kept messages (`rooms.history_limit`)."""

    room: RoomName = wire(key="invalid_room", key_for_type=True)
    group_id: Any = None
    before: int | None = None
    limit: Annotated[int, Range(1, MAX_HISTORY_PAGE)] = 50


@attrs.define
class RoomMessage(Shape):
    """`room_message {room, group_id?, ...payload}`: the payload (every other key
    but a client's `from`) passes through untouched."""

    room: RoomName = wire(key="invalid_room", key_for_type=True)
    group_id: Any = None
    payload: dict[str, Any] = wire(rest=("room", "group_id", "from"))


# -- direct messages (SPEC 4.3) -------------------------------------------------------------------


@attrs.define
class SendMessage(Shape):
    """`send_message {to_user_id, to_user_type?, to_group_id? (admins), message | text,
    client_msg_id?, message_type?, session_id?, reply_to_message_id?, extra?}`."""

    message: str = wire("message", "text")
    to_user_id: Id = wire()
    to_user_type: Id | None = None
    to_group_id: Any = None
    client_msg_id: int | str | None = None
    message_type: str = wire(default="text", null=NULL_IS_WRONG)
    session_id: int | str | None = None
    reply_to_message_id: int | None = None
    extra: dict[str, Any] | None = wire(default=None, doc="passed through to the recipient, at most 1 KiB of JSON")


@attrs.define
class UserMessage(Shape):
    """Seed 004's `user_message {to, text | message, ...}`: `send_message` under
    other names (the same attributes, so one handler sends both)."""

    message: str = wire("text", "message")
    to_user_id: Id = wire("to")
    to_user_type: Id | None = None
    to_group_id: Any = None
    client_msg_id: int | str | None = None
    message_type: str = wire(default="text", null=NULL_IS_WRONG)
    session_id: int | str | None = None
    reply_to_message_id: int | None = None
    extra: dict[str, Any] | None = wire(default=None, doc="passed through to the recipient, at most 1 KiB of JSON")


@attrs.define
class Receiver(Shape):
    """Seed 003's `receiver {id, type?}`."""

    id: Id
    type: Id | None = None


@attrs.define
class Seed003Message(Shape):
    """Seed 003's `{"event": "message", "receiver": {id, type}, "data": {...}}`
    (the message object itself); a `receiver` that is no object is missing."""

    receiver: Receiver = wire(key="field_missing", key_for_type=True)
    data: Any = None  # a Seed003Data


def _bare_text(value: object) -> Mapping[str, object]:
    return {"text": value}  # seed 003's data may be the text itself


@attrs.define
class Seed003Data(Shape):
    """The `data` of seed 003's `message`: `{text | content | message, ...}` as in
    `send_message`, or the bare text."""

    message: str = wire("text", "content", "message")
    to_group_id: Any = None
    client_msg_id: int | str | None = None
    message_type: str = wire(default="text", null=NULL_IS_WRONG)
    session_id: int | str | None = None
    reply_to_message_id: int | None = None
    extra: dict[str, Any] | None = wire(default=None, doc="passed through to the recipient, at most 1 KiB of JSON")

    bare = staticmethod(_bare_text)


def with_receiver(msg: Mapping[str, Any], data: object, id_name: str, type_name: str) -> object:
    """`data` with seed 003's top-level `receiver {id, type?}` (checked as in its
    `message`, faults named `receiver.id`) as its recipient fields `id_name` and
    `type_name`; `data` itself when the message names no `receiver`."""
    if "receiver" not in msg:
        return data
    receiver = read(msg, Seed003Message).receiver
    named = dict(data) if isinstance(data, dict) else {}
    named[id_name] = receiver.id
    if receiver.type is not None:
        named[type_name] = receiver.type
    return named


def _bare_id(value: object) -> Mapping[str, object] | None:
    return {"message_id": value} if ID.holds(value) else None


@attrs.define
class Receipt(Shape):
    """`message_delivered`, `message_read`, seed 003's `read`: `{message_id}` or the
    bare id, or `{up_to_message_id}` (the whole conversation up to that message);
    a string must hold an integer."""

    message_id: int | str | None = None
    up_to_message_id: int | str | None = None

    bare = staticmethod(_bare_id)


@attrs.define
class Typing(Shape):
    """`typing {to_user_id | to, to_user_type?, to_group_id? (admins), typing = true}`
    (seed 003's top-level `receiver`: `with_receiver`)."""

    to_user_id: Id = wire("to_user_id", "to")
    to_user_type: Id | None = None
    to_group_id: Any = None
    typing: bool = wire(default=True, null=NULL_IS_WRONG)


def _no_data(value: object) -> Mapping[str, object] | None:
    return {} if value is None else None


@attrs.define
class Sync(Shape):
    """`sync {last_seq?, limit?}` (no data: from the start)."""

    last_seq: int | None = None
    limit: int | None = None

    bare = staticmethod(_no_data)


@attrs.define
class History(Shape):
    """`history {with_user_id | to_user_id | to, with_user_type? | to_user_type?,
    to_group_id? | session_id, before_message_id?, limit? (1-100)}` (seed 003's
    top-level `receiver`: `with_receiver`)."""

    limit: Annotated[int, Range(1, MAX_HISTORY_PAGE)] = MAX_HISTORY_PAGE
    before_message_id: int | None = None
    with_user_id: Id | None = wire("with_user_id", "to_user_id", "to", default=None)
    with_user_type: Id | None = wire("with_user_type", "to_user_type", default=None)
    to_group_id: Any = None
    session_id: int | str | None = None


@attrs.define
class Watched(Shape):
    """One user of `watch_presence`'s `users`: `{user_id, user_type?}`."""

    user_id: Id
    user_type: Id | None = None


@attrs.define
class WatchPresence(Shape):
    """`watch_presence {user_ids?: [id], user_type?, users?: [{user_id, user_type?}]}`:
    `user_ids` are of `user_type`; at most 1000 users in all."""

    user_ids: Annotated[list[Id], Length(0, MAX_WATCHED)] = attrs.Factory(list)
    user_type: Id | None = None
    users: Annotated[list[Watched], Length(0, MAX_WATCHED)] = attrs.Factory(list)


@attrs.define
class KickDevice(Shape):
    """`kick_device {device_id}`."""

    device_id: Id


# -- the CRM (SPEC 4.4, seed 000) -------------------------------------------------------------------


@attrs.define
class Account(Shape):
    """One account of `sync_line_accounts` (a list of them, or `{accounts: [...]}`);
    its other fields are kept as sent (but `synced_by`, which the hub sets)."""

    line_account_id: CrmId
    online_status: Status | None = None
    name: str | None = None
    fields: dict[str, Any] = wire(rest=("synced_by",))


@attrs.define
class Incoming(Shape):
    """`incoming {line_account_id, incoming_line_id, ...fields}`: a new contact on
    an account; the other fields are kept as sent (but the ones the hub sets)."""

    line_account_id: CrmId
    incoming_line_id: CrmId
    fields: dict[str, Any] = wire(rest=("line_account_id", "incoming_line_id", "incoming_id", "duplicate", "time"))


@attrs.define
class CustomerSync(Shape):
    """`customer_sync {customer_id, ...fields}`: the fields are merged as sent."""

    customer_id: CrmId
    fields: dict[str, Any] = wire(rest=("customer_id", "customer_db_id"))


@attrs.define
class FollowUpSync(Shape):
    """`follow_up_sync {customer_id, ...fields}`: the fields are kept as sent."""

    customer_id: CrmId
    fields: dict[str, Any] = wire(rest=("customer_id", "follow_up_id"))


@attrs.define
class StatusChange(Shape):
    """`account_status_change {line_account_id, online_status}`."""

    line_account_id: CrmId
    online_status: Status
