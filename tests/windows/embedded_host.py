"""A host program that embeds the hub (runs on the Windows side of the Windows
check): `wsserver.run(config)` with a message type of its own.

    set SHIV_INTERPRETER=1
    python.exe wsserver-win_amd64-cp311.pyz embedded_host.py CONFIG

(SHIV_INTERPRETER makes the pyz run this script with its bundled libraries.)
Blocks until Ctrl+C or Ctrl+Break, then exits with `run`'s status.
"""

from __future__ import annotations

import sys
from typing import Any

import wsserver


def order_placed(ctx: wsserver.HostContext, data: Any) -> None:
    ctx.reply("order_ack", {"order": data["order"], "by": ctx.identity.user_id, "host": "windows"})


if __name__ == "__main__":
    sys.exit(wsserver.run(sys.argv[1], handlers={"order_placed": order_placed}))
