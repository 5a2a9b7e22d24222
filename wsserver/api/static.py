"""The browser client's files, served on the public listener (docs/CLIENTS.md).

`/client.js`, `/client.mjs`, `/client-worker.js` and `/client.d.ts` are the
files of `wsserver/static/` (package data, so an install and the pyz carry
them; the repository keeps them at that path for applications that host them
on their own origin).

Invariants:

- Each file is read once, when the routes are added, and answered from memory;
  its `ETag` is a hash of its bytes, so an `If-None-Match` naming it gets 304
  and a changed file (a new version) a new tag.
- They are public (no credentials, like `/healthz`) and may be loaded from any
  origin (`Access-Control-Allow-Origin: *`: a page on another origin may import
  the module); browsers cache them for an hour and revalidate after.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from wsserver.net.http import HttpRequest, HttpResponse, Router

__all__ = ["CLIENT_FILES", "add_client_routes", "etag_matches"]

JAVASCRIPT = "text/javascript; charset=utf-8"
CLIENT_FILES = {
    "client.js": JAVASCRIPT,
    "client.mjs": JAVASCRIPT,
    "client-worker.js": JAVASCRIPT,
    "client.d.ts": "text/plain; charset=utf-8",
}
CACHE_CONTROL = "public, max-age=3600"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: a list of tags, weak ones compared weakly, or `*`."""
    if if_none_match is None:
        return False
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or etag in (t.removeprefix("W/") for t in tags)


def add_client_routes(router: Router) -> None:
    """Serve the client files at `/<name>` on `router`."""
    for name, content_type in CLIENT_FILES.items():
        body = resources.files("wsserver").joinpath("static", name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers = (
            ("Cache-Control", CACHE_CONTROL),
            ("ETag", etag),
            ("Access-Control-Allow-Origin", "*"),
            ("X-Content-Type-Options", "nosniff"),
        )
        ok = HttpResponse(200, body, content_type, headers)
        not_modified = HttpResponse(304, b"", content_type, headers)

        async def serve(
            req: HttpRequest, ok: HttpResponse = ok, not_modified: HttpResponse = not_modified, etag: str = etag
        ) -> HttpResponse:
            return not_modified if etag_matches(req.head.header("if-none-match"), etag) else ok

        router.add("GET", "/" + name, serve)
