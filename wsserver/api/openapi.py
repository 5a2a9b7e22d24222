"""The OpenAPI 3.1 description of the HTTP API, built from the route table.

`Route` describes one endpoint; `document(routes)` turns the table of them
(`wsserver.api.table.ROUTES`) into the document served at
`GET /api/openapi.json`. A request body's schema is its shape's
(`wsserver.api.bodies`, through `wsserver.shapes.json_schema`): the class
that checks a body also describes it. The schemas written here by hand are
those no class declares: the `data` of each reply and the payloads of the
messages the API pushes, which the handlers build as plain dicts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from wsserver._version import __version__
from wsserver.shapes import Shape, json_schema

__all__ = ["SCHEMAS", "Route", "document"]


@attrs.frozen
class Route:
    """One endpoint: how it is matched, who may call it, and how it is described.

    `access` is `"admin"` (API credentials), `"open"`, or `"metrics"` (open
    unless `metrics.require_auth`). `body` is the shape of the request body,
    or the shapes of its forms (any of them); `reply` names a schema of
    `wsserver.api.openapi.SCHEMAS` describing the reply's `data`; `query`
    lists `(name, required, description)`.
    """

    method: str
    path: str
    handler: str
    summary: str
    tag: str
    access: str = "admin"
    body: type[Shape] | tuple[type[Shape], ...] | None = None
    query: tuple[tuple[str, bool, str], ...] = ()
    reply: str | None = None

Schema = dict[str, Any]

_ID: Schema = {
    "type": ["string", "integer"],
    "description": "an id: a string or an integer, compared as a string",
}
_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer"}
_NUM: Schema = {"type": "number"}
_BOOL: Schema = {"type": "boolean"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: Sequence[str] = (), **props: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = list(required)
    return schema


def _page(what: str, item: Schema) -> Schema:
    """A page of a group's CRM records (`core.crm_reads`): each item is as the
    desktop client sent it, plus the fields listed."""
    return _obj(
        ("group_id", "items", "has_more", "next_after"),
        group_id=_ID,
        items={"type": "array", "items": {**item, "description": f"{what}, with the desktop's own fields"}},
        has_more=_BOOL,
        next_after={**_INT, "description": "the `after` of the next page"},
    )


SCHEMAS: dict[str, Schema] = {
    # -- envelopes ------------------------------------------------------------------
    "Reply": _obj(("code", "message", "data"), code={"type": "integer", "const": 0}, message=_STR, data={}),
    "Error": _obj(
        ("code", "message"),
        code={"type": "integer", "description": "the HTTP status"},
        message=_STR,
        field={"type": "string", "description": "the request field to blame"},
    ),
    # -- pushed payloads (seed 001's Go structs in snake_case) -------------------------
    "SystemNotificationData": _obj(
        ("title", "message", "level", "action", "action_url"),
        title=_STR, message=_STR,
        level={"type": "string", "enum": ["info", "warning", "error", "success"]},
        action=_STR, action_url=_STR,
    ),
    "BatchGoOpenURLData": _obj(
        ("task_id", "urls", "delay"),
        task_id=_ID, urls={"type": "array", "items": _STR}, delay={**_INT, "description": "ms"},
    ),
    "TaskProgressData": _obj(
        ("task_id", "task_type", "status", "progress", "total", "completed", "failed",
         "message", "start_time", "end_time"),
        task_id=_ID, task_type=_STR, status=_STR, progress=_NUM, total=_INT, completed=_INT,
        failed=_INT, message=_STR, start_time=_INT, end_time=_INT,
    ),
    "TokenInsufficientData": _obj(
        ("current_balance", "required_tokens", "task_type", "message"),
        current_balance=_INT, required_tokens=_INT, task_type=_STR, message=_STR,
    ),
    "PlanExpiringData": _obj(
        ("plan_name", "days_left", "expires_at", "message", "upgrade_url"),
        plan_name=_STR, days_left=_INT, expires_at=_INT, message=_STR, upgrade_url=_STR,
    ),
    # -- reply data -----------------------------------------------------------------
    "PushResult": _obj(
        ("type", "delivered"),
        user_id=_ID, type=_STR, delivered={**_INT, "description": "connections that took the message"},
        queued={**_INT, "description": "with persist: 1 when the offline user's mailbox got it"},
    ),
    "PublishResult": _obj(
        ("delivered", "queued"),
        delivered={**_INT, "description": "connections that took the message"},
        queued={**_INT, "description": "offline users' mailboxes it was put in"},
    ),
    "MessageSent": _obj(
        ("message_id", "seq", "status", "time"),
        message_id=_INT, client_msg_id={"type": ["string", "integer", "null"]},
        seq={**_INT, "description": "the recipient's"}, status={"type": "string", "const": "sent"},
        time={**_INT, "description": "Unix ms"},
        duplicate={**_BOOL, "description": "true: the same client_msg_id was sent within messages.dedup_window"},
        messages={
            "type": "array", "items": {"type": "object"},
            "description": "by session_id alone: each recipient's message_sent data, in the session's order",
        },
    ),
    "WebsocketStats": _obj(
        ("total_connections", "connected_users"),
        total_connections=_INT, connected_users={"type": "array", "items": _ID},
    ),
    "UserOnline": _obj(
        ("user_id", "is_online"), user_id=_STR, is_online=_BOOL, connections=_INT,
        mailbox={**_INT, "description": "durable messages waiting for the user"},
    ),
    "Device": _obj(
        ("conn_id", "device_id", "device_info", "ip", "user_agent", "connected_at", "last_seen"),
        conn_id=_STR,
        device_id={"type": ["string", "null"]},
        device_info={"description": "as the client registered it (seed 002), or null"},
        ip=_STR, user_agent=_STR,
        connected_at={**_INT, "description": "Unix ms"},
        last_seen={**_INT, "description": "Unix ms of the last frame or pong"},
        user_id=_ID, user_type={"type": ["string", "integer", "null"]},
        group_id={"type": ["string", "integer", "null"]},
        rooms={"type": "array", "items": _STR},
        messages_in=_INT, messages_out=_INT,
    ),
    "DeviceList": _obj(
        ("user_id", "connections"), user_id=_STR, connections={"type": "array", "items": _ref("Device")}
    ),
    "KickResult": _obj(("kicked",), kicked=_INT),
    "Room": _obj(
        ("room", "group_id", "members", "connections"),
        room=_STR, group_id={"type": ["string", "integer", "null"]},
        members={**_INT, "description": "principals"}, connections=_INT,
    ),
    "RoomList": _obj(("rooms",), rooms={"type": "array", "items": _ref("Room")}),
    "RoomMembers": _obj(
        ("room", "members"),
        room=_STR, group_id={"type": ["string", "null"]},
        members={"type": "array", "items": _obj(
            (), user_id=_ID, username={"type": ["string", "null"]},
            user_type={"type": ["string", "integer", "null"]}, connections=_INT,
        )},
    ),
    "GroupStats": _obj(
        ("group_id", "total_accounts", "online_accounts", "total_incoming", "today_incoming",
         "duplicate_incoming", "today_duplicate"),
        group_id=_STR, total_accounts=_INT, online_accounts=_INT, total_incoming=_INT,
        today_incoming={**_INT, "description": "today in crm.timezone"},
        duplicate_incoming=_INT, today_duplicate=_INT,
    ),
    "GroupAccounts": _obj(
        ("group_id", "accounts"), group_id=_STR,
        accounts={"type": "array", "items": _obj(
            ("line_account_id",), line_account_id=_STR, name=_STR, online_status=_STR,
        )},
    ),
    "CustomerPage": _page("customers", _obj(
        ("customer_db_id", "customer_id"), customer_db_id=_INT, customer_id=_STR,
    )),
    "FollowUpPage": _page("follow-ups", _obj(
        ("follow_up_id", "customer_id"), follow_up_id=_INT, customer_id=_STR,
    )),
    "IncomingPage": _page("incoming records", _obj(
        ("incoming_id", "line_account_id", "incoming_line_id", "duplicate", "time"),
        incoming_id=_INT, line_account_id=_STR, incoming_line_id=_STR,
        duplicate={**_BOOL, "description": "the incoming_line_id was already seen in the group"},
        time={**_INT, "description": "Unix ms"},
    )),
    "Code": _obj(
        ("code", "group_id", "name", "enabled"),
        code=_STR, group_id=_ID, name=_STR, enabled=_BOOL,
    ),
    "CodeList": _obj(
        ("codes",),
        codes={"type": "array", "items": _obj(
            ("code", "group_id", "name", "enabled", "connections"),
            code=_STR, group_id=_ID, name=_STR, enabled=_BOOL, connections=_INT,
        )},
    ),
    "CodeResult": _obj(
        ("code", "group_id", "name", "enabled", "created", "closed"),
        code=_STR, group_id=_ID, name=_STR, enabled=_BOOL, created=_BOOL,
        closed={**_INT, "description": "live connections closed with 4001"},
    ),
    "CodeDeleted": _obj(("deleted", "closed"), deleted=_BOOL, closed=_INT),
    "ChatSession": _obj(
        ("session_id", "group_id", "participants", "time"),
        session_id=_ID, group_id=_ID, participants={"type": "array", "items": {"type": "object"}},
        time={**_INT, "description": "Unix ms when it was opened"},
    ),
    "SessionClosed": _obj(("closed",), closed=_BOOL),
    "Task": _obj(
        ("task_id", "task_type", "type", "status", "completed", "updated_at", "data"),
        task_id=_ID, task_type=_STR,
        type={**_STR, "description": "the message it was pushed as: <task_type>_start | _progress | _complete"},
        status=_STR, completed=_BOOL,
        updated_at={**_INT, "description": "Unix ms of the last update"},
        user_type={"description": "the user_type the update was narrowed to, or null"},
        group_id={"description": "the group the update was narrowed to, or null"},
        data=_ref("TaskProgressData"),
    ),
    "TaskList": _obj(
        ("user_id", "tasks"), user_id=_STR,
        tasks={"type": "array", "items": _ref("Task"), "description": "least recently updated first"},
    ),
    "WebhookTest": _obj(
        ("id", "status", "ok", "error", "elapsed_ms"),
        id={**_STR, "description": "the ping event's id"},
        status={"type": ["integer", "null"], "description": "the receiver's HTTP status (null: no answer)"},
        ok={**_BOOL, "description": "status is 2xx"},
        error={"type": ["string", "null"], "description": "timeout or network: <what>, when there was no answer"},
        elapsed_ms=_NUM,
    ),
    "Stats": _obj(
        ("connections", "users", "groups", "rooms", "messages", "mailboxes", "uptime", "version"),
        connections=_obj(("total", "user", "device", "pending"),
                         total=_INT, user=_INT, device=_INT, pending=_INT),
        users={**_INT, "description": "distinct user ids online"},
        principals=_INT, groups=_INT, rooms=_INT,
        messages=_obj(("in", "out"), **{"in": _INT, "out": _INT}),
        mailboxes=_obj(("count", "messages"), count=_INT, messages=_INT),
        uptime={**_NUM, "description": "seconds"},
        started_at={**_INT, "description": "Unix ms"},
        version=_STR,
        node_id={**_STR, "description": "this node's id (kept in storage.dir)"},
    ),
    "NodeList": _obj(("nodes",), nodes={"type": "array", "items": _ref("Node")}),
    "Node": _obj(
        ("node_id", "name", "version", "connections", "users", "uptime", "last_seen"),
        node_id=_STR,
        name={**_STR, "description": "cluster.node_name, else host name and process id"},
        version=_STR,
        connections={**_INT, "description": "the node's open WebSocket connections"},
        users={**_INT, "description": "distinct user ids connected to the node"},
        uptime={**_NUM, "description": "seconds"},
        last_seen={**_INT, "description": "Unix ms of the node's latest report"},
    ),
}  # fmt: skip

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

_ERRORS = {
    "400": "bad JSON, or a missing or wrong field (named in `field`)",
    "401": "missing or invalid credentials",
    "403": "a valid token without role admin",
    "404": "no such resource",
    "409": "webhooks.url is empty (webhooks are off)",
    "413": "body larger than limits.max_http_body_bytes",
}


def _error(status: str) -> Schema:
    return {
        "description": _ERRORS[status],
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _shapes(body: type[Shape] | tuple[type[Shape], ...]) -> tuple[type[Shape], ...]:
    return body if isinstance(body, tuple) else (body,)


def _body_schema(body: type[Shape] | tuple[type[Shape], ...]) -> Schema:
    refs = [_ref(shape.__name__) for shape in _shapes(body)]
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def _shape_schema(shape: type[Shape]) -> Schema:
    """A body's schema from its shape, described by the first paragraph of its docstring."""
    schema = json_schema(shape)
    doc = " ".join((shape.__doc__ or "").split("\n\n")[0].split())
    return {**schema, "description": doc} if doc else schema


def _operation(route: Route) -> Schema:
    op: Schema = {"operationId": route.handler, "summary": route.summary, "tags": [route.tag]}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(route.path)
    ]
    params += [
        {
            "name": name,
            "in": "query",
            "required": required,
            "description": doc,
            "schema": {"type": "string"},
        }
        for name, required, doc in route.query
    ]
    if params:
        op["parameters"] = params
    if route.body:
        op["requestBody"] = {
            "required": route.handler != "kick",
            "content": {"application/json": {"schema": _body_schema(route.body)}},
        }
    if route.handler == "metrics":
        ok: Schema = {
            "description": "Prometheus text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    elif route.handler == "openapi":
        ok = {
            "description": "this document",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    else:
        data = _ref(route.reply) if route.reply else {}
        ok = {
            "description": "success",
            "content": {
                "application/json": {
                    "schema": {"allOf": [_ref("Reply"), _obj(("data",), data=data)]}
                }
            },
        }
    responses: dict[str, Schema] = {"200": ok}
    if route.body or any(required for _, required, _ in route.query):
        responses["400"] = _error("400")
    if route.access != "open":
        responses["401"] = _error("401")
        responses["403"] = _error("403")
    if route.method == "DELETE":
        responses["404"] = _error("404")
    if route.handler == "webhook_test":
        responses["409"] = _error("409")
    if route.body:
        responses["413"] = _error("413")
    op["responses"] = responses
    if route.access == "admin":
        op["security"] = [{"bearerAuth": []}, {"apiKey": []}]
    elif route.access == "metrics":
        op["security"] = [{}, {"bearerAuth": []}, {"apiKey": []}]
        op["description"] = "Open unless metrics.require_auth is true."
    else:
        op["security"] = []
    return op


def document(routes: Sequence[Route]) -> Schema:
    """The OpenAPI 3.1 document describing `routes`."""
    paths: dict[str, Schema] = {}
    schemas = dict(SCHEMAS)
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
        for shape in _shapes(route.body or ()):
            schemas[shape.__name__] = _shape_schema(shape)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wsserver HTTP API",
            "version": __version__,
            "description": (
                "Push to WebSocket users, inspect and manage connections. Replies are "
                '{"code":0,"message":"success","data":...}; errors {"code":<HTTP status>,'
                '"message":...,"field"?:...}. Unknown path 404, wrong method 405, '
                "head over limits.max_header_bytes 431."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": 'a token with the claim role: "admin"',
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
