"""The client for programs without trio, and its command line: `SyncClient` called
from plain threads, `wsserver client` through pipes, and the examples, each
against a real hub process."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.hubprocess import API_KEY, CODE, ROOT, Hub
from wsserver.client import ClientClosed, ConnectionStatus, SyncClient

ENV = {**os.environ, "PYTHONPATH": ROOT}


def client_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("wsserver-client")]


def test_sync_client_from_plain_threads_sends_receives_and_confirms(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        hub.start()
        alice = SyncClient(hub.url, hub.token(1), backoff_base=0.05, backoff_cap=0.2)
        bob = SyncClient(hub.url, hub.token(2), backoff_base=0.05, backoff_cap=0.2)
        received: queue.Queue[dict[str, Any]] = queue.Queue()
        delivered: queue.Queue[Any] = queue.Queue()
        statuses: list[ConnectionStatus] = []
        callback_threads: set[str] = set()
        alice_up, bob_up = threading.Event(), threading.Event()

        @bob.on_message
        def bob_receives(data: dict[str, Any]) -> None:
            callback_threads.add(threading.current_thread().name)
            bob.send_message_delivered(data["message_id"], 2)  # a client call from a callback
            received.put(data)

        @alice.on("message_status")
        def alice_sees(msg: dict[str, Any]) -> None:
            callback_threads.add(threading.current_thread().name)
            if msg["data"]["status"] == "delivered":
                delivered.put(msg["data"]["message_id"])

        alice.on_status_change(statuses.append)
        alice.on_connect(alice_up.set)
        bob.on_connect(bob_up.set)
        assert alice.get_status() is ConnectionStatus.DISCONNECTED  # not started
        alice.start()
        bob.start()
        assert alice_up.wait(10) and bob_up.wait(10)
        assert alice.is_connected() and alice.get_status() is ConnectionStatus.CONNECTED

        futures: list[Any] = []
        lock = threading.Lock()

        def worker(k: int) -> None:
            for i in range(5):
                future = alice.send_message(to_user_id=2, message=f"t{k}-{i}", message_type="text")
                with lock:
                    futures.append(future)

        workers = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        sent = [f.result(10) for f in futures]
        texts = sorted(received.get(timeout=10)["text"] for _ in range(20))
        assert texts == sorted(f"t{k}-{i}" for k in range(4) for i in range(5))
        confirmed = {delivered.get(timeout=10) for _ in range(20)}
        assert confirmed == {s["message_id"] for s in sent}
        assert alice.request("ping")["type"] == "pong"  # a blocking request from the test's thread
        assert bob.last_seq == 20
        assert callback_threads == {"wsserver-client-callbacks"}

        alice.stop()
        bob.stop()
        assert client_threads() == []
        assert statuses == [ConnectionStatus.CONNECTED, ConnectionStatus.DISCONNECTED]
        assert not alice.is_connected()
        with pytest.raises(ClientClosed):
            alice.send_message(to_user_id=2, message="after stop")


class Lines:
    """A child's stdout read line by line in a thread, with a timeout per line."""

    def __init__(self, stream: Any) -> None:
        self._lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in stream:
                self._lines.put(line)
            self._lines.put("")

        threading.Thread(target=read, daemon=True).start()

    def next(self, timeout: float = 10) -> str:
        return self._lines.get(timeout=timeout)

    def json_until(self, mtype: str) -> dict[str, Any]:
        while True:
            line = self.next()
            assert line, "the client's stdout ended"
            msg = json.loads(line)
            if msg["type"] == mtype:
                return msg  # type: ignore[no-any-return]


def test_cli_prints_what_it_receives_and_sends_what_is_typed(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        hub.start()
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsserver", "client", "--url", hub.url, "--token", hub.token(1)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        out = Lines(proc.stdout)
        try:
            assert out.json_until("connected")["data"]["user_id"] == 1
            proc.stdin.write('{"type":"ping","id":"p1"}\nnot json\n[1]\n')
            proc.stdin.flush()
            assert out.json_until("pong")["id"] == "p1"
            body = json.dumps({"type": "notice", "data": {"text": "from the backend"}, "user_id": 1}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{hub.port}/api/publish", data=body, method="POST",
                headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 200
            assert out.json_until("notice")["data"] == {"text": "from the backend"}
            proc.stdin.write('{"type":"send_message","id":"s1","data":{"to_user_id":2,"message":"hi"}}\n')
            proc.stdin.close()  # EOF: the reply to s1 still comes, then the client exits 0
            assert out.json_until("message_sent")["id"] == "s1"
            assert proc.wait(10) == 0
            assert out.next() == ""
            err = proc.stderr.read()
            assert "# connected" in err and "not JSON" in err and "JSON object" in err
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
            proc.stdout.close()


def test_cli_reads_and_writes_utf8_where_the_streams_default_to_a_windows_code_page(
    tmp_path: Path,
) -> None:
    """JSON lines are UTF-8 whatever the platform's code page (Windows gives a
    redirected stream cp1252 or cp936; PYTHONIOENCODING stands in for it)."""
    with Hub(tmp_path) as hub:
        hub.start()
        proc = subprocess.run(
            [sys.executable, "-m", "wsserver", "client", "--url", hub.url, "--token", hub.token(1)],
            input='{"type":"ping","id":"订单"}\n'.encode(), capture_output=True,
            env={**ENV, "PYTHONIOENCODING": "cp1252"}, timeout=30,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        lines = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
        assert lines[0]["type"] == "connected" and lines[0]["data"]["message"] == "WebSocket连接成功"
        assert [m["id"] for m in lines if m["type"] == "pong"] == ["订单"]


def test_cli_exits_1_when_the_hub_refuses_it(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        hub.start()
        proc = subprocess.Popen(  # stdin stays open: the client ends by itself
            [sys.executable, "-m", "wsserver", "client", "--url", hub.url, "--token", "not-a-jwt"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )
        try:
            assert proc.wait(20) == 1
            assert proc.stderr is not None
            err = proc.stderr.read()
            assert "# disconnected (401)" in err and "client: disconnected" in err
        finally:
            proc.kill()
            proc.communicate()


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(Path(ROOT) / "examples" / name), *args],
        capture_output=True, text=True, env=ENV, timeout=30,
    )


def test_seed_002_chat_example_exchanges_messages_with_receipts(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        hub.start()
        done = run_example(
            "chat_client.py", "--url", hub.url,
            "--customer-token", hub.token(1, username="customer"), "--agent-token", hub.token(2, username="agent"),
        )
        assert done.returncode == 0, done.stderr
        out = done.stdout
        for line in ("customer -> 2: message_id=1 seq=1", "agent    <- 1: Hello, where is my order?",
                     "message 1 delivered", "message 1 read", "customer <- 2: Re: Hello, where is my order? - happy to help"):
            assert line in out, out


def test_seed_000_desktop_example_syncs_and_heartbeats(tmp_path: Path) -> None:
    with Hub(tmp_path) as hub:
        hub.start()
        done = run_example("desktop_client.py", "--url", hub.url, "--activation-code", CODE, "--beats", "2", "--interval", "0.05")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert "sync_result: created=2 updated=0" in lines
        assert "customer_sync_received: customer_db_id=1" in lines
        assert "incoming_received: duplicate=False" in lines
        assert len([line for line in lines if line.startswith("heartbeat_ack: ok")]) == 2
