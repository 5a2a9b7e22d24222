"""HTTP/1.1 pipelining for the webhook sender: several POSTs in one write, their
answers read in order, on a few kept-alive connections to one receiver.

One POST per event is what SPEC 6.2 asks (one event per body), so the cost
that is left to cut is the client's per request: building the request,
parsing the answer, and the wake-ups and system calls around each. Here:

- `RequestTemplate` (sans-IO) pre-encodes what every request to one URL says
  (request line, Host, User-Agent, Content-Type, Basic credentials); a
  request is the template plus its own headers, Content-Length and body,
  joined once.
- `ResponseReader` (sans-IO) is a small, complete HTTP/1.1 answer parser:
  the status line, the header fields, a body delimited by Content-Length,
  by chunked transfer coding or by the end of the connection; 1xx interim
  answers are skipped; 204 and 304 have no body. A receiver answers a
  pipelined exchange alike: an answer byte for byte equal to the previous
  whole one says the same, and `next_run` takes a run of them at once
  without parsing them again. Anything else a receiver
  may send that is not HTTP/1.x (a bad status line, a header field without
  a colon, a bad or conflicting Content-Length, a bad chunk size, a head
  over `MAX_HEAD` bytes) raises `MalformedResponse`: a defined failure of
  the requests not yet answered, never a crash. At most `max_answer` bytes
  of a body are read; a longer one ends the connection after its status.
- `PipelinedClient.exchange` writes a list of requests in one `send_all` on
  one connection and reads their answers in order: HTTP/1.1 answers come in
  the order of the requests on a connection. It returns the statuses of the
  answered prefix; when the connection breaks, closes or sends something
  malformed in the middle, the requests not answered yet are written once
  more, in order, on a fresh connection (a kept-alive connection a receiver
  closed while idle is the common case), and what still has no answer after
  that is a failure the caller retries with its backoff.
  POST is not idempotent: a request may reach the receiver twice, which
  webhook receivers de-duplicate by event id.
- At most `connections` exchanges run at once, each on its own connection;
  a connection goes back to the pool only when every answer was read whole
  and none said `Connection: close`, and one idle over `KEEPALIVE_EXPIRY`
  seconds is closed rather than reused.

Time limits are the caller's (a cancel scope around `exchange`): a cancelled
exchange closes its connection, which is never reused.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable

import attrs
import trio

from wsserver.net.http_client import (
    KEEPALIVE_EXPIRY,
    USER_AGENT,
    Target,
    default_tls_context,
    open_stream,
)

__all__ = ["MAX_HEAD", "MalformedResponse", "PipelinedClient", "RequestTemplate", "ResponseReader"]

MAX_HEAD = 65536
"""Bytes an answer's status line and header fields may take at most."""
MAX_REPEAT = 1024
"""Bytes an answer may take at most for `ResponseReader.next_run` to recognise the
next ones equal to it without parsing them."""
READ_SIZE = 65536

_NETWORK = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class MalformedResponse(Exception):
    """The receiver's bytes are not an HTTP/1.x answer."""


@attrs.frozen
class RequestTemplate:
    """The fixed part of every request to one URL, encoded once (sans-IO)."""

    target: Target
    head: bytes  # the request line and the fixed header fields, each ending in CRLF

    @classmethod
    def of(cls, target: Target, method: str = "POST", content_type: str = "application/json; charset=utf-8") -> RequestTemplate:
        lines = [
            b"%s %s HTTP/1.1" % (method.encode("ascii"), target.path),
            b"Host: " + target.host_header,
            b"User-Agent: " + USER_AGENT.encode(),
            b"Content-Type: " + content_type.encode("latin-1"),
        ]
        if target.authorization is not None:
            lines.append(b"Authorization: " + target.authorization)
        head = b"\r\n".join(lines) + b"\r\n"
        if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
            raise ValueError("a URL must not hold CR or LF")
        return cls(target, head)

    def request(self, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
        """One request: the template, `headers` (names and values our own, never
        a CR or LF: refused), Content-Length and `body`."""
        return self.finish(self.prefix(headers), body)

    def prefix(self, headers: Iterable[tuple[str, str]]) -> bytes:
        """The template and `headers` (as `request` checks them): what several
        requests may share, each then `finish`ed with its own body."""
        parts = [self.head]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} holds CR or LF")
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        return b"".join(parts)

    @staticmethod
    def finish(prefix: bytes, body: bytes) -> bytes:
        """A whole request: `prefix` (from `prefix`, header lines of its own may
        follow it), Content-Length and `body`."""
        return b"%sContent-Length: %d\r\n\r\n%s" % (prefix, len(body), body)


@attrs.frozen
class Answer:
    """One answer's status, and whether its connection may carry more requests."""

    status: int
    reusable: bool


class ResponseReader:
    """Parses the answers of one connection, in order (see the module docstring)."""

    def __init__(self, max_answer: int = 65536) -> None:
        self.max_answer = max_answer
        self._buf = bytearray()
        self._status = 0  # the answer whose body is being read (0: reading a head)
        self._reusable = True
        self._left = 0  # body bytes still to read (Content-Length framing)
        self._mode = ""  # "length", "chunked" (between chunks: size line), "chunk", "crlf", "trailer", "close"
        self._body = 0  # body bytes read so far of this answer
        # the last final answer's head and what it said (status, reusable, mode,
        # length): a receiver answers alike, and the same bytes say the same
        self._last_head = b""
        self._last_said: tuple[int, bool, str, int] = (0, False, "", 0)
        self._answers: dict[tuple[int, bool], Answer] = {}  # (frozen: shared)
        # the last whole answer's bytes, when it was read at once and leaves the
        # connection usable, and what it said: the same bytes say the same
        self._unit = b""
        self._unit_answer: Answer | None = None

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def next(self) -> Answer | None:
        """The next whole answer, or None until more bytes are fed. Raises
        `MalformedResponse`."""
        buf = self._buf
        while True:
            if not self._status:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise MalformedResponse("answer head too long")
                    return None
                if end > MAX_HEAD:
                    raise MalformedResponse("answer head too long")
                head = bytes(buf[:end])
                del buf[: end + 4]
                if head == self._last_head:
                    self._status, self._reusable, self._mode, self._left = self._last_said
                    self._body = 0
                elif self._head(head):  # a 1xx interim answer: the real one follows
                    continue
                else:
                    self._last_head = head
                    self._last_said = (self._status, self._reusable, self._mode, self._left)
            done = self._read_body()
            if done is None:
                return None
            return done

    def next_run(self, most: int) -> tuple[Answer, int] | None:
        """The next whole answer and how many answers in a row it stands for (from
        1 to `most`): those byte for byte equal to the previous whole answer are
        taken at once. None until more bytes are fed. Raises `MalformedResponse`."""
        buf, unit, answer = self._buf, self._unit, self._unit_answer
        if unit and answer is not None and not self._status and buf.startswith(unit):
            size = len(unit)
            end, n = size, 1
            while n < most and buf.startswith(unit, end):
                end += size
                n += 1
            del buf[:end]
            return answer, n
        at_start = not self._status
        before = bytes(buf[:MAX_REPEAT]) if at_start else b""
        length = len(buf)
        answer = self.next()
        if answer is None:
            return None
        used = length - len(buf)  # (the whole answer when it was read in this call)
        if at_start and answer.reusable and used <= len(before):
            self._unit, self._unit_answer = before[:used], answer
        else:
            self._unit, self._unit_answer = b"", None
        return answer, 1

    def at_close(self) -> Answer | None:
        """(The receiver closed the connection.) The answer this ends (a body
        delimited by the close), or None: then the answers not read are lost."""
        if self._status and self._mode == "close":
            answer = Answer(self._status, False)
            self._status = 0
            return answer
        return None

    def _head(self, head: bytes) -> bool:
        """Take a status line and header fields; True for a 1xx interim answer."""
        lines = head.split(b"\r\n")
        status_line = lines[0]
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit() or rest[3:4] not in (b"", b" "):
            raise MalformedResponse(f"bad status line {status_line[:80]!r}")
        status = int(code)
        if status < 100:
            raise MalformedResponse(f"bad status {status}")
        length: int | None = None
        chunked = False
        close = False
        keep_alive = version == b"HTTP/1.1"  # HTTP/1.0: only when the answer says keep-alive
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
                raise MalformedResponse(f"bad header field {line[:80]!r}")
            key = name.lower()
            if key == b"content-length":
                value = value.strip()
                if not value.isdigit() or (length is not None and int(value) != length):
                    raise MalformedResponse(f"bad Content-Length {value[:40]!r}")
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = value.strip().lower().rsplit(b",", 1)[-1].strip() == b"chunked"
                if not chunked:
                    close = True  # another coding: the body ends with the connection
            elif key == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                close = close or b"close" in tokens
                keep_alive = keep_alive or b"keep-alive" in tokens
        if 100 <= status < 200:
            if status == 101:
                raise MalformedResponse("101 Switching Protocols to a POST")
            return True
        self._status = status
        self._reusable = keep_alive and not close
        self._body = 0
        if status in (204, 304):
            self._mode, self._left = "length", 0
        elif chunked:
            self._mode = "chunked"
        elif length is not None:
            self._mode, self._left = "length", length
        else:
            self._mode, self._reusable = "close", False
        return False

    def _read_body(self) -> Answer | None:
        """Go on reading the current answer's body: the answer once whole."""
        buf = self._buf
        while True:
            mode = self._mode
            if mode == "length" or mode == "chunk":
                take = min(self._left, len(buf))
                if not self._count(take):
                    return self._end(False)
                del buf[:take]
                self._left -= take
                if self._left:
                    return None
                if mode == "length":
                    return self._end(self._reusable)
                self._mode = "crlf"
            elif mode == "crlf":
                if len(buf) < 2:
                    return None
                if buf[:2] != b"\r\n":
                    raise MalformedResponse("chunk not followed by CRLF")
                del buf[:2]
                self._mode = "chunked"
            elif mode == "chunked":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise MalformedResponse("chunk size line too long")
                    return None
                size = bytes(buf[:end]).partition(b";")[0].strip()
                del buf[: end + 2]
                try:
                    self._left = int(size, 16)
                except ValueError:
                    raise MalformedResponse(f"bad chunk size {size[:40]!r}") from None
                if self._left < 0 or size[:1] in (b"-", b"+") or size[:2].lower() == b"0x":
                    raise MalformedResponse(f"bad chunk size {size[:40]!r}")
                self._mode = "chunk" if self._left else "trailer"
            elif mode == "trailer":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise MalformedResponse("trailer too long")
                    return None
                del buf[: end + 2]
                if end == 0:
                    return self._end(self._reusable)
            else:  # "close": everything up to the end of the connection
                if not self._count(len(buf)):
                    return self._end(False)
                buf.clear()
                return None

    def _count(self, n: int) -> bool:
        """Count `n` body bytes; False once the body goes over `max_answer`."""
        self._body += n
        return self._body <= self.max_answer

    def _end(self, reusable: bool) -> Answer:
        key = (self._status, reusable)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = Answer(*key)
        self._status = 0
        if not reusable:
            self._buf.clear()
        return answer


class _Connection:
    def __init__(self, stream: trio.abc.Stream, max_answer: int) -> None:
        self.stream = stream
        self.reader = ResponseReader(max_answer)
        self.idle_since = 0.0


class PipelinedClient:
    """Pipelined requests to one origin over up to `connections` kept-alive
    connections (see the module docstring). An async context manager: leaving
    it closes the idle connections."""

    def __init__(self, target: Target, connections: int, *, max_answer: int = 65536, tls: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.max_answer = max_answer
        self._tls = tls
        self._idle: list[_Connection] = []
        self._slots = trio.Semaphore(connections)
        self.opened = 0  # connections opened so far (for the tests and the curious)

    async def __aenter__(self) -> PipelinedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            _close_now(conn.stream)
        await trio.lowlevel.checkpoint()

    async def exchange(self, requests: list[bytes], statuses: list[int]) -> str | None:
        """Write `requests` (whole encoded requests) on one connection and append
        the statuses of their answers to `statuses` as they come, in order; the
        unanswered ones once more on a fresh connection when it broke. None when
        every request was answered, else why the rest were not (`"network:
        <what>"`, a malformed answer included). Raises only on cancellation, with
        `statuses` holding the answers read by then."""
        async with self._slots:
            conn = self._take()
            error = None
            for _ in range(2):
                if conn is None:
                    try:
                        conn = await self._open()
                    except _NETWORK as exc:
                        return f"network: {type(exc).__name__}"
                error = await self._on(conn, requests[len(statuses) :], statuses)
                if error is None:
                    return None
                conn = None
            return error

    async def _on(self, conn: _Connection, requests: list[bytes], statuses: list[int]) -> str | None:
        """Write `requests` on `conn` and append their statuses as they come; the
        connection goes back to the pool when it stays usable. None when every
        request was answered, else why not."""
        pooled = False
        reader = conn.reader
        try:
            await conn.stream.send_all(b"".join(requests) if len(requests) > 1 else requests[0])
            left = len(requests)
            reusable = True
            while left:
                run = reader.next_run(left)
                if run is None:
                    data = await conn.stream.receive_some(READ_SIZE)
                    if data:
                        reader.feed(data)
                        continue
                    answer = reader.at_close()
                    if answer is None:
                        return "network: closed by the receiver"
                    run = answer, 1
                answer, n = run
                if n == 1:
                    statuses.append(answer.status)
                else:
                    statuses += [answer.status] * n
                left -= n
                if not answer.reusable:
                    reusable = False
                    if left:
                        return "network: closed by the receiver"
            pooled = reusable
            return None
        except MalformedResponse as exc:
            return f"network: malformed answer ({exc})"
        except _NETWORK as exc:
            return f"network: {type(exc).__name__}"
        finally:
            if pooled:
                conn.idle_since = trio.current_time()
                self._idle.append(conn)
            else:
                _close_now(conn.stream)

    def _take(self) -> _Connection | None:
        """The most recently used idle connection still fresh enough, if any."""
        idle = self._idle
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            if now - conn.idle_since <= KEEPALIVE_EXPIRY:
                return conn
            _close_now(conn.stream)
        return None

    async def _open(self) -> _Connection:
        target = self.target
        if target.scheme == "https" and self._tls is None:
            self._tls = default_tls_context()
        stream = await open_stream(target, self._tls)
        self.opened += 1
        return _Connection(stream, self.max_answer)


def _close_now(stream: object) -> None:
    """Close a connection's socket without waiting (no TLS goodbye: this also
    runs when an exchange is cancelled, where an await would not run)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()
