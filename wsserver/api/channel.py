"""The Redis publish channel's messages, checked and run as `POST /api/publish`.

In cluster mode a backend may `PUBLISH <prefix>:publish <body>` on the
cluster's Redis (SPEC 13; the subscription is `net.cluster.publish_channel`).
Each message is the route's body, checked by the same declaration
(`bodies.parse_publish`, `limits.max_http_body_bytes`,
`limits.max_json_depth`) and run by the same code as the route (`run` is
given `Api._publish`). Who runs it (docs/CLUSTER.md): without `persist`
every node, for its own connections only (`Publish.here`); with `persist`
the one node that wins the claim, as the route would.

There is no caller to answer: a refused body is logged with the field to
blame and counted (`wsserver_redis_publish_rejected_total{reason}`, reason
`too_large`, `json` or `shape`), and nothing else happens. Group-scoped API
keys play no part: access to the cluster's Redis is the credential.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

from wsserver.api.bodies import check_json_values, parse_json, parse_publish
from wsserver.core.commands import Publish, PublishResult
from wsserver.net.http import HttpError

if TYPE_CHECKING:
    from wsserver.api.host import ApiHost

__all__ = ["JSON_FAULTS", "check", "reason", "run"]

log = logging.getLogger("wsserver.api")

JSON_FAULTS = frozenset(
    {"http_invalid_json", "http_not_object", "http_lone_surrogate", "http_json_depth", "http_json_number"}
)
"""The catalogue keys of a body that is not an acceptable JSON object."""


def check(body: bytes, max_bytes: int, max_depth: int) -> Publish:
    """A channel message as a `Publish`; `HttpError` naming the field, as the route's."""
    if len(body) > max_bytes:
        raise HttpError(413, "http_body_too_large")
    value = parse_json(body)
    if not isinstance(value, dict):
        raise HttpError(400, "http_not_object")
    check_json_values(value, max_depth, body)
    return parse_publish(value)


def reason(err: HttpError) -> str:
    """The `reason` label a refused message is counted under."""
    if err.status == 413:
        return "too_large"
    return "json" if err.key in JSON_FAULTS else "shape"


async def run(
    host: ApiHost,
    publish: Callable[[Publish], Awaitable[PublishResult]],
    body: bytes,
    claim: Callable[[], Awaitable[bool]],
) -> None:
    """Check one channel message and run it through `publish` (the route's);
    a refused one is logged and counted."""
    limits = host.config.limits
    try:
        request = check(body, limits.max_http_body_bytes, limits.max_json_depth)
    except HttpError as err:
        why = reason(err)
        host.metrics.redis_publish_refused(why)
        log.warning(
            "redis publish channel: message refused (%s, field %s): %s",
            why, err.field or "-", err.render("en"),
        )  # fmt: skip
        return
    if request.persist:
        if not await claim():
            return  # another node runs it: stored once
    else:
        request = attrs.evolve(request, here=True)  # every node, for its own connections
    try:
        await publish(request)
    except HttpError as err:  # a persist publish the shared log refused (Redis went away)
        log.warning("redis publish channel: a persist publish was not stored: %s", err.render("en"))
