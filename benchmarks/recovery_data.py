"""Write a wsserver data directory holding a snapshot + journal of N records, for the
start-up benchmark (`bench.py recovery`).

The records are made by the real hub, not by hand: a `Hub` on a `FileStorage`
with a simulated clock, users with in-memory outlets, and `send_message` /
`message_read` messages driven through `Hub.handle`, exactly as connections
would. So the files are in wsserver's real format (the journal lines that
`hub.record` appends, the snapshot that `Server._snapshot_now` requests) and
stay so when the format changes.

The mix: USERS users in group 1, paired; a tenth of them offline, so their
messages go to mailboxes (`boxed`); about one record in eleven is a `status`
(read receipt), the rest `msg` records of ~40-character texts. The simulated
clock spreads the records over the 24 hours before now. A snapshot is taken
after TOTAL - JOURNAL records, then JOURNAL more records stay in the journal.
With the default retention (1,000 messages per conversation) nothing is
trimmed: every message is in memory after start-up, the heaviest case.

Usage: python benchmarks/recovery_data.py DIR [--total 1000000] [--journal 100000]
       [--users 10000]
DIR must not exist or be empty. Prints what it wrote.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import trio

from wsserver.config import load_config
from wsserver.core.hub import Hub
from wsserver.core.identity import Identity
from wsserver.protocol.envelope import Inbound
from wsserver.storage.journal import FileStorage


class _Outlet:
    """A connection that takes every frame and forgets it."""

    def deliver(self, frame: str | bytes, soon: bool = False) -> bool:
        return True

    def close(self, code: int, reason: str) -> None:
        pass

    def close_after_queued(self, code: int, reason: str) -> None:
        pass


async def build(
    directory: Path, total: int, journal: int, users: int, seed: int = 8
) -> dict[str, int]:
    if total <= journal:
        raise ValueError("--total must be larger than --journal")
    rnd = random.Random(seed)
    step_ms = 86_400_000 / total
    start_ms = time.time() * 1000 - 86_400_000
    now = [start_ms / 1000]
    config = load_config(
        None, env={}, overrides={"storage.dir": str(directory), "storage.fsync": "never"}
    )
    storage = FileStorage(directory, "never")
    loaded = storage.load()
    if loaded.state is not None or loaded.records:
        raise SystemExit(f"{directory} already holds wsserver data")
    hub = Hub(config, clock=lambda: now[0], storage=storage)
    hub.restore(loaded.state, loaded.records)
    storage.on_durable(lambda n: hub.release())
    online: list[str] = []
    for uid in range(1, users + 1):
        if uid % 10 == 0:
            continue  # offline: its messages are boxed
        conn = f"c{uid}"
        refusal = hub.admit(
            _Outlet(), conn, "127.0.0.1", "bench", Identity(user_id=uid, group_id=1)
        )
        assert refusal is None, refusal
        online.append(conn)
    received: dict[int, list[int]] = {}  # online user -> ids of messages it got (for receipts)
    counts = {"msg": 0, "status": 0}
    snapshot_at = total - journal
    k = 0
    snapshotted = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(storage.run)
        while hub.last_n < total:
            now[0] = (start_ms + hub.last_n * step_ms) / 1000
            k += 1
            if k % 11 == 0 and received:
                uid = rnd.choice(list(received))
                ids = received[uid]
                mid = ids.pop(rnd.randrange(len(ids)))
                if not ids:
                    del received[uid]
                hub.handle(f"c{uid}", Inbound("message_read", {"message_id": mid}, None, {}))
                counts["status"] += 1
            else:
                sender = rnd.choice(online)
                uid = int(sender[1:])
                partner = uid + 1 if uid % 2 else uid - 1
                cmid = f"m{k}"
                data = {
                    "to_user_id": partner,
                    "message": f"hello {partner}, this is message {k} from {uid}",
                    "client_msg_id": cmid,
                }
                hub.handle(
                    sender,
                    Inbound("send_message", data, cmid, {"type": "send_message", "data": data}),
                )
                counts["msg"] += 1
                if partner % 10 and rnd.random() < 0.1:
                    received.setdefault(partner, []).append(hub.direct.store.next_id - 1)
            if hub.last_n >= snapshot_at and not snapshotted:
                snapshotted = hub.last_n
                storage.request_snapshot(hub.snapshot_state(), hub.last_n)
            if k % 5000 == 0:
                await trio.sleep(0)  # let the writer write
        await storage.close()
        nursery.cancel_scope.cancel()
    return {
        "records": hub.last_n,
        "snapshot_n": snapshotted,
        "journal": hub.last_n - snapshotted,
        **counts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("dir", type=Path)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--journal", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=10_000)
    args = ap.parse_args()
    if args.dir.exists() and any(args.dir.iterdir()):
        sys.exit(f"{args.dir} is not empty")
    t0 = time.perf_counter()
    info = trio.run(build, args.dir, args.total, args.journal, args.users)
    sizes = {p.name: p.stat().st_size for p in args.dir.iterdir()}
    print(
        f"wrote {args.dir}: {info} in {time.perf_counter() - t0:.1f} s; files "
        + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(sizes.items())),
        flush=True,
    )
    os._exit(0)


if __name__ == "__main__":
    main()
