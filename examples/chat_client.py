"""Seed 002's customer-service chat on the hub: a customer and an agent exchange
messages with delivered and read receipts, both through seed 002's client API
(`SyncClient`: plain threads, no trio in sight).

    wsserver gentoken --user 1 --group 1 --username customer    # prints a JWT
    wsserver gentoken --user 2 --group 1 --username agent
    python examples/chat_client.py --url ws://127.0.0.1:8080/ws \\
        --customer-token <first JWT> --agent-token <second JWT>

The customer asks, the agent's `on_message` callback confirms delivery and
reading and answers; the customer sees `message_status` delivered and read,
then the answer. Exit status 0 once the whole exchange happened.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from wsserver.client import SyncClient


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--customer-token", required=True)
    parser.add_argument("--agent-token", required=True)
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args(argv)

    customer = SyncClient(
        args.url, args.customer_token, device_id="customer-pc",
        device_info={"device_name": "My Computer", "device_type": "desktop", "platform": "Windows", "os_version": "10"},
    )
    agent = SyncClient(args.url, args.agent_token, device_id="agent-pc")
    up = {"customer": threading.Event(), "agent": threading.Event()}
    seen = {"delivered": threading.Event(), "read": threading.Event(), "answer": threading.Event()}

    # -- the agent: receipts, then an answer (callbacks run on the agent's callbacks thread)
    @agent.on_message
    def agent_receives(data: dict[str, Any]) -> None:
        print(f"agent    <- {data['from_user_id']}: {data['text']}", flush=True)
        agent.send_message_delivered(data["message_id"])
        agent.send_message_read(data["message_id"])
        agent.send_message(to_user_id=data["from_user_id"], message=f"Re: {data['text']} - happy to help")

    # -- the customer: receipts for what it sent, and the answer
    @customer.on("message_status")
    def customer_sees_status(msg: dict[str, Any]) -> None:
        status = msg["data"]["status"]
        print(f"customer :  message {msg['data']['message_id']} {status}", flush=True)
        if status in seen:
            seen[status].set()

    @customer.on_message
    def customer_receives(data: dict[str, Any]) -> None:
        print(f"customer <- {data['from_user_id']}: {data['text']}", flush=True)
        customer.send_message_read(data["message_id"])
        seen["answer"].set()

    for name, client in (("customer", customer), ("agent", agent)):
        client.on_status_change(lambda status, name=name: print(f"{name:9}:  {status.value}", flush=True))
        client.on_connect(up[name].set)

    customer.start()
    agent.start()
    try:
        if not all(event.wait(args.timeout) for event in up.values()):
            print("could not connect", file=sys.stderr)
            return 1
        agent_id = agent.user["user_id"] if agent.user else None
        sent = customer.send_message(to_user_id=agent_id, message="Hello, where is my order?").result(args.timeout)
        print(f"customer -> {agent_id}: message_id={sent['message_id']} seq={sent['seq']}", flush=True)
        if not all(event.wait(args.timeout) for event in seen.values()):
            print("the exchange did not complete", file=sys.stderr)
            return 1
        return 0
    finally:
        customer.stop()
        agent.stop()


if __name__ == "__main__":
    sys.exit(main())
