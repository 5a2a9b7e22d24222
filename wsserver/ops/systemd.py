"""systemd: service notifications (sd_notify) over `$NOTIFY_SOCKET`, and the unit file.

The protocol is one AF_UNIX datagram of newline-separated `KEY=VALUE` fields;
an address starting with `@` is in the abstract namespace. No libsystemd, no C.
`render_unit` prints the service unit that runs the pyz (`wsserver systemd-unit`).

Invariants:

- Without `NOTIFY_SOCKET`, or where there is no AF_UNIX (Windows), every call is
  a no-op: the same code runs under systemd, in a terminal and embedded.
- Sending never blocks and never raises: a notification that cannot be sent is
  logged at debug level and dropped; losing systemd must not stop the service.
- The watchdog is ours only when `WATCHDOG_USEC` is set and `WATCHDOG_PID` is
  absent or our pid; we then ping at half the interval (sd_watchdog_enabled(3)).
- `keepalive` goes through the caller's `status` coroutine each time, which in
  the server is a round trip through the hub actor: a stuck actor stops the pings, and
  systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import trio

__all__ = ["STATUS_PERIOD", "Notifier", "render_unit"]

log = logging.getLogger("wsserver.systemd")

STATUS_PERIOD = 5.0
"""Seconds between STATUS= updates when there is no watchdog to set the pace."""


class Notifier:
    """Sends sd_notify messages to the service manager named by the environment."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        # Only paths and abstract names; not on Windows, whatever its socket module offers.
        if address and address[0] in "@/" and os.name != "nt" and hasattr(socket, "AF_UNIX"):
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_period: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if (
            self.address
            and usec.isdigit()
            and int(usec) > 0
            and (not pid or pid == str(os.getpid()))
        ):
            self.watchdog_period = int(usec) / 2e6
        self._sock: socket.socket | None = None
        self.stopping_sent = False

    @property
    def enabled(self) -> bool:
        """True when a service manager is listening."""
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of `KEY=VALUE` fields; False when it was not sent."""
        if self.address is None or not fields:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode("utf-8"), self.address)
        except OSError as exc:
            log.debug("sd_notify %s not sent: %s", fields[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The service is up (sent once listening, and after each reload)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """A reload begins; `ready()` ends it."""
        usec = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC on Linux, as systemd expects
        return self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration"
        )

    def stopping(self) -> bool:
        """A graceful shutdown begins (sent once)."""
        if self.stopping_sent:
            return False
        self.stopping_sent = True
        return self.notify("STOPPING=1", "STATUS=shutting down")

    def status(self, text: str) -> bool:
        """A one-line status for `systemctl status`."""
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        """Tell the watchdog we are alive."""
        return self.notify("WATCHDOG=1")

    async def keepalive(self, status: Callable[[], Awaitable[str]]) -> None:
        """Forever: `WATCHDOG=1` at half the watchdog interval when the watchdog is
        ours, and `STATUS=` whenever the text from `status()` changes."""
        if not self.enabled:
            return
        period = self.watchdog_period or STATUS_PERIOD
        last = None
        while True:
            text = await status()
            fields = ["WATCHDOG=1"] if self.watchdog_period else []
            if text != last:
                fields.append(f"STATUS={text}")
                last = text
            self.notify(*fields)
            await trio.sleep(period)

    def close(self) -> None:
        """Release the socket (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# --- the unit file ------------------------------------------------------------------

DEFAULT_PYZ = "/opt/wsserver/wsserver.pyz"
DEFAULT_CONFIG = "/etc/wsserver/wsserver.toml"
DEFAULT_PYTHON = "/usr/bin/python3"
DEFAULT_USER = "wsserver"


def _arg(value: str) -> str:
    """One ExecStart= argument: specifiers and variables escaped, quoted when needed."""
    value = value.replace("%", "%%").replace("$", "$$")
    if value and not any(c.isspace() or c in "\"'\\;" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(
    *,
    pyz: str = DEFAULT_PYZ,
    config: str = DEFAULT_CONFIG,
    user: str | None = DEFAULT_USER,
    python: str = DEFAULT_PYTHON,
    version: str = "",
) -> str:
    """A systemd service unit running `python pyz serve` as a notify service.

    `user` None means `DynamicUser=yes` (a transient uid; see the comments in the
    unit for what that implies for the config file).
    """
    exec_start = " ".join(
        [_arg(python), _arg(pyz), "serve", "--config", _arg(config), "--data-dir", "%S/wsserver"]
    )
    if user is None:
        identity = [
            "# A transient user allocated at each start. The config file must be readable",
            "# by it (mode 0644): keep secrets out of it and pass them in the environment,",
            "# e.g. EnvironmentFile=/etc/wsserver/secrets.env (mode 0600, read by systemd)",
            "# holding WSSERVER_AUTH_JWT_SECRET=... and WSSERVER_API_KEYS=[...];",
            "# those change only with a restart.",
            "DynamicUser=yes",
        ]
    else:
        identity = [
            "# A dedicated system user; create it once with",
            f"#   useradd --system --no-create-home --shell /usr/sbin/nologin {user}",
            f"# and make the config readable by it only: chown root:{user} FILE; chmod 0640 FILE.",
            "# (wsserver systemd-unit --dynamic-user prints a unit with DynamicUser=yes instead.)",
            f"User={user}",
            f"Group={user}",
        ]
    lines = [
        f"# wsserver.service, printed by `wsserver systemd-unit`{f' (wsserver {version})' if version else ''}.",
        "#   wsserver systemd-unit > /etc/systemd/system/wsserver.service",
        "#   systemctl daemon-reload && systemctl enable --now wsserver",
        "#   systemctl reload wsserver    # re-read the config: log, limits, activation codes, api keys, ...",
        "[Unit]",
        "Description=wsserver real-time WebSocket hub",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "# wsserver sends READY=1 once it listens with its state loaded, WATCHDOG=1 at half",
        "# of WatchdogSec (a hung hub actor stops them: systemd restarts it), STATUS= with",
        "# the connection count, RELOADING=1/READY=1 around a reload and STOPPING=1.",
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "RestartSec=2",
        "TimeoutStopSec=30",
        *identity,
        "# State (journal, snapshot, generated jwt_secret) in /var/lib/wsserver; the pyz",
        "# unpacks its bundled libraries once into /var/cache/wsserver ($SHIV_ROOT).",
        "StateDirectory=wsserver",
        "StateDirectoryMode=0700",
        "CacheDirectory=wsserver",
        "Environment=SHIV_ROOT=%C/wsserver",
        "# The pyz bundles binary wheels for one CPython minor version (see its build):",
        "# this interpreter must be that version.",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=65536",
        "# For a port below 1024: AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "# CPython 3.11 has no JIT, and cffi (loaded by cryptography) maps no writable and",
        "# executable memory for what wsserver uses: a test runs the server under the",
        "# kernel's equivalent, prctl(PR_SET_MDWE).",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "UMask=0077",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
