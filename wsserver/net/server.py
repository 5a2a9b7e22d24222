"""The server's lifecycle: one wsserver instance built, served, reloaded and stopped.

`Server` builds the parts and holds what they share: the live configuration
and token verifier, the metrics, the background-task supervisor, the storage,
the hub actor, the connections' timer task, the fan-out flusher and the
routers. The parts live in their own modules: `net.listeners` (listeners,
accept loops, the routing of each TCP stream), `net.admission` (who may open a
WebSocket), `net.connection` (one WebSocket connection), `net.durability`
(storage and snapshots), `net.crm_timer` (the CRM's midnight).

Lifecycle: `Server.serve()` loads the durable state, starts the storage
writer, the hub actor and the background tasks, opens the listeners, logs
`listening on HOST:PORT`, reports readiness and runs until `stop()`.
Its background tasks (snapshots, the midnight timer, the storage writer, the
connections' timer task, the fan-out flusher, the webhook sender) run under `self.background`
(`wsserver.ops.background`): a failure is logged, counted and retried, and
`/readyz` answers 503 naming the task while it keeps failing; none of them
can stop the server.
Stopping is graceful: accept no more, close every client with 1001, wait a
bounded time for them, take a last snapshot, then end. `Server.reload()`
applies a changed configuration while serving (SIGHUP in `run_server`).

`run_server` runs a server as the foreground process of `wsserver serve`
(`wsserver.ops.process`: signals, systemd notifications, the exit status).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from wsserver._version import __version__
from wsserver.config import Config, ConfigError, load_config, validate_config
from wsserver.core.admin_commands import Stats
from wsserver.core.commands import CloseAll, Forget, Reconfigure
from wsserver.core.limits import FailureThrottle
from wsserver.errors import CloseCode
from wsserver.net import fastio, readiness
from wsserver.net.actor import HubActor
from wsserver.net.admission import Admission
from wsserver.net.connection import CLOSE_TIMEOUT
from wsserver.net.crm_timer import midnights
from wsserver.net.durability import Durability
from wsserver.net.fastio import Flusher
from wsserver.net.heartbeat import Heartbeats
from wsserver.net.http import HttpError, HttpRequest, HttpResponse, Router
from wsserver.net.listeners import Listeners
from wsserver.net.local_messages import LOCAL_TYPES
from wsserver.net.webhooks import WebhookSender
from wsserver.ops.background import Background
from wsserver.ops.logging import reconfigure_logging
from wsserver.ops.metrics import Metrics
from wsserver.ops.process import run_process, tune_gc
from wsserver.ops.reload import ReloadPlan, plan_reload
from wsserver.protocol.i18n import text
from wsserver.protocol.replies import error_body, ok_body
from wsserver.storage.base import StorageError
from wsserver.storage.journal import FileStorage
from wsserver.storage.node import node_id
from wsserver.tokens import TokenVerifier

if TYPE_CHECKING:
    from wsserver.net.cluster import Cluster, PresenceView
    from wsserver.net.cluster.publish_channel import ChannelHandler

log = logging.getLogger("wsserver.server")


class Server:
    """One wsserver instance: configuration, the hub, its actor and the listeners.

    `config_path` and `overrides` are where `config` came from (the file and the
    CLI flags); `reload()` reads them again.
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | os.PathLike[str] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> None:
        validate_config(config)  # a Config built by an embedding host skipped load_config
        self.config = config
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.metrics = Metrics()
        self.background = Background(self.metrics.background_failed)
        # failed credentials per client IP (SPEC 2); like the metrics, touched only
        # from the trio thread between awaits, and asked before anything is verified
        self.auth_throttle = FailureThrottle()
        self.storage = FileStorage(
            config.storage.dir,
            config.storage.fsync,
            fsync_fd=self.metrics.timed_fsync,
            health=self.background,
        )
        self.durability = Durability(self.storage, self.background)
        self.cluster: Cluster | None = None
        if config.cluster.redis_url:  # cluster mode: only now is anything of Redis imported
            from wsserver.net.cluster import Cluster

            self.cluster = Cluster(self, self._node_id, self._tell)
        self.actor = HubActor(
            config,
            storage=self.storage,
            after_batch=self.durability.after_batch,
            cluster=None if self.cluster is None else self.cluster.outlets,
        )
        # inbound types get a metrics label only when handled (the hub's types include
        # an embedding host's); a client's own inventions are "unknown"
        self.metrics.count_types_in(LOCAL_TYPES, self.actor.message_types)
        self.heartbeats = Heartbeats()
        self.flusher = Flusher()  # writes large fan-outs (net.fastio)
        self.webhooks = WebhookSender(self)  # runs when webhooks.url is set
        self._spare: trio.Nursery | None = None  # for the rare command that must wait
        self.verifier = TokenVerifier(config)
        self.router = Router()
        self.api_router = self.router
        if config.server.api_listen:
            self.api_router = Router()
        self.ready = False
        self.tune_gc = False  # run_server sets it; see ops.process.tune_gc()
        self.reuse_port = False  # one of `serve --workers` (its setup sets it)
        self._stop = trio.Event()
        self.listeners = Listeners(self, Admission(self))
        self._add_health_routes(self.router)
        if self.api_router is not self.router:
            self._add_health_routes(self.api_router)
        # The HTTP API (`wsserver.api`) is installed on `api_router` by whoever
        # builds the server (the entry points: `wsserver.embed`, `__main__`).

    # -- routes --------------------------------------------------------------

    def _add_health_routes(self, router: Router) -> None:
        async def healthz(req: HttpRequest) -> HttpResponse:
            return HttpResponse(200, ok_body({"status": "ok", "version": __version__}))

        async def readyz(req: HttpRequest) -> HttpResponse:
            if not self.ready:
                raise HttpError(503, "not_ready")
            failing = self.background.failing()
            if failing:
                locale = self.config.server.locale
                message = text("background_failing", locale, tasks=", ".join(failing))
                return HttpResponse(503, error_body(503, message, failing=failing))
            return HttpResponse(200, ok_body({"status": "ready"}))

        router.add("GET", "/healthz", healthz)
        router.add("GET", "/readyz", readyz)

    # -- failed credentials ----------------------------------------------------

    def auth_blocked(self, ip: str, via: str) -> bool:
        """True (and counted under `via`) when `ip` had `auth.max_failures` failed
        credentials within `auth.failure_window`: its attempt is refused, whatever
        it presents, before anything is verified."""
        auth = self.config.auth
        if not self.auth_throttle.blocked(ip, trio.current_time(), auth.max_failures, auth.failure_window):
            return False
        self.metrics.auth_throttled(via)
        return True

    def credential_failed(self, ip: str, reason: str) -> None:
        """A credential `ip` presented was refused (`reason`, a catalogue key)."""
        self.metrics.auth_failed(reason)
        auth = self.config.auth
        self.auth_throttle.failed(ip, trio.current_time(), auth.max_failures, auth.failure_window)

    # -- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from any task, more than once)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stop.is_set()

    @property
    def node_name(self) -> str:
        """This node's readable name (`/api/nodes`): `cluster.node_name`, else the
        host name and process id."""
        return self.config.cluster.node_name or f"{socket.gethostname()}:{os.getpid()}"

    @functools.cache  # noqa: B019 (one per server, lives as long)
    def _node_id(self) -> str:
        return node_id(self.config.storage.dir)

    async def _tell(self, command: Any) -> None:
        await self.actor.tell(command)

    async def ask(self, command: Any) -> Any:
        """Run `command` in the hub's actor and return its answer (the cluster's
        bridge tasks)."""
        return await self.actor.call(command)

    async def node_info(self) -> dict[str, Any]:
        """This node's `/api/nodes` entry, `last_seen` now."""
        stats = await self.actor.call(Stats())
        return {
            "node_id": stats["node_id"],
            "name": self.node_name,
            "version": stats["version"],
            "connections": stats["connections"]["total"],
            "users": stats["users"],
            "uptime": stats["uptime"],
            "last_seen": int(time.time() * 1000),  # this node answers: it is seen now
        }

    async def nodes(self) -> list[dict[str, Any]]:
        """Every live node (`/api/nodes`): this one, or the cluster's as Redis
        lists them (`HttpError` 503 while Redis does not answer)."""
        if self.cluster is None:
            return [await self.node_info()]
        try:
            listed = await self.cluster.listing()
        except self.cluster.errors:
            raise HttpError(503, "cluster_unavailable") from None
        mine = await self.node_info()  # this node's counts as of now, not its last report
        return [mine if n["node_id"] == mine["node_id"] else n for n in listed]

    @property
    def cluster_view(self) -> PresenceView | None:
        """In cluster mode, the other nodes' connections for the API's answers."""
        return None if self.cluster is None else self.cluster.view

    def cluster_unavailable(self) -> HttpError | None:
        """In cluster mode while Redis does not answer: the 503 of an API request
        that needs it (a publish); else None."""
        if self.cluster is None or self.cluster.up:
            return None
        return HttpError(503, "cluster_unavailable")

    def serve_channel(self, handler: ChannelHandler) -> None:
        """In cluster mode, `handler` runs each message of the Redis publish
        channel (`net.cluster.publish_channel`); else nothing listens there."""
        if self.cluster is not None:
            self.cluster.publishes.handler = handler

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """`(host, port)` of each public listener, once serving."""
        return self.listeners.addresses

    @property
    def api_addresses(self) -> list[tuple[str, int]]:
        """`(host, port)` of each listener of the API's own (`server.api_listen`)."""
        return self.listeners.api_addresses

    async def status(self) -> str:
        """A one-line status (systemd's STATUS=); a round trip through the hub
        actor, so it also proves the actor is responsive."""
        connections = (await self.actor.call(Stats()))["connections"]
        n = connections["total"]
        where = ", ".join(f"{host}:{port}" for host, port in self.addresses)
        state = "shutting down" if self.stopping else f"listening on {where}"
        return (
            f"{n} connection{'' if n == 1 else 's'} ({connections['user']} users, "
            f"{connections['device']} devices); {state}"
        )

    async def start_core(self, nursery: trio.Nursery) -> None:
        """Start the hub actor, the connections' timer task and, with
        `server.fast_io`, the read poller and the fan-out flusher in `nursery`
        (`serve()` does; tests serving memory streams call it themselves).

        The timer task and the flusher do each connection's work, so a bug there
        is restarted (`Background.keep_running`). The actor catches every
        command's exception itself, and the poller only moves readiness events:
        neither has work that can fail, and a restart would lose their state."""
        keep_running = self.background.keep_running
        await nursery.start(self.actor.run)
        await nursery.start(keep_running, "heartbeats", self.heartbeats.run)
        if self._use_fast_io():
            if readiness.HAVE_EPOLL:  # plain sockets' reads; elsewhere trio's waits
                await nursery.start(readiness.Readiness().run)
            await nursery.start(keep_running, "flusher", self.flusher.run)
        if self.config.webhooks.url:
            if self.cluster is None:  # before any connection: offline events of a crash first
                await nursery.start(keep_running, "webhooks", self.webhooks.run)
            else:  # the shared outbox is sent by one node: the lease's holder
                self.cluster.hooks.sender = functools.partial(keep_running, "webhooks", self.webhooks.run)
        self._spare = nursery

    def _use_fast_io(self) -> bool:
        """Decide `server.fast_io` for this trio run (`net.fastio`): on unless the
        config says off or trio's internals have changed shape (logged)."""
        fast = self.config.server.fast_io
        if fast:
            problems = fastio.internals_problems()
            if problems:
                log.error(
                    "server.fast_io: trio %s is not what net.fastio expects (%s); "
                    "using trio's plain I/O (slower)", trio.__version__, "; ".join(problems)
                )
                fast = False
        else:
            log.info("server.fast_io = false: trio's plain I/O only")
        fastio.use_fast_io(fast)
        return fast

    def load_state(self) -> None:
        """Load the durable state (before serving; `Durability.load`)."""
        self.durability.load(self.actor, self.config.storage.dir)

    async def serve(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop()`; reports `self` through `task_status` once listening."""
        shared_log = bool(self.config.cluster.redis_url)  # the durable state lives in Redis
        if not shared_log:
            self.load_state()
        if self.tune_gc:
            tune_gc()
        async with trio.open_nursery() as root:
            if shared_log:
                from wsserver.net.cluster.log import ClusterLog

                await root.start(ClusterLog(self.actor, lambda: self.config, self.background).run)
            else:
                await self.durability.start(root, self.actor)
            await self.start_core(root)
            if self.cluster is not None:
                await self.cluster.start(root)
            if not shared_log:
                root.start_soon(self.durability.snapshots, self.actor, self._snapshot_interval)
            root.start_soon(midnights, self.actor, self.background)
            main_listeners, api_listeners = await self.listeners.open()
            async with trio.open_nursery() as handlers:
                await self.listeners.start_accepting(handlers, main_listeners, api_listeners)
                for host, port in self.addresses:
                    log.info("listening on %s:%d", host, port)
                for host, port in self.api_addresses:
                    log.info("api listening on %s:%d", host, port)
                self.ready = True
                task_status.started(self)
                await self._stop.wait()
                log.info("shutting down")
                self.ready = False
                self.listeners.stop_accepting()
                if self.cluster is not None:
                    await self.cluster.stop()
                await self.actor.call(CloseAll(CloseCode.GOING_AWAY, "shutting_down"))
                handlers.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT + 1
            self.webhooks.stop()  # (events not yet answered stay in the snapshot)
            if not shared_log:
                await self.durability.close(self.actor)
            root.cancel_scope.cancel()
        log.info("stopped")

    # -- reload --------------------------------------------------------------

    async def reload(self, config: Config | None = None) -> ReloadPlan | None:
        """Apply a changed configuration while serving: `config`, else the file this
        server was started from, read again with the same overrides.

        Keys that can change live take effect (`wsserver.ops.reload` lists them);
        changed keys that need a restart keep their running value. A file that does
        not load or validate, or an `[auth]` that cannot be used, changes nothing.
        Everything is logged, secret values never. Returns the plan, or None when
        nothing was applied; a `config` given that does not validate raises
        `ConfigError`. Call it while `serve()` runs (it goes through the hub actor).
        """
        if config is None:
            if self.config_path is None:
                log.info("reload: started without a config file, nothing to reload")
                return None
            try:
                config = load_config(self.config_path, overrides=self.overrides)
            except ConfigError as err:
                log.error("reload failed, keeping the running configuration: %s", err)
                return None
        else:
            validate_config(config)
        plan = plan_reload(self.config, config)
        verifier = self.verifier
        if any(key.startswith("auth.") for key in plan.applied):
            try:
                verifier = TokenVerifier(plan.config)
            except (OSError, ValueError) as exc:
                log.error("reload failed, keeping the running configuration: auth: %s", exc)
                return None
        closed = await self.actor.call(Reconfigure(plan.config, functools.partial(self._switch, plan.config, verifier)))
        if any(key.startswith("log.") for key in plan.applied):
            reconfigure_logging(plan.config.log.level, plan.config.log.format)
        if not plan.changed:
            log.info("reload: no changes")
        if plan.applied:
            log.info("reload: applied %s", "; ".join(map(plan.describe, plan.applied)))
        if closed:
            log.info("reload: closed %d connection(s) of removed or disabled activation codes", closed)
        if plan.needs_restart:
            log.warning(
                "reload: needs a restart, running value kept: %s",
                "; ".join(map(plan.describe, plan.needs_restart)),
            )
        return plan

    def _switch(self, config: Config, verifier: TokenVerifier) -> None:
        """(In the actor, as the hub takes `config`: `Reconfigure.on_switch`.) The
        server and its verifier switch in the same step, between two hub commands."""
        self.config = config
        self.verifier = verifier
        self.heartbeats.reschedule_all(trio.current_time())  # [heartbeat]/[auth] timings

    def _snapshot_interval(self) -> float:
        """`storage.snapshot_interval` as it is now (a reload may change it)."""
        return self.config.storage.snapshot_interval

    def forget_connection(self, conn_id: str) -> None:
        """Tell the hub a connection ended (never waits: the inbox has room for it
        or a spare task waits for room)."""
        forget = Forget(conn_id)
        if not self.actor.tell_nowait(forget):
            assert self._spare is not None, "start_core() was not called"
            self._spare.start_soon(self.actor.tell, forget)


def run_server(
    config: Config,
    *,
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, object] | None = None,
    setup: Callable[[Server], None] | None = None,
) -> int:
    """Run a server as the foreground process (`wsserver.ops.process`) until
    SIGINT/SIGTERM (Ctrl+C, Ctrl+Break); 0 on a clean stop, 2 when its data
    directory is unusable.

    `config_path`/`overrides` say where `config` came from, for SIGHUP reloads;
    `setup(server)` runs before it starts (the embedding API registers handlers).
    """

    def make() -> Server:
        server = Server(config, config_path=config_path, overrides=overrides)
        server.tune_gc = True  # our own process: an embedding host keeps its GC settings
        if setup is not None:
            setup(server)
        return server

    return run_process(config, make, cannot_start=StorageError)
