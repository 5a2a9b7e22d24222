"""Journal records and bytes per direct message, with and without the `message`
webhook event: the hub without I/O (the tests' rig), every record encoded as the
journal encodes it (`storage.base.encode_record`). Deterministic: counts, not time.

Usage: python benchmarks/journal_bytes.py [--messages 5000] [--src DIR]
(`--src`: a directory holding another version's `wsserver` package, e.g. from
`git archive COMMIT wsserver | tar -x -C DIR`.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class CountingJournal:
    """Durable at once; counts the records and the bytes of their journal lines."""

    def __init__(self, encode: Any) -> None:
        self.encode = encode
        self.n = 0
        self.bytes = 0

    @property
    def durable_upto(self) -> int:
        return self.n

    def append(self, record: dict[str, Any]) -> int:
        self.n += 1
        self.bytes += len(self.encode(self.n, record))
        return self.n

    def request_snapshot(self, state: dict[str, Any], upto: int) -> None:
        """Nothing to keep."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--src", help="a directory holding the wsserver package to measure")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.src:
        sys.path.insert(0, args.src)
    from tests.test_hub import send
    from tests.test_webhooks_core import Rig
    from wsserver.storage.base import encode_record

    for events in (["user_online"], ["user_online", "message"]):
        journal = CountingJournal(encode_record)
        rig = Rig(journal, webhooks__events=events, webhooks__max_queue=10**7)  # type: ignore[arg-type]
        rig.start()
        senders = [rig.connect(i, group_id=5) for i in range(1, 101)]
        for i in range(1, 101):
            rig.connect(1000 + i, group_id=5)
        n0, b0 = journal.n, journal.bytes
        for k in range(args.messages):
            text = "hello there, a message of some length"
            send(rig.hub, senders[k % 100], "send_message", {"to_user_id": 1001 + k % 100, "text": text, "client_msg_id": f"c{k}"})
        records = (journal.n - n0) / args.messages
        size = (journal.bytes - b0) / args.messages
        print(f"webhooks.events={events}: {records:.2f} records, {size:.1f} bytes per message")


if __name__ == "__main__":
    main()
