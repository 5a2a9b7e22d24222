"""Who may open a WebSocket: the answer to an upgrade, then the checks in
order, then the hub's admission, then the session's run.

For an upgrade to a WebSocket path (the head already read and routed by
`net.listeners`):

1. `protocol.handshake.answer_upgrade` judges the opening handshake; an
   invalid one gets its 400/426 without a body, and the stream is closed.
2. The origin: a browser's `Origin` must be in `security.allowed_origins`
   when the list is set (403); clients that send none are not cross-site pages.
3. The failed-credentials throttle of the client IP (429, before anything is
   verified; the server's `auth_blocked`).
4. `?compat=`: one of `protocol.compat.FORMS` (400 naming `compat` otherwise),
   and the connection then receives that seed's form (`net.compat`).
5. The credentials (`credentials_from_handshake`, SPEC order): a token is
   verified here, in the connection's task; an activation code is the hub's
   to judge. A refused one counts against the IP (`credential_failed`). Seed
   003's `user_id`, `user_type`, `user_name` in the URL must agree with the
   token's claims (`query_agrees`, 401; not a failed credential).
6. The hub admits the connection (`Admit`: capacity, per-user and per-IP
   limits, an activation code's group) or answers a `Refusal`.

A refusal is an HTTP status with a JSON body `{code, message}` (the message
from the catalogue, in `server.locale`). An admitted connection runs
(`Connection.run`) with the 101 written by its writer ahead of its first
frames; when it ends, its access-log line is written and its close code
counted (`ops.access.log_session`). The echo path skips the credentials.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from wsserver.core.commands import Admit
from wsserver.core.identity import Identity
from wsserver.core.session import Refusal, refusal_for
from wsserver.errors import AuthError
from wsserver.net.compat import CompatConnection
from wsserver.net.connection import Connection
from wsserver.net.http import HttpResponse, RequestHead, respond_and_close
from wsserver.ops.access import log_session
from wsserver.protocol.compat import FORMS
from wsserver.protocol.envelope import id_key
from wsserver.protocol.handshake import Refused, answer_upgrade, response_101
from wsserver.protocol.i18n import text
from wsserver.protocol.replies import error_body

if TYPE_CHECKING:
    from wsserver.net.host import ConnectionHost

__all__ = ["Admission", "Credentials", "credentials_from_handshake"]


@attrs.frozen
class Credentials:
    """What a client presented: a token, an activation code, or nothing yet."""

    token: str | None = None
    activation_code: str | None = None
    device_id: str | None = None


def credentials_from_handshake(header: Any, query: dict[str, str]) -> Credentials:
    """Credentials in SPEC order: Bearer header, `?token=`, then activation code
    from `?activation_code=` or `X-Activation-Code`. `header(name)` looks a header up."""
    token = None
    auth = header("authorization")
    if auth and auth[:7].lower() == "bearer ":
        token = auth[7:].strip() or None
    if token is None:
        token = query.get("token") or None
    code = query.get("activation_code") or header("x-activation-code") or None
    device_id = query.get("device_id") or None
    return Credentials(token=token, activation_code=code, device_id=device_id)


_QUERY_CLAIMS = (("user_id", "user_id"), ("user_type", "user_type"), ("user_name", "username"))


def query_agrees(identity: Identity, query: dict[str, str]) -> bool:
    """Seed 003 puts `user_id`, `user_type` and `user_name` in the URL: each one
    given must be the token's claim (ids compared as text). A claim the token
    does not have is not checked (`auth.require_user_type` makes `user_type` one
    every token has)."""
    for param, claim in _QUERY_CLAIMS:
        given = query.get(param)
        if given is None:
            continue
        own = getattr(identity, claim)
        if own is not None and id_key(own) != given:
            return False
    return True


class Admission:
    """Answers the upgrades of one server (see the module docstring)."""

    def __init__(self, server: ConnectionHost) -> None:
        self._server = server
        # connection ids: unique per process start (a random prefix) and cheap
        self._id_prefix = uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)

    async def websocket(
        self, stream: trio.abc.Stream, box: list[Any], ip: str, *, echo: bool
    ) -> None:
        """Answer the upgrade in `box` (`[head, raw head bytes, bytes after the
        head]`, emptied here so that the long session keeps none of them alive)
        and, when admitted, run the connection until it ends."""
        server = self._server
        head: RequestHead = box[0]
        answer = answer_upgrade(head.method, head.header_values)
        del head
        if isinstance(answer, Refused):  # not a valid opening handshake: no body, then close
            box.clear()
            server.metrics.handshake("http_malformed")
            refusal = HttpResponse(answer.status, b"", content_type="", headers=answer.headers)
            await respond_and_close(
                stream, refusal, write_timeout=server.config.limits.write_timeout
            )
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
        server = self._server

        async def refuse(status: int, key: str) -> None:
            body = self._refusal_body(status, key)
            await respond_and_close(
                stream, HttpResponse(status, body), write_timeout=server.config.limits.write_timeout
            )

        conn = await self._admit(refuse, head, ip, echo)
        if conn is None:
            return None, b""
        server.metrics.handshake("accepted")
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
        server = self._server
        cfg = server.config
        origins = cfg.security.allowed_origins
        origin = head.header("origin")
        # Only browsers send Origin: a client without one (desktop, Python, a
        # server) is not a cross-site page, and the list is not for it.
        if origins and origin is not None and origin not in origins:
            await refuse(403, "origin_forbidden")
            return None
        if not echo and server.auth_blocked(ip, "handshake"):
            await refuse(429, "auth_throttled")
            return None
        form = head.query.get("compat")
        if form is not None and form not in FORMS:
            await refuse(400, "compat_unknown")
            return None
        creds = credentials_from_handshake(head.header, head.query)
        identity: Identity | None = None
        if not echo:
            try:
                if creds.token is not None:
                    identity = server.verifier.verify(creds.token)
                elif creds.activation_code is not None:
                    identity = Identity(activation_code=creds.activation_code)
            except AuthError as err:
                refusal = refusal_for(err)
                server.credential_failed(ip, refusal.key)
                await refuse(refusal.status, refusal.key)
                return None
            if identity is not None and not query_agrees(identity, head.query):
                await refuse(401, "query_identity_mismatch")
                return None
        conn_id = f"{self._id_prefix}{next(self._ids):08x}"
        if form is None:
            conn = Connection(
                server, conn_id, ip, identity=identity, device_id=creds.device_id, echo=echo
            )
        else:  # a seed's outbound form (SPEC 13)
            conn = CompatConnection(
                server, conn_id, ip, identity=identity, device_id=creds.device_id, echo=echo, form=form
            )
        admitted = await server.actor.call(
            Admit(conn, conn_id, ip, head.header("user-agent") or "", identity, creds.device_id)
        )
        if isinstance(admitted, Refusal):
            if admitted.status == 401:  # an unknown or disabled activation code
                server.credential_failed(ip, admitted.key)
            await refuse(admitted.status, admitted.key)
            return None
        conn.identity = admitted  # as the hub settled it (a desktop client's group)
        return conn

    def _refusal_body(self, status: int, key: str) -> bytes:
        """A refused handshake's JSON body (and its metric)."""
        server = self._server
        server.metrics.handshake(key)
        return error_body(status, text(key, server.config.server.locale))

    def _session_done(self, conn: Connection) -> None:
        """Access log and metrics for one ended WebSocket session."""
        log_session(
            self._server.metrics,
            conn.conn_id,
            conn.identity,
            conn.ip,
            trio.current_time() - conn.started,
            conn.messages_in,
            conn.messages_out,
            conn.end_code,
        )
