"""The HTTP API (SPEC 6): routes -> handlers -> hub commands.

`install(host, router)` registers every route of `ROUTES` (`api.table`) on `router` (the
main listener's, or the private `server.api_listen` one's); `host` is what the
API needs of its server (`api.host.ApiHost`). The entry points install it. The same table
produces the OpenAPI description served at `/api/openapi.json`, so the two
cannot drift apart.

Invariants:

- Handlers reach the hub only with commands (`wsserver.core.commands`,
  `wsserver.core.admin_commands`, `wsserver.core.webhook_commands`) through
  its actor; they never read hub state directly.
- Every route except `/api/openapi.json` (and `/metrics` unless
  `metrics.require_auth`) requires admin credentials (`wsserver.api.credentials`);
  a group-scoped key's calls go through `api.scopes` first.
- Replies are `{"code":0,"message":"success","data":..}`; errors carry the HTTP
  status in `code` and name the field to blame (`wsserver.protocol.replies`).
- Every body is read by its shape (`wsserver.api.bodies`), which also
  describes it in the OpenAPI document.
- A `persist` publish is answered only once its mailbox records are durable
  (`publish_durably`, which the embedding API uses too).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from wsserver.api import audit, bodies, channel, pushes, scopes
from wsserver.api.bodies import (
    BroadcastNotice,
    BroadcastRequest,
    CodeRequest,
    KickRequest,
    MessageRequest,
    NotificationRequest,
    OpenUrlRequest,
    PlanExpiringRequest,
    ProbeQuery,
    SessionRequest,
    TaskProgressRequest,
    TokenInsufficientRequest,
    page_query,
    parse_publish,
)
from wsserver.api.credentials import Caller, authorize
from wsserver.api.openapi import Route, document
from wsserver.api.table import ROUTES
from wsserver.core.admin_commands import (
    Devices,
    GroupAccounts,
    GroupStats,
    Kick,
    MailboxSize,
    OnlineCount,
    RoomList,
    RoomMembers,
    Stats,
    WebsocketStats,
)
from wsserver.core.commands import (
    AfterStored,
    CloseSession,
    CrmPage,
    DeleteCode,
    ListCodes,
    OpenSession,
    Publish,
    PublishResult,
    PushTask,
    PutCode,
    SendAs,
    Target,
    TaskList,
)
from wsserver.core.webhook_commands import WebhookPing
from wsserver.net.http import HttpError, HttpRequest, HttpResponse, Router
from wsserver.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from wsserver.protocol.encoding import dumps
from wsserver.protocol.i18n import text
from wsserver.protocol.replies import ok_body

if TYPE_CHECKING:
    from wsserver.api.host import ApiHost, HubDoor

__all__ = ["ROUTES", "Api", "Route", "install", "json_reply", "publish_durably", "until_durable"]





_SEND_STATUS = {"forbidden": 403, "not_found": 404, "rate_limited": 429, "too_large": 413}
"""The HTTP status of a `POST /api/messages` refused like a `send_message` (by
its error code; any other: 400)."""


# --------------------------------------------------------------------------- replies


def json_reply(data: object, message: str = "success", status: int = 200) -> HttpResponse:
    """A success reply `{"code":0,"message":message,"data":data}`."""
    return HttpResponse(status, ok_body(data, message))


async def until_durable(actor: HubDoor) -> None:
    """Wait until every record the hub has appended so far is durable; 503
    `unavailable` when a cluster's shared log refused one meanwhile."""
    durable = trio.Event()
    stored: list[bool] = []

    def done(ok: bool) -> None:
        stored.append(ok)
        durable.set()

    await actor.call(AfterStored(done))
    await durable.wait()
    if not stored[0]:
        raise HttpError(503, "unavailable")


async def publish_durably(actor: HubDoor, publish: Publish) -> PublishResult:
    """Run a publish in the hub actor; when it queued mailbox records (`persist`),
    return only once they are durable."""
    result = await actor.call(publish)
    if result.queued:
        await until_durable(actor)
    return result


# --------------------------------------------------------------------------- handlers


class Api:
    """The handlers of `ROUTES`, bound to one server."""

    def __init__(self, server: ApiHost) -> None:
        self.server = server
        self.actor = server.actor
        self._openapi = dumps(document(ROUTES))

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
                caller = authorize(server, req.head, req.remote)
                call = handler if caller.groups is None else partial(scopes.scoped, self, route.handler, caller.groups, handler)
                if audit.changes(req.head.method):
                    return await _audited(caller, req, call)
                return await call(req)
            return await handler(req)

        async def _audited(caller: Caller, req: HttpRequest, call: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> HttpResponse:
            status = 500
            try:
                if caller.read_only:
                    raise HttpError(403, "api_read_only")
                response = await call(req)
                status = response.status
                return response
            except HttpError as err:
                status = err.status
                raise
            finally:
                audit.log_call(caller, req.head.method, req.head.target, status, req.remote)

        guarded.__name__ = route.handler
        return guarded

    async def _publish(self, publish: Publish) -> PublishResult:
        """`publish_durably`, its hand-over to the sockets timed
        (`wsserver_publish_latency_seconds`; the wait for durability is not in it)."""
        started = time.perf_counter()
        result = await self.actor.call(publish)
        self.server.metrics.published(time.perf_counter() - started)
        if result.queued:
            await until_durable(self.actor)
        return result

    def _need_cluster(self) -> None:
        """A publish needs the cluster's Redis in cluster mode: 503 while it does
        not answer (the other nodes would miss it)."""
        unavailable = self.server.cluster_unavailable()
        if unavailable is not None:
            raise unavailable

    async def _push_user(self, to: Any, mtype: str, data: Any) -> HttpResponse:
        """Push one of seed 001's messages to the user a body names (`to`: its
        `user_id`, `group_id`, `user_type`)."""
        self._need_cluster()
        target = Target(user_ids=(to.user_id,), group_id=to.group_id, user_type=to.user_type)
        result = await self._publish(Publish(mtype, data, target, persist=to.persist))
        return json_reply(
            {"user_id": to.user_id, "type": mtype, "delivered": result.delivered, "queued": result.queued},
            self._seed_text("seed001_sent"),
        )

    def _seed_text(self, key: str) -> str:
        """Seed 001's own `message` of a reply (SPEC 13), in `server.locale`."""
        return text(key, self.locale)

    # -- seed 001 -------------------------------------------------------------------

    async def notification(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, NotificationRequest, self.max_depth)
        return await self._push_user(body, *pushes.system_notification(body))

    async def batchgo_open_url(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, OpenUrlRequest, self.max_depth)
        return await self._push_user(body, *pushes.batchgo_open_url(body))

    async def task_progress(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, TaskProgressRequest, self.max_depth)
        mtype, data = pushes.task_progress(body)
        target = Target(user_ids=(body.user_id,), group_id=body.group_id, user_type=body.user_type)
        # kept as the task's latest state (SPEC 6.1): answered once that is durable
        result = await self.actor.call(PushTask(mtype, data, target))
        await until_durable(self.actor)
        return json_reply(
            {"user_id": body.user_id, "type": mtype, "delivered": result.delivered},
            self._seed_text("seed001_sent"),
        )

    async def token_insufficient(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, TokenInsufficientRequest, self.max_depth)
        return await self._push_user(body, *pushes.token_insufficient(body, self.locale))

    async def plan_expiring(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, PlanExpiringRequest, self.max_depth)
        return await self._push_user(body, *pushes.plan_expiring(body, self.locale))

    async def websocket_stats(self, req: HttpRequest) -> HttpResponse:
        stats = await self.actor.call(WebsocketStats())
        view = self.server.cluster_view
        stats = stats if view is None else await view.websocket_stats(stats)
        return json_reply(stats, self._seed_text("seed001_fetched"))

    async def websocket_user_online(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        n = await self._online(user_id)
        return json_reply({"user_id": user_id, "is_online": n > 0}, self._seed_text("seed001_checked"))

    async def broadcast(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, dict[str, Any], self.max_depth)
        to: BroadcastNotice | BroadcastRequest
        if body.get("type") is not None:  # {type, data}: any message
            to = bodies.structure(body, BroadcastRequest)
            mtype, data = to.type, to.data
        else:  # seed 001's {title, message, level}
            to = bodies.structure(body, BroadcastNotice)
            mtype, data = pushes.system_notification(to)
        target = Target(group_id=to.group_id, everyone=to.group_id is None, user_type=to.user_type)
        result = await self._publish(Publish(mtype, data, target))
        return json_reply({"type": mtype, "delivered": result.delivered}, self._seed_text("seed001_sent"))

    async def websocket_test(self, req: HttpRequest) -> HttpResponse:
        to = bodies.structure(dict(req.head.query), ProbeQuery)
        target = Target(user_ids=(to.user_id,))
        mtype, data = pushes.probe_notification(self.locale)
        result = await self._publish(Publish(mtype, data, target))
        return json_reply(
            {"user_id": to.user_id, "type": mtype, "delivered": result.delivered},
            self._seed_text("seed001_sent"),
        )

    # -- general --------------------------------------------------------------------

    async def publish(self, req: HttpRequest) -> HttpResponse:
        publish = parse_publish(bodies.read(req, dict[str, Any], self.max_depth))
        self._need_cluster()
        result = await self._publish(publish)
        return json_reply({"delivered": result.delivered, "queued": result.queued})

    async def send_message(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, MessageRequest, self.max_depth)
        command = SendAs(body.from_user_id, body.from_user_type, body.group_id, body.from_username, body.send_message())
        sent = await self.actor.call(command)
        if sent.error is not None:
            code, key, field, params = sent.error
            field = "text" if field == "message" else field
            raise HttpError(_SEND_STATUS.get(code, 400), key, field, **params)
        await until_durable(self.actor)  # the reply is made once the message is durable
        assert sent.reply is not None
        return json_reply(sent.reply)

    async def stats(self, req: HttpRequest) -> HttpResponse:
        stats = await self.actor.call(Stats())
        view = self.server.cluster_view
        return json_reply(stats if view is None else await view.stats(stats))

    async def nodes(self, req: HttpRequest) -> HttpResponse:
        return json_reply({"nodes": await self.server.nodes()})

    async def _online(self, user_id: Any, user_type: Any = None, group_id: Any = None) -> int:
        """A user's connections on every node."""
        n = await self.actor.call(OnlineCount(user_id, user_type, group_id))
        view = self.server.cluster_view
        return n if view is None else n + await view.online(user_id, user_type, group_id)

    def _filters(self, req: HttpRequest) -> tuple[Any, Any]:
        query = req.head.query
        return query.get("user_type") or None, query.get("group_id") or None

    async def user_online(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        filters = self._filters(req)
        n = await self._online(user_id, *filters)
        waiting = await self.actor.call(MailboxSize(user_id, *filters))
        return json_reply({"user_id": user_id, "is_online": n > 0, "connections": n, "mailbox": waiting})

    async def user_connections(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        devices = await self.actor.call(Devices(user_id, *self._filters(req)))
        view = self.server.cluster_view
        if view is not None:  # the other nodes' connections too, oldest first
            devices = sorted([*devices, *await view.devices(user_id, *self._filters(req))],
                             key=lambda d: d["connected_at"])  # fmt: skip
        return json_reply({"user_id": user_id, "connections": devices})

    async def kick(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, KickRequest, self.max_depth, empty_ok=True)
        kick = Kick(
            req.params["user_id"],
            device_id=None if body.device_id is None else str(body.device_id),
            conn_id=body.conn_id,
            reason=body.reason,
            user_type=body.user_type,
            group_id=body.group_id,
        )
        remote = 0
        view = self.server.cluster_view
        if view is not None:  # every node kicks its own; counted here before they do
            remote = sum(
                1
                for d in await view.devices(kick.user_id, kick.user_type, kick.group_id)
                if kick.device_id in (None, d["device_id"]) and kick.conn_id in (None, d["conn_id"])
            )
        return json_reply({"kicked": await self.actor.call(kick) + remote})

    async def user_tasks(self, req: HttpRequest) -> HttpResponse:
        user_id = req.params["user_id"]
        tasks = await self.actor.call(TaskList(user_id, *self._filters(req)))
        return json_reply({"user_id": user_id, "tasks": tasks})

    async def rooms(self, req: HttpRequest) -> HttpResponse:
        group_id = req.head.query.get("group_id") or None
        rooms = await self.actor.call(RoomList(group_id))
        view = self.server.cluster_view
        if view is not None:
            rooms = await view.rooms(rooms, group_id)
        return json_reply({"rooms": rooms})

    async def room_members(self, req: HttpRequest) -> HttpResponse:
        room = req.params["room"]
        group_id = req.head.query.get("group_id") or None
        members = await self.actor.call(RoomMembers(room, group_id))
        view = self.server.cluster_view
        if view is not None:
            members = await view.room_members(members)
        return json_reply(members)

    # -- CRM ------------------------------------------------------------------------

    async def group_stats(self, req: HttpRequest) -> HttpResponse:
        return json_reply(await self.actor.call(GroupStats(req.params["group_id"])))

    async def group_accounts(self, req: HttpRequest) -> HttpResponse:
        return json_reply(await self.actor.call(GroupAccounts(req.params["group_id"])))

    async def _crm_page(self, req: HttpRequest, kind: str) -> HttpResponse:
        after, limit = page_query(req.head.query)
        return json_reply(await self.actor.call(CrmPage(req.params["group_id"], kind, after, limit)))

    async def group_customers(self, req: HttpRequest) -> HttpResponse:
        return await self._crm_page(req, "customers")

    async def group_follow_ups(self, req: HttpRequest) -> HttpResponse:
        return await self._crm_page(req, "follow_ups")

    async def group_incoming(self, req: HttpRequest) -> HttpResponse:
        return await self._crm_page(req, "incoming")

    async def list_codes(self, req: HttpRequest) -> HttpResponse:
        codes = await self.actor.call(ListCodes())
        return json_reply({"codes": codes})

    async def put_code(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, CodeRequest, self.max_depth)
        created, closed = await self.actor.call(PutCode(body.code, body.group_id, body.name, body.enabled))
        await until_durable(self.actor)
        entry = {"code": body.code, "group_id": body.group_id, "name": body.name, "enabled": body.enabled}
        return json_reply({**entry, "created": created, "closed": closed}, status=201 if created else 200)

    async def delete_code(self, req: HttpRequest) -> HttpResponse:
        closed = await self.actor.call(DeleteCode(req.params["code"]))
        if closed is None:
            raise HttpError(404, "code_not_found", "code")
        await until_durable(self.actor)
        return json_reply({"deleted": True, "closed": closed})

    # -- chat sessions ----------------------------------------------------------------

    async def open_session(self, req: HttpRequest) -> HttpResponse:
        body = bodies.read(req, SessionRequest, self.max_depth)
        participants = [{"user_id": p.user_id, "user_type": p.user_type} for p in body.participants]
        chat = await self.actor.call(OpenSession(body.session_id, body.group_id, participants))
        await until_durable(self.actor)
        return json_reply(chat)

    async def close_session(self, req: HttpRequest) -> HttpResponse:
        group_id = req.head.query.get("group_id")
        if not await self.actor.call(CloseSession(req.params["session_id"], group_id)):
            raise HttpError(404, "session_unknown", "session_id")
        await until_durable(self.actor)
        return json_reply({"closed": True})

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
    """Register every route of `ROUTES` on `router`, served for `host`, and
    the Redis publish channel's handler (`api.channel`) with `host`."""
    api = Api(host)
    for route in ROUTES:
        router.add(route.method, route.path, api.guarded(route))
    host.serve_channel(partial(channel.run, host, api._publish))  # cluster mode's Redis publishes
    return api
