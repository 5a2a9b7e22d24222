"""What a configuration must satisfy beyond its types, and the error that says where it does not.

Invariants:

- Every failure is a `ConfigError` whose `key` is the dotted path of the
  offending key (`limits.send_queue`, `activation_codes[1].code`); loading
  uses the same error for what it refuses (`config.loading`).
- `validate_config` raises at the first broken rule; it never changes the config.
"""

import re
import zoneinfo
from typing import Any, Final
from urllib.parse import urlsplit

from wsserver.config.sections import JWT_ALGORITHMS, WEBHOOK_EVENTS, Config

__all__ = ["ConfigError", "parse_host_port", "validate_config"]


class ConfigError(Exception):
    """The configuration is unusable: `key` names where, `message` says why.

    `str(err)` is `"<key>: <message>"`, e.g. `limits.send_queue: expected int, got str`.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" if self.key else self.message


_ONE_OF: Final[dict[str, tuple[str, ...]]] = {
    "server.locale": ("zh-CN", "en"),
    "limits.per_user_policy": ("evict_oldest", "reject"),
    "storage.fsync": ("always", "interval", "never"),
    "log.level": ("debug", "info", "warning", "error"),
    "log.format": ("text", "json"),
}

_POSITIVE: Final = (
    "auth.timeout",
    "heartbeat.interval",
    "heartbeat.timeout",
    "limits.max_message_bytes",
    "limits.messages_per_second",
    "limits.burst",
    "limits.max_connections",
    "limits.max_connections_per_user",
    "limits.handshake_timeout",
    "limits.send_queue",
    "limits.max_rooms_per_connection",
    "limits.max_http_body_bytes",
    "limits.max_header_bytes",
    "limits.max_json_depth",
    "limits.max_pending",
    "limits.write_timeout",
    "auth.failure_window",
    "messages.mailbox_ttl",
    "messages.mailbox_max_bytes",
    "webhooks.undelivered_after",
    "webhooks.max_backoff",
    "webhooks.max_age",
    "webhooks.max_queue",
    "webhooks.timeout",
    "webhooks.pipeline",
    "storage.snapshot_interval",
    "cluster.node_ttl",
    "cluster.heartbeat",
)

_NON_NEGATIVE: Final = (
    "rooms.history_limit",
    "auth.expiry_grace",
    "auth.max_failures",
    "limits.max_connections_per_ip",
    "limits.max_room_members",
    "messages.dedup_window",
    "messages.mailbox_limit",
    "messages.history_limit",
    "messages.task_state_ttl",
)


def _get(cfg: Config, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def parse_host_port(value: str) -> tuple[str, int]:
    """Split `"HOST:PORT"` (IPv6 as `"[::1]:8081"`) into `(host, port)`.

    Raises ValueError when it is not that shape or the port is not 0..65535.
    """
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT with a port in 0..65535, got {value!r}")
    return host, int(port)


def validate_config(cfg: Config) -> None:
    """Check the rules the types cannot express; raise `ConfigError` at the first broken one."""

    def require(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(key, message)

    for key, allowed in _ONE_OF.items():
        value = _get(cfg, key)
        require(value in allowed, key, f"must be one of {', '.join(allowed)}, got {value!r}")
    for key in _POSITIVE:
        require(_get(cfg, key) > 0, key, f"must be > 0, got {_get(cfg, key)!r}")
    for key in _NON_NEGATIVE:
        require(_get(cfg, key) >= 0, key, f"must be >= 0, got {_get(cfg, key)!r}")

    server = cfg.server
    require(0 <= server.port <= 65535, "server.port", f"must be in 0..65535, got {server.port}")
    require(server.path.startswith("/"), "server.path", "must start with /")
    require(
        server.echo_path == "" or server.echo_path.startswith("/"),
        "server.echo_path",
        "must be empty (off) or start with /",
    )
    require(server.echo_path != server.path, "server.echo_path", "must differ from server.path")
    if server.tls_cert and not server.tls_key:
        raise ConfigError("server.tls_key", "must be set when server.tls_cert is set")
    if server.tls_key and not server.tls_cert:
        raise ConfigError("server.tls_cert", "must be set when server.tls_key is set")
    if server.api_listen:
        try:
            parse_host_port(server.api_listen)
        except ValueError as exc:
            raise ConfigError("server.api_listen", str(exc)) from None

    auth = cfg.auth
    require(bool(auth.algorithms), "auth.algorithms", "must name at least one algorithm")
    for index, algorithm in enumerate(auth.algorithms):
        key = f"auth.algorithms[{index}]"
        require(algorithm.lower() != "none", key, '"none" is never accepted')
        require(
            algorithm in JWT_ALGORITHMS,
            key,
            f"must be one of {', '.join(JWT_ALGORITHMS)}, got {algorithm!r}",
        )
    require(
        bool(auth.jwt_public_key_file) or not set(auth.algorithms) & {"RS256", "ES256"},
        "auth.jwt_public_key_file",
        "required when auth.algorithms includes RS256 or ES256",
    )

    seen: dict[str, int] = {}
    for index, code in enumerate(cfg.activation_codes):
        key = f"activation_codes[{index}]"
        require(code.code.strip() != "", f"{key}.code", "must not be empty")
        require(
            code.code not in seen,
            f"{key}.code",
            f"duplicate of activation_codes[{seen.get(code.code)}].code",
        )
        seen[code.code] = index
        require(
            not isinstance(code.group_id, str) or code.group_id.strip() != "",
            f"{key}.group_id",
            "must not be empty",
        )

    for index, pattern in enumerate(cfg.rooms.allow):
        require(pattern != "", f"rooms.allow[{index}]", "room pattern must not be empty")
    names: set[str] = set()
    for index, entry in enumerate(cfg.api.keys):
        if isinstance(entry, str):
            require(entry != "", f"api.keys[{index}]", "must not be empty")
            continue
        require(entry.key != "", f"api.keys[{index}].key", "must not be empty")
        require(entry.name.strip() != "", f"api.keys[{index}].name", "must not be empty")
        require(entry.name not in names, f"api.keys[{index}].name", f"{entry.name!r} names two keys")
        for at, group in enumerate(entry.groups):
            require(str(group) != "", f"api.keys[{index}].groups[{at}]", "must not be empty")
        names.add(entry.name)
    for index, origin in enumerate(cfg.security.allowed_origins):
        require(origin != "", f"security.allowed_origins[{index}]", "must not be empty")

    webhooks = cfg.webhooks
    if webhooks.url:
        url = urlsplit(webhooks.url)
        require(
            url.scheme in ("http", "https") and bool(url.netloc),
            "webhooks.url",
            "must be empty (off) or an http:// or https:// URL",
        )
    for index, event in enumerate(webhooks.events):
        require(
            event in WEBHOOK_EVENTS,
            f"webhooks.events[{index}]",
            f"must be one of {', '.join(WEBHOOK_EVENTS)}, got {event!r}",
        )

    try:
        zoneinfo.ZoneInfo(cfg.crm.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError("crm.timezone", f"unknown time zone {cfg.crm.timezone!r}") from None

    require(cfg.storage.dir != "", "storage.dir", "must not be empty")
    if cfg.cluster.redis_url:
        require(
            urlsplit(cfg.cluster.redis_url).scheme in ("redis", "rediss", "unix"),
            "cluster.redis_url",
            "must be empty (single node) or a redis://, rediss:// or unix:// URL",
        )
    cluster = cfg.cluster
    require(
        cluster.heartbeat < cluster.node_ttl,
        "cluster.heartbeat",
        f"must be less than cluster.node_ttl ({cluster.node_ttl:g}), got {cluster.heartbeat:g}",
    )
    require(
        cluster.prefix != "" and not any(c.isspace() for c in cluster.prefix),
        "cluster.prefix",
        "must be non-empty, without spaces (every Redis key and channel starts with it)",
    )
