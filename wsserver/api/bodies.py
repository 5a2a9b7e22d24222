"""The HTTP API's request bodies, one shape each (SPEC 6; seed 001).

Each class declares one body: its fields, their rules (`wsserver.shapes`),
defaults and descriptions. The same declaration checks a request
(`read(req, Shape)`) and describes it in the OpenAPI document
(`wsserver.shapes.json_schema`, used by `api.openapi`).

Invariants:

- A body is a JSON object whose numbers are finite, with no lone surrogate,
  nested at most `limits.max_json_depth` deep (SPEC 3), so whatever is
  accepted can be re-encoded for clients, journaled and snapshotted.
- A fault is `HttpError(400)` naming the field: `field_missing`,
  `http_field_type` with the JSON types expected, or the key of the rule
  broken (`http_field_empty`, `http_field_pattern`, `http_field_choice`,
  `http_field_min`, or the key the field declares). Fields are checked in
  declaration order; the rules between fields (`parse_publish`'s one
  target) come after.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar, overload

import attrs

from wsserver.core.commands import ROOM_NAME, TYPE_NAME, Publish, Target
from wsserver.net.http import HttpError, HttpRequest
from wsserver.protocol.jsonlimits import lone_surrogate, too_deep
from wsserver.shapes import (
    Id,
    Length,
    NonEmpty,
    OneOf,
    Pattern,
    Range,
    Shape,
    ShapeError,
    Trimmed,
    structurer,
    wire,
)

__all__ = [
    "DEFAULT_PAGE",
    "LEVELS",
    "MAX_PAGE",
    "BroadcastNotice",
    "BroadcastRequest",
    "CodeRequest",
    "KickRequest",
    "MessageRequest",
    "NotificationRequest",
    "OpenUrlRequest",
    "PlanExpiringRequest",
    "ProbeQuery",
    "PublishRequest",
    "TaskProgressRequest",
    "TokenInsufficientRequest",
    "check_json_values",
    "page_query",
    "parse_json",
    "parse_publish",
    "read",
    "read_json",
]

S = TypeVar("S", bound=Shape)

LEVELS = ("info", "warning", "error", "success")
DEFAULT_OPEN_URL_DELAY = 1000  # ms between two window.open calls, as seed 001's service sends
TASK_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,54}$")  # so "<task_type>_progress" is a valid type

CONNECTION_KINDS = ("dashboard", "device")  # `kind` of a publish to a group
DEFAULT_PAGE = 100  # records per page of the CRM reads
MAX_PAGE = 500

TypeName = Annotated[str, Pattern(TYPE_NAME)]
Text = Annotated[str, NonEmpty()]


# -- reading a body -------------------------------------------------------------------------------


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid JSON constant {name}")


def read_json(req: HttpRequest) -> object:
    """The body parsed as UTF-8 JSON; `HttpError(400)` otherwise."""
    return parse_json(req.body)


def parse_json(body: bytes) -> object:
    """`body` parsed as UTF-8 JSON (a request's, or a Redis publish channel
    message's); `HttpError(400)` otherwise."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(400, "http_invalid_json") from None
    if lone_surrogate(value, text=text):  # no reply or journal line could carry it
        raise HttpError(400, "http_lone_surrogate")
    return value


def check_json_values(value: Any, max_depth: int, text: bytes | None = None) -> None:
    """`HttpError(400)` for nesting deeper than `max_depth` (`limits.max_json_depth`)
    or a non-finite number (which clients could not parse, or we could not
    re-encode). `text`, the body `value` was decoded from, spares the depth
    walk in the common case (`protocol.jsonlimits.too_deep`)."""
    if too_deep(value, max_depth, text=text):
        raise HttpError(400, "http_json_depth", depth=max_depth)
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and (item != item or item in (float("inf"), float("-inf"))):
            raise HttpError(400, "http_json_number")
        if isinstance(item, dict | list):
            stack.extend(item.values() if isinstance(item, dict) else item)


def fault(err: ShapeError) -> HttpError:
    """The 400 answering a shape fault, naming the field."""
    field = err.dotted()
    if err.kind == "missing":
        return HttpError(400, "field_missing", field)
    if err.key is not None:
        return HttpError(400, err.key, field)
    if err.kind == "type":
        assert err.rule is not None
        return HttpError(400, "http_field_type", field, expected=err.rule.json)
    constraint = err.constraint
    if isinstance(constraint, NonEmpty):
        return HttpError(400, "http_field_empty", field)
    if isinstance(constraint, Pattern):
        return HttpError(400, "http_field_pattern", field, pattern=constraint.regex.pattern)
    if isinstance(constraint, OneOf):
        return HttpError(400, "http_field_choice", field, choices=", ".join(map(str, constraint.values)))
    if isinstance(constraint, Range) and constraint.minimum is not None:
        return HttpError(400, "http_field_min", field, min=constraint.minimum)
    return HttpError(400, "field_invalid", field)


@overload
def read(req: HttpRequest, shape: type[S], max_depth: int, *, empty_ok: bool = False) -> S: ...
@overload
def read(req: HttpRequest, shape: Any, max_depth: int, *, empty_ok: bool = False) -> Any: ...
def read(req: HttpRequest, shape: Any, max_depth: int, *, empty_ok: bool = False) -> Any:
    """The request's JSON body as a `shape`, checked (an empty body is `{}` when
    `empty_ok`); `HttpError(400)` naming what is wrong."""
    if empty_ok and not req.body.strip():
        body: object = {}
    else:
        body = read_json(req)
        if not isinstance(body, dict):
            raise HttpError(400, "http_not_object")
        check_json_values(body, max_depth, req.body)
    return structure(body, shape)


def structure(value: object, shape: type[S]) -> S:
    """`value` (a parsed body, a query) as a `shape`; `HttpError(400)` for a fault."""
    try:
        return structurer(shape)(value)
    except ShapeError as err:
        raise fault(err) from None


# -- seed 001 ---------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class Notice(Shape):
    """Seed 001's `SystemNotificationData`, as a body gives it."""

    level: Annotated[str, OneOf(LEVELS)] = "info"
    title: str
    message: str
    action: str = ""
    action_url: str = ""


@attrs.define(kw_only=True)
class NotificationRequest(Notice):
    """`POST /api/websocket/notification`: a `system_notification` for one user."""

    user_id: Id
    group_id: Id | None = wire(default=None, doc="only the user's connections in this group")
    user_type: Id | None = wire(default=None, doc="only the user's connections of this user_type")
    persist: bool = wire(default=False, doc="queue in the mailbox when the user has no connection")


@attrs.define(kw_only=True)
class OpenUrlRequest(Shape):
    """`POST /api/websocket/batchgo/open-url`: BatchGo Basic mode's `window.open`s."""

    delay: Annotated[int, Range(0)] = wire(default=DEFAULT_OPEN_URL_DELAY, doc="ms between two URLs")
    task_id: Id
    urls: Annotated[list[Text], Length(1)] = wire(key="http_field_strings")
    user_id: Id
    group_id: Id | None = wire(default=None, doc="only the user's connections in this group")
    user_type: Id | None = wire(default=None, doc="only the user's connections of this user_type")
    persist: bool = wire(default=False, doc="queue in the mailbox when the user has no connection")


@attrs.define(kw_only=True)
class TaskProgressRequest(Shape):
    """`POST /api/websocket/task/progress`: `<task_type>_start | _progress | _complete`."""

    task_type: Annotated[str, Pattern(TASK_TYPE)] = wire(
        key="http_task_type", doc="pushed type is <task_type>_start|_progress|_complete"
    )
    status: Text = wire(doc="started -> _start; completed, failed -> _complete; else _progress")
    task_id: Id
    progress: float = 0
    total: int = 0
    completed: int = 0
    failed: int = 0
    message: str = ""
    start_time: int = 0
    end_time: int = 0
    user_id: Id
    group_id: Id | None = wire(default=None, doc="only the user's connections in this group")
    user_type: Id | None = wire(default=None, doc="only the user's connections of this user_type")


@attrs.define(kw_only=True)
class TokenInsufficientRequest(Shape):
    """`POST /api/websocket/token/insufficient`."""

    current_balance: int
    required_tokens: int
    message: str = wire(default="", doc="default: a catalogue text")
    task_type: str = ""
    user_id: Id
    group_id: Id | None = wire(default=None, doc="only the user's connections in this group")
    user_type: Id | None = wire(default=None, doc="only the user's connections of this user_type")
    persist: bool = wire(default=False, doc="queue in the mailbox when the user has no connection")


@attrs.define(kw_only=True)
class PlanExpiringRequest(Shape):
    """`POST /api/websocket/plan/expiring`: `plan_expiring`, or `plan_expired` when
    `days_left <= 0`."""

    plan_name: str
    days_left: int = wire(doc="<= 0 pushes plan_expired")
    message: str = wire(default="", doc="default: a catalogue text")
    expires_at: int = wire(default=0, doc="Unix seconds")
    upgrade_url: str = ""
    user_id: Id
    group_id: Id | None = wire(default=None, doc="only the user's connections in this group")
    user_type: Id | None = wire(default=None, doc="only the user's connections of this user_type")
    persist: bool = wire(default=False, doc="queue in the mailbox when the user has no connection")


@attrs.define(kw_only=True)
class BroadcastNotice(Notice):
    """`POST /api/websocket/broadcast` without `type`: seed 001's `system_notification`
    to everyone."""

    group_id: Id | None = wire(default=None, doc="only this group's connections")
    user_type: Id | None = wire(default=None, doc="only principals of this user_type")


@attrs.define(kw_only=True)
class BroadcastRequest(Shape):
    """`POST /api/websocket/broadcast` with `type`: push `{type, data}` to everyone."""

    type: TypeName
    data: Any = wire(default=None, doc="the payload")
    group_id: Id | None = wire(default=None, doc="only this group's connections")
    user_type: Id | None = wire(default=None, doc="only principals of this user_type")


@attrs.define(kw_only=True)
class ProbeQuery(Shape):
    """`GET /api/websocket/test?user_id=`."""

    user_id: Id


# -- general ----------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class PublishRequest(Shape):
    """`POST /api/publish`: exactly one target: user_id, user_ids, group_id, room
    (+group_id) or all."""

    type: TypeName
    user_id: Id | None = None
    user_ids: Annotated[list[Id], Length(1)] | None = wire(default=None, key="http_field_ids")
    group_id: Id | None = wire(
        default=None,
        doc="alone: the whole group; with room: the room's group; with user_id(s): only their connections in it",
    )
    room: Annotated[str, Pattern(ROOM_NAME)] | None = wire(default=None, key="field_invalid")
    all: bool = wire(default=False, doc="true: every connection")
    user_type: Id | None = wire(default=None, doc="only principals of this user_type")
    persist: bool = wire(default=False, doc="user_id/user_ids only: queue in the mailbox of offline users")
    kind: Annotated[str, OneOf(CONNECTION_KINDS)] | None = wire(
        default=None, doc="with group_id alone: only the group's dashboards (token connections) or devices (desktop clients)"
    )
    activation_code: Annotated[str, NonEmpty()] | None = wire(
        default=None, doc="the desktop connections of this one activation code"
    )
    data: Any = wire(default=None, doc="any JSON value")


def parse_publish(body: dict[str, Any]) -> Publish:
    """A `POST /api/publish` body as a `Publish`; `HttpError(400)` naming the field.

    Target forms, exactly one: `user_id`, `user_ids`, `room` (with `group_id`),
    `group_id` alone, `activation_code`, or `all: true`. `group_id` next to
    `user_id`/`user_ids` narrows them to that group; `user_type` narrows any
    form; `kind` narrows `group_id` alone to its dashboards or devices.
    `persist` is for `user_id`/`user_ids` only.
    """
    req = structure(body, PublishRequest)
    forms = [
        name
        for name, given in (
            ("user_id", req.user_id is not None),
            ("user_ids", req.user_ids is not None),
            ("room", req.room is not None),
            ("activation_code", req.activation_code is not None),
            ("all", req.all),
        )
        if given
    ]
    if (req.all or req.activation_code is not None) and req.group_id is not None:
        forms.append("group_id")
    if len(forms) > 1:
        raise HttpError(400, "http_targets_conflict", forms[1], targets=", ".join(forms))
    if not forms and req.group_id is None:
        raise HttpError(400, "http_target_missing", "user_id")
    if req.persist and req.user_id is None and req.user_ids is None:
        raise HttpError(400, "http_persist_target", "persist")
    if req.kind is not None and (forms or req.group_id is None):
        raise HttpError(400, "http_kind_target", "kind")
    ids = (req.user_id,) if req.user_id is not None else tuple(req.user_ids or ())
    target = Target(
        user_ids=ids, group_id=req.group_id, room=req.room, everyone=req.all, user_type=req.user_type,
        connections=req.kind, activation_code=req.activation_code,
    )  # fmt: skip
    return Publish(type=req.type, data=req.data, target=target, persist=req.persist)


@attrs.define(kw_only=True)
class MessageRequest(Shape):
    """`POST /api/messages`: a direct message from a user, sent by the backend
    (SPEC 4.3's semantics: the same path as a client's `send_message`)."""

    from_user_id: Id = wire(doc="the sender, a user of group_id")
    from_user_type: Id | None = None
    from_username: str | None = wire(default=None, doc="the sender's name in from.username")
    group_id: Id | None = wire(default=None, doc="the sender's group, where the recipient is named")
    to_user_id: Id | None = wire(default=None, doc="the recipient; without it, every other participant of session_id")
    to_user_type: Id | None = None
    text: str = wire("text", "message")
    client_msg_id: int | str | None = wire(default=None, doc="a resend with the same one is answered duplicate: true")
    message_type: str = "text"
    session_id: int | str | None = wire(
        default=None, doc="a conversation label kept with the message; alone (no to_user_id): the session's other participants"
    )
    reply_to_message_id: int | None = None

    def send_message(self) -> dict[str, Any]:
        """The `send_message` body this is; `HttpError(400)` naming `to_user_id`
        when it names neither a recipient nor a session."""
        if self.to_user_id is None and self.session_id is None:
            raise HttpError(400, "http_recipient_missing", "to_user_id")
        data: dict[str, Any] = {"text": self.text, "message_type": self.message_type}
        for name in ("to_user_id", "to_user_type", "client_msg_id", "session_id", "reply_to_message_id"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


@attrs.define(kw_only=True)
class KickRequest(Shape):
    """`POST /api/users/{user_id}/kick` (the body may be empty: every connection)."""

    device_id: Id | None = None
    conn_id: str | None = None
    reason: str | None = wire(default=None, doc="sent in kicked {reason}; default: a catalogue text")
    user_type: Id | None = wire(default=None, doc="only the user's connections of this user_type")
    group_id: Id | None = wire(default=None, doc="only the user's connections in this group")


# -- the CRM ----------------------------------------------------------------------------------------


@attrs.define(kw_only=True)
class CodeRequest(Shape):
    """`POST /api/activation-codes`: create or replace an activation code."""

    code: Annotated[str, Trimmed(), Length(1, 128)] = wire(key="http_code_format")
    group_id: Id
    name: str = ""
    enabled: bool = True


def page_query(query: Mapping[str, str]) -> tuple[int, int]:
    """`after` (an integer >= 0, default 0) and `limit` (1 to `MAX_PAGE`, default
    `DEFAULT_PAGE`) of a paged read's query; a 400 naming the field otherwise."""
    after = _query_int(query, "after", 0, 0, None)
    limit = _query_int(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    return after, limit


def _query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise HttpError(400, "http_field_type", name, expected="integer")
    value = int(raw)
    if value < low:
        raise HttpError(400, "http_field_min", name, min=low)
    if high is not None and value > high:
        raise HttpError(400, "http_field_max", name, max=high)
    return value

# -- chat sessions (SPEC 13, seed 002) ----------------------------------------------------------------

MAX_PARTICIPANTS = 1000


@attrs.define(kw_only=True)
class Participant(Shape):
    """One participant of a chat session."""

    user_id: Id
    user_type: Id | None = None


@attrs.define(kw_only=True)
class SessionRequest(Shape):
    """`POST /api/sessions`: open (or re-open) a chat session of a group."""

    session_id: Id
    group_id: Id | None = wire(default=None, doc="the group the session lives in (its participants' tokens' group_id)")
    participants: Annotated[list[Participant], Length(1, MAX_PARTICIPANTS)]
