"""Who may call the HTTP API: an admin JWT or an API key (SPEC 6).

Credentials, in the order they are tried:

- `X-API-Key: <key>` matching one of `api.keys` (compared in constant time,
  every key tried, an empty key never matches);
- `Authorization: Bearer <JWT>` verified like a WebSocket token, with
  `role: "admin"`.

A key is a string or a named table (`config.ApiKey`); the caller is named
by it (`Caller`) for the audit log, a `read_only` key may call no route
that changes anything (the API answers 403 `api_read_only`), and a key with
`groups` reaches only those groups (`api.scopes`).

No credentials, a wrong key or a token that does not verify is 401 (with
`WWW-Authenticate: Bearer`); a valid token without the admin role is 403.
A wrong key or token counts as a failed credential of the client IP, and an IP
with too many of late gets 429 whatever it presents (`ApiHost.auth_blocked`),
like its WebSocket handshakes.
Tokens are taken from headers only: a `?token=` query would end up in proxy
logs. The configuration and the verifier are read at each request, so a
reload of `api.keys` or of `[auth]` takes effect at once.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

from wsserver.config import ApiKey
from wsserver.errors import AuthError
from wsserver.net.http import HttpError, RequestHead
from wsserver.protocol.envelope import id_key

if TYPE_CHECKING:
    from wsserver.api.host import ApiHost

__all__ = ["Caller", "authorize", "key_matches"]

_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="wsserver"'),)


@attrs.frozen
class Caller:
    """Who made an API call, as the audit log names it (an API key's name, or
    `jwt:<user_id>`; never the credential), and whether it may only read."""

    name: str
    read_only: bool = False
    groups: frozenset[str] | None = None  # a group-scoped key's groups (`api.scopes`)


def key_matches(given: str, keys: Iterable[str]) -> bool:
    """True when `given` (a header value, Latin-1) equals one of `keys`, in constant time."""
    raw = given.encode("latin-1", errors="replace")
    matches = [hmac.compare_digest(raw, key.encode()) for key in keys if key]
    return any(matches)


def _key_of(given: str, keys: Iterable[ApiKey]) -> ApiKey | None:
    """The configured key `given` (a header value, Latin-1) is, every key compared
    in constant time."""
    raw = given.encode("latin-1", errors="replace")
    found = None
    for entry in keys:
        if entry.key and hmac.compare_digest(raw, entry.key.encode()):
            found = entry
    return found


def authorize(server: ApiHost, head: RequestHead, remote: str = "") -> Caller:
    """The caller, when `head` carries admin credentials; raise `HttpError` 401/403
    otherwise, or 429 when the client IP `remote` is throttled for failed credentials."""
    if server.auth_blocked(remote, "http"):
        raise HttpError(429, "auth_throttled")
    api_key = head.header("x-api-key")
    if api_key is not None:
        entry = _key_of(api_key, server.config.api.named())
        if entry is not None:
            groups = frozenset(id_key(g) for g in entry.groups) if entry.groups else None
            return Caller(entry.name, entry.read_only, groups)
    authorization = head.header("authorization")
    if authorization is None:
        if api_key is None:  # no credential at all: nothing was guessed
            raise HttpError(401, "api_credentials_missing", headers=_CHALLENGE)
        raise _refused(server, remote, "api_key_invalid")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _refused(server, remote, "token_missing")
    try:
        identity = server.verifier.verify(token)
    except AuthError as err:
        raise _refused(server, remote, err.key) from None
    if not identity.is_admin:
        raise HttpError(403, "api_admin_required")
    return Caller(f"jwt:{identity.user_id}")


def _refused(server: ApiHost, remote: str, key: str) -> HttpError:
    """The 401 for a credential that was refused, counted against `remote`."""
    server.credential_failed(remote, key)
    return HttpError(401, key, headers=_CHALLENGE)
