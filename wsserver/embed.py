"""Running a hub inside another Python program (re-exported by `wsserver`).

    async with trio.open_nursery() as nursery:
        hub = await nursery.start(wsserver.serve, config)   # a HubHandle, once listening
        await hub.publish("notice", {"text": "hi"}, user_id=42)
        hub.stop()                                          # or cancel the nursery

`serve()` is for a host that runs trio, `run()` for one that does not (it blocks
like `wsserver serve`). The `HubHandle` publishes exactly as `POST /api/publish`
does (same validation, a `Publish` command to the hub actor, a `persist`
publish answered once durable) and registers handlers for the host's own
client message types (`AddHandler`).

Invariants:

- Host handlers run inside the hub actor, like the built-in ones: they
  must not block, and they see the hub between two commands. An exception in
  one answers its sender with `internal` and is logged; the hub goes on.
- Built-in message types cannot be overridden, and a type nobody handles still
  answers `unknown_type`.
- Cancelling `serve()` stops the hub gracefully (clients closed with 1001, a
  final snapshot), as `stop()` does; that takes a few seconds at most.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

import trio

from wsserver.api.admin import add_admin_routes
from wsserver.api.bodies import parse_publish
from wsserver.api.routes import install, publish_durably
from wsserver.api.static import add_client_routes
from wsserver.config import Config, load_config
from wsserver.core.admin_commands import Stats
from wsserver.core.commands import AddHandler, Publish
from wsserver.net.http import HttpError
from wsserver.net.local_messages import LOCAL_TYPES
from wsserver.net.server import Server, run_server
from wsserver.protocol.jsonlimits import lone_surrogate, too_deep

if TYPE_CHECKING:
    from wsserver.core.commands import HostRequest
    from wsserver.core.identity import Identity

__all__ = ["HostContext", "HostHandler", "HubHandle", "PublishTarget", "run", "serve"]

HostHandler = Callable[["HostContext", Any], None]
"""`fn(ctx, data)`: handles one client message of a host-defined type."""

F = TypeVar("F", bound=HostHandler)

HOST_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
"""A message type a host may register."""

ConfigSource = Config | str | os.PathLike[str]


class PublishTarget(TypedDict, total=False):
    """Who a host's publish reaches, as `POST /api/publish` names it: exactly one
    of a user (`user_id`), users (`user_ids`), a group (`group_id`), a room of a
    group (`room` + `group_id`) or everyone (`all=True`); `user_type` narrows any
    target, `group_id` narrows users. With `persist`, users without a
    connection get it in their mailbox. (The keywords of both `publish`
    methods, declared once.)"""

    user_id: Any
    user_ids: Any
    group_id: Any
    room: str | None
    all: bool
    user_type: Any
    persist: bool
    kind: str  # with group_id alone: "dashboard" | "device"
    activation_code: str  # the desktop connections of one code


def _publish_request(mtype: str, data: Any, target: Mapping[str, Any], *, max_depth: int) -> Publish:
    """The `Publish` for a host's arguments, checked by the HTTP API's own rules
    (nesting at most `max_depth`, `limits.max_json_depth`); ValueError if not,
    TypeError for a keyword `PublishTarget` does not know."""
    for name in target:
        if name not in PublishTarget.__optional_keys__:
            raise TypeError(f"publish() got an unexpected keyword argument {name!r}")
    if too_deep({"data": data}, max_depth):  # first: json.dumps recurses
        raise ValueError(f"data is nested deeper than {max_depth}")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"data is not JSON: {exc}") from None
    body: dict[str, Any] = {"type": mtype, "data": data}
    if lone_surrogate(body):
        raise ValueError("a string holds a lone surrogate (not valid Unicode)")
    for name, value in target.items():
        if name in ("all", "persist"):  # flags: given when true
            if value:
                body[name] = True
        elif value is not None:
            body[name] = value
    if isinstance(body.get("user_ids"), tuple | set | frozenset):
        body["user_ids"] = list(body["user_ids"])
    try:
        return parse_publish(body)
    except HttpError as err:
        raise ValueError(err.message) from None


class HostContext:
    """A client message as a host handler sees it: who sent it, and how to answer.

    Valid only while the handler runs (inside the hub actor).
    """

    __slots__ = ("_request", "_server")

    def __init__(self, server: Server, request: HostRequest) -> None:
        self._server = server
        self._request = request

    @property
    def type(self) -> str:
        """The message type."""
        return self._request.type

    @property
    def id(self) -> Any:
        """The request `id` the client sent (echoed by `reply` and `error`), or None."""
        return self._request.id

    @property
    def conn_id(self) -> str:
        """The sender's connection id."""
        return self._request.conn_id

    @property
    def identity(self) -> Identity:
        """The sender: `user_id`, `user_type`, `group_id`, `username`, `role`, or
        `activation_code` for a desktop client."""
        return self._request.identity

    @property
    def raw(self) -> dict[str, Any]:
        """The whole message object as the client sent it."""
        return self._request.raw

    def reply(self, type: str, data: Any = None) -> None:
        """Send `{type, data}` to the sender's connection, echoing the request `id`."""
        self._request.reply(type, data)

    def error(
        self, message: str, *, code: str = "invalid_message", field: str | None = None
    ) -> None:
        """Answer with an `error` shaped like the hub's own (`data.code`, `data.ref`, `data.field`)."""
        self._request.error(message, code=code, field=field)

    def publish(self, type: str, data: Any = None, **target: Unpack[PublishTarget]) -> dict[str, int]:
        """Publish like `HubHandle.publish`, from inside the handler; returns at once
        (a `persist` push becomes durable shortly after)."""
        publish = _publish_request(type, data, target, max_depth=self._server.config.limits.max_json_depth)
        result = self._request.publish(publish)
        return {"delivered": result.delivered, "queued": result.queued}


class HubHandle:
    """A running hub as its host program holds it: address, publish, handlers, stop."""

    def __init__(self, server: Server) -> None:
        self._server = server

    @property
    def server(self) -> Server:
        """The `Server` underneath, for what this handle does not offer."""
        return self._server

    @property
    def address(self) -> tuple[str, int]:
        """`(host, port)` of the first listener (the real port when configured with 0)."""
        return self._server.addresses[0]

    @property
    def url(self) -> str:
        """The WebSocket URL of the hub, e.g. `ws://127.0.0.1:8080/ws`."""
        host, port = self.address
        scheme = "wss" if self._server.config.server.tls_cert else "ws"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{port}{self._server.config.server.path}"

    async def publish(self, type: str, data: Any = None, **target: Unpack[PublishTarget]) -> dict[str, int]:
        """Publish `{type, data}` to exactly one target (`PublishTarget`), as
        `POST /api/publish` does; with `persist`, the call returns once the
        mailbox entries are durable.

        Returns `{"delivered": connections reached, "queued": mailboxes filled}`;
        raises ValueError for arguments the HTTP API would answer 400.
        """
        publish = _publish_request(type, data, target, max_depth=self._server.config.limits.max_json_depth)
        result = await publish_durably(self._server.actor, publish)
        return {"delivered": result.delivered, "queued": result.queued}

    async def stats(self) -> dict[str, Any]:
        """The hub's statistics, as `GET /api/stats` reports them."""
        return await self._server.actor.call(Stats())

    def add_handler(self, message_type: str, fn: HostHandler) -> None:
        """Handle client messages of `message_type` with `fn(ctx, data)`.

        Raises ValueError for a type the hub already handles (built-in types cannot
        be overridden) and TypeError for an async function: handlers run inside the
        hub's actor and must not block; for I/O, start a task in your own nursery
        and `publish` when it is done.
        """
        if not isinstance(message_type, str) or not HOST_TYPE.fullmatch(message_type):
            raise ValueError(
                f"invalid message type {message_type!r} (letters, digits, _.:-; 64 at most)"
            )
        if message_type in LOCAL_TYPES:
            raise ValueError(f"message type {message_type!r} is already handled")
        if inspect.iscoroutinefunction(fn) or not callable(fn):
            raise TypeError("a host handler is a plain function fn(ctx, data) that does not block")
        server = self._server

        def handler(request: HostRequest) -> None:
            fn(HostContext(server, request), request.data)

        # At once, from the host's task (also before the hub runs): the hub refuses
        # a type it already handles (ValueError).
        server.actor.execute_now(AddHandler(message_type, handler))

    def on(self, message_type: str) -> Callable[[F], F]:
        """Decorator form of `add_handler`: `@hub.on("order_placed")`."""

        def register(fn: F) -> F:
            self.add_handler(message_type, fn)
            return fn

        return register

    def stop(self) -> None:
        """Begin a graceful stop; `serve()` returns once it is done."""
        self._server.stop()


def install_http_api(server: Server) -> None:
    """Install the HTTP API on `server`'s API router, and the browser client's
    files on its public one, the operator dashboard next to the API. Every
    entry point builds its server so: the network layer does not know the API
    (`api` depends on `net`)."""
    install(server, server.api_router)
    add_admin_routes(server.api_router, server)  # /admin: the page and the API share an origin
    add_client_routes(server.router)  # the browser client (public: browsers load it)


def _server_for(config: ConfigSource) -> Server:
    if isinstance(config, Config):
        server = Server(config)
    else:
        server = Server(load_config(config), config_path=config)
    install_http_api(server)
    return server


def _register(handle: HubHandle, handlers: Mapping[str, HostHandler] | None) -> None:
    for message_type, fn in (handlers or {}).items():
        handle.add_handler(message_type, fn)


async def _stop_when_cancelled(server: Server) -> None:
    try:
        await trio.sleep_forever()
    finally:
        server.stop()


async def serve(
    config: ConfigSource,
    *,
    handlers: Mapping[str, HostHandler] | None = None,
    task_status: trio.TaskStatus[HubHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a hub in the caller's trio program until `HubHandle.stop()` or cancellation.

    `config` is a `Config` or the path of a TOML file (then `handle.server.reload()`
    re-reads it). Reports a `HubHandle` through `task_status` once listening with
    its state loaded; `handlers` are registered before any client can connect.
    The host's logging configuration is left alone.
    """
    server = _server_for(config)
    handle = HubHandle(server)
    _register(handle, handlers)

    async def run_shielded(task_status: trio.TaskStatus[Server]) -> None:
        # Shielded: cancelling serve() becomes a graceful stop (see
        # _stop_when_cancelled) instead of dropping every client at once.
        with trio.CancelScope(shield=True):
            await server.serve(task_status=task_status)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_when_cancelled, server)
        await nursery.start(run_shielded)
        task_status.started(handle)


def run(config: ConfigSource, *, handlers: Mapping[str, HostHandler] | None = None) -> int:
    """Run a hub in the foreground for a program that does not use trio; blocks
    until SIGINT/SIGTERM (Ctrl+C, Ctrl+Break on Windows) and stops gracefully.

    Behaves like `wsserver serve`: wsserver's loggers are configured from `[log]`,
    SIGHUP reloads when `config` is a file path, and under systemd it notifies.
    Returns the exit status: 0 after a clean stop, 2 when the data directory is
    unusable.
    """
    if isinstance(config, Config):
        cfg, path = config, None
    else:
        cfg, path = load_config(config), config

    def setup(server: Server) -> None:
        install_http_api(server)
        _register(HubHandle(server), handlers)

    return run_server(cfg, config_path=path, setup=setup)
