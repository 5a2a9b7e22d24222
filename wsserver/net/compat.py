"""A connection that receives a seed's outbound form (`?compat=003|004`, SPEC 13).

`CompatConnection` is a `Connection` whose `deliver` hands each frame through
`protocol.compat.form_of` first. Every frame a connection sends goes through
`deliver` (the hub's fan-outs, its own replies and errors), so nothing reaches
such a client in the native form; a native connection is a plain `Connection`
and pays nothing for the forms.
"""

from __future__ import annotations

from typing import Any

from wsserver.net.connection import Connection
from wsserver.protocol.compat import form_of

__all__ = ["CompatConnection"]


class CompatConnection(Connection):
    """A connection whose frames are in a seed's form (`protocol.compat.FORMS`)."""

    __slots__ = ("form",)

    def __init__(self, *args: Any, form: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.form = form

    def deliver(self, frame: str | bytes, soon: bool = False) -> bool:
        """`Connection.deliver` of the frame in this connection's form."""
        if self.closing is not None:
            return False
        return super().deliver(form_of(frame, self.form), soon)

    def outbound(self, frame: str) -> str:
        """The frame in this connection's form (its `disconnected`)."""
        converted = form_of(frame, self.form)
        assert isinstance(converted, str)
        return converted
