"""`wsserver client`: a wscat for the hub, on the library's `Client`.

Every message the hub sends is printed on stdout as one JSON line; every
line typed on stdin (one JSON object) is sent as it is. The connection is
kept up as the library does (reconnect, sync, queue while away); state
changes go to stderr as `# <state> ...` lines, so stdout stays pure JSON lines.

Invariants:

- EOF on stdin ends the client: what was typed is written first, and the
  replies to lines that carried an `id` are awaited (`--wait` seconds at most);
  then it closes with 1000 and exits 0.
- A client that ends by itself (kicked, replaced, credentials refused)
  exits 1 with the reason on stderr; a line that is not a JSON object is
  reported on stderr and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import trio

from wsserver.client.client import Client
from wsserver.client.errors import ClientError
from wsserver.client.policy import ConnectionState, StateChange

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """Run the client until EOF on stdin (0) or until it ends by itself (1)."""
    try:
        client = Client(
            args.url,
            token=args.token,
            activation_code=args.activation_code,
            device_id=args.device_id,
            last_seq=args.last_seq,
            auto_ack=args.auto_ack,
        )
    except ValueError as exc:
        print(f"client: {exc}", file=sys.stderr)
        return 2
    try:
        return trio.run(_main, client, args.wait, sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        return 130


async def _main(client: Client, wait: float, stdin: TextIO, stdout: TextIO) -> int:
    awaiting: set[str] = set()
    answer = [trio.Event()]  # set on every awaited reply
    closing = False

    def show(msg: dict[str, Any]) -> None:
        stdout.write(json.dumps(msg, ensure_ascii=False) + "\n")
        stdout.flush()
        rid = msg.get("id")
        if rid is not None and str(rid) in awaiting:
            awaiting.discard(str(rid))
            answer[0].set()

    def state(change: StateChange) -> None:
        line = f"# {change.state.value}"
        if change.code is not None or change.reason:
            line += f" ({change.code}) {change.reason}".rstrip()
        if change.delay is not None:
            line += f"; next attempt in {change.delay:.2f} s"
        print(line, file=sys.stderr, flush=True)

    client.on("*", show)
    client.on("state", state)
    status = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)

        async def until_ended() -> None:
            nonlocal status
            await client.wait_state(ConnectionState.DISCONNECTED)
            if not closing:
                end = client.closed_reason
                print(f"client: disconnected: {end.reason if end else ''}", file=sys.stderr, flush=True)
                status = 1
            nursery.cancel_scope.cancel()

        nursery.start_soon(until_ended)
        while True:
            line = await trio.to_thread.run_sync(stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            try:
                frame = json.loads(line)
            except ValueError as exc:
                print(f"client: not JSON: {exc}", file=sys.stderr, flush=True)
                continue
            if not isinstance(frame, dict):
                print("client: a line must be a JSON object", file=sys.stderr, flush=True)
                continue
            try:
                client.send_frame(frame)
            except ClientError as exc:
                print(f"client: {exc}", file=sys.stderr, flush=True)
                continue
            if frame.get("id") is not None:
                awaiting.add(str(frame["id"]))
        with trio.move_on_after(wait):
            await client.flush()
            while awaiting:
                answer[0] = trio.Event()
                await answer[0].wait()
        closing = True
        await client.aclose()
    return status
