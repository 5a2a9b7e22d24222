"""RFC 6455 framing after the handshake, sans-IO: a parser for client frames and
builders for server frames.

`protocol.handshake` answers the opening handshake; once the 101 is sent, the
connection's bytes are read by `FrameParser` and written as frames built here. This is the hot path of every message, so it is kept small and
allocation-light, and it keeps RFC 6455's rules:

- client frames must be masked (else 1002); RSV bits must be 0 (no extension
  is ever negotiated; else 1002); opcodes other than 0, 1, 2, 8, 9, 10 are 1002;
- control frames (close, ping, pong) are at most 125 bytes and never fragmented
  (else 1002) and may arrive between the fragments of a message;
- a continuation frame without a message in progress, or a new data frame while
  one is in progress, is 1002;
- a message larger than `max_message_size` (counted in payload bytes, the whole
  message across fragments) is 1009, decided from the frame header before its
  payload is buffered;
- a text message, or a close reason, that is not valid UTF-8 is 1007;
- a close frame's payload is empty or a 2-byte code (1000-1003, 1007-1011,
  3000-4999) plus a UTF-8 reason; anything else is 1002.

`FrameParser.feed()` returns the events the bytes completed: a text message as
its `str`, a binary message as its `bytes` (the type says which; a class
around every message made the parse measurably slower, docs/ARCHITECTURE.md),
a control frame as a small frozen class (`Ping`, `Pong`, `Close`); after a
`FrameError` or a close frame the parser takes no more input. The close codes the server sends are
`errors.CloseCode`; this module knows only the RFC's rules about codes a peer
may send.
"""

from __future__ import annotations

import struct

import attrs

from wsserver.errors import CloseCode

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# what is reported (never sent, RFC 6455 7.1.5): a close frame without a code,
# a connection that ended without a close frame
NO_STATUS = 1005
ABNORMAL = 1006

_CONTROL_MAX = 125
# the codes a peer may send (RFC 6455 7.4.1), besides 3000-4999
_VALID_CLOSE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011))


# --------------------------------------------------------------------------- events


@attrs.frozen(slots=True)
class Ping:
    """A ping; the pong carries `payload` back."""

    payload: bytes


@attrs.frozen(slots=True)
class Pong:
    """A pong (any frame proves liveness; this one carries nothing else)."""

    payload: bytes


@attrs.frozen(slots=True)
class Close:
    """The peer's close frame: its code (`NO_STATUS` when it had none) and reason."""

    code: int
    reason: str


Event = str | bytes | Ping | Pong | Close
"""What `FrameParser.feed` returns: a text message, a binary message, or a control frame."""


class FrameError(Exception):
    """The peer broke RFC 6455: close with `code` (1002, 1007 or 1009)."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(f"{int(code)}: {reason}")
        self.code = code
        self.reason = reason


def valid_close_code(code: int) -> bool:
    """May a peer send `code` in a close frame (RFC 6455 7.4)?"""
    return code in _VALID_CLOSE or 3000 <= code <= 4999


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR `payload` with the 4-byte `mask`, repeated (one big-int operation in C)."""
    n = len(payload)
    if n == 0:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def parse_close(payload: bytes) -> Close:
    """The close frame of `payload`; its code is `NO_STATUS` when it has none."""
    if not payload:
        return Close(NO_STATUS, "")
    if len(payload) == 1:
        raise FrameError(CloseCode.PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if not valid_close_code(code):
        raise FrameError(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
    return Close(code, reason)


class FrameParser:
    """Client frames in, complete messages and control frames out.

    `feed(data)` returns a list of events: a text message (`str`), a binary
    message (`bytes`), `Ping`, `Pong`, `Close`. A violation raises
    `FrameError`. Unconsumed bytes (an incomplete frame) are
    kept for the next call; a frame whose payload would exceed the limit is
    refused from its header.
    """

    __slots__ = ("_buf", "_part_op", "_part_size", "_parts", "closed", "max_message_size")

    def __init__(self, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self._buf: bytes | bytearray = b""
        self._parts: list[bytes] | None = None  # fragments of the message in progress
        self._part_op = 0
        self._part_size = 0
        self.closed = False  # a close frame was parsed; nothing more is read

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray) -> list[Event]:
        if self.closed:
            return []
        buf = self._buf + data if self._buf else data
        end = len(buf)
        pos = 0
        out: list[Event] = []
        limit = self.max_message_size
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
            if not b1 & 0x80:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "client frame is not masked")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = (buf[head] << 8) | buf[head + 1]
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                (length,) = struct.unpack_from("!Q", buf, head)
                head += 8
                if length >> 63:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "frame length has its top bit set")
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if not fin:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
                if length > _CONTROL_MAX:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "control frame longer than 125 bytes")
            elif opcode > OP_BINARY:
                raise FrameError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif opcode == OP_CONT:
                if self._parts is None:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "continuation frame without a message")
                if self._part_size + length > limit:
                    raise FrameError(CloseCode.TOO_BIG, "message too big")
            else:
                if self._parts is not None:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
                if length > limit:
                    raise FrameError(CloseCode.TOO_BIG, "message too big")
            start = head + 4
            stop = start + length
            if stop > end:
                break
            payload = unmask(buf[start:stop], buf[head:start])
            pos = stop
            if opcode == OP_TEXT or opcode == OP_BINARY:
                if fin:
                    out.append(_message(opcode, payload))
                else:
                    self._parts = [payload]
                    self._part_op = opcode
                    self._part_size = length
            elif opcode == OP_CONT:
                parts = self._parts
                assert parts is not None
                parts.append(payload)
                self._part_size += length
                if fin:
                    self._parts = None
                    out.append(_message(self._part_op, b"".join(parts)))
            elif opcode == OP_PING:
                out.append(Ping(payload))
            elif opcode == OP_PONG:
                out.append(Pong(payload))
            else:
                out.append(parse_close(payload))
                self.closed = True
                self._buf = b""
                return out
        self._buf = buf[pos:] if pos < end else b""
        return out


def _message(opcode: int, payload: bytes) -> str | bytes:
    if opcode == OP_BINARY:
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(CloseCode.INVALID_DATA, "text message is not UTF-8") from None


# --------------------------------------------------------------------------- server frames


def frame(first_byte: int, payload: bytes) -> bytes:
    """An unmasked, unfragmented server frame (RFC 6455 5.2): header + payload."""
    n = len(payload)
    if n < 126:
        return bytes((first_byte, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first_byte, 126, n) + payload
    return struct.pack("!BBQ", first_byte, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    """A complete server text frame (FIN, opcode 1) carrying UTF-8 `payload`."""
    return frame(0x81, payload)


def binary_frame(payload: bytes) -> bytes:
    """A complete server binary frame (FIN, opcode 2)."""
    return frame(0x82, payload)


def ping_frame(payload: bytes = b"") -> bytes:
    return frame(0x89, payload[:_CONTROL_MAX])


def pong_frame(payload: bytes = b"") -> bytes:
    return frame(0x8A, payload[:_CONTROL_MAX])


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame; `reason` is cut (on a character boundary) to fit 123 bytes."""
    if code is None or code == NO_STATUS:
        return frame(0x88, b"")
    data = reason.encode("utf-8")
    if len(data) > _CONTROL_MAX - 2:
        data = data[: _CONTROL_MAX - 2].decode("utf-8", "ignore").encode("utf-8")
    return frame(0x88, struct.pack("!H", code) + data)
