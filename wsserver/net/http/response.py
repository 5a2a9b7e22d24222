"""An HTTP reply, and the two ways an exchange ends early: an error to answer
(`HttpError`), a peer that left (`ConnectionGone`). No I/O here."""

from __future__ import annotations

import attrs

from wsserver.protocol.i18n import text
from wsserver.protocol.replies import error_body

__all__ = ["JSON_CONTENT_TYPE", "SERVER_NAME", "ConnectionGone", "HttpError", "HttpResponse"]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
SERVER_NAME = "wsserver"


@attrs.frozen
class HttpResponse:
    """A complete reply; :func:`serve_http` adds ``Content-Length`` and ``Server``
    (an empty ``content_type`` sends no ``Content-Type``: a reply without a body)."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


class ConnectionGone(Exception):
    """The peer closed or reset the connection before a complete request head."""


class HttpError(Exception):
    """An HTTP error answer: ``status``, a catalogue ``key``, the ``field`` to blame.

    Raised by the parser, the router and handlers; :func:`serve_http` answers
    it with :meth:`response`, the text in the server's locale (``key`` names
    an entry of ``wsserver.protocol.i18n``, filled with ``params`` and
    ``field``; a tuple param is listed with the catalogue's "or") in the
    reply envelope (``wsserver.protocol.replies``). ``headers`` are added to
    the reply (``Allow`` for 405, ``WWW-Authenticate`` for 401, ...). The
    API's body faults (``wsserver.api.bodies``) are raised as this type too.
    """

    def __init__(
        self,
        status: int,
        key: str,
        field: str | None = None,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        **params: object,
    ) -> None:
        super().__init__(status, key, field)
        self.status = status
        self.key = key
        self.field = field
        self.headers = headers
        self.params = params

    def render(self, locale: str) -> str:
        """The human text in ``locale``."""
        params = {
            name: text("list_or", locale).join(map(str, value)) if isinstance(value, tuple) else value
            for name, value in self.params.items()
        }
        if self.field is not None:
            params.setdefault("field", self.field)
        return text(self.key, locale, **params)

    def response(self, locale: str = "zh-CN") -> HttpResponse:
        """The error reply ``{"code":status,"message":..}`` (plus ``"field"`` when
        set), the message in ``locale`` (``server.locale``)."""
        body = error_body(self.status, self.render(locale), self.field)
        return HttpResponse(self.status, body, headers=self.headers)

    @property
    def message(self) -> str:
        """The English text, for logs and Python callers (replies use :meth:`render`)."""
        return self.render("en")

    def __str__(self) -> str:
        return f"{self.status} {self.message}" + (f" ({self.field})" if self.field else "")
