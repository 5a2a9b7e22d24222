"""Seed 000's Windows desktop client loop on the hub: authenticate with an
activation code, sync the Line accounts (again after every reconnect, as the
seed's client does on `auth_success`), report a customer and an incoming
contact, then heartbeat, on the trio client (`wsserver.client.connect`).

    python examples/desktop_client.py --url ws://127.0.0.1:8080/ws \\
        --activation-code HG66OP88 --beats 3 --interval 1

The code must be one of the hub's `[[activation_codes]]` (or created with
`POST /api/activation-codes`). `--beats 0` heartbeats until Ctrl+C.
"""

from __future__ import annotations

import argparse
import sys
import time

import trio

from wsserver.client import Client, ClientError, ConnectionState, connect

ACCOUNTS = [
    {"line_account_id": "line_001", "name": "Shop A", "online_status": "online"},
    {"line_account_id": "line_002", "name": "Shop B", "online_status": "offline"},
]


async def sync_after_connect(hub: Client, code: str) -> None:
    """What the desktop client does right after `auth_success`."""
    reply = await hub.request("sync_line_accounts", ACCOUNTS, activation_code=code)
    data = reply["data"]
    print(f"sync_result: created={data['created_count']} updated={data['updated_count']}", flush=True)
    reply = await hub.request(
        "customer_sync", {"customer_id": "cust_1001", "name": "Tanaka", "line_account_id": "line_001"}, activation_code=code
    )
    print(f"customer_sync_received: customer_db_id={reply['data']['customer_db_id']}", flush=True)
    reply = await hub.request(
        "incoming", {"line_account_id": "line_001", "incoming_line_id": "U1234567890"}, activation_code=code
    )
    print(f"incoming_received: duplicate={reply['data'].get('duplicate')}", flush=True)


async def desktop(args: argparse.Namespace) -> int:
    code = args.activation_code
    async with connect(args.url, activation_code=code, device_id=args.device_id) as hub:
        hub.on("state", lambda change: print(f"state: {change.state.value} {change.reason}".rstrip(), flush=True))
        beats = 0
        while args.beats == 0 or beats < args.beats:
            if await hub.wait_state(ConnectionState.CONNECTED, ConnectionState.DISCONNECTED) is ConnectionState.DISCONNECTED:
                return 1  # kicked, replaced, or the code was refused
            try:
                await sync_after_connect(hub, code)
                while hub.state is ConnectionState.CONNECTED and (args.beats == 0 or beats < args.beats):
                    ack = await hub.request("heartbeat", activation_code=code, timestamp=int(time.time()))
                    beats += 1
                    print(f"heartbeat_ack: {ack['data']['status']} server_time={ack['data']['server_time']}", flush=True)
                    if args.beats == 0 or beats < args.beats:
                        await trio.sleep(args.interval)
            except ClientError as exc:  # the connection dropped mid-request: sync again once back
                print(f"retrying after: {exc}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--activation-code", required=True)
    parser.add_argument("--device-id", default="desktop-1")
    parser.add_argument("--beats", type=int, default=3, help="heartbeats to send, 0 = forever")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between heartbeats")
    args = parser.parse_args(argv)
    try:
        return trio.run(desktop, args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
