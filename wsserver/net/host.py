"""What the network layer's parts use of the server they run in (`net.server.Server`).

Connections, their admission and the routing of TCP streams know their
server only through these protocols, as the HTTP API knows it through
`api.host`: the live configuration and token verifier (a reload swaps them),
the shared tasks, the hub's actor, the metrics, the routers and the
failed-credentials throttle, each read at use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wsserver.config import Config
    from wsserver.net.actor import HubActor
    from wsserver.net.fastio import Flusher
    from wsserver.net.heartbeat import Heartbeats
    from wsserver.net.http import Router
    from wsserver.ops.metrics import Metrics
    from wsserver.tokens import TokenVerifier

__all__ = ["ConnectionHost", "ListenerHost"]


class ConnectionHost(Protocol):
    """What a connection, and the admission that creates it, use of their server."""

    @property
    def config(self) -> Config: ...
    @property
    def verifier(self) -> TokenVerifier: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def flusher(self) -> Flusher: ...
    @property
    def heartbeats(self) -> Heartbeats: ...
    @property
    def actor(self) -> HubActor: ...
    def auth_blocked(self, ip: str, via: str) -> bool:
        """True (and counted under `via`) when `ip` is throttled for failed credentials."""

    def credential_failed(self, ip: str, reason: str) -> None:
        """A credential `ip` presented was refused (`reason`, a catalogue key)."""

    def forget_connection(self, conn_id: str) -> None:
        """Have the hub forget a connection (`Forget`), without waiting."""


class ListenerHost(Protocol):
    """What the routing of accepted TCP streams uses of its server."""

    @property
    def config(self) -> Config: ...
    @property
    def reuse_port(self) -> bool:
        """Listen with SO_REUSEPORT (one of `serve --workers`)."""

    @property
    def metrics(self) -> Metrics: ...
    @property
    def router(self) -> Router:
        """The public listener's routes."""

    @property
    def api_router(self) -> Router:
        """The HTTP API's routes (the public router unless `server.api_listen` is set)."""
