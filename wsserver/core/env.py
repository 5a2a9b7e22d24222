"""What every part of the hub reads on use: the running configuration, the
clock, and catalogue texts in the configured locale.

One `Env` is shared by the hub's components. A reload swaps `config` here
(`Reconfigure`), and every component sees the new one at its next read; so
components keep the `Env`, never a `Config` they were given once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from wsserver.protocol.i18n import text

if TYPE_CHECKING:
    from wsserver.config import Config

__all__ = ["Env"]


@attrs.define(eq=False, slots=True)
class Env:
    """The live configuration, the clock (Unix seconds), the catalogue, and the id of
    this node (webhook events name it; the server sets it from its data directory)."""

    config: Config
    clock: Callable[[], float] = time.time
    node: str = "local"

    def now_ms(self) -> int:
        """Wall-clock milliseconds for `timestamp` fields."""
        return int(self.clock() * 1000)

    def text(self, key: str, **params: object) -> str:
        """A catalogue text in the configured locale."""
        return text(key, self.config.server.locale, **params)
