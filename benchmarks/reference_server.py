"""The reference server of the issue-8 benchmarks: a plain `websockets` asyncio server.

It runs on the default asyncio event loop (not uvloop): the targets compare
wsserver with "a `websockets` asyncio server", as most deployments run it.
Started by `benchmarks/bench.py` as its own process; it prints
`listening on HOST:PORT` to stderr once it accepts connections and stops on
SIGTERM or SIGINT
at once (no close handshakes: nothing is kept).

What it does, in the same JSON shapes as wsserver (docs/PROTOCOL.md):

- `/ws?user=<id>`: a plain handshake (no JWT), then `connected
  {user_id, conn_id, message}`. The connection joins the fan-out set and its
  user's connections.
- `send_message {to_user_id, message, client_msg_id}` on `/ws`: answered with
  `message_sent {message_id, client_msg_id, seq, status, time}` (echoing `id`),
  and relayed as `new_message {...}` (wsserver's fields) to every connection of
  `to_user_id`, in memory only (no journal). Both are sent with
  `await connection.send()`, the usual relay idiom.
- `/control`: a publisher. Each text message `{"type", "data"}` is encoded once
  as `{"type", "data", "timestamp"}` and sent to every `/ws` connection with
  `websockets.broadcast()`; the reply is `{"delivered": <connections>}` (what
  `POST /api/publish` with `all: true` does in wsserver).

Usage: python benchmarks/reference_server.py [--host 127.0.0.1] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import signal
import sys
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _now_ms() -> int:
    return int(time.time() * 1000)


class Relay:
    """The in-memory state: every `/ws` connection, and the connections of each user."""

    def __init__(self) -> None:
        self.clients: set[ServerConnection] = set()
        self.users: dict[str, set[ServerConnection]] = {}
        self.ids = itertools.count(1)
        self.seq: dict[str, int] = {}

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        url = urlsplit(ws.request.path)
        if url.path == "/control":
            await self.control(ws)
        elif url.path == "/ws":
            user = (parse_qs(url.query).get("user") or [""])[0]
            if not user:
                await ws.close(4001, "user required")
                return
            await self.session(ws, user)
        else:
            await ws.close(1008, "unknown path")

    async def control(self, ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            frame = _encode({"type": msg["type"], "data": msg["data"], "timestamp": _now_ms()})
            broadcast(self.clients, frame)
            await ws.send(_encode({"delivered": len(self.clients)}))

    async def session(self, ws: ServerConnection, user: str) -> None:
        mine = self.users.setdefault(user, set())
        mine.add(ws)
        self.clients.add(ws)
        try:
            conn_id = uuid.uuid4().hex
            await ws.send(
                _encode(
                    {
                        "type": "connected",
                        "data": {"user_id": user, "conn_id": conn_id, "message": "connected"},
                        "timestamp": _now_ms(),
                    }
                )
            )
            async for raw in ws:
                await self.on_message(ws, user, raw)
        finally:
            self.clients.discard(ws)
            mine.discard(ws)
            if not mine:
                self.users.pop(user, None)

    async def on_message(self, ws: ServerConnection, user: str, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
            mtype = msg.get("type") or msg.get("event")
            data = msg.get("data")
        except (ValueError, AttributeError):
            return
        if mtype != "send_message" or not isinstance(data, dict):
            return
        to = str(data.get("to_user_id"))
        text = data.get("message", data.get("text"))
        now = _now_ms()
        mid = next(self.ids)
        seq = self.seq[to] = self.seq.get(to, 0) + 1
        sent: dict[str, Any] = {
            "type": "message_sent",
            "data": {
                "message_id": mid,
                "client_msg_id": data.get("client_msg_id"),
                "seq": seq,
                "status": "sent",
                "time": now,
            },
        }
        if msg.get("id") is not None:
            sent["id"] = msg["id"]
        sent["timestamp"] = now
        await ws.send(_encode(sent))
        frame = _encode(
            {
                "type": "new_message",
                "data": {
                    "id": str(mid),
                    "message_id": mid,
                    "seq": seq,
                    "session_id": data.get("session_id"),
                    "from": {"user_id": user, "user_type": None, "username": None},
                    "from_user_id": user,
                    "to_user_id": data.get("to_user_id"),
                    "text": text,
                    "time": now,
                    "message_type": data.get("message_type", "text"),
                    "reply_to_message_id": None,
                    "status": "sent",
                    "offline": False,
                },
                "timestamp": now,
            }
        )
        for peer in list(self.users.get(to, ())):
            try:
                await peer.send(frame)
            except Exception:  # the peer went away meanwhile
                pass


async def main(host: str, port: int) -> None:
    relay = Relay()
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, _exit_now)
    async with serve(relay.handler, host, port, compression=None, backlog=4096) as server:
        for sock in server.sockets:
            h, p = sock.getsockname()[:2]
            print(f"listening on {h}:{p}", file=sys.stderr, flush=True)
        await stop
    # (not reached: see below)


def _exit_now(*_: object) -> None:
    # The benchmark is over and nothing is kept: no close handshake with every client.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(args.host, args.port))
