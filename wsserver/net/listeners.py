"""The server's TCP side: its listeners, the accept loops, and the routing of
each accepted stream to HTTP or to a WebSocket.

One listener (`server.host:port`) serves WebSocket upgrades on `server.path`
(and `server.echo_path` when set) and plain HTTP for everything else; with
`server.api_listen` set, `/api/*` moves to that second listener (the public
one then answers 404 there) and upgrades are not served on it.

Each accepted stream gets its own task in the handlers' nursery, which reads
the request head within `limits.handshake_timeout` (`net.http.read_request_head`)
and hands an upgrade to a WebSocket path to `net.admission`, anything else to
the router (`net.http.serve_http`); the task closes the stream when it ends.
The accept loop is our own, not `trio.serve_listeners` (which adds a forceful
close with its own cancel scope to every connection), and a plain TCP listener
accepts with `fastio.accept_plain`. An `accept()` that fails for one
connection, or for lack of descriptors or memory (logged, then a pause), does
not stop its listener; any other failure does.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

import trio

from wsserver.config import ServerConfig, parse_host_port
from wsserver.net import fastio
from wsserver.net.http import (
    ConnectionGone,
    HttpError,
    Router,
    read_request_head,
    respond_and_close,
    serve_http,
)
from wsserver.ops.access import log_request

if TYPE_CHECKING:
    from wsserver.net.admission import Admission
    from wsserver.net.host import ListenerHost

__all__ = ["Listeners"]

log = logging.getLogger("wsserver.server")

# accept() errors that mean "out of file descriptors or memory": wait, then retry
ACCEPT_CAPACITY_ERRNOS = {
    getattr(errno, n) for n in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS") if hasattr(errno, n)
}
ACCEPT_BACKOFF = 0.1
# accept() errors that concern one connection only (as trio.SocketListener.accept)
ACCEPT_IGNORABLE_ERRNOS = {
    getattr(errno, n) for n in ("ECONNABORTED", "EPERM", "EPROTO") if hasattr(errno, n)
}


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


async def _open(hostport: tuple[str, int], reuse_port: bool = False) -> list[trio.SocketListener]:
    host, port = hostport
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host or None, backlog=4096)
    # `serve --workers`: every worker listens on the same port, the kernel spreads
    # the connections (SO_REUSEPORT); trio's helper has no option for it
    infos = await trio.socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners = []
    for family, kind, proto, _, address in infos:
        sock = trio.socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(4096)
        except OSError:
            sock.close()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners


def _ssl_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    if not cfg.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


class Listeners:
    """The listeners of one server and what they accept (see the module docstring)."""

    def __init__(self, server: ListenerHost, admission: Admission) -> None:
        self._server = server
        self._admission = admission
        self._no_api = Router()  # `/api/*` on the public listener when the API has its own
        self._accepting: list[trio.CancelScope] = []
        self.addresses: list[tuple[str, int]] = []
        self.api_addresses: list[tuple[str, int]] = []

    async def open(self) -> tuple[list[Any], list[Any]]:
        """Open the public listeners (TLS when `server.tls_cert` is set) and, with
        `server.api_listen`, the API's; their addresses are then in `addresses`
        and `api_addresses`."""
        cfg = self._server.config
        reuse = self._server.reuse_port
        main_listeners: list[Any] = await _open((cfg.server.host, cfg.server.port), reuse)
        api_listeners: list[Any] = []
        if cfg.server.api_listen:
            api_listeners = await _open(parse_host_port(cfg.server.api_listen), reuse)
        ctx = _ssl_context(cfg.server)
        self.addresses = [tuple(lst.socket.getsockname()[:2]) for lst in main_listeners]
        self.api_addresses = [tuple(lst.socket.getsockname()[:2]) for lst in api_listeners]
        if ctx is not None:
            main_listeners = [
                trio.SSLListener(lst, ctx, https_compatible=True) for lst in main_listeners
            ]
        return main_listeners, api_listeners

    async def start_accepting(
        self, handlers: trio.Nursery, main_listeners: list[Any], api_listeners: list[Any]
    ) -> None:
        """Accept on every listener (opened by `open`), each stream served in
        `handlers`, until `stop_accepting()`."""

        async def accept_loop(
            listeners: list[Any], api_only: bool, task_status: trio.TaskStatus[Any]
        ) -> None:
            with trio.CancelScope() as scope:
                self._accepting.append(scope)
                async with trio.open_nursery() as loops:
                    for listener in listeners:
                        loops.start_soon(self.accept, listener, handlers, api_only)
                    task_status.started()

        await handlers.start(accept_loop, main_listeners, False)
        if api_listeners:
            await handlers.start(accept_loop, api_listeners, True)

    def stop_accepting(self) -> None:
        """Accept no more connections (those accepted go on)."""
        for scope in self._accepting:
            scope.cancel()

    async def accept(self, listener: Any, handlers: trio.Nursery, api_only: bool) -> None:
        """Accept connections into `handlers`, as `trio.serve_listeners` does, but
        with `handle_stream` closing its own stream (serve_listeners adds a second,
        forceful close with its own cancel scope to every connection)."""
        async with listener:
            lsock = fastio.listener_socket(listener)
            if lsock is not None:
                await self.accept_plain(lsock, handlers, api_only)
                return
            while True:  # TLS listeners (and any other kind)
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if not await _accept_failed(exc):
                        raise
                    continue
                handlers.start_soon(self.handle_stream, stream, api_only, _peer_ip(stream))

    async def accept_plain(self, lsock: Any, handlers: trio.Nursery, api_only: bool) -> None:
        """Accept on a plain TCP listening socket (`fastio.accept_plain`)."""

        def serve(stream: trio.SocketStream, ip: str) -> None:
            handlers.start_soon(self.handle_stream, stream, api_only, ip)

        await fastio.accept_plain(lsock, serve, _accept_failed)

    async def handle_stream(
        self, stream: trio.abc.Stream, api_only: bool, ip: str | None = None
    ) -> None:
        """Serve one accepted stream (`api_only`: from the API's own listener) until
        it ends, then close it. Tests serve memory streams through it."""
        server = self._server
        cfg = server.config
        if ip is None:
            ip = _peer_ip(stream)
        ws_paths: tuple[str, ...] = ()
        if not api_only:
            ws_paths = (
                (cfg.server.path, cfg.server.echo_path)
                if cfg.server.echo_path
                else (cfg.server.path,)
            )
        try:
            try:
                # a plain scope, not trio.fail_after (a generator context manager on top)
                with trio.CancelScope(
                    deadline=trio.current_time() + cfg.limits.handshake_timeout
                ) as scope:
                    head, conn, raw = await read_request_head(
                        stream, max_header_bytes=cfg.limits.max_header_bytes, upgrade_paths=ws_paths
                    )
                if scope.cancelled_caught:
                    return  # no complete head in time
            except HttpError as err:
                log_request(server.metrics, ip, "-", "-", err.status, 0.0, 0, 0)
                await respond_and_close(
                    stream,
                    err.response(cfg.server.locale),
                    write_timeout=cfg.limits.write_timeout,
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
                await self._admission.websocket(stream, box, ip, echo=echo)
                return
            router = server.api_router if api_only else server.router
            if (
                not api_only
                and server.api_router is not server.router
                and head.path.startswith("/api/")
            ):
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
                on_request_done=functools.partial(log_request, server.metrics, ip),
            )
        except trio.BrokenResourceError:
            pass
        finally:
            await fastio.close_stream(stream)  # every task that used it has ended
