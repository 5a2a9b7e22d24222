"""The HTTP API (SPEC 6): routes -> handlers -> hub commands.

`install(host, router)` registers every route of `ROUTES` on `router` (the
main listener's, or the private `server.api_listen` one's); `host` is what the
API needs of its server (`api.host.ApiHost`). The entry points install it. The same table
produces the OpenAPI description served at `/api/openapi.json`, so the two
cannot drift apart.

Invariants:

- Handlers reach the hub only with commands (`wsserver.core.commands`)
  through its actor; they never read hub state directly.
- Every route except `/api/openapi.json` (and `/metrics` unless
  `metrics.require_auth`) requires admin credentials (`wsserver.api.credentials`).
- Replies are `{"code":0,"message":"success","data":..}`; errors carry the HTTP
  status in `code` and name the field to blame (`wsserver.net.http`).
- A body is a JSON object whose numbers are finite and whose nesting is at
  most `limits.max_json_depth` (SPEC 3), so whatever is accepted can be
  re-encoded for clients, journaled and snapshotted.
- A `persist` publish is answered only once its mailbox records are durable.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from wsserver.api import seed001
from wsserver.api.credentials import authorize
from wsserver.api.openapi import Route, document
from wsserver.core.commands import (
    ROOM_NAME,
    TYPE_NAME,
    AfterCommit,
    DeleteCode,
    Devices,
    GroupAccounts,
    GroupStats,
    Kick,
    ListCodes,
    OnlineCount,
    Publish,
    PushTask,
    PutCode,
    RoomList,
    RoomMembers,
    Stats,
    Target,
    TaskList,
    WebhookPing,
    WebsocketStats,
)
from wsserver.net.http import (
    HttpError,
    HttpRequest,
    HttpResponse,
    Router,
    json_reply,
    optional,
    require,
)
from wsserver.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from wsserver.protocol.jsonlimits import too_deep

if TYPE_CHECKING:
    from wsserver.api.host import ApiHost

__all__ = ["ROUTES", "Api", "Route", "install", "parse_publish"]

_ID = (str, int)


_FILTERS = (
    ("user_type", False, "only connections of this user_type"),
    ("group_id", False, "only connections of this group"),
)

ROUTES: tuple[Route, ...] = (
    # -- seed 001 -----------------------------------------------------------------
    Route("POST", "/api/websocket/notification", "notification",
          "Push system_notification to a user", "seed001",
          body="NotificationRequest", reply="PushResult"),
    Route("POST", "/api/websocket/batchgo/open-url", "batchgo_open_url",
          "Push batchgo_open_url (BatchGo Basic mode window.open)", "seed001",
          body="OpenUrlRequest", reply="PushResult"),
    Route("POST", "/api/websocket/task/progress", "task_progress",
          "Push <task_type>_start | _progress | _complete", "seed001",
          body="TaskProgressRequest", reply="PushResult"),
    Route("POST", "/api/websocket/token/insufficient", "token_insufficient",
          "Push token_insufficient", "seed001",
          body="TokenInsufficientRequest", reply="PushResult"),
    Route("POST", "/api/websocket/plan/expiring", "plan_expiring",
          "Push plan_expiring, or plan_expired when days_left <= 0", "seed001",
          body="PlanExpiringRequest", reply="PushResult"),
    Route("GET", "/api/websocket/stats", "websocket_stats",
          "Connection count and online user ids", "seed001", reply="WebsocketStats"),
    Route("GET", "/api/websocket/user/{user_id}/online", "websocket_user_online",
          "Whether a user has a connection", "seed001", reply="UserOnline"),
    Route("POST", "/api/websocket/broadcast", "broadcast",
          "Push system_notification (or {type, data}) to everyone", "seed001",
          body="BroadcastRequest", reply="PushResult"),
    Route("GET", "/api/websocket/test", "websocket_test",
          "Push a test system_notification to a user", "seed001",
          query=(("user_id", True, "the user to notify"),), reply="PushResult"),
    # -- general ------------------------------------------------------------------
    Route("POST", "/api/publish", "publish",
          "Publish any message type to users, a group, a room or everyone", "push",
          body="PublishRequest", reply="PublishResult"),
    Route("GET", "/api/stats", "stats", "Hub statistics", "ops", reply="Stats"),
    Route("GET", "/api/users/{user_id}/online", "user_online",
          "Whether a user is online, and on how many connections", "users",
          query=_FILTERS, reply="UserOnline"),
    Route("GET", "/api/users/{user_id}/connections", "user_connections",
          "A user's connections (device list)", "users",
          query=_FILTERS, reply="DeviceList"),
    Route("POST", "/api/users/{user_id}/kick", "kick",
          "Send kicked {reason} to a user's connections, then close them with 4003", "users",
          body="KickRequest", reply="KickResult"),
    Route("GET", "/api/users/{user_id}/tasks", "user_tasks",
          "The latest state of a user's running and recently completed tasks", "users",
          query=_FILTERS, reply="TaskList"),
    Route("GET", "/api/rooms", "rooms", "Rooms with members", "rooms",
          query=(("group_id", False, "only the rooms of this group"),), reply="RoomList"),
    Route("GET", "/api/rooms/{room}/members", "room_members",
          "A room's members, one entry per principal", "rooms",
          query=(("group_id", False, "the room's group (absent: connections without a group)"),),
          reply="RoomMembers"),
    # -- CRM (seed 000) -------------------------------------------------------------
    Route("GET", "/api/groups/{group_id}/stats", "group_stats",
          "A group's CRM counters (as in group_stats_update)", "crm", reply="GroupStats"),
    Route("GET", "/api/groups/{group_id}/accounts", "group_accounts",
          "A group's Line accounts", "crm", reply="GroupAccounts"),
    Route("GET", "/api/activation-codes", "list_codes",
          "Every activation code with its live connection count", "crm", reply="CodeList"),
    Route("POST", "/api/activation-codes", "put_code",
          "Create or replace an activation code (disabling closes its connections with 4001)",
          "crm", body="CodeRequest", reply="CodeResult"),
    Route("DELETE", "/api/activation-codes/{code}", "delete_code",
          "Delete an activation code and close its connections with 4001", "crm",
          reply="CodeDeleted"),
    # -- operations ---------------------------------------------------------------
    Route("POST", "/api/webhooks/test", "webhook_test",
          "Send a signed ping event to webhooks.url and answer the receiver's status", "ops",
          reply="WebhookTest"),
    Route("GET", "/metrics", "metrics",
          "Prometheus metrics (text format)", "ops", access="metrics"),
    Route("GET", "/api/openapi.json", "openapi",
          "This OpenAPI description", "ops", access="open"),
)  # fmt: skip


# --------------------------------------------------------------------------- bodies


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


def read_body(req: HttpRequest, max_depth: int, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a checked JSON object (`{}` for an empty body when `empty_ok`)."""
    if empty_ok and not req.body.strip():
        return {}
    body = req.json_object()
    check_json_values(body, max_depth, req.body)
    return body


def _id(body: dict[str, Any], name: str, *, required: bool) -> Any:
    """A user/group id or user type: a non-empty string or an integer."""
    value = require(body, name, _ID) if required else optional(body, name, _ID, None)
    if value == "":
        raise HttpError(400, "http_field_empty", name)
    return value


def _user_target(body: dict[str, Any]) -> Target:
    """`user_id` (required), narrowed by the optional `user_type` and `group_id`."""
    return Target(
        user_ids=(_id(body, "user_id", required=True),),
        group_id=_id(body, "group_id", required=False),
        user_type=_id(body, "user_type", required=False),
    )


def parse_publish(body: dict[str, Any]) -> Publish:
    """A `POST /api/publish` body as a `Publish`; `HttpError(400)` naming the field.

    Target forms, exactly one: `user_id`, `user_ids`, `room` (with `group_id`),
    `group_id` alone, or `all: true`. `group_id` next to `user_id`/`user_ids`
    narrows them to that group; `user_type` narrows any form. `persist` is for
    `user_id`/`user_ids` only.
    """
    mtype = require(body, "type", str)
    if not TYPE_NAME.fullmatch(mtype):
        raise HttpError(400, "http_field_pattern", "type", pattern=TYPE_NAME.pattern)
    user_id = _id(body, "user_id", required=False)
    user_ids = optional(body, "user_ids", list, None)
    group_id = _id(body, "group_id", required=False)
    room = optional(body, "room", str, None)
    everyone = optional(body, "all", bool, False)
    user_type = _id(body, "user_type", required=False)
    persist = optional(body, "persist", bool, False)
    if user_ids is not None and (
        not user_ids
        or not all(isinstance(u, _ID) and not isinstance(u, bool) and u != "" for u in user_ids)
    ):
        raise HttpError(400, "http_field_ids", "user_ids")
    forms = [
        name
        for name, given in (
            ("user_id", user_id is not None),
            ("user_ids", user_ids is not None),
            ("room", room is not None),
            ("all", everyone),
        )
        if given
    ]
    if everyone and group_id is not None:
        forms.append("group_id")
    if len(forms) > 1:
        raise HttpError(400, "http_targets_conflict", forms[1], targets=", ".join(forms))
    if not forms and group_id is None:
        raise HttpError(400, "http_target_missing", "user_id")
    if room is not None and not ROOM_NAME.fullmatch(room):
        raise HttpError(400, "field_invalid", "room")
    if persist and user_id is None and user_ids is None:
        raise HttpError(400, "http_persist_target", "persist")
    ids = (user_id,) if user_id is not None else tuple(user_ids or ())
    target = Target(
        user_ids=ids, group_id=group_id, room=room, everyone=everyone, user_type=user_type
    )
    return Publish(type=mtype, data=body.get("data"), target=target, persist=persist)


# --------------------------------------------------------------------------- handlers


class Api:
    """The handlers of `ROUTES`, bound to one server."""

    def __init__(self, server: ApiHost) -> None:
        self.server = server
        self.actor = server.actor
        self._openapi = json.dumps(document(ROUTES), ensure_ascii=False).encode()

    @property
    def locale(self) -> str:
        return self.server.config.server.locale

    @property
    def max_depth(self) -> int:
        """`limits.max_json_depth`, read per request (a reload applies at once)."""
        return self.server.config.limits.max_json_depth

    def guarded(self, route: Route) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
        """The handler of `route`, behind the credentials check its access asks for."""
        handler: Callable[[HttpRequest], Awaitable[HttpResponse]] = getattr(self, route.handler)
        server = self.server

        async def guarded(req: HttpRequest) -> HttpResponse:
            if route.access == "admin" or (
                route.access == "metrics" and server.config.metrics.require_auth
            ):
                authorize(server, req.head, req.remote)
            return await handler(req)

        guarded.__name__ = route.handler
        return guarded

    async def _committed(self) -> None:
        """Wait until every record the hub has appended so far is durable."""
        durable = trio.Event()
        await self.actor.call(AfterCommit(durable.set))
        await durable.wait()

    async def _publish(self, publish: Publish) -> tuple[int, int]:
        """Run a publish in the actor; with queued mailbox records, wait until durable."""
        result = await self.actor.call(publish)
        if result.queued:
            await self._committed()
        return result.delivered, result.queued

    async def _push_user(self, body: dict[str, Any], mtype: str, data: Any) -> HttpResponse:
        target = _user_target(body)
        delivered, _ = await self._publish(Publish(mtype, data, target))
        return json_reply({"user_id": target.user_ids[0], "type": mtype, "delivered": delivered})

    # -- seed 001 -------------------------------------------------------------------

    async def notification(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth)
        return await self._push_user(body, *seed001.system_notification(body))

    async def batchgo_open_url(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth)
        return await self._push_user(body, *seed001.batchgo_open_url(body))

    async def task_progress(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth)
        mtype, data = seed001.task_progress(body)
        target = _user_target(body)
        # kept as the task's latest state (SPEC 6.1): answered once that is durable
        result = await self.actor.call(PushTask(mtype, data, target))
        await self._committed()
        return json_reply({"user_id": target.user_ids[0], "type": mtype, "delivered": result.delivered})

    async def token_insufficient(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth)
        return await self._push_user(body, *seed001.token_insufficient(body, self.locale))

    async def plan_expiring(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth)
        return await self._push_user(body, *seed001.plan_expiring(body, self.locale))

    async def websocket_stats(self, req: HttpRequest) -> HttpResponse:
        return json_reply(await self.actor.call(WebsocketStats()))

    async def websocket_user_online(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        n = await self.actor.call(OnlineCount(user_id))
        return json_reply({"user_id": user_id, "is_online": n > 0})

    async def broadcast(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth)
        if body.get("type") is not None:
            mtype = require(body, "type", str)
            if not TYPE_NAME.fullmatch(mtype):
                raise HttpError(400, "http_field_pattern", "type", pattern=TYPE_NAME.pattern)
            data = body.get("data")
        else:
            mtype, data = seed001.system_notification(body)
        group_id = _id(body, "group_id", required=False)
        target = Target(
            group_id=group_id,
            everyone=group_id is None,
            user_type=_id(body, "user_type", required=False),
        )
        delivered, _ = await self._publish(Publish(mtype, data, target))
        return json_reply({"type": mtype, "delivered": delivered})

    async def websocket_test(self, req: HttpRequest) -> HttpResponse:
        query: dict[str, Any] = dict(req.head.query)
        return await self._push_user(
            {"user_id": _id(query, "user_id", required=True)},
            *seed001.probe_notification(self.locale),
        )

    # -- general --------------------------------------------------------------------

    async def publish(self, req: HttpRequest) -> HttpResponse:
        publish = parse_publish(read_body(req, self.max_depth))
        delivered, queued = await self._publish(publish)
        return json_reply({"delivered": delivered, "queued": queued})

    async def stats(self, req: HttpRequest) -> HttpResponse:
        return json_reply(await self.actor.call(Stats()))

    def _filters(self, req: HttpRequest) -> tuple[Any, Any]:
        query = req.head.query
        return query.get("user_type") or None, query.get("group_id") or None

    async def user_online(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        n = await self.actor.call(OnlineCount(user_id, *self._filters(req)))
        return json_reply({"user_id": user_id, "is_online": n > 0, "connections": n})

    async def user_connections(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        devices = await self.actor.call(Devices(user_id, *self._filters(req)))
        return json_reply({"user_id": user_id, "connections": devices})

    async def kick(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth, empty_ok=True)
        device_id = _id(body, "device_id", required=False)
        conn_id = optional(body, "conn_id", str, None)
        reason = optional(body, "reason", str, None)
        user_type = _id(body, "user_type", required=False)
        group_id = _id(body, "group_id", required=False)
        kick = Kick(
            req.params["user_id"],
            device_id=None if device_id is None else str(device_id),
            conn_id=conn_id,
            reason=reason,
            user_type=user_type,
            group_id=group_id,
        )
        return json_reply({"kicked": await self.actor.call(kick)})

    async def user_tasks(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        tasks = await self.actor.call(TaskList(user_id, *self._filters(req)))
        return json_reply({"user_id": user_id, "tasks": tasks})

    async def rooms(self, req: HttpRequest) -> HttpResponse:
        group_id = req.head.query.get("group_id") or None
        rooms = await self.actor.call(RoomList(group_id))
        return json_reply({"rooms": rooms})

    async def room_members(self, req: HttpRequest) -> HttpResponse:
        room = req.params["room"]
        group_id = req.head.query.get("group_id") or None
        return json_reply(await self.actor.call(RoomMembers(room, group_id)))

    # -- CRM ------------------------------------------------------------------------

    async def group_stats(self, req: HttpRequest) -> HttpResponse:
        return json_reply(await self.actor.call(GroupStats(req.params["group_id"])))

    async def group_accounts(self, req: HttpRequest) -> HttpResponse:
        return json_reply(await self.actor.call(GroupAccounts(req.params["group_id"])))

    async def list_codes(self, req: HttpRequest) -> HttpResponse:
        codes = await self.actor.call(ListCodes())
        return json_reply({"codes": codes})

    async def put_code(self, req: HttpRequest) -> HttpResponse:
        body = read_body(req, self.max_depth)
        code = require(body, "code", str)
        if not 0 < len(code.strip()) == len(code) <= 128:
            raise HttpError(400, "http_code_format", "code")
        group_id = _id(body, "group_id", required=True)
        name = optional(body, "name", str, "")
        enabled = optional(body, "enabled", bool, True)
        created, closed = await self.actor.call(PutCode(code, group_id, name, enabled))
        await self._committed()
        entry = {"code": code, "group_id": group_id, "name": name, "enabled": enabled}
        return json_reply({**entry, "created": created, "closed": closed}, status=201 if created else 200)

    async def delete_code(self, req: HttpRequest) -> HttpResponse:
        closed = await self.actor.call(DeleteCode(req.params["code"]))
        if closed is None:
            raise HttpError(404, "code_not_found", "code")
        await self._committed()
        return json_reply({"deleted": True, "closed": closed})

    # -- operations -----------------------------------------------------------------

    async def webhook_test(self, req: HttpRequest) -> HttpResponse:
        if not self.server.config.webhooks.url:
            raise HttpError(409, "webhooks_off", "webhooks.url")
        event = await self.actor.call(WebhookPing())
        return json_reply(await self.server.webhooks.ping(event))

    async def metrics(self, req: HttpRequest) -> HttpResponse:
        actor = self.actor
        depth = actor.queue_depth  # before our own command joins the queue
        stats = await actor.call(Stats())
        body = self.server.metrics.render(stats, depth)
        return HttpResponse(200, body, content_type=METRICS_CONTENT_TYPE)

    async def openapi(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse(200, self._openapi)


def install(host: ApiHost, router: Router) -> Api:
    """Register every route of `ROUTES` on `router`, served for `host`."""
    api = Api(host)
    for route in ROUTES:
        router.add(route.method, route.path, api.guarded(route))
    return api
