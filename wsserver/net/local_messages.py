"""The messages a connection answers itself, and its authentication by a first message.

`LOCAL_TYPES` are answered here: `heartbeat` (answered with
`heartbeat_ack`), `ping` (`pong`), `refresh` (a new token for the same user
moves the connection's expiry), `pong` and `client_ready` (liveness only, as
any frame is; `ack {ok: true}` when they carry an `id`), and `auth`/`register`,
which authenticate a connection that presented no credentials in its
handshake. Afterwards `auth` is refused (`already_authenticated`); seed 002's
`register` for the same user updates the device (the hub's `UpdateDevice`
answers `registered`), for another one it is refused.

First-message authentication (`first_message_auth`), for a connection the
handshake left anonymous: a throttled IP is answered `auth_throttled` and
closed with 4029; a token in `auth`/`register` is verified here, an
activation code on any first message is the hub's to judge (`Authenticate`).
Any refusal is an `error`, then a close (4001 for bad credentials, the hub's
code for its refusals) once that error is written; bad credentials count
against the IP (`credential_failed`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

from wsserver.core.commands import Authenticate, UpdateDevice
from wsserver.core.identity import Identity
from wsserver.core.session import Refusal
from wsserver.errors import AuthError, CloseCode, ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, id_key
from wsserver.protocol.i18n import text
from wsserver.protocol.messages import Auth, Refresh, Register, read

if TYPE_CHECKING:
    from wsserver.net.host import ConnectionHost

__all__ = ["LOCAL_TYPES", "Peer", "answer_local", "first_message_auth"]

LOCAL_TYPES = frozenset({"heartbeat", "ping", "pong", "client_ready", "refresh", "auth", "register"})
MAX_SAFE_INTEGER = 2**53  # what a JavaScript client reads back exactly


class Peer(Protocol):
    """What these answers use of a connection (`net.connection.Connection`)."""

    server: ConnectionHost
    conn_id: str
    ip: str
    identity: Identity | None
    device_id: str | None
    expires_at: float | None
    timer_due: float | None

    @property
    def locale(self) -> str: ...
    def now_ms(self) -> int: ...
    def tick(self, now: float) -> float | None: ...
    def reply(self, msg: Inbound | None, mtype: str, data: Any, **extra: Any) -> None: ...
    def send_error(self, err: ProtocolError, msg: Inbound | None) -> None: ...
    def close_after_queued(self, code: int, reason: str, /, **params: object) -> None: ...


def answer_local(conn: Peer, msg: Inbound) -> None:
    """Answer an authenticated connection's message of a `LOCAL_TYPES` type."""
    mtype = msg.type
    code = msg.activation_code
    if mtype == "heartbeat":
        extra: dict[str, Any] = {}
        # seed 000 echoes the client's timestamp; only a plain integer is a
        # timestamp (SPEC 3: integer ms), anything else gets the server's time
        ts = msg.raw.get("timestamp")
        valid = type(ts) is int and 0 <= ts < MAX_SAFE_INTEGER
        extra["timestamp"] = ts if valid else conn.now_ms()
        if code is not None:
            extra["activation_code"] = code
        data = {"status": "ok", "message": text("heartbeat_ok", conn.locale), "server_time": conn.now_ms()}
        conn.reply(msg, "heartbeat_ack", data, **extra)
    elif mtype == "ping":
        conn.reply(msg, "pong", {"server_time": conn.now_ms()})
    elif mtype == "refresh":
        _refresh(conn, msg)
    elif mtype == "register":
        _register_again(conn, msg)
    elif mtype == "auth":
        conn.send_error(ProtocolError(ErrorCode.CONFLICT, "already_authenticated"), msg)
    elif msg.id is not None:  # pong and client_ready: liveness only, already counted
        conn.reply(msg, "ack", {"ok": True})  # a request with an `id` is answered once


def _register_again(conn: Peer, msg: Inbound) -> None:
    """Seed 002 sends `register` right after connecting, even when its handshake
    authenticated: for the same user it keeps the device and answers
    `registered` (the hub, `UpdateDevice`); another user's token is `conflict`."""
    ident = conn.identity
    assert ident is not None
    try:
        if ident.is_device:
            raise ProtocolError(ErrorCode.CONFLICT, "already_authenticated")
        register = read(msg.data, Register)
        try:
            fresh = conn.server.verifier.verify(register.token)
        except AuthError as err:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, err.key, field="token") from None
        claimed = fresh.user_id if register.user_id is None else register.user_id
        if (
            id_key(fresh.user_id) != id_key(ident.user_id)
            or id_key(fresh.user_type) != id_key(ident.user_type)
            or id_key(claimed) != id_key(ident.user_id)
        ):
            raise ProtocolError(ErrorCode.CONFLICT, "already_authenticated")
    except ProtocolError as err:
        conn.send_error(err, msg)
        return
    device_id = None if register.device_id is None else str(register.device_id)
    if device_id is not None:
        conn.device_id = device_id
    update = UpdateDevice(conn.conn_id, device_id, register.device_info, msg.id)
    if not conn.server.actor.tell_nowait(update):
        conn.send_error(ProtocolError(ErrorCode.RATE_LIMITED, "rate_limited"), msg)


def _refresh(conn: Peer, msg: Inbound) -> None:
    ident = conn.identity
    assert ident is not None
    try:
        if ident.is_device:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, "refresh_not_jwt")
        token = read(msg.data, Refresh).token
        try:
            fresh = conn.server.verifier.verify(token)
        except AuthError as err:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, err.key, field="token") from None
        if id_key(fresh.user_id) != id_key(ident.user_id) or id_key(fresh.user_type) != id_key(
            ident.user_type
        ):
            raise ProtocolError(ErrorCode.FORBIDDEN, "refresh_user_mismatch", field="token")
    except ProtocolError as err:
        conn.send_error(err, msg)
        return
    conn.expires_at = fresh.expires_at
    conn.server.heartbeats.schedule(conn, trio.current_time())  # new expiry deadlines
    conn.reply(
        msg,
        "token_refreshed",
        {"expires_at": None if fresh.expires_at is None else int(fresh.expires_at), "message": text("token_refreshed", conn.locale)},
    )


async def first_message_auth(conn: Peer, msg: Inbound) -> bool:
    """Authenticate from the first message; False when the connection is closing."""
    server = conn.server
    if server.auth_blocked(conn.ip, "first_message"):
        conn.send_error(ProtocolError(ErrorCode.RATE_LIMITED, "auth_throttled"), msg)
        conn.close_after_queued(CloseCode.RATE_LIMIT, "auth_throttled")
        return False
    device_id = conn.device_id
    device_info = None
    try:
        if msg.type == "auth":
            identity = conn.server.verifier.verify(read(msg.data, Auth).token)
        elif msg.type == "register":
            register = read(msg.data, Register)
            identity = conn.server.verifier.verify(register.token)
            device_id = None if register.device_id is None else str(register.device_id)
            device_info = register.device_info
            claimed = register.user_id
            if claimed is not None and id_key(claimed) != id_key(identity.user_id):
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "token_invalid", field="user_id")
        elif isinstance(msg.activation_code, str) and msg.activation_code:
            identity = Identity(activation_code=msg.activation_code)
        else:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "auth_required")
    except AuthError as err:  # a token that does not verify
        server.credential_failed(conn.ip, err.key)
        _auth_failed(conn, ProtocolError(ErrorCode.UNAUTHORIZED, err.key), msg)
        return False
    except ProtocolError as err:  # no credential, or a misshapen message
        server.metrics.auth_failed(err.key)
        _auth_failed(conn, err, msg)
        return False
    settled = await server.actor.call(Authenticate(conn.conn_id, identity, device_id, device_info, msg.id))
    if isinstance(settled, Refusal):
        if settled.status == 401:  # an unknown or disabled activation code
            server.credential_failed(conn.ip, settled.key)
        code = ErrorCode.UNAUTHORIZED if settled.status == 401 else ErrorCode.CONFLICT
        conn.send_error(ProtocolError(code, settled.key), msg)
        conn.close_after_queued(settled.close_code, settled.key)
        return False
    conn.identity = settled  # as the hub settled it (a desktop client's group)
    conn.expires_at = settled.expires_at
    conn.device_id = device_id
    # the timer's next deadline was the auth timeout's: the token's own
    # (its expiry warning, maybe due already) take over from now
    server.heartbeats.schedule(conn, trio.current_time())
    return True


def _auth_failed(conn: Peer, err: ProtocolError, msg: Inbound) -> None:
    conn.send_error(err, msg)
    conn.close_after_queued(CloseCode.AUTH_FAILED, err.key, **err.text_params())
