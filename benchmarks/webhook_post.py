"""CPU of one webhook POST in the sending process: the sender's pipelined client
(`wsserver.net.http_pipeline`, up to --pipeline requests per write on each of 16
connections), the h11 keep-alive client (`wsserver.net.http_client`, one request
at a time) and httpx when it is installed, each posting signed events to
`webhook_sink.py` (its own process), 16 connections, keep-alive. The clients
alternate; prints the process CPU per request of each round.

Usage: python benchmarks/webhook_post.py [--requests 3000] [--rounds 3] [--pipeline 16]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsserver.net.http_client import HttpPool, Target
from wsserver.net.http_pipeline import PipelinedClient, RequestTemplate
from wsserver.protocol.webhook import event_body, event_headers

CONCURRENCY = 16


def _event(n: int) -> dict[str, Any]:
    data = {"message_id": n, "seq": n, "from": {"user_id": 1}, "to_user_id": 2, "text": "hello " * 4}
    return {"id": f"bench-{n}", "event": "message", "time": int(time.time() * 1000), "node": "bench", "data": data}


async def _round(url: str, requests: int, post: Any) -> float:
    """CPU µs per request for `requests` POSTs, CONCURRENCY at a time."""
    todo = iter(range(requests))

    async def worker() -> None:
        for n in todo:
            event = _event(n)
            body = event_body(event)
            status = await post(body, event_headers("message", body, "secret", int(time.time())))
            assert 200 <= status < 300, status

    started = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker)
    return (time.process_time() - started) / requests * 1e6


async def _round_pipelined(url: str, requests: int, depth: int) -> float:
    """CPU µs per request for `requests` POSTs, up to `depth` per exchange on each of
    CONCURRENCY connections, as the webhook sender makes them."""
    target = Target.parse(url)
    template = RequestTemplate.of(target)
    todo = iter(range(requests))

    async def worker(client: PipelinedClient) -> None:
        while True:
            batch = [n for _, n in zip(range(depth), todo, strict=False)]
            if not batch:
                return
            timestamp = int(time.time())
            wire = []
            for n in batch:
                event = _event(n)
                body = event_body(event)
                wire.append(template.request(event_headers("message", body, "secret", timestamp).items(), body))
            statuses: list[int] = []
            error = await client.exchange(wire, statuses)
            assert error is None and all(200 <= s < 300 for s in statuses), (error, statuses)

    started = time.process_time()
    async with PipelinedClient(target, CONCURRENCY) as client, trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker, client)
    return (time.process_time() - started) / requests * 1e6


async def main(requests: int, rounds: int, depth: int) -> None:
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("webhook_sink.py"))], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline().split()[-1])
        url = f"http://127.0.0.1:{port}/hooks"
        pipelined = f"wsserver.net.http_pipeline (--pipeline {depth})"
        results: dict[str, list[float]] = {pipelined: [], "wsserver.net.http_client": [], "httpx": []}
        try:
            import httpx
        except ImportError:
            httpx = None  # type: ignore[assignment]
            del results["httpx"]
        for _ in range(rounds):
            results[pipelined].append(await _round_pipelined(url, requests, depth))
            async with HttpPool(CONCURRENCY) as pool:

                async def ours(body: bytes, headers: dict[str, str]) -> int:
                    return await pool.request(url, body, headers.items())

                results["wsserver.net.http_client"].append(await _round(url, requests, ours))
            if httpx is not None:
                limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
                async with httpx.AsyncClient(limits=limits, timeout=10) as client:

                    async def theirs(body: bytes, headers: dict[str, str]) -> int:
                        async with client.stream("POST", url, content=body, headers=headers) as answer:
                            async for _chunk in answer.aiter_raw():
                                pass
                            return answer.status_code

                    results["httpx"].append(await _round(url, requests, theirs))
        for name, values in results.items():
            rounded = ", ".join(f"{v:.1f}" for v in values)
            print(f"{name}: CPU per POST µs: median {statistics.median(values):.1f} ({rounded})")
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pipeline", type=int, default=16, help="requests per write of the pipelined client")
    args = p.parse_args()
    trio.run(main, args.requests, args.rounds, args.pipeline)
