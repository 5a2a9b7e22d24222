"""The configuration's shape: one frozen attrs class per section of `wsserver.toml`.

Invariants:

- `Config()` is the embedded default and equals what the packaged `wsserver.toml`
  loads to; the two are kept in step by a test.
- The classes know nothing of TOML, the environment or the CLI (`config.loading`
  reads those) and hold no rule beyond their types (`config.validation`).
- Durations are float seconds, lists are tuples.
"""

from typing import Final

import attrs

__all__ = [
    "JWT_ALGORITHMS",
    "WEBHOOK_EVENTS",
    "ActivationCode",
    "ApiConfig",
    "ApiKey",
    "AuthConfig",
    "ClusterConfig",
    "Config",
    "CrmConfig",
    "HeartbeatConfig",
    "LimitsConfig",
    "LogConfig",
    "MessagesConfig",
    "MetricsConfig",
    "RoomsConfig",
    "SecurityConfig",
    "ServerConfig",
    "StorageConfig",
    "WebhooksConfig",
]

JWT_ALGORITHMS: Final = ("HS256", "HS384", "HS512", "RS256", "ES256")
"""The JWT algorithms `auth.algorithms` may name; `none` is never among them."""

DEFAULT_WEBHOOK_EVENTS: Final = ("user_online", "user_offline", "message_undelivered")
"""The events sent unless `webhooks.events` says otherwise."""

WEBHOOK_EVENTS: Final = (
    *DEFAULT_WEBHOOK_EVENTS,
    "message",
    "message_status",
    "crm_incoming",
    "crm_customer",
    "crm_follow_up",
    "crm_account_status",
)
"""The events `webhooks.events` may name (the data back to the business, SPEC 13,
are opt-in: a backend names the ones it wants)."""


@attrs.frozen(kw_only=True)
class ServerConfig:
    """`[server]`: where the listener binds and what it serves."""

    host: str = "0.0.0.0"
    port: int = 8080
    path: str = "/ws"
    echo_path: str = ""
    locale: str = "zh-CN"
    api_listen: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    fast_io: bool = True


@attrs.frozen(kw_only=True)
class AuthConfig:
    """`[auth]`: how JWTs are verified and how long a client may take to authenticate."""

    jwt_secret: str = ""
    jwt_public_key_file: str = ""
    algorithms: tuple[str, ...] = ("HS256",)
    issuer: str = ""
    audience: str = ""
    timeout: float = 10.0
    expiry_grace: float = 30.0
    require_exp: bool = True
    require_user_type: bool = False
    max_failures: int = 10
    failure_window: float = 60.0


@attrs.frozen
class ActivationCode:
    """One `[[activation_codes]]` entry: a code a desktop client logs in with, mapped to a group."""

    code: str
    group_id: int | str
    name: str = ""
    enabled: bool = True


@attrs.frozen(kw_only=True)
class HeartbeatConfig:
    """`[heartbeat]`: liveness pings and when a silent connection is dropped."""

    interval: float = 30.0
    timeout: float = 60.0
    app_ping: bool = False


@attrs.frozen(kw_only=True)
class LimitsConfig:
    """`[limits]`: sizes, rates and counts that protect the server (SPEC section 5)."""

    max_message_bytes: int = 65536
    messages_per_second: float = 50.0
    burst: int = 100
    max_connections: int = 10000
    max_connections_per_user: int = 10
    per_user_policy: str = "evict_oldest"
    max_connections_per_ip: int = 0
    handshake_timeout: float = 10.0
    send_queue: int = 1024
    max_rooms_per_connection: int = 100
    max_room_members: int = 0
    max_http_body_bytes: int = 1048576
    max_header_bytes: int = 16384
    max_json_depth: int = 32
    max_pending: int = 1000
    write_timeout: float = 30.0


@attrs.frozen(kw_only=True)
class RoomsConfig:
    """`[rooms]`: which room names may exist and whether joins/leaves are announced."""

    allow: tuple[str, ...] = ("*",)
    presence_events: bool = True
    history_limit: int = 0


@attrs.frozen(kw_only=True)
class MessagesConfig:
    """`[messages]`: de-duplication, offline mailboxes, history and task-state retention."""

    dedup_window: float = 600.0
    mailbox_limit: int = 1000
    mailbox_ttl: float = 604800.0
    history_limit: int = 1000
    task_state_ttl: float = 3600.0
    mailbox_max_bytes: int = 8388608


@attrs.frozen(kw_only=True)
class WebhooksConfig:
    """`[webhooks]`: events posted to the business backend (SPEC section 6.2)."""

    url: str = ""
    secret: str = ""
    events: tuple[str, ...] = DEFAULT_WEBHOOK_EVENTS
    undelivered_after: float = 60.0
    max_backoff: float = 60.0
    max_age: float = 86400.0
    max_queue: int = 100000
    timeout: float = 10.0
    pipeline: int = 64


@attrs.frozen(kw_only=True)
class CrmConfig:
    """`[crm]`: the CRM workflow of seed 000."""

    timezone: str = "Asia/Shanghai"
    offline_on_disconnect: bool = True
    dashboard_roles: tuple[str, ...] = ("admin", "dashboard")


@attrs.frozen(kw_only=True)
class StorageConfig:
    """`[storage]`: where the journal and snapshot live and how hard they are synced."""

    dir: str = "./data"
    fsync: str = "always"
    snapshot_interval: float = 30.0


@attrs.frozen(kw_only=True)
class ApiKey:
    """One `[[api.keys]]` table: a key with a name for the audit log, whether it
    may only read (every changing call answered 403), and the groups it is
    limited to (empty: every group; `api.scopes`)."""

    name: str
    key: str
    read_only: bool = False
    groups: tuple[int | str, ...] = ()


@attrs.frozen(kw_only=True)
class ApiConfig:
    """`[api]`: keys accepted in `X-API-Key` by the HTTP API: a plain string
    (named `api.keys[<index>]`, may change anything) or an `ApiKey` table."""

    keys: tuple[str | ApiKey, ...] = ()

    def named(self) -> tuple[ApiKey, ...]:
        """Every key as an `ApiKey`, plain strings named by their place."""
        return tuple(
            k if isinstance(k, ApiKey) else ApiKey(name=f"api.keys[{i}]", key=k) for i, k in enumerate(self.keys)
        )


@attrs.frozen(kw_only=True)
class SecurityConfig:
    """`[security]`: origins allowed to open a WebSocket (empty = any)."""

    allowed_origins: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class MetricsConfig:
    """`[metrics]`: whether `/metrics` needs the same credentials as the API."""

    require_auth: bool = False


@attrs.frozen(kw_only=True)
class LogConfig:
    """`[log]`: log level and line format."""

    level: str = "info"
    format: str = "text"


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """`[cluster]`: Redis for running several nodes as one (empty URL = single process)."""

    redis_url: str = ""
    node_ttl: float = 15.0
    heartbeat: float = 3.0
    prefix: str = "wsserver"
    node_name: str = ""


@attrs.frozen(kw_only=True)
class AdminConfig:
    """`[admin]`: the operator dashboard at `/admin`."""

    enabled: bool = True
    read_only: bool = False


@attrs.frozen(kw_only=True)
class Config:
    """The whole configuration; `Config()` is the embedded default."""

    server: ServerConfig = attrs.field(factory=ServerConfig)
    auth: AuthConfig = attrs.field(factory=AuthConfig)
    activation_codes: tuple[ActivationCode, ...] = ()
    heartbeat: HeartbeatConfig = attrs.field(factory=HeartbeatConfig)
    limits: LimitsConfig = attrs.field(factory=LimitsConfig)
    rooms: RoomsConfig = attrs.field(factory=RoomsConfig)
    messages: MessagesConfig = attrs.field(factory=MessagesConfig)
    webhooks: WebhooksConfig = attrs.field(factory=WebhooksConfig)
    crm: CrmConfig = attrs.field(factory=CrmConfig)
    storage: StorageConfig = attrs.field(factory=StorageConfig)
    api: ApiConfig = attrs.field(factory=ApiConfig)
    security: SecurityConfig = attrs.field(factory=SecurityConfig)
    metrics: MetricsConfig = attrs.field(factory=MetricsConfig)
    log: LogConfig = attrs.field(factory=LogConfig)
    cluster: ClusterConfig = attrs.field(factory=ClusterConfig)
    admin: AdminConfig = attrs.field(factory=AdminConfig)
