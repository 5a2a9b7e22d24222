"""The webhook sender's HTTP/1.1 client (net/http_client.py) against real receivers
on loopback sockets: keep-alive, a connection the receiver closed while idle,
a receiver that breaks every connection, long answers, https."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from tests.webhook_receiver import Receiver
from wsserver.net.http_client import ConnectionBroken, HttpPool, Target, default_tls_context


async def receiver(nursery: trio.Nursery, **kwargs: Any) -> Receiver:
    return await nursery.start(Receiver(**kwargs).serve)  # type: ignore[no-any-return]


async def one_shot_server(nursery: trio.Nursery, answer: bytes | None) -> tuple[str, list[bytes], trio.Semaphore]:
    """A server that reads one request per connection, sends `answer` (None: nothing)
    and closes the connection, with no `Connection: close` to warn the client; the
    semaphore is released once per connection closed."""
    heads: list[bytes] = []
    closed = trio.Semaphore(0)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    heads.append(bytes(event.target))
                elif isinstance(event, h11.EndOfMessage):
                    break
            if answer is not None:
                await stream.send_all(answer)
        closed.release()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return f"http://127.0.0.1:{port}/hooks", heads, closed


def test_a_url_gives_the_origin_the_target_and_the_host_header() -> None:
    t = Target.parse("https://user:p%40ss@[::1]:8443/in/hooks?k=1")
    assert t.origin == ("https", "::1", 8443)
    assert (t.path, t.host_header) == (b"/in/hooks?k=1", b"[::1]:8443")
    assert t.authorization == b"Basic dXNlcjpwQHNz"  # user:p@ss
    plain = Target.parse("http://example.com")
    assert (plain.origin, plain.path, plain.host_header, plain.authorization) == (
        ("http", "example.com", 80), b"/", b"example.com", None
    )
    with pytest.raises(ValueError):
        Target.parse("ftp://example.com/")


async def test_requests_to_one_receiver_share_one_kept_alive_connection() -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        async with HttpPool(4) as pool:
            for n in range(20):
                assert await pool.request(rec.url, b'{"n":%d}' % n, [("Content-Type", "application/json")]) == 204
            assert pool.opened == 1
        assert [r.event["n"] for r in rec.requests] == list(range(20))
        assert rec.requests[0].headers["host"] == f"127.0.0.1:{rec.port}"
        assert rec.requests[0].headers["content-type"] == "application/json"
        nursery.cancel_scope.cancel()


async def test_concurrent_requests_open_at_most_max_connections() -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        async with HttpPool(3) as pool, trio.open_nursery() as senders:
            for _ in range(12):
                senders.start_soon(pool.request, rec.url, b"{}")
        assert len(rec.requests) == 12 and pool.opened <= 3
        nursery.cancel_scope.cancel()


async def test_a_connection_the_receiver_closed_while_idle_is_retried_once_on_a_fresh_one() -> None:
    async with trio.open_nursery() as nursery:
        url, heads, closed = await one_shot_server(nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        async with HttpPool(2) as pool:
            assert await pool.request(url, b"1") == 200
            await closed.acquire()  # the server has closed the kept-alive connection
            assert await pool.request(url, b"2") == 200  # not a failure: sent again on a new one
            assert pool.opened == 2
        assert len(heads) == 2
        nursery.cancel_scope.cancel()


async def test_a_receiver_that_breaks_fresh_connections_is_a_failure_tried_once() -> None:
    async with trio.open_nursery() as nursery:
        url, heads, _ = await one_shot_server(nursery, None)  # closes without an answer
        async with HttpPool(2) as pool:
            with pytest.raises(ConnectionBroken):
                await pool.request(url, b"x")
            assert pool.opened == 1
        assert len(heads) == 1
        nursery.cancel_scope.cancel()


async def test_an_answer_longer_than_the_limit_gives_its_status_and_closes_the_connection() -> None:
    async with trio.open_nursery() as nursery:
        rec = await receiver(nursery)
        big = b"x" * 5000
        url, _, _ = await one_shot_server(nursery, b"HTTP/1.1 500 Oops\r\nContent-Length: 5000\r\n\r\n" + big)
        async with HttpPool(2) as pool:
            assert await pool.request(url, b"x", max_answer=1000) == 500
            assert await pool.request(rec.url, b"{}") == 204
            assert pool.opened == 2
        nursery.cancel_scope.cancel()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def serve_tls(rec: Receiver, nursery: trio.Nursery, tmp_path: Path) -> Path:
    """Serve `rec` over TLS on a free port (its `port`) with a fresh self-signed
    certificate for localhost, whose path is returned (to trust it)."""
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    rec.port = listeners[0].socket.getsockname()[1]
    tls = [trio.SSLListener(listener, server_ctx, https_compatible=True) for listener in listeners]
    nursery.start_soon(trio.serve_listeners, rec._connection, tls)
    return cert


async def test_https_receivers_are_checked_against_the_trusted_certificates(tmp_path: Path) -> None:
    rec = Receiver()
    async with trio.open_nursery() as nursery:
        cert = await serve_tls(rec, nursery, tmp_path)
        url = f"https://localhost:{rec.port}/hooks"
        async with HttpPool(2, tls=ssl.create_default_context(cafile=str(cert))) as pool:
            assert await pool.request(url, b"{}") == 204
            assert await pool.request(url, b"{}") == 204
            assert pool.opened == 1
        async with HttpPool(2, tls=default_tls_context()) as pool:  # a certificate nobody vouches for
            with pytest.raises(trio.BrokenResourceError):
                await pool.request(url, b"{}")
        assert len(rec.requests) == 2
        nursery.cancel_scope.cancel()


def test_the_default_tls_context_checks_names_and_has_cas() -> None:
    ctx = default_tls_context()
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.cert_store_stats()["x509_ca"] > 0 or ctx.get_ca_certs() != []
