"""Configuration: the attrs classes for every section of `wsserver.toml` and their loader.

Invariants:

- `Config()` is the embedded default and equals what the packaged `wsserver.toml`
  loads to; the two are kept in step by a test.
- The classes are frozen and know nothing of TOML, the environment or the CLI;
  `load_config` is the only place that reads those, in this order, each layer
  overriding the one before: the TOML file, `WSSERVER_<SECTION>_<KEY>` environment
  variables, then dotted `overrides` (the CLI flags).
- Types are strict: no value is coerced from one TOML type to another, except that
  an integer is accepted where a float is expected. Durations are float seconds,
  lists are tuples.
- A `Config` returned by `load_config` or `config_from_dict` has passed
  `validate_config`; one built by hand has not until you call it.
- Every failure is a `ConfigError` whose `key` is the dotted path of the offending
  key (`limits.send_queue`, `activation_codes[1].code`), the environment variable
  name for an unknown `WSSERVER_*` variable, or the file path when the file itself
  cannot be read or parsed.
"""

import math
import os
import re
import tomllib
import typing
import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from importlib.resources import files
from typing import Any, Final
from urllib.parse import urlsplit

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn

__all__ = [
    "JWT_ALGORITHMS",
    "WEBHOOK_EVENTS",
    "ActivationCode",
    "ApiConfig",
    "AuthConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
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
    "config_from_dict",
    "config_to_dict",
    "default_config_text",
    "load_config",
    "parse_host_port",
    "validate_config",
]

JWT_ALGORITHMS: Final = ("HS256", "HS384", "HS512", "RS256", "ES256")
"""The JWT algorithms `auth.algorithms` may name; `none` is never among them."""

WEBHOOK_EVENTS: Final = ("user_online", "user_offline", "message_undelivered")
"""The events `webhooks.events` may name."""

ENV_PREFIX: Final = "WSSERVER_"
CONFIG_PATH_ENV: Final = "WSSERVER_CONFIG"
"""The environment variable holding the config file path (read by the CLI, not a key)."""


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


# --- the sections -------------------------------------------------------------------


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
    events: tuple[str, ...] = WEBHOOK_EVENTS
    undelivered_after: float = 60.0


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
class ApiConfig:
    """`[api]`: keys accepted in `X-API-Key` by the HTTP API."""

    keys: tuple[str, ...] = ()


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


# --- strict structuring ---------------------------------------------------------------


class _WrongValue(TypeError):
    """A value of the wrong TOML type (or an unusable float); its text is the user message."""


def _type_name(value: object) -> str:
    """The TOML name of a Python value's type, as users see it in their file."""
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _wrong(expected: str, value: object) -> _WrongValue:
    return _WrongValue(f"expected {expected}, got {_type_name(value)}")


def _structure_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise _wrong("bool", value)
    return value


def _structure_int(value: object, _: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong("int", value)
    return value


def _structure_float(value: object, _: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong("float", value)
    result = float(value)
    if not math.isfinite(result):
        raise _WrongValue(f"expected a finite float, got {value!r}")
    return result


def _structure_str(value: object, _: object) -> str:
    if not isinstance(value, str):
        raise _wrong("str", value)
    return value


def _structure_id(value: object, _: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _wrong("int or str", value)
    return value


def _is_homogeneous_tuple(t: Any) -> bool:
    args = typing.get_args(t)
    return typing.get_origin(t) is tuple and len(args) == 2 and args[1] is Ellipsis


def _make_converter() -> cattrs.Converter:
    """A converter that refuses unknown keys and never coerces between types."""
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook_func(lambda t: t == (int | str), _structure_id)

    def tuple_hook(t: Any) -> Callable[[object, object], tuple[Any, ...]]:
        element_type = typing.get_args(t)[0]

        def structure(value: object, _: object) -> tuple[Any, ...]:
            # A str is iterable, so without this check "abc" would become ("a", "b", "c").
            if not isinstance(value, list | tuple):
                raise _wrong("array", value)
            items: list[Any] = []
            errors: list[Exception] = []
            for index, element in enumerate(value):
                try:
                    items.append(converter.structure(element, element_type))
                except Exception as exc:
                    note = IterableValidationNote(
                        f"Structuring {t!r} @ index {index}", index, element_type
                    )
                    exc.__notes__ = [*getattr(exc, "__notes__", []), note]
                    errors.append(exc)
            if errors:
                raise IterableValidationError(f"While structuring {t!r}", errors, t)
            return tuple(items)

        return structure

    converter.register_structure_hook_factory(_is_homogeneous_tuple, tuple_hook)

    def attrs_hook(cl: Any) -> Callable[[object, object], Any]:
        inner = make_dict_structure_fn(cl, converter)

        def structure(value: object, _: object) -> Any:
            if not isinstance(value, Mapping):
                raise _wrong("table", value)
            return inner(value, cl)

        return structure

    converter.register_structure_hook_factory(attrs.has, attrs_hook)
    return converter


_converter: Final = _make_converter()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _WrongValue):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required key missing"
    return f"invalid value ({exc})"


def _errors(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    """Walk a cattrs error tree, yielding `(dotted key, message)` in field order."""
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            if isinstance(note, AttributeValidationNote):
                sub_path = f"{path}.{note.name}" if path else note.name
            else:
                sub_path = f"{path}[{note.index}]"
            yield from _errors(sub, sub_path)
        for sub in without:
            yield from _errors(sub, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        message = "unknown key" if path else "unknown section"
        for name in sorted(exc.extra_fields):
            yield (f"{path}.{name}" if path else name), message
    else:
        yield path, _describe(exc)


def config_from_dict(data: Mapping[str, object]) -> Config:
    """Structure and validate a parsed TOML document (nested dicts) into a `Config`.

    Raises `ConfigError` naming the first offending key.
    """
    return _structure(data, {})


def _structure(data: Mapping[str, object], origins: Mapping[str, str]) -> Config:
    try:
        config = _converter.structure(data, Config)
        validate_config(config)
    except ConfigError as exc:
        raise ConfigError(exc.key, _with_source(exc.message, exc.key, origins)) from None
    except Exception as exc:
        key, message = next(_errors(exc, ""), ("", f"invalid configuration ({exc})"))
        raise ConfigError(key, _with_source(message, key, origins)) from None
    return config


def _with_source(message: str, key: str, origins: Mapping[str, str]) -> str:
    """Append the environment variable that set `key` (or its parent), if one did."""
    for origin_key, source in origins.items():
        if key == origin_key or key.startswith((origin_key + ".", origin_key + "[")):
            return f"{message} (from {source})"
    return message


# --- layering: file, environment, overrides -------------------------------------------

_SECTIONS: Final[dict[str, type]] = {
    field.name: field.type
    for field in attrs.fields(Config)
    if isinstance(field.type, type) and attrs.has(field.type)
}
"""Config fields that are tables of keys, by name."""

_WHOLE_VALUES: Final = frozenset(attrs.fields_dict(Config)) - frozenset(_SECTIONS)
"""Config fields set as one value (activation_codes: an array of tables)."""


def _field_type(key: str) -> Any:
    """The declared type of a dotted key, or None when there is no such key."""
    parts = key.split(".")
    top = attrs.fields_dict(Config).get(parts[0])
    if top is None:
        return None
    if len(parts) == 1:
        return None if parts[0] in _SECTIONS else top.type
    if len(parts) == 2 and parts[0] in _SECTIONS:
        field = attrs.fields_dict(_SECTIONS[parts[0]]).get(parts[1])
        return None if field is None else field.type
    return None


def _env_key(name: str) -> str | None:
    """Map `WSSERVER_LIMITS_SEND_QUEUE` to `limits.send_queue`; None if it names no key."""
    rest = name[len(ENV_PREFIX) :].lower()
    if rest in _WHOLE_VALUES:
        return rest
    for section, cls in _SECTIONS.items():
        if rest.startswith(section + "_"):
            key = rest[len(section) + 1 :]
            if key in attrs.fields_dict(cls):
                return f"{section}.{key}"
    return None


def _parse_env_value(raw: str, field_type: Any) -> object:
    """Read an environment value as a TOML value, else as the raw string.

    For a str key the raw string also wins when it parses as another TOML type, so
    `WSSERVER_AUTH_JWT_SECRET=123456` is the string "123456", not an error.
    """
    try:
        value = tomllib.loads("v = " + raw)["v"]
    except tomllib.TOMLDecodeError:
        return raw
    if field_type is str and not isinstance(value, str):
        return raw
    return value


def _set(data: dict[str, Any], key: str, value: object) -> None:
    parts = key.split(".")
    if len(parts) == 2:
        section = data.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(parts[0], f"expected table, got {_type_name(section)}")
        section[parts[1]] = value
    else:
        data[parts[0]] = value


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a UTF-8 TOML file; a leading BOM (Windows Notepad) is tolerated."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigError(
            os.fspath(path), f"cannot read config file: {exc.strerror or exc}"
        ) from None
    try:
        return tomllib.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(os.fspath(path), f"invalid TOML: {exc}") from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Load the TOML file at `path` (None = embedded defaults), then apply the
    `WSSERVER_<SECTION>_<KEY>` variables of `env` (None = `os.environ`), then the
    dotted `overrides` (`{"server.port": 0}`), then validate.

    Raises `ConfigError` for an unreadable file, an unknown key, section or
    `WSSERVER_*` variable, a value of the wrong type, or a failed validation.
    """
    data = {} if path is None else _read_file(path)
    origins: dict[str, str] = {}
    for name, raw in sorted((os.environ if env is None else env).items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_PATH_ENV:
            continue
        key = _env_key(name)
        if key is None:
            raise ConfigError(name, "unknown environment variable (no such config key)")
        _set(data, key, _parse_env_value(raw, _field_type(key)))
        origins[key] = name
    for key, value in (overrides or {}).items():
        if _field_type(key) is None:
            raise ConfigError(key, "unknown key")
        _set(data, key, value)
        origins.pop(key, None)
    return _structure(data, origins)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists (TOML/JSON shaped); `config_from_dict` inverts it."""

    def lists(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: lists(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [lists(v) for v in value]
        return value

    result: dict[str, Any] = lists(_converter.unstructure(cfg))
    return result


def default_config_text() -> str:
    """The text of the packaged, documented default `wsserver.toml`."""
    return files("wsserver").joinpath("wsserver.toml").read_text(encoding="utf-8")


# --- validation -----------------------------------------------------------------------

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
    "storage.snapshot_interval",
    "cluster.node_ttl",
)

_NON_NEGATIVE: Final = (
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
    for index, api_key in enumerate(cfg.api.keys):
        require(api_key != "", f"api.keys[{index}]", "must not be empty")
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
