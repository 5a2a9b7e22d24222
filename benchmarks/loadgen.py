"""The load generator of `benchmarks/bench.py`: picows clients on uvloop, one process.

Not meant to be run by hand: `bench.py` starts it with one JSON argument (the
scenario and its parameters, the server's address, kind and process id) and
reads one JSON object, the result, from its last line of stdout. It reads the
server's CPU time and RSS from /proc itself, at the moments that matter.

Scenarios (see bench.py for what each measures): fanout, dm, idle, handshake.

Connections are spread over source addresses 127.0.0.1..127.0.0.<sources>
(`IP_BIND_ADDRESS_NO_PORT`), so that tens of thousands of connections and the
TIME_WAIT sockets of earlier runs never exhaust one address's ephemeral ports.
All traffic goes to the server address given, which bench.py keeps in 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import counting_receiver
import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
perf = time.perf_counter
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the server process, from /proc ------------------------------------------------


def server_cpu(pid: int | list[int]) -> float:
    """User + system CPU seconds of a process (all its threads), or the sum over
    several (the workers or nodes of a cluster)."""
    if isinstance(pid, list):
        return sum(server_cpu(p) for p in pid)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def server_kernel_cpu(pid: int | list[int]) -> float:
    """System (kernel) CPU seconds of a process (or the sum over several): on
    loopback its sends include the TCP work of delivering to the receiving socket."""
    if isinstance(pid, list):
        return sum(server_kernel_cpu(p) for p in pid)
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[12]) / CLK_TCK


def server_rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def system_busy() -> float:
    """CPU seconds all processes of the machine spent busy (/proc/stat, every core)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


# -- clients ------------------------------------------------------------------------


class Client(WSListener):
    """One WebSocket connection; frames go to `on_text(client, payload)`."""

    def __init__(self, idx: int, on_text: Callable[[Client, bytes], None]) -> None:
        self.idx = idx
        self.on_text = on_text
        self.transport: WSTransport | None = None
        self.greeted = asyncio.get_running_loop().create_future()
        self.got = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            if not self.greeted.done():
                if b'"type":"connected"' in payload:
                    self.greeted.set_result(perf())
                    return
            self.on_text(self, payload)
        elif frame.msg_type is WSMsgType.CLOSE:
            if not self.greeted.done():
                self.greeted.set_exception(
                    ConnectionError(f"closed before the greeting: {frame.get_close_code()}")
                )
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            # the server closes TCP after the close handshake (RFC 6455 7.1.1): its
            # side keeps the TIME_WAIT, not our ephemeral ports

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.greeted.done():
            self.greeted.set_exception(ConnectionError("disconnected before the greeting"))

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, data)


class Target:
    """Where and how to connect: the server kind decides the credentials."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.kind = spec["server"]  # "wsserver" | "reference"
        self.host = spec["host"]
        self.port = spec["port"]
        self.pid = spec["pid"]
        # a cluster: the clients spread over its nodes' ports (connection i to
        # ports[i % len]), its CPU summed over its processes; `aux_pids` (Redis)
        # counted apart
        self.ports = spec.get("ports") or [self.port]
        self.pids = spec.get("pids") or [self.pid]
        self.aux_pids = spec.get("aux_pids") or []
        self.secret = spec.get("jwt_secret", "")
        self.api_key = spec.get("api_key", "")
        self.sources = [f"127.0.0.{i}" for i in range(1, int(spec.get("sources", 16)) + 1)]
        self._next_source = 0

    def urls(self, first_user: int, count: int) -> list[str]:
        """One URL per user id first_user .. first_user+count-1 (tokens minted now)."""
        ports = self.ports

        def base(u: int) -> str:
            return f"ws://{self.host}:{ports[(u - first_user) % len(ports)]}/ws"

        if self.kind == "reference":
            return [f"{base(u)}?user={u}" for u in range(first_user, first_user + count)]
        import jwt

        exp = int(time.time()) + 3 * 3600
        return [
            f"{base(u)}?token="
            + jwt.encode({"user_id": u, "group_id": 1, "exp": exp}, self.secret, "HS256")
            for u in range(first_user, first_user + count)
        ]

    def socket_factory(self, _url: Any) -> socket.socket:
        src = self.sources[self._next_source % len(self.sources)]
        self._next_source += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((src, 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    async def connect(self, url: str, idx: int, on_text: Callable[[Client, bytes], None]) -> Client:
        _, client = await ws_connect(
            lambda: Client(idx, on_text),
            url,
            socket_factory=self.socket_factory,
            websocket_handshake_timeout=10,
            max_frame_size=1 << 20,
        )
        await asyncio.wait_for(client.greeted, 10)
        return client  # type: ignore[return-value]

    async def connect_many(
        self,
        first_user: int,
        count: int,
        on_text: Callable[[Client, bytes], None],
        concurrency: int,
    ) -> tuple[list[Client], float]:
        """Connect `count` authenticated clients (greeting received); returns them and the seconds."""
        urls = self.urls(first_user, count)
        clients: list[Client | None] = [None] * count
        sem = asyncio.Semaphore(concurrency)
        errors: list[BaseException] = []

        async def one(i: int) -> None:
            async with sem:
                for attempt in range(3):
                    try:
                        clients[i] = await self.connect(urls[i], i, on_text)
                        return
                    except Exception as exc:  # refused, reset, timed out: retry
                        if attempt == 2:
                            errors.append(exc)
                        await asyncio.sleep(0.05)

        t0 = perf()
        await asyncio.gather(*(one(i) for i in range(count)))
        took = perf() - t0
        if errors:
            raise RuntimeError(f"{len(errors)} of {count} connections failed, first: {errors[0]!r}")
        return [c for c in clients if c is not None], took


# -- publishers (fan-out) --------------------------------------------------------------


class HttpPublisher:
    """POST /api/publish on one keep-alive HTTP/1.1 connection (wsserver)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)

    async def publish(self, mtype: str, data: dict[str, Any]) -> int:
        assert self.reader is not None and self.writer is not None
        body = json.dumps(
            {"type": mtype, "data": data, "all": True}, separators=(",", ":")
        ).encode()
        head = (
            f"POST /api/publish HTTP/1.1\r\nHost: {self.target.host}\r\n"
            f"X-API-Key: {self.target.api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        reply = json.loads(await self.reader.readexactly(length)) if length else {}
        if status != 200:
            raise RuntimeError(f"publish: HTTP {status} {reply}")
        return int(reply["data"]["delivered"])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WsPublisher:
    """The reference server's `/control` WebSocket: one message = one broadcast()."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.client: _ControlClient | None = None

    async def open(self) -> None:
        url = f"ws://{self.target.host}:{self.target.port}/control"
        _, self.client = await ws_connect(_ControlClient, url)  # type: ignore[assignment]

    async def publish(self, mtype: str, data: dict[str, Any]) -> int:
        assert self.client is not None
        return await self.client.call(
            json.dumps({"type": mtype, "data": data}, separators=(",", ":")).encode()
        )

    async def close(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.disconnect()


class _ControlClient(WSListener):
    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.waiting: asyncio.Future[int] | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT and self.waiting is not None:
            self.waiting.set_result(int(json.loads(frame.get_payload_as_bytes())["delivered"]))
            self.waiting = None

    async def call(self, data: bytes) -> int:
        assert self.transport is not None
        self.waiting = asyncio.get_running_loop().create_future()
        self.transport.send(WSMsgType.TEXT, data)
        return await self.waiting


def bench_data(seq: int, pad_len: int) -> dict[str, Any]:
    """A fan-out publish's data: its `seq`, padded so that the frame has about `pad_len` bytes."""
    d = {"seq": seq, "pad": ""}
    # the frame is {"type":"bench","data":{...},"timestamp":<13 digits>}
    overhead = len(
        json.dumps({"type": "bench", "data": d, "timestamp": 1700000000000}, separators=(",", ":"))
    )
    d["pad"] = "x" * max(0, pad_len - overhead)
    return d


class PublisherProcess:
    """fanout's publishes from a process of their own (`"publisher": "process"`).

    In the receiving clients' event loop, each publish waits for its HTTP reply
    behind every frame the clients are reading: the publish rate then follows the
    load generator's own reading, not the server's pace. This process sends the
    same publishes (one after the other, each after the reply to the previous
    one) from its own loop; its CPU counts as the load generator's.
    """

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, target: Target, p: dict[str, Any]) -> PublisherProcess:
        spec = {"spec": target.spec, "params": p}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "--publisher", json.dumps(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"publisher process: {line!r}")
        return cls(proc)

    def cpu(self) -> float:
        return server_cpu(self.proc.pid)

    async def run(self, t0: float) -> dict[str, Any]:
        """Publish now (t0: the measurement's start, for `rate`); the send times and answers."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{t0!r}\n".encode())
        await self.proc.stdin.drain()
        result: dict[str, Any] = json.loads(await self.proc.stdout.readline())
        return result

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.proc.wait()


async def publisher_main(spec: dict[str, Any]) -> None:
    """The publisher process (see `PublisherProcess`)."""
    target, p = Target(spec["spec"]), spec["params"]
    publishes, rate, pad_len = int(p["publishes"]), float(p.get("rate", 0)), int(p.get("payload_bytes", 150))
    publisher = HttpPublisher(target)
    await publisher.open()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    t0 = float(await stdin.readline())
    deadline = t0 + float(p["timeout"])
    sent_at: list[float] = [0.0] * publishes
    reached: list[int] = []
    lag = 0.0
    for k in range(publishes):
        if perf() > deadline:
            break
        if rate:
            delay = t0 + k / rate - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
        sent_at[k] = perf()
        reached.append(await publisher.publish("bench", bench_data(k, pad_len)))
    sys.stdout.write(json.dumps({"sent_at": sent_at, "reached": reached, "lag": lag}) + "\n")
    sys.stdout.flush()
    await stdin.read()  # until the load generator is done measuring
    await publisher.close()


# -- scenarios --------------------------------------------------------------------------


async def connect_counters(
    target: Target, n: int, publishes: int, all_done: asyncio.Event, p: dict[str, Any]
) -> tuple[list[counting_receiver.Counter], float]:
    """fanout's `"receiver": "count"` clients (counting_receiver.py), greeted; `all_done`
    is set when every one has counted `publishes` frames after the warm-up."""
    urls = target.urls(1, n)
    counters: list[counting_receiver.Counter | None] = [None] * n
    sem = asyncio.Semaphore(int(p.get("concurrency", 200)))
    errors: list[BaseException] = []
    remaining = [n]

    def on_full(_c: counting_receiver.Counter) -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            all_done.set()

    async def one(i: int) -> None:
        async with sem:
            for attempt in range(3):
                sock = None
                try:
                    sock = target.socket_factory(None)
                    counters[i] = await counting_receiver.connect(urls[i], sock, publishes, on_full)
                    return
                except Exception as exc:  # refused, reset, timed out: retry
                    if sock is not None:
                        sock.close()
                    if attempt == 2:
                        errors.append(exc)
                    await asyncio.sleep(0.05)

    t0 = perf()
    await asyncio.gather(*(one(i) for i in range(n)))
    took = perf() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} of {n} connections failed, first: {errors[0]!r}")
    return [c for c in counters if c is not None], took


async def fanout(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    """N connections; `publishes` publishes to all (burst, or at `rate` per second).

    Measures from the first publish until every connection received every
    publish: wall time, delivered messages/s, server CPU per delivered message,
    and per publish the time until its last delivery. `"publisher": "process"`
    sends the measured publishes from a process of their own (`PublisherProcess`);
    `"receiver": "count"` reads them with counting_receiver.py (raw reads, frames
    counted by their one known length) instead of picows (a callback per frame).
    """
    n, publishes, rate = int(p["connections"]), int(p["publishes"]), float(p.get("rate", 0))
    warm = 1  # publish -1 warms the path up and is not counted
    total = publishes + warm
    counts = [0] * total
    done_at = [0.0] * total
    all_done = asyncio.Event()
    remaining = [total]

    def on_text(client: Client, payload: bytes) -> None:
        i = payload.find(b'"seq":')
        if i < 0:
            return
        seq = int(payload[i + 6 : payload.index(b",", i)]) + warm
        client.got += 1
        c = counts[seq] = counts[seq] + 1
        if c == n:
            done_at[seq] = perf()
            remaining[0] -= 1
            if remaining[0] == 0 or seq == 0:
                all_done.set()

    counting = p.get("receiver", "frames") == "count"
    counters: list[counting_receiver.Counter] = []
    if counting:
        counters, connect_s = await connect_counters(target, n, publishes, all_done, p)
        clients: list[Client] = []
    else:
        clients, connect_s = await target.connect_many(
            1, n, on_text, int(p.get("concurrency", 200))
        )
    gc.collect()
    gc.freeze()
    publisher = HttpPublisher(target) if target.kind == "wsserver" else WsPublisher(target)
    await publisher.open()
    pad_len = int(p.get("payload_bytes", 150))

    def data(seq: int) -> dict[str, Any]:
        return bench_data(seq, pad_len)

    # warm-up publish (the counting receiver learns the frames' length from it)
    await publisher.publish("bench", data(-1))
    if counting:
        await asyncio.wait_for(asyncio.gather(*(c.learned for c in counters)), p["timeout"] / 4)
    else:
        await asyncio.wait_for(all_done.wait(), p["timeout"] / 4)
    all_done.clear()
    await asyncio.sleep(0.2)

    sent_at = [0.0] * total
    reached: list[int] = []
    pub_proc = await PublisherProcess.start(target, p) if p.get("publisher") == "process" else None
    cpu0, kcpu0 = server_cpu(target.pids), server_kernel_cpu(target.pids)
    own0, sys0, aux0 = own_cpu(), system_busy(), server_cpu(target.aux_pids)
    pub0 = pub_proc.cpu() if pub_proc else 0.0
    ownk0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    t0 = perf()
    deadline = t0 + float(p["timeout"])
    lag = 0.0
    published = 0
    if pub_proc is not None:
        got = await pub_proc.run(t0)
        sent_at[warm:] = got["sent_at"]
        reached, lag = got["reached"], got["lag"]
        published = len(reached)
    for k in range(publishes if pub_proc is None else 0):
        if perf() > deadline:
            break
        if rate:
            due = t0 + k / rate
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
        sent_at[k + warm] = perf()
        reached.append(await publisher.publish("bench", data(k)))
        published += 1
    timed_out = published < publishes
    if not timed_out:
        try:
            await asyncio.wait_for(all_done.wait(), max(1.0, deadline - perf()))
        except TimeoutError:
            timed_out = True
    t1 = perf()
    cpu1, kcpu1 = server_cpu(target.pids), server_kernel_cpu(target.pids)
    own1, sys1, aux1 = own_cpu(), system_busy(), server_cpu(target.aux_pids)
    ownk1 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    if pub_proc is not None:  # the publisher process is the load generator's too
        own1 += pub_proc.cpu() - pub0
        await pub_proc.close()
    await publisher.close()
    invalid = 0
    if counting:  # every connection exactly `publishes` frames of length L, nothing else
        done_at[warm:] = counting_receiver.last_delivery(counters, publishes)
        counts[warm:] = [n if t else 0 for t in done_at[warm:]]
        invalid = sum(1 for c in counters if not c.valid())
        delivered = sum(min(c.frames, publishes) for c in counters)
        short = sum(1 for c in counters if c.frames != publishes)
    else:
        delivered = sum(counts[warm:])
        short = sum(1 for c in clients if c.got != total)
    last_delivery = max(done_at[warm:]) if not timed_out else t1
    elapsed = last_delivery - t0
    per_publish = sorted(done_at[s] - sent_at[s] for s in range(warm, total) if done_at[s])
    return {
        "connections": n,
        "publishes": publishes,
        "rate": rate,
        "frame_bytes": pad_len,
        "connect_s": connect_s,
        "elapsed_s": elapsed,
        "delivered": delivered,
        "expected": n * publishes,
        "published": published,
        "reached_per_publish": min(reached) if reached else 0,
        "timed_out": timed_out,
        "clients_short": short,
        "receiver": "count" if counting else "frames",
        "receiver_invalid": invalid,
        "frame_length": counters[0].length if counters else 0,
        "pings": sum(c.pings for c in counters),
        "other_frames": sum(c.other for c in counters),
        # reads (callbacks) in the measurement: delivered / reads = frames per read
        "receiver_reads": (reads := sum(1 for c in counters for t, _ in c.reads if t0 <= t)),
        "frames_per_read": delivered / reads if reads else None,
        "msgs_per_s": delivered / elapsed if elapsed > 0 else 0.0,
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_us_per_msg": 1e6 * (cpu1 - cpu0) / max(1, delivered),
        "server_kernel_us_per_msg": 1e6 * (kcpu1 - kcpu0) / max(1, delivered),
        "aux_cpu_us_per_msg": 1e6 * (aux1 - aux0) / max(1, delivered),
        "server_cpu_share": (cpu1 - cpu0) / max(1e-9, t1 - t0),
        "client_cpu_share": (own1 - own0) / max(1e-9, t1 - t0),
        # the receiving clients' own CPU per delivered message: all, and in the kernel
        "client_cpu_us_per_msg": 1e6 * (own1 - own0) / max(1, delivered),
        "client_kernel_us_per_msg": 1e6 * (ownk1 - ownk0) / max(1, delivered),
        "other_cpu_share": ((sys1 - sys0) - (cpu1 - cpu0) - (own1 - own0) - (aux1 - aux0))
        / max(1e-9, t1 - t0),
        "publish_lag_s": lag,
        "publish_to_last_p50_ms": 1000 * (percentile(per_publish, 0.5) or 0),
        "publish_to_last_p99_ms": 1000 * (percentile(per_publish, 0.99) or 0),
    }


async def dm(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    """`pairs` pairs of users, each user sending `send_message` to its partner.

    Closed loop (rate 0): every user keeps `window` messages unacknowledged
    (`message_sent`) and sends the next on each acknowledgement: the server's
    maximum rate. Messages/s = `new_message` deliveries during the `duration`
    seconds after `warmup`; latencies of the messages sent and delivered then.

    Open loop (`rate` > 0): messages leave on a fixed schedule, round robin
    over the users, whatever the server does, for `warmup` + `duration`
    seconds. Messages/s = deliveries during the `duration` window (a server
    that keeps up delivers `rate`); the messages sent in the window are
    followed until delivered, up to `drain` seconds after it, and one never
    delivered counts as infinitely late in p50/p99.

    The send time travels in the message text, so latency needs no lookup.
    """
    pairs, window, rate = int(p["pairs"]), int(p.get("window", 1)), float(p.get("rate", 0))
    warmup, duration = float(p.get("warmup", 2)), float(p["duration"])
    n = 2 * pairs
    closed_loop = not rate
    # times in ns of perf_counter: the window [start, end) and, open loop, the sends followed
    win = {"start": 1 << 62, "end": 1 << 62, "sent_end": 1 << 62}
    sending = [False]
    lat: list[float] = []
    delivered_in = [0]
    cmid = [0]
    stamp = [0]  # the send time carried by the last message made

    def message_for(c: Client) -> bytes:
        cmid[0] += 1
        partner = c.idx + 2 if c.idx % 2 == 0 else c.idx  # user ids are idx+1
        stamp[0] = time.perf_counter_ns()
        return (
            b'{"type":"send_message","data":{"to_user_id":%d,"message":"t%d","client_msg_id":"c%d"}}'
            % (partner, stamp[0], cmid[0])
        )

    def on_text(c: Client, payload: bytes) -> None:
        i = payload.find(b'"text":"t')
        if i >= 0:
            now = time.perf_counter_ns()
            sent = int(payload[i + 9 : payload.index(b'"', i + 9)])
            if win["start"] <= now < win["end"]:
                delivered_in[0] += 1
                if closed_loop and sent >= win["start"]:
                    lat.append((now - sent) / 1e6)
            if not closed_loop and win["start"] <= sent < win["sent_end"]:
                lat.append((now - sent) / 1e6)  # followed until delivered (or the drain ends)
            return
        if closed_loop and sending[0] and b'"type":"message_sent"' in payload:
            c.send(message_for(c))

    def snapshot() -> tuple[float, float, float, float]:
        return server_cpu(target.pids), own_cpu(), system_busy(), server_cpu(target.aux_pids)

    clients, connect_s = await target.connect_many(1, n, on_text, int(p.get("concurrency", 200)))
    # open loop, `one_way`: only the first of each pair sends (with two nodes'
    # ports, every message then goes from the first node to the second)
    senders = clients[::2] if p.get("one_way") else clients
    gc.collect()
    gc.freeze()
    await asyncio.sleep(0.5)
    t_begin = perf()
    t_start, t_end = t_begin + warmup, t_begin + warmup + duration
    win["start"] = int(t_start * 1e9)
    win["end"] = win["sent_end"] = int(t_end * 1e9)
    sending[0] = True
    sent = 0
    window_sent = 0
    if closed_loop:
        for _ in range(window):
            for c in clients:
                c.send(message_for(c))
                sent += 1
        await asyncio.sleep(max(0.0, t_start - perf()))
        cpu0, own0, sys0, aux0 = snapshot()
        await asyncio.sleep(max(0.0, t_end - perf()))
        cpu1, own1, sys1, aux1 = snapshot()
        sending[0] = False
        missing = 0
    else:
        cpu0 = own0 = sys0 = aux0 = None
        k = 0
        while True:
            now = perf()
            if now >= t_end:
                break
            if cpu0 is None and now >= t_start:
                cpu0, own0, sys0, aux0 = snapshot()
            due = int((now - t_begin) * rate)
            while sent < due:
                senders[k].send(message_for(senders[k]))
                k = (k + 1) % len(senders)
                sent += 1
                # in the window by the time it carries, as deliveries are followed
                # (a catch-up burst can straddle the window's edges)
                if win["start"] <= stamp[0] < win["sent_end"]:
                    window_sent += 1
            await asyncio.sleep(0.002)  # uvloop timers have 1 ms resolution
        cpu1, own1, sys1, aux1 = snapshot()
        assert cpu0 is not None and own0 is not None and sys0 is not None and aux0 is not None
        sending[0] = False
        drain_until = perf() + float(p.get("drain", 5))
        while len(lat) < window_sent and perf() < drain_until:
            await asyncio.sleep(0.01)
        missing = window_sent - len(lat)
    delivered = delivered_in[0]
    lat.sort()
    # open loop: a message still undelivered after the drain counts as infinitely late
    with_missing = lat + [math.inf] * missing
    return {
        "pairs": pairs,
        "window": window,
        "rate": rate,
        "duration_s": duration,
        "connect_s": connect_s,
        "sent": sent,
        "window_sent": window_sent,
        "delivered": delivered,
        "missing_after_drain": missing,
        "msgs_per_s": delivered / duration,
        "p50_ms": percentile(with_missing, 0.5),
        "p99_ms": percentile(with_missing, 0.99),
        "max_ms": with_missing[-1] if with_missing else None,
        "latencies": len(lat),
        "server_cpu_s": cpu1 - cpu0,
        "server_cpu_us_per_msg": 1e6 * (cpu1 - cpu0) / max(1, delivered),
        "aux_cpu_us_per_msg": 1e6 * (aux1 - aux0) / max(1, delivered),
        "server_cpu_share": (cpu1 - cpu0) / duration,
        "client_cpu_share": (own1 - own0) / duration,
        "other_cpu_share": ((sys1 - sys0) - (cpu1 - cpu0) - (own1 - own0) - (aux1 - aux0))
        / duration,
    }


async def idle(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    """`connections` idle authenticated connections: server RSS per connection.

    `warm` connections are opened first and held (the server's one-time costs),
    then RSS is read, the connections are opened, `settle` seconds pass, and
    RSS is read again.
    """
    n, warm, settle = int(p["connections"]), int(p.get("warm", 100)), float(p.get("settle", 3))

    def ignore(_c: Client, _payload: bytes) -> None:
        pass

    conc = int(p.get("concurrency", 200))
    warm_clients, _ = await target.connect_many(1, warm, ignore, conc)
    await asyncio.sleep(1.0)
    rss0 = server_rss_kb(target.pid)
    cpu0 = server_cpu(target.pid)
    clients, connect_s = await target.connect_many(warm + 1, n, ignore, conc)
    cpu1 = server_cpu(target.pid)
    await asyncio.sleep(settle)
    rss1 = server_rss_kb(target.pid)
    open_now = sum(
        1 for c in clients if c.transport is not None and not c.transport.is_disconnected
    )
    return {
        "connections": n,
        "held_at_end": open_now,
        "warm": warm,
        "rss_before_kb": rss0,
        "rss_after_kb": rss1,
        "kb_per_conn": (rss1 - rss0) / n,
        "connect_s": connect_s,
        "connects_per_s": n / connect_s,
        "server_cpu_us_per_connect": 1e6 * (cpu1 - cpu0) / n,
        "client_rss_kb": server_rss_kb(os.getpid()),
        "_keep": len(warm_clients),
    }


async def handshake(target: Target, p: dict[str, Any]) -> dict[str, Any]:
    """Open and close `connections` connections, `concurrency` at a time.

    Each: TCP connect, WebSocket handshake (JWT in the query for wsserver), the
    server's `connected` greeting, a close handshake (1000) and the server's
    TCP close. Connections per second over the whole batch, server CPU each.
    """
    m, conc = int(p["connections"]), int(p.get("concurrency", 64))
    warm = min(50, m)
    urls = target.urls(1, warm + m)
    times: list[float] = []
    errors: list[BaseException] = []
    sem = asyncio.Semaphore(conc)

    def ignore(_c: Client, _payload: bytes) -> None:
        pass

    async def one(i: int) -> None:
        async with sem:
            t = perf()
            try:
                client = await target.connect(urls[i], i, ignore)
                times.append(perf() - t)
                assert client.transport is not None
                client.transport.send_close(WSCloseCode.OK)
                try:
                    await asyncio.wait_for(client.transport.wait_disconnected(), 5)
                except TimeoutError:
                    client.transport.disconnect(graceful=False)
            except Exception as exc:
                errors.append(exc)

    # a few first, so that lazy start-up costs do not count
    await asyncio.gather(*(one(i) for i in range(warm)))
    times.clear()
    errors.clear()
    gc.collect()
    gc.freeze()
    cpu0, own0, sys0 = server_cpu(target.pids), own_cpu(), system_busy()
    t0 = perf()
    await asyncio.gather(*(one(i) for i in range(warm, warm + m)))
    elapsed = perf() - t0
    cpu1, own1, sys1 = server_cpu(target.pids), own_cpu(), system_busy()
    counted = m
    times.sort()
    if errors:
        print(f"handshake errors: {len(errors)}, first: {errors[0]!r}", file=sys.stderr)
    return {
        "connections": counted,
        "concurrency": conc,
        "errors": len(errors),
        "elapsed_s": elapsed,
        "conns_per_s": (counted - len(errors)) / elapsed,
        "connect_p50_ms": 1000 * (percentile(times, 0.5) or 0),
        "connect_p99_ms": 1000 * (percentile(times, 0.99) or 0),
        "server_cpu_us_per_conn": 1e6 * (cpu1 - cpu0) / max(1, counted),
        "server_cpu_share": (cpu1 - cpu0) / elapsed,
        "client_cpu_share": (own1 - own0) / elapsed,
        "other_cpu_share": ((sys1 - sys0) - (cpu1 - cpu0) - (own1 - own0)) / elapsed,
    }


SCENARIOS: dict[str, Callable[[Target, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "fanout": fanout,
    "dm": dm,
    "idle": idle,
    "handshake": handshake,
}


async def amain(spec: dict[str, Any]) -> dict[str, Any]:
    target = Target(spec)
    params = spec["params"]
    return await asyncio.wait_for(
        SCENARIOS[spec["scenario"]](target, params), params["timeout"] + 60
    )


def main() -> None:
    if sys.argv[1] == "--publisher":
        uvloop.run(publisher_main(json.loads(sys.argv[2])))
        return
    spec = json.loads(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc.set_threshold(100_000, 50, 1000)
    result = uvloop.run(amain(spec))
    result.pop("_keep", None)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # do not wait for thousands of connections to close one by one


if __name__ == "__main__":
    main()
