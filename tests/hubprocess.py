"""A `wsserver serve` child process on a port fixed in advance, restartable on the
same port and data directory (kill -9, then start again): the hub the client
tests talk to."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tests.conftest import FAST_IO, make_config, token
from tests.ports import free_port

SECRET = "client-test-secret-0123456789abcdef-xyz"
API_KEY = "client-test-api-key-0123456789"
CODE = "DESK0001"
ROOT = str(Path(__file__).resolve().parent.parent)


class Hub:
    """One hub: `start()` (blocking until it listens), `kill()` (SIGKILL), `url`;
    a context manager that kills it at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None, extra_config: str = "") -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.data = tmp_path / "hub-data"
        self.config_path = tmp_path / "hub.toml"
        self.config_path.write_text(
            f"""
[server]
host = "127.0.0.1"
fast_io = {str(FAST_IO).lower()}
[auth]
jwt_secret = "{SECRET}"
[api]
keys = ["{API_KEY}"]
[[activation_codes]]
code = "{CODE}"
group_id = 7
[limits]
messages_per_second = 10000
burst = 10000
"""
            + extra_config,
            encoding="utf-8",
        )
        self.env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self._tokens = make_config(tmp_path, auth__jwt_secret=SECRET)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def token(self, user_id: Any, ttl: float = 3600, **claims: Any) -> str:
        claims.setdefault("group_id", 1)
        return token(self._tokens, ttl, user_id=user_id, **claims)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsserver", "serve", "--config", str(self.config_path),
             "--port", str(self.port), "--data-dir", str(self.data)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.env,
        )
        self.proc = proc
        ready = threading.Event()

        def drain() -> None:  # keeps the pipe empty for the life of the process
            assert proc.stderr is not None
            for line in proc.stderr:
                text = line.decode(errors="replace")
                self.log.append(text)
                if "listening on" in text:
                    ready.set()
            proc.stderr.close()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(20) or proc.poll() is not None:
            raise AssertionError("hub did not start:\n" + "".join(self.log))

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 20) -> int:
        """A graceful stop (SIGTERM), waited for; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)

    async def api(self, method: str, target: str, body: Any = None) -> tuple[int, Any]:
        """One request to the HTTP API with its key: (status, the reply's JSON)."""
        import json

        from tests.conftest import http_request

        headers = [("X-API-Key", API_KEY)]
        raw = b""
        if body is not None:
            headers.append(("Content-Type", "application/json"))
            raw = json.dumps(body).encode()
        status, _, reply = await http_request(self.address, method, target, headers=headers, body=raw)
        return status, json.loads(reply) if reply else None


def cluster_env(redis_url: str, name: str, heartbeat: float = 3, node_ttl: float = 15) -> dict[str, str]:
    """The environment of a node of the cluster at `redis_url`."""
    return {
        "WSSERVER_CLUSTER_REDIS_URL": redis_url,
        "WSSERVER_CLUSTER_NODE_NAME": name,
        "WSSERVER_CLUSTER_HEARTBEAT": str(heartbeat),
        "WSSERVER_CLUSTER_NODE_TTL": str(node_ttl),
    }
