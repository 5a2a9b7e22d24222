"""A user's devices (SPEC 13, seed 002): `register` again, and `kick_device`.

Seed 002 sends `register` right after connecting even when its handshake
authenticated; the connection checks the token (`net.local_messages`) and
the hub's `UpdateDevice` keeps the new `device_id` / `device_info` (those
given) and answers `registered {success, connection_id, device_id, message}`.

`kick_device {device_id}` closes every other connection of the sender's own
principal (same user, type and group) whose `device_id` (from `?device_id=`
or `register`) is that one: each gets `kicked {reason}` and is closed with
4003, as an administrator's kick (`core.admin`). The sender's own connection
is never closed by it. The answer is `device_kicked {device_id, kicked}`
(`kicked` 0 when no other connection has that device).
"""

from __future__ import annotations

from collections.abc import Callable

from wsserver.core.broker import Broker
from wsserver.core.commands import UpdateDevice
from wsserver.core.env import Env
from wsserver.core.inbox import own_key
from wsserver.core.presence import Presence
from wsserver.core.session import Handler, Session
from wsserver.errors import CloseCode, ErrorCode, ProtocolError
from wsserver.protocol.envelope import Inbound, encode
from wsserver.protocol.messages import KickDevice, read

__all__ = ["DeviceKick"]


class DeviceKick:
    """`UpdateDevice` and the `kick_device` handler."""

    def __init__(self, presence: Presence, broker: Broker, env: Env, forget: Callable[[str], None]) -> None:
        self.presence = presence
        self.broker = broker
        self.env = env
        self.forget = forget
        self.handlers: dict[str, Handler] = {"kick_device": self._kick}

    def update(self, cmd: UpdateDevice) -> None:
        """`UpdateDevice`: keep the device a `register` names, answer `registered`."""
        session = self.presence.sessions.get(cmd.conn_id)
        if session is None or session.identity is None:
            return
        if cmd.device_id is not None:
            session.device_id = cmd.device_id
        if cmd.device_info is not None:
            session.device_info = cmd.device_info
        data = {
            "success": True,
            "connection_id": session.conn_id,
            "device_id": session.device_id,
            "message": self.env.text("registered"),
        }
        self.broker.send(session, encode("registered", data, self.env.now_ms(), request_id=cmd.request_id))

    def _kick(self, session: Session, msg: Inbound) -> None:
        ident = session.identity
        assert ident is not None
        if ident.is_device:
            raise ProtocolError(ErrorCode.FORBIDDEN, "device_no_direct")
        device_id = str(read(msg.data, KickDevice).device_id)
        env = self.env
        reason = env.text("kicked_by_own_device")
        frame = encode("kicked", {"reason": reason}, env.now_ms())
        n = 0
        for s in self.presence.connections_of(own_key(session)):
            if s is session or s.device_id != device_id:
                continue
            self.broker.send(s, frame)
            s.outlet.close_after_queued(CloseCode.KICKED, "kicked_reason", reason=reason)
            self.forget(s.conn_id)
            n += 1
        self.broker.reply(session, msg, "device_kicked", {"device_id": device_id, "kicked": n})
