"""What a configuration reload (SIGHUP) may change, decided without I/O.

`plan_reload(old, new)` compares two validated configs key by key and returns
the config to run with from now on: every changed key that can change live
takes its new value; every changed key that needs a restart keeps its old
value and is reported. The server applies the plan (`Server.reload`).

Invariants:

- Every key of `Config` is in exactly one of `LIVE_KEYS` and `RESTART_KEYS`
  (a test checks it), so a new key cannot slip through undecided.
- A plan never carries a value of a secret key into its description: secret
  keys are named, never shown.
- The planned config has passed `validate_config`.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from wsserver.config import Config, config_from_dict, config_to_dict

__all__ = ["LIVE_KEYS", "RESTART_KEYS", "SECRET_KEYS", "ReloadPlan", "flatten", "plan_reload"]

LIVE_KEYS: Final = (
    # read on use: hub rules, HTTP API, handshake, catalogue texts
    "server.locale",
    "auth.*",  # a new TokenVerifier is built; new tokens and refreshes use it
    "activation_codes",  # the hub's codes are rebuilt; revoked codes' connections close 4001
    "heartbeat.*",  # existing connections pick it up at their next heartbeat tick
    "limits.*",  # rate/burst also on open connections; sizes and send_queue for new ones
    "rooms.*",
    "crm.offline_on_disconnect",
    "crm.dashboard_roles",
    "api.*",
    "security.*",
    "metrics.*",
    "log.*",
    "admin.*",  # read per request
)
"""Keys a reload applies (`section.*` = every key of the section)."""

RESTART_KEYS: Final = (
    "server.host",  # listeners are opened once
    "server.port",
    "server.path",
    "server.echo_path",
    "server.api_listen",
    "server.tls_cert",
    "server.tls_key",
    "server.fast_io",  # the I/O paths are chosen at start (net.fastio)
    "storage.*",  # the journal is open
    "messages.*",  # retention is fixed when the message store is built
    "crm.timezone",  # the CRM's day boundaries are fixed at start
    "webhooks.*",
    "cluster.*",
)
"""Keys that keep their old value until a restart."""

SECRET_KEYS: Final = (
    "auth.jwt_secret",
    "api.keys",
    "activation_codes",
    "webhooks.secret",
    "cluster.redis_url",  # may carry a password
)
"""Keys whose values never appear in a log line."""


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) for p in patterns)


def flatten(cfg: Config) -> dict[str, Any]:
    """The config as `{dotted key: value}`; arrays of tables stay one value."""
    out: dict[str, Any] = {}
    for name, value in config_to_dict(cfg).items():
        if isinstance(value, dict):
            for key, inner in value.items():
                out[f"{name}.{key}"] = inner
        else:
            out[name] = value
    return out


@attrs.frozen
class ReloadPlan:
    """The outcome of comparing the running config with a freshly loaded one."""

    config: Config
    """What to run with: `new` for live keys, `old` for keys that need a restart."""
    applied: tuple[str, ...]
    """Changed keys that take effect now, sorted."""
    needs_restart: tuple[str, ...]
    """Changed keys that keep their old value until a restart, sorted."""
    old: Config
    new: Config

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.needs_restart)

    def describe(self, key: str) -> str:
        """`key: old -> new`, or just the key for a secret one."""
        if _matches(key, SECRET_KEYS):
            return f"{key} (secret)"
        before, after = flatten(self.old)[key], flatten(self.new)[key]
        return f"{key}: {before!r} -> {after!r}"


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """Compare `old` (running) with `new` (just loaded); see the module docstring."""
    before, after = flatten(old), flatten(new)
    applied: list[str] = []
    restart: list[str] = []
    for key in sorted(after):
        if before.get(key) == after[key]:
            continue
        (restart if _matches(key, RESTART_KEYS) else applied).append(key)
    merged = config_to_dict(new)
    for key in restart:
        section, _, name = key.partition(".")
        if name:
            merged[section][name] = before[key]
        else:
            merged[section] = before[key]
    config = config_from_dict(merged) if restart else new
    return ReloadPlan(config, tuple(applied), tuple(restart), old, new)
