"""A webhook receiver for benchmarks: answers every POST 204 at once, HTTP/1.1
keep-alive, in its own process (its CPU is not the server's), and counts what it
got. Prints `listening on PORT` once ready; on SIGTERM prints `received N`.

With `--fast` it answers from one thread with non-blocking sockets instead:
the requests found in one read (pipelined ones included) are answered with
one write, so that a receiver's own cost does not decide how many events the
server gets to deliver while a benchmark runs (the standard library's server
takes more CPU per request than the sender).

Usage: python benchmarks/webhook_sink.py [--port 0] [--fast]
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received = 0
_lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        global received
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with _lock:
            received += 1
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


def requests_in(buf: bytearray) -> int:
    """Take the whole requests off the front of `buf`; how many there were."""
    n = 0
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return n
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(buf) < end + 4 + length:
            return n
        del buf[: end + 4 + length]
        n += 1


def serve_fast(port: int) -> None:
    global received
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    print(f"listening on {listener.getsockname()[1]}", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(True)  # answers are small: a blocking send never waits long
                sel.register(conn, selectors.EVENT_READ, bytearray())
                continue
            conn, buf = key.fileobj, key.data
            data = conn.recv(262144)  # type: ignore[union-attr]
            if not data:
                sel.unregister(conn)
                conn.close()
                continue
            buf += data
            n = requests_in(buf)
            if n:
                received += n
                conn.sendall(NO_CONTENT * n)  # type: ignore[union-attr]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fast", action="store_true", help="one thread, one write per read (see above)")
    args = p.parse_args()

    def stop_fast(*_: object) -> None:
        print(f"received {received}", flush=True)
        sys.exit(0)

    if args.fast:
        signal.signal(signal.SIGTERM, stop_fast)
        serve_fast(args.port)
        return
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Sink)
    server.daemon_threads = True

    def stop(*_: object) -> None:
        print(f"received {received}", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
