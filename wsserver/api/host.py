"""What the HTTP API needs of the server it is installed on.

The API is given its host when installed (`routes.install(host, router)`) and
knows it only through these protocols: the live configuration, the metrics,
the token verifier, the failed-credentials throttle, the webhook sender, and
the hub's command door (`net.actor.HubActor` implements `HubDoor`). So the API depends on the
core's commands, never on the network layer's classes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.core.commands import Command
    from wsserver.core.identity import Identity
    from wsserver.net.http import HttpError
    from wsserver.ops.metrics import Metrics

__all__ = ["ApiHost", "ChannelHandler", "HubDoor", "TokenCheck", "WebhookProbe"]

R = TypeVar("R")

ChannelHandler = Callable[[bytes, Callable[[], Awaitable[bool]]], Awaitable[None]]
"""One Redis publish channel message: its bytes, and the claim to await when
only one node may run it (True: this node won)."""


class HubDoor(Protocol):
    """The hub's actor, as the API sends it commands."""

    @property
    def queue_depth(self) -> int:
        """Commands waiting in the inbox."""

    async def call(self, command: Command[R]) -> R:
        """Run `command` in the actor and return its answer."""


class TokenCheck(Protocol):
    """Verifies a JWT (`wsserver.tokens.TokenVerifier`)."""

    def verify(self, token: str) -> Identity:
        """The identity of a valid token; `AuthError` otherwise."""


class WebhookProbe(Protocol):
    """The server's webhook sender (`net.webhooks.WebhookSender`), as the API asks
    it to send one event now."""

    async def ping(self, event: dict[str, Any]) -> dict[str, Any]:
        """POST `event` to `webhooks.url` now: `{id, status, ok, error, elapsed_ms}`."""


class ClusterView(Protocol):
    """In cluster mode, the other nodes' connections counted into the API's
    answers (`net.cluster.presence.PresenceView`); each raises a 503
    `HttpError` while Redis does not answer."""

    async def online(self, user_id: Any, user_type: Any, group_id: Any) -> int:
        """A user's connections on the other nodes."""

    async def devices(self, user_id: Any, user_type: Any, group_id: Any) -> list[dict[str, Any]]:
        """A user's connections on the other nodes, as `Devices` shows them."""

    async def rooms(self, local: list[dict[str, Any]], group_id: Any) -> list[dict[str, Any]]:
        """This node's `RoomList` answer with the other nodes' rooms counted in."""

    async def room_members(self, local: dict[str, Any]) -> dict[str, Any]:
        """This node's `RoomMembers` answer with the other nodes' members in."""

    async def stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """This node's `Stats` with the other nodes' connections counted in."""

    async def websocket_stats(self, local: dict[str, Any]) -> dict[str, Any]:
        """This node's `WebsocketStats` with the other nodes' connections counted in."""


class ApiHost(Protocol):
    """The server the API runs in (`net.server.Server`). `config` and
    `verifier` are read at each request: a reload swaps them."""

    @property
    def config(self) -> Config:
        """The running configuration."""

    @property
    def verifier(self) -> TokenCheck:
        """The token verifier for the running `[auth]`."""

    @property
    def metrics(self) -> Metrics:
        """The server's metrics (`/metrics`)."""

    @property
    def actor(self) -> HubDoor:
        """The hub's command door."""

    @property
    def node_name(self) -> str:
        """This node's readable name (`/api/nodes`)."""

    async def nodes(self) -> list[dict[str, Any]]:
        """Every live node (`/api/nodes`); raises a 503 `HttpError` when the
        cluster's Redis does not answer."""

    @property
    def cluster_view(self) -> ClusterView | None:
        """In cluster mode, the other nodes' connections; else None."""

    def cluster_unavailable(self) -> HttpError | None:
        """In cluster mode while Redis does not answer: the 503 to raise for a
        request that needs it (a publish); else None."""

    @property
    def webhooks(self) -> WebhookProbe:
        """The webhook sender (`POST /api/webhooks/test`)."""

    def serve_channel(self, handler: ChannelHandler) -> None:
        """In cluster mode, run `handler` for each message of the Redis publish
        channel (`api.channel.run`); otherwise nothing."""

    def auth_blocked(self, ip: str, via: str) -> bool:
        """True when `ip` is throttled for failed credentials (counted under `via`)."""

    def credential_failed(self, ip: str, reason: str) -> None:
        """A credential `ip` presented was refused."""
