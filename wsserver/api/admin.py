"""The operator dashboard at `/admin` (SPEC 12; docs/ADMIN.md).

A static page of the package (`wsserver/static/admin/`: HTML, CSS and ES
modules, no build step) that works on the HTTP API with the credential the
operator types in. It is served next to the API (`server.api_listen` when set,
else the public listener), so the page and the API share an origin and its
requests need no CORS.

Invariants:

- Each file is read once, when the routes are added, and answered from memory
  with an `ETag` of its bytes; `Cache-Control: no-cache` makes the browser
  revalidate at each load (a 304 when unchanged), so an upgraded hub's page is
  never mixed with a cached older module.
- Every answer of `/admin` carries `Content-Security-Policy: default-src
  'self'` (no inline script or style, nothing from another origin),
  `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (no other page
  frames the kick buttons) and `Referrer-Policy: no-referrer`.
- `admin.enabled` and `admin.read_only` are read per request (a reload applies
  them at once): disabled, every `/admin` path is 404 like an unknown one.
- The files and `/admin/settings.json` need no credentials: they hold no data
  of the hub. Everything else the page shows comes from the API, which checks
  the operator's credential on each request as for any client.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING

from wsserver._version import __version__
from wsserver.api.static import etag_matches
from wsserver.net.http import HttpError, HttpRequest, HttpResponse, Router
from wsserver.protocol.replies import ok_body

if TYPE_CHECKING:
    from wsserver.api.host import ApiHost

__all__ = ["ADMIN_HEADERS", "CONTENT_TYPES", "add_admin_routes", "admin_files"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
ADMIN_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


def admin_files() -> dict[str, bytes]:
    """The dashboard's files by name, read from the package."""
    folder = resources.files("wsserver").joinpath("static", "admin")
    return {
        entry.name: entry.read_bytes()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.is_file() and "." + entry.name.rpartition(".")[2] in CONTENT_TYPES
    }


def add_admin_routes(router: Router, host: ApiHost) -> None:
    """Serve `/admin`, its files at `/admin/<name>` and `/admin/settings.json` on `router`."""
    answers: dict[str, tuple[HttpResponse, HttpResponse, str]] = {}
    for name, body in admin_files().items():
        content_type = CONTENT_TYPES["." + name.rpartition(".")[2]]
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = (("Cache-Control", "no-cache"), ("ETag", etag), *ADMIN_HEADERS)
        answers[name] = (
            HttpResponse(200, body, content_type, headers),
            HttpResponse(304, b"", content_type, headers),
            etag,
        )

    def enabled() -> None:
        if not host.config.admin.enabled:
            raise HttpError(404, "not_found", headers=ADMIN_HEADERS)

    async def serve_file(req: HttpRequest) -> HttpResponse:
        enabled()
        name = req.params.get("name") or "index.html"  # `/admin` and `/admin/`
        if name not in answers:
            raise HttpError(404, "not_found", headers=ADMIN_HEADERS)
        ok, not_modified, etag = answers[name]
        return not_modified if etag_matches(req.head.header("if-none-match"), etag) else ok

    async def settings(req: HttpRequest) -> HttpResponse:
        """What the page needs before login: the mode, the default language, the version."""
        enabled()
        config = host.config
        data = {"read_only": config.admin.read_only, "locale": config.server.locale, "version": __version__}
        return HttpResponse(200, ok_body(data), headers=(("Cache-Control", "no-store"), *ADMIN_HEADERS))

    router.add("GET", "/admin", serve_file)
    router.add("GET", "/admin/{name}", serve_file)
    router.add("GET", "/admin/settings.json", settings)
