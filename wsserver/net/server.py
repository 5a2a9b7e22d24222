"""The server: listeners, routing of each TCP stream, the WebSocket handshake, shutdown.

One listener (`server.host:port`) serves WebSocket upgrades on `server.path`
(and `server.echo_path` when set) and plain HTTP for everything else; with
`server.api_listen` set, `/api/*` moves to that second listener.

Lifecycle: `Server.serve()` starts the hub actor, opens the listeners,
logs `listening on HOST:PORT`, reports readiness and runs until `stop()`.
Its background tasks (snapshots, the midnight timer, the storage writer, the
connections' timer task, the fan-out flusher) run under `self.background`
(`wsserver.ops.background`): a failure is logged, counted and retried, and
`/readyz` answers 503 naming the task while it keeps failing; none of them
can stop the server.
Stopping is graceful: accept no more, close every client with 1001, wait a
bounded time for them, then end. `Server.reload()` applies a changed
configuration while serving (SIGHUP in `run_server`).

`run_server` runs a server as the foreground process of `wsserver serve`
(`wsserver.ops.process`: signals, systemd notifications, the exit status).
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import logging
import os
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from wsserver._version import STATE_VERSION, __version__
from wsserver.config import Config, ConfigError, load_config, parse_host_port, validate_config
from wsserver.core.commands import (
    Admit,
    CloseAll,
    Forget,
    Midnight,
    NextMidnight,
    Reconfigure,
    Release,
    Restore,
    Stats,
    TakeSnapshot,
)
from wsserver.core.identity import Identity
from wsserver.core.limits import FailureThrottle
from wsserver.core.session import Refusal, refusal_for
from wsserver.errors import AuthError, CloseCode
from wsserver.net import fastio
from wsserver.net.actor import HubActor
from wsserver.net.connection import CLOSE_TIMEOUT, LOCAL_TYPES, Connection
from wsserver.net.fastio import Flusher
from wsserver.net.heartbeat import Heartbeats
from wsserver.net.http import (
    ConnectionGone,
    HttpError,
    HttpRequest,
    HttpResponse,
    RequestHead,
    Router,
    error_reply,
    json_reply,
    read_request_head,
    respond_and_close,
    serve_http,
)
from wsserver.ops.access import log_request, log_session
from wsserver.ops.background import Background
from wsserver.ops.logging import reconfigure_logging
from wsserver.ops.metrics import Metrics
from wsserver.ops.process import run_process, tune_gc
from wsserver.ops.reload import ReloadPlan, plan_reload
from wsserver.protocol.handshake import Refused, answer_upgrade, response_101
from wsserver.protocol.i18n import text
from wsserver.storage.base import StorageError
from wsserver.storage.gcpause import gc_paused
from wsserver.storage.journal import FileStorage
from wsserver.tokens import TokenVerifier, credentials_from_handshake

log = logging.getLogger("wsserver.server")

# accept() errors that mean "out of file descriptors or memory": wait, then retry
ACCEPT_CAPACITY_ERRNOS = {getattr(errno, n) for n in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS") if hasattr(errno, n)}
ACCEPT_BACKOFF = 0.1
# accept() errors that concern one connection only (as trio.SocketListener.accept)
ACCEPT_IGNORABLE_ERRNOS = {getattr(errno, n) for n in ("ECONNABORTED", "EPERM", "EPROTO") if hasattr(errno, n)}


async def _accept_failed(exc: OSError) -> bool:
    """An `accept()` failed: True when the listener goes on (the peer left first,
    or the process is out of descriptors or memory: logged, then a short pause),
    False when `exc` is for the caller to raise."""
    if exc.errno in ACCEPT_IGNORABLE_ERRNOS:
        return True
    if exc.errno in ACCEPT_CAPACITY_ERRNOS:
        log.error("accept: %s; waiting %.0f ms", exc, ACCEPT_BACKOFF * 1000)
        await trio.sleep(ACCEPT_BACKOFF)
        return True
    return False


def _peer_ip(stream: trio.abc.Stream) -> str:
    inner: Any = stream
    if isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    sock = getattr(inner, "socket", None)
    if sock is None:
        return "unknown"
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "unknown"


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
        self.actor = HubActor(config, storage=self.storage, after_batch=self._after_batch)
        # inbound types get a metrics label only when handled (the hub's types include
        # an embedding host's); a client's own inventions are "unknown"
        self.metrics.count_types_in(LOCAL_TYPES, self.actor.message_types)
        self._in_after_batch = False
        self.heartbeats = Heartbeats()
        self.flusher = Flusher()  # writes large fan-outs (net.fastio)
        # connection ids: unique per process start (a random prefix) and cheap
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)
        self._spare: trio.Nursery | None = None  # for the rare command that must wait
        self._release = Release()  # told each time records become durable
        self.verifier = TokenVerifier(config)
        self.router = Router()
        self.api_router = self.router
        if config.server.api_listen:
            self.api_router = Router()
        self.ready = False
        self.tune_gc = False  # run_server sets it; see tune_gc()
        self.addresses: list[tuple[str, int]] = []
        self.api_addresses: list[tuple[str, int]] = []
        self._stop = trio.Event()
        self._no_api = Router()  # `/api/*` on the public listener when the API has its own
        self._add_health_routes(self.router)
        if self.api_router is not self.router:
            self._add_health_routes(self.api_router)
        # The HTTP API (`wsserver.api`) is installed on `api_router` by whoever
        # builds the server (the entry points: `wsserver.embed`, `__main__`).

    # -- routes --------------------------------------------------------------

    def _add_health_routes(self, router: Router) -> None:
        async def healthz(req: HttpRequest) -> HttpResponse:
            return json_reply({"status": "ok", "version": __version__})

        async def readyz(req: HttpRequest) -> HttpResponse:
            if not self.ready:
                raise HttpError(503, "not_ready")
            failing = self.background.failing()
            if failing:
                locale = self.config.server.locale
                message = text("background_failing", locale, tasks=", ".join(failing))
                body = {"code": 503, "message": message, "failing": failing}
                return HttpResponse(503, json.dumps(body, ensure_ascii=False).encode())
            return json_reply({"status": "ready"})

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

    def _after_batch(self) -> None:
        """(Actor hook, after each batch of commands, before the hub announces what
        became durable.) Without fsync the batch's records are written at once."""
        self._in_after_batch = True
        try:
            self.storage.write_now()  # a failed write is the writer task's to report and retry
        finally:
            self._in_after_batch = False

    def _durable(self, n: int) -> None:
        if not self._in_after_batch:  # (else the actor announces right after the hook)
            self.actor.tell_nowait(self._release)

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
            if fastio.HAVE_EPOLL:  # plain sockets' reads; elsewhere trio's waits
                await nursery.start(fastio.Readiness().run)
            await nursery.start(keep_running, "flusher", self.flusher.run)
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

    async def _open(self, hostport: tuple[str, int]) -> list[trio.SocketListener]:
        host, port = hostport
        return await trio.open_tcp_listeners(port, host=host or None, backlog=4096)

    def _ssl_context(self) -> ssl.SSLContext | None:
        cfg = self.config.server
        if not cfg.tls_cert:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        return ctx

    def load_state(self) -> None:
        """Load the durable state (before serving): the snapshot and the journal,
        migrated when they are of an older format.

        A new directory gets a snapshot at once, a migrated one before any new
        record: the journal never mixes formats, and a journal without a
        snapshot is always an old one (`storage.journal`). Queued before any
        append, the snapshot is written before anything appended later; a crash
        before it leaves the old files as they were.
        """
        loaded = self.storage.load()  # StorageError stops start-up, files untouched
        with gc_paused():  # everything restored stays alive: no collection can free any
            self.actor.execute_now(Restore(loaded.state, loaded.records, loaded.version))
        if loaded.state is None or loaded.version != STATE_VERSION:
            self.actor.execute_now(TakeSnapshot())
        log.info(
            "state loaded from %s: %d journal records after the snapshot%s",
            self.config.storage.dir,
            len(loaded.records),
            "" if loaded.version == STATE_VERSION else f" (format {loaded.version}, migrated)",
        )

    async def serve(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until `stop()`; reports `self` through `task_status` once listening."""
        cfg = self.config
        self.load_state()
        if self.tune_gc:
            tune_gc()
        async with trio.open_nursery() as root:
            # the writer retries failed disk steps itself; this restarts it after a bug
            await root.start(self.background.keep_running, "storage", self.storage.run)
            # Wake the actor when records become durable; if its inbox is
            # full it is busy anyway and releases after the batch. Records made
            # durable by _after_batch itself are released there.
            self.storage.on_durable(self._durable)
            await self.start_core(root)
            root.start_soon(self._snapshots)
            root.start_soon(self._midnights)
            main_listeners: list[Any] = await self._open((cfg.server.host, cfg.server.port))
            api_listeners: list[Any] = []
            if cfg.server.api_listen:
                api_listeners = await self._open(parse_host_port(cfg.server.api_listen))
            ctx = self._ssl_context()
            self.addresses = [tuple(lst.socket.getsockname()[:2]) for lst in main_listeners]
            self.api_addresses = [tuple(lst.socket.getsockname()[:2]) for lst in api_listeners]
            if ctx is not None:
                main_listeners = [trio.SSLListener(lst, ctx, https_compatible=True) for lst in main_listeners]
            async with trio.open_nursery() as handlers:
                accepting: list[trio.CancelScope] = []

                async def accept_loop(
                    listeners: list[Any], api_only: bool, task_status: trio.TaskStatus[Any]
                ) -> None:
                    with trio.CancelScope() as scope:
                        accepting.append(scope)
                        async with trio.open_nursery() as loops:
                            for listener in listeners:
                                loops.start_soon(self._accept, listener, handlers, api_only)
                            task_status.started()

                await handlers.start(accept_loop, main_listeners, False)
                if api_listeners:
                    await handlers.start(accept_loop, api_listeners, True)
                for host, port in self.addresses:
                    log.info("listening on %s:%d", host, port)
                for host, port in self.api_addresses:
                    log.info("api listening on %s:%d", host, port)
                self.ready = True
                task_status.started(self)
                await self._stop.wait()
                log.info("shutting down")
                self.ready = False
                for scope in accepting:
                    scope.cancel()
                await self.actor.call(CloseAll(CloseCode.GOING_AWAY, "shutting_down"))
                handlers.cancel_scope.deadline = trio.current_time() + CLOSE_TIMEOUT + 1
            with trio.CancelScope(shield=True):
                try:
                    await self.actor.call(TakeSnapshot())
                except Exception as exc:  # the journal keeps every record: the next start replays it
                    self.background.failed("snapshots", exc)
                await self.storage.close()
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

    async def _midnights(self) -> None:
        """At each new day in `crm.timezone`, dashboards get their zeroed "today"
        counters; a push that fails is retried (`Background.supervised`)."""
        due = False

        async def midnight() -> None:
            nonlocal due
            if not due:
                wait_ms = await self.actor.call(NextMidnight())
                await trio.sleep(wait_ms / 1000 + 0.2)
                due = True
            await self.actor.call(Midnight())
            due = False

        await self.background.supervised("midnights", midnight)

    async def _snapshots(self) -> None:
        """Compact the journal every `storage.snapshot_interval` when there were
        changes. A snapshot that cannot be taken is retried after the backoff
        and the interval (`Background.supervised`); the journal keeps every
        record meanwhile. (Writing it is the storage's: `storage.snapshot`.)"""

        async def snapshot() -> None:
            await trio.sleep(self.config.storage.snapshot_interval)
            await self.actor.call(TakeSnapshot(if_changed=True))

        await self.background.supervised("snapshots", snapshot)

    # -- one TCP stream ------------------------------------------------------

    async def _accept(self, listener: Any, handlers: trio.Nursery, api_only: bool) -> None:
        """Accept connections into `handlers`, as `trio.serve_listeners` does, but
        with `_handle_stream` closing its own stream (serve_listeners adds a second,
        forceful close with its own cancel scope to every connection)."""
        async with listener:
            lsock = fastio.listener_socket(listener)
            if lsock is not None:
                await self._accept_plain(lsock, handlers, api_only)
                return
            while True:  # TLS listeners (and any other kind)
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if not await _accept_failed(exc):
                        raise
                    continue
                handlers.start_soon(self._handle_stream, stream, api_only, _peer_ip(stream))

    async def _accept_plain(self, lsock: Any, handlers: trio.Nursery, api_only: bool) -> None:
        """Accept on a plain TCP listening socket (`fastio.accept_plain`)."""

        def serve(stream: trio.SocketStream, ip: str) -> None:
            handlers.start_soon(self._handle_stream, stream, api_only, ip)

        await fastio.accept_plain(lsock, serve, _accept_failed)

    async def _handle_stream(self, stream: trio.abc.Stream, api_only: bool, ip: str | None = None) -> None:
        cfg = self.config
        if ip is None:
            ip = _peer_ip(stream)
        ws_paths: tuple[str, ...] = ()
        if not api_only:
            ws_paths = (cfg.server.path, cfg.server.echo_path) if cfg.server.echo_path else (cfg.server.path,)
        try:
            try:
                # a plain scope, not trio.fail_after (a generator context manager on top)
                with trio.CancelScope(deadline=trio.current_time() + cfg.limits.handshake_timeout) as scope:
                    head, conn, raw = await read_request_head(
                        stream, max_header_bytes=cfg.limits.max_header_bytes, upgrade_paths=ws_paths
                    )
                if scope.cancelled_caught:
                    return  # no complete head in time
            except HttpError as err:
                log_request(self.metrics, ip, "-", "-", err.status, 0.0, 0, 0)
                await respond_and_close(
                    stream, error_reply(err, cfg.server.locale), write_timeout=cfg.limits.write_timeout
                )
                return
            except ConnectionGone:
                return
            if conn is None or (head.is_websocket_upgrade and head.path in ws_paths):
                # The session lasts long: keep none of the head's objects alive
                # in this frame (the h11 state, the raw bytes) while it runs.
                if conn is None:  # the fast path: a plain upgrade to one of ws_paths
                    trailing = raw[head.size :]
                else:
                    trailing = bytes(conn.trailing_data[0])
                box = [head, raw[: len(raw) - len(trailing)], trailing]
                echo = head.path == cfg.server.echo_path
                del head, conn, raw
                await self._websocket(stream, box, ip, echo=echo)
                return
            router = self.api_router if api_only else self.router
            if not api_only and self.api_router is not self.router and head.path.startswith("/api/"):
                router = self._no_api
            await serve_http(
                stream,
                head,
                conn,
                router,
                remote=ip,
                max_body_bytes=cfg.limits.max_http_body_bytes,
                max_header_bytes=cfg.limits.max_header_bytes,
                write_timeout=cfg.limits.write_timeout,
                locale=cfg.server.locale,
                on_request_done=functools.partial(log_request, self.metrics, ip),
            )
        except trio.BrokenResourceError:
            pass
        finally:
            await fastio.close_stream(stream)  # every task that used it has ended

    def _refusal_body(self, status: int, key: str) -> bytes:
        """A refused handshake's JSON body (and its metric)."""
        self.metrics.handshake(key)
        return json.dumps(
            {"code": status, "message": text(key, self.config.server.locale)}, ensure_ascii=False
        ).encode()

    async def _websocket(self, stream: trio.abc.Stream, box: list[Any], ip: str, *, echo: bool) -> None:
        head: RequestHead = box[0]
        answer = answer_upgrade(head.method, head.header_values)
        del head
        if isinstance(answer, Refused):  # not a valid opening handshake: no body, then close
            box.clear()
            self.metrics.handshake("http_malformed")
            refusal = HttpResponse(answer.status, b"", content_type="", headers=answer.headers)
            await respond_and_close(stream, refusal, write_timeout=self.config.limits.write_timeout)
            return
        conn, received = await self._handshake(stream, box, ip, echo)
        if conn is None:
            return
        try:
            await conn.run(stream, received, response_101(answer))
        finally:
            conn.forget()  # done by run() already, unless it failed early
            self._session_done(conn)

    async def _handshake(
        self, stream: trio.abc.Stream, box: list[Any], ip: str, echo: bool
    ) -> tuple[Connection | None, bytes]:
        """A valid opening handshake (`protocol.handshake`): admit the connection,
        or refuse it with an HTTP status and a JSON body. The 101 is written by
        the connection's writer, together with its first frames."""
        head, _raw, received = box
        box.clear()

        async def refuse(status: int, key: str) -> None:
            body = self._refusal_body(status, key)
            await respond_and_close(
                stream, HttpResponse(status, body), write_timeout=self.config.limits.write_timeout
            )

        conn = await self._admit(refuse, head, ip, echo)
        if conn is None:
            return None, b""
        self.metrics.handshake("accepted")
        return conn, received

    async def _admit(
        self,
        refuse: Callable[[int, str], Awaitable[None]],
        head: RequestHead,
        ip: str,
        echo: bool,
    ) -> Connection | None:
        """Origin and credentials checks, then admission by the hub; None (after
        `refuse(status, key)`) when refused."""
        cfg = self.config
        origins = cfg.security.allowed_origins
        origin = head.header("origin")
        # Only browsers send Origin: a client without one (desktop, Python, a
        # server) is not a cross-site page, and the list is not for it.
        if origins and origin is not None and origin not in origins:
            await refuse(403, "origin_forbidden")
            return None
        if not echo and self.auth_blocked(ip, "handshake"):
            await refuse(429, "auth_throttled")
            return None
        creds = credentials_from_handshake(head.header, head.query)
        identity: Identity | None = None
        if not echo:
            try:
                if creds.token is not None:
                    identity = self.verifier.verify(creds.token)
                elif creds.activation_code is not None:
                    identity = Identity(activation_code=creds.activation_code)
            except AuthError as err:
                refusal = refusal_for(err)
                self.credential_failed(ip, refusal.key)
                await refuse(refusal.status, refusal.key)
                return None
        conn_id = f"{self._id_prefix}{next(self._ids):08x}"
        conn = Connection(self, conn_id, ip, identity=identity, device_id=creds.device_id, echo=echo)
        admitted = await self.actor.call(
            Admit(conn, conn_id, ip, head.header("user-agent") or "", identity, creds.device_id)
        )
        if isinstance(admitted, Refusal):
            if admitted.status == 401:  # an unknown or disabled activation code
                self.credential_failed(ip, admitted.key)
            await refuse(admitted.status, admitted.key)
            return None
        conn.identity = admitted  # as the hub settled it (a desktop client's group)
        return conn

    def forget_connection(self, conn_id: str) -> None:
        """Tell the hub a connection ended (never waits: the inbox has room for it
        or a spare task waits for room)."""
        forget = Forget(conn_id)
        if not self.actor.tell_nowait(forget):
            assert self._spare is not None, "start_core() was not called"
            self._spare.start_soon(self.actor.tell, forget)

    def _session_done(self, conn: Connection) -> None:
        """Access log and metrics for one ended WebSocket session."""
        log_session(
            self.metrics,
            conn.conn_id,
            conn.identity,
            conn.ip,
            trio.current_time() - conn.started,
            conn.messages_in,
            conn.messages_out,
            conn.end_code,
        )


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
