"""Configuration: the attrs classes for every section of `wsserver.toml` and their loader.

Callers import from here (`from wsserver.config import Config, load_config`).
The package's modules, each one concern:

- `sections`: the frozen attrs classes, one per section, and `Config()`, the
  embedded default;
- `loading`: the TOML file, `WSSERVER_*` environment variables and CLI
  overrides, structured strictly (cattrs, no coercion between types);
- `validation`: the rules the types cannot express, and `ConfigError`, which
  names the dotted key at fault.
"""

from wsserver.config.loading import (
    CONFIG_PATH_ENV,
    ENV_PREFIX,
    config_from_dict,
    config_to_dict,
    default_config_text,
    load_config,
)
from wsserver.config.sections import (
    JWT_ALGORITHMS,
    WEBHOOK_EVENTS,
    ActivationCode,
    AdminConfig,
    ApiConfig,
    ApiKey,
    AuthConfig,
    ClusterConfig,
    Config,
    CrmConfig,
    HeartbeatConfig,
    LimitsConfig,
    LogConfig,
    MessagesConfig,
    MetricsConfig,
    RoomsConfig,
    SecurityConfig,
    ServerConfig,
    StorageConfig,
    WebhooksConfig,
)
from wsserver.config.validation import ConfigError, parse_host_port, validate_config

__all__ = [
    "CONFIG_PATH_ENV",
    "ENV_PREFIX",
    "JWT_ALGORITHMS",
    "WEBHOOK_EVENTS",
    "ActivationCode",
    "AdminConfig",
    "ApiConfig",
    "ApiKey",
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
