"""wsserver: a real-time WebSocket hub on trio.

The embedding API (serve/run and a host handle) grows here; today it offers
the configuration loader and the `Server` class.
"""

from wsserver._version import __version__
from wsserver.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "__version__", "load_config"]
