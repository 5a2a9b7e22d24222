"""Group-scoped API keys: what a key with `groups = [..]` may reach (SPEC 13).

A `[[api.keys]]` table may limit its key to some groups. Such a key reaches
only what belongs to those groups, and each route says where its group is
named (`RULES`): in the path, the query or the body. The group must be
named and be one of the key's, compared as strings (`7` and `"7"` are one
group); otherwise the call is answered 403 naming that field
(`api_group_scope`), before the handler runs, so nothing happens.

- Pushes and direct messages (seed 001's routes, `/api/publish`,
  `/api/messages`, sessions) name a `group_id`; an addressee without one
  could be anyone's, so it is refused. A publish to `all` is refused
  (field `all`); one to an `activation_code` is allowed when the code
  belongs to one of the key's groups (field `activation_code`).
- A user's connections, tasks, online state and kick take the group from
  `group_id` (query, or the kick's body); rooms from the query; the CRM
  reads from the path.
- Activation codes: the list shows the key's groups' codes only; a create
  or replace names its `group_id`; a delete is allowed for a code of the
  key's groups (an unknown code is the handler's 404).
- Node-wide reads and operations (`/api/stats`, `/api/nodes`, seed 001's
  stats and per-user probes without a group, `/metrics` when it asks for
  credentials, the webhook test) are refused (`api_group_wide`): they
  speak of every group.

A route missing from `RULES` counts as node-wide: a new route is refused to
scoped keys until it says where its group is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from wsserver.api import bodies
from wsserver.core.commands import ListCodes
from wsserver.net.http import HttpError, HttpRequest, HttpResponse
from wsserver.protocol.envelope import id_key
from wsserver.protocol.replies import ok_body

if TYPE_CHECKING:
    from wsserver.api.host import HubDoor

__all__ = ["RULES", "scoped"]

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Api(Protocol):
    """What the check uses of the API (`api.routes.Api`)."""

    @property
    def actor(self) -> HubDoor: ...
    @property
    def max_depth(self) -> int: ...

RULES: dict[str, tuple[str, str]] = {
    # seed 001's pushes
    "notification": ("body", "group_id"),
    "batchgo_open_url": ("body", "group_id"),
    "task_progress": ("body", "group_id"),
    "token_insufficient": ("body", "group_id"),
    "plan_expiring": ("body", "group_id"),
    "broadcast": ("body", "group_id"),
    # general
    "publish": ("publish", "group_id"),
    "send_message": ("body", "group_id"),
    "user_online": ("query", "group_id"),
    "user_connections": ("query", "group_id"),
    "user_tasks": ("query", "group_id"),
    "kick": ("body", "group_id"),
    "rooms": ("query", "group_id"),
    "room_members": ("query", "group_id"),
    # CRM
    "group_stats": ("path", "group_id"),
    "group_accounts": ("path", "group_id"),
    "group_customers": ("path", "group_id"),
    "group_follow_ups": ("path", "group_id"),
    "group_incoming": ("path", "group_id"),
    "list_codes": ("codes", ""),
    "put_code": ("body", "group_id"),
    "delete_code": ("code", "code"),
    # chat sessions
    "open_session": ("body", "group_id"),
    "close_session": ("query", "group_id"),
}
"""Per handler: where its group is named (`path`, `query`, `body`, or a rule of
its own) and the field; a handler missing here is node-wide."""


async def scoped(api: Api, name: str, groups: frozenset[str], handler: Handler, req: HttpRequest) -> HttpResponse:
    """Run `handler` (the route's, named `name`) for a key limited to `groups`
    (their ids as strings), or refuse with 403."""
    rule = RULES.get(name)
    if rule is None:
        raise HttpError(403, "api_group_wide")
    where, field = rule
    if where == "codes":
        codes = await api.actor.call(ListCodes())
        mine = [c for c in codes if id_key(c["group_id"]) in groups]
        return HttpResponse(200, ok_body({"codes": mine}))
    if where == "path":
        value = req.params.get(field)
    elif where == "query":
        value = req.head.query.get(field)
    elif where == "code":
        value = await _group_of_code(api, req.params["code"])
        if value is None:
            return await handler(req)  # unknown: the handler's 404
    else:
        body = bodies.read(req, dict[str, Any], api.max_depth, empty_ok=True)
        if where == "publish":
            if body.get("all") is True:
                raise HttpError(403, "api_group_scope", "all")
            code = body.get("activation_code")
            if isinstance(code, str):
                field, value = "activation_code", await _group_of_code(api, code)
            else:
                value = body.get("group_id")
        else:
            value = body.get(field)
    if value is None or isinstance(value, bool | dict | list) or id_key(value) not in groups:
        raise HttpError(403, "api_group_scope", field)
    return await handler(req)


async def _group_of_code(api: Api, code: str) -> Any:
    """The group of an activation code, or None when there is no such code."""
    for entry in await api.actor.call(ListCodes()):
        if entry["code"] == code:
            return entry["group_id"]
    return None
