"""The fan-out's counting receiver: WebSocket clients that count frames by their length.

picows calls Python once per frame (a `WSFrame`, a payload copy, the
listener's callback): about 2 µs per delivered message, as much as the
server under test spends. This receiver makes its own WebSocket handshake
(HTTP/1.1 upgrade, no extensions), reads the greeting and the first publish
(the warm-up) frame by frame, and learns from that publish the exact length
`L` of every fan-out frame (bench_data pads each publish to one width; the
server's envelope has a 13-digit ms timestamp). From then on each socket is
read raw (asyncio's `BufferedProtocol`, one callback per read into one shared
buffer): the frames of a read that start where a frame is expected are
checked all at once, by strided slices of their header bytes (opcode + FIN,
and the 7-bit/16-bit length: every header must say "text, payload L - h"),
and counted, never parsed.

Anything else (a ping, a close, a text frame of another length, a header cut
by the end of a read) goes through the frame-by-frame walk: a ping is answered
with a pong, a close is recorded, a text frame of another length that is a
fan-out publish is counted as bad, any other text frame is ignored. A run is
valid only if every connection counted exactly the publishes with no bytes
left over and no bad frame (`Counter.valid`).

Per read, the connection records (time, frames so far): after the run,
`last_delivery` gives each publish the time its last receiver got it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

perf = time.perf_counter

TEXT, CLOSE, PING = 0x1, 0x8, 0x9
BUFSIZE = 1 << 18
_SHARED = bytearray(BUFSIZE)  # one read buffer: each read is consumed in its callback
_SHARED_VIEW = memoryview(_SHARED)


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455 5.3: clients mask), FIN set; control payloads only (<= 125)."""
    key = os.urandom(4)
    body = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


class Counter(asyncio.BufferedProtocol):
    """One connection. `greeted` resolves after the server's `connected` message;
    `learned` after the warm-up publish (its frame length); then `on_full(self)` is
    called once, when `frames` reaches `expect`."""

    def __init__(self, request: bytes, expect: int, on_full: Callable[[Counter], None]) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.expect = expect
        self.on_full = on_full
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.greeted: asyncio.Future[float] = loop.create_future()
        self.learned: asyncio.Future[int] = loop.create_future()
        self.length = 0  # L: every fan-out frame's bytes, header included
        self.header = b""  # the header every fan-out frame carries
        self.frames = 0  # fan-out frames counted after the warm-up
        self.skip = 0  # bytes of a counted frame still to come
        self.pending = b""  # a frame start not yet complete (outside the fast path)
        self.bad = 0  # fan-out publishes of another length
        self.other = 0  # other text frames (not publishes)
        self.pings = 0
        self.closed: int | None = None  # the close code, if the server closed
        self.reads: list[tuple[float, int]] = []

    # -- asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self.pending or not self.length:
            data = self.pending + bytes(_SHARED_VIEW[:nbytes])
            self.pending = b""
            self._walk(memoryview(data), 0, len(data))
        else:
            self._count(_SHARED, nbytes)
        if self.length:
            self.reads.append((perf(), self.frames))
            if self.frames >= self.expect and self.on_full is not None:
                on_full, self.on_full = self.on_full, None  # type: ignore[assignment]
                on_full(self)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.greeted, self.learned):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def eof_received(self) -> bool:
        return False

    # -- the stream ---------------------------------------------------------------------

    def _count(self, buf: bytearray, end: int) -> None:
        """The fast path: frames of length L back to back from `skip`."""
        pos = self.skip
        if pos >= end:
            self.skip = pos - end
            return
        self.skip = 0
        length, header = self.length, self.header
        m = (end - pos) // length
        if m:
            stop = pos + m * length
            for j in range(len(header)):
                if buf[pos + j : stop : length].count(header[j]) != m:
                    self._walk(memoryview(buf)[:end], pos, end)  # not all alike: one by one
                    return
            self.frames += m
            pos = stop
        if pos < end:
            self._walk(memoryview(buf)[:end], pos, end)

    def _walk(self, data: memoryview, pos: int, end: int) -> None:
        """Frame by frame from a frame start at `pos` (handshake, warm-up, anything odd)."""
        if not self.upgraded:
            i = bytes(data[pos:end]).find(b"\r\n\r\n")
            if i < 0:
                self.pending = bytes(data[pos:end])
                return
            status = bytes(data[pos : pos + i]).split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                raise ConnectionError(f"handshake refused: {status!r}")
            self.upgraded = True
            pos += i + 4
        while pos < end:
            if end - pos < 2:
                self.pending = bytes(data[pos:end])
                return
            b0, b1 = data[pos], data[pos + 1]
            plen, h = b1 & 0x7F, 2
            if plen == 126:
                h = 4
            elif plen == 127:
                h = 10
            if end - pos < h:
                self.pending = bytes(data[pos:end])
                return
            if h > 2:
                plen = int.from_bytes(data[pos + 2 : pos + h], "big")
            flen, opcode = h + plen, b0 & 0x0F
            if self.length and opcode == TEXT and flen == self.length:
                if bytes(data[pos : pos + h]) != self.header:
                    self.bad += 1
                else:
                    self.frames += 1
                if end - pos < flen:
                    self.skip = flen - (end - pos)
                    return
                pos += flen
                continue
            if end - pos < flen:  # anything else is read whole
                self.pending = bytes(data[pos:end])
                return
            payload = bytes(data[pos + h : pos + flen])
            pos += flen
            if opcode == TEXT:
                self._text(payload, flen, bytes(data[pos - flen : pos - flen + h]))
            elif opcode == PING:
                self.pings += 1
                assert self.transport is not None
                self.transport.write(masked_frame(0xA, payload))
            elif opcode == CLOSE:
                self.closed = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                assert self.transport is not None
                self.transport.write(masked_frame(CLOSE, payload[:2]))

    def _text(self, payload: bytes, flen: int, header: bytes) -> None:
        if not self.greeted.done():
            if b'"type":"connected"' in payload:
                self.greeted.set_result(perf())
            return
        if b'"type":"bench"' not in payload:
            self.other += 1
        elif not self.length:  # the warm-up publish: its length is every publish's
            self.length, self.header = flen, header
            self.learned.set_result(flen)
        else:
            self.bad += 1

    # -- after the run ------------------------------------------------------------------

    def valid(self) -> bool:
        """Exactly `expect` fan-out frames, nothing left over, nothing malformed."""
        return (
            self.frames == self.expect
            and not self.skip
            and not self.pending
            and not self.bad
            and self.closed is None
        )


def handshake_request(url: str) -> bytes:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def connect(
    url: str, sock: socket.socket, expect: int, on_full: Callable[[Counter], None]
) -> Counter:
    """A counting connection on `sock` (bound, non-blocking), greeted."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    await asyncio.wait_for(loop.sock_connect(sock, (parts.hostname, parts.port)), 10)
    _, proto = await loop.create_connection(
        lambda: Counter(handshake_request(url), expect, on_full), sock=sock
    )
    await asyncio.wait_for(proto.greeted, 10)
    return proto


def last_delivery(counters: list[Counter], frames: int) -> list[float]:
    """For each of the first `frames` publishes, the time its last receiver read it
    (0.0 if one never did)."""
    last = [0.0] * frames
    missing = [0] * (frames + 1)
    for c in counters:
        prev = 0
        for t, k in c.reads:
            for s in range(prev, min(k, frames)):
                if t > last[s]:
                    last[s] = t
            prev = max(prev, k)
        missing[min(prev, frames)] += 1
    short = 0  # a publish some receiver never got has no last delivery
    for s in range(frames):
        short += missing[s]
        if short:
            last[s] = 0.0
    return last
