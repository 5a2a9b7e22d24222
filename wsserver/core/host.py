"""A client message of an embedding host's own type, as the hub hands it over.

The host registers a handler with `AddHandler(type, fn)`; for each message of
that type the hub calls `fn(request)` inside its actor, between two commands,
like its own handlers. `Request` is the hub's `commands.HostRequest`: it
answers the sender and publishes through the hub's own paths, and is valid
only while the handler runs. (`wsserver.embed.HostContext` wraps it for the
host's code.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsserver.core.commands import Publish, PublishResult
from wsserver.core.identity import Identity
from wsserver.core.session import Session
from wsserver.errors import ErrorCode
from wsserver.protocol.envelope import Inbound, encode

__all__ = ["Request", "Sender"]


class Sender:
    """What a host request needs to answer: the hub's reply to a message and
    delivery of a frame to one session (the broker's), and the time and
    publish paths of the hub it runs in."""

    __slots__ = ("now_ms", "publish", "reply", "send")

    def __init__(
        self,
        send: Callable[[Session, str | bytes], bool],
        reply: Callable[[Session, Inbound, str, Any], None],
        now_ms: Callable[[], int],
        publish: Callable[[Publish], PublishResult],
    ) -> None:
        self.send = send
        self.reply = reply
        self.now_ms = now_ms
        self.publish = publish


class Request:
    """One client message for a host handler (a `commands.HostRequest`)."""

    __slots__ = ("_msg", "_sender", "_session", "answered")

    def __init__(self, sender: Sender, session: Session, msg: Inbound) -> None:
        self._sender = sender
        self._session = session
        self._msg = msg
        self.answered = False
        """`reply` or `error` was called (else the hub acks a request with an `id`)."""

    @property
    def type(self) -> str:
        """The message type."""
        return self._msg.type

    @property
    def id(self) -> Any:
        """The request `id` the client sent, or None."""
        return self._msg.id

    @property
    def data(self) -> Any:
        """The message's `data`."""
        return self._msg.data

    @property
    def conn_id(self) -> str:
        """The sender's connection id."""
        return self._session.conn_id

    @property
    def identity(self) -> Identity:
        """The sender's identity."""
        assert self._session.identity is not None
        return self._session.identity

    @property
    def raw(self) -> dict[str, Any]:
        """The whole message object as the client sent it."""
        return self._msg.raw

    def reply(self, type: str, data: Any = None) -> None:
        """Send `{type, data}` to the sender's connection, echoing the request `id`."""
        self.answered = True
        self._sender.reply(self._session, self._msg, type, data)

    def error(self, message: str, *, code: str = "invalid_message", field: str | None = None) -> None:
        """Answer with an `error` shaped like the hub's own (`data.code`, `data.ref`,
        `data.field`); ValueError for a `code` that is not an `ErrorCode`."""
        data: dict[str, Any] = {"code": str(ErrorCode(code)), "ref": self._msg.type}
        self.answered = True
        if field is not None:
            data["field"] = field
        sender = self._sender
        frame = encode("error", data, sender.now_ms(), request_id=self._msg.id, extra={"error": message})
        sender.send(self._session, frame)

    def publish(self, publish: Publish) -> PublishResult:
        """Publish as `POST /api/publish` does, from inside the handler."""
        return self._sender.publish(publish)
