"""A free TCP port on the loopback address, for processes a test starts on a port
fixed in advance (a hub to restart on the same port, a redis-server)."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
