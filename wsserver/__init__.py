"""wsserver: a real-time WebSocket hub on trio.

The embedding API, for running a hub inside another Python program:

- `serve(config, *, handlers=None, task_status=...)`: async, for a host that runs
  trio; reports a `HubHandle` once listening and runs until `HubHandle.stop()` or
  cancellation (both graceful).
- `run(config, *, handlers=None) -> int`: blocking, for a host without trio; stops
  gracefully on Ctrl+C / SIGTERM like `wsserver serve`.
- `HubHandle`: `address`, `url`, `await publish(type, data, *, user_id=..., ...)`,
  `add_handler(type, fn)` / `@on(type)` for the host's own client message types
  (`fn(ctx, data)` with a `HostContext`), `stats()`, `stop()`.
- `Config`, `load_config`, `ConfigError`: building the configuration.

`import wsserver` stays light (the CLI's `version` and `gen-config` need no
trio): the embedding names are imported on first use.
"""

from typing import TYPE_CHECKING, Any

from wsserver._version import __version__
from wsserver.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from wsserver.embed import HostContext, HubHandle, run, serve

__all__ = [
    "Config",
    "ConfigError",
    "HostContext",
    "HubHandle",
    "__version__",
    "load_config",
    "run",
    "serve",
]

_EMBED = frozenset({"HostContext", "HubHandle", "run", "serve"})


def __getattr__(name: str) -> Any:
    if name in _EMBED:
        from wsserver import embed

        return getattr(embed, name)
    raise AttributeError(f"module 'wsserver' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _EMBED)
