"""Issue #19 against a real gunicorn: slow clients, gunicorn's own errors, logs.

The slow-client test holds 100 loopback connections that each send one byte per second
(half dribble their headers, half their body) for 30 s, while /healthz and /v1/suggest
are probed on fresh connections: with the buffered worker every probe answers and the
99th percentile stays under 100 ms. The same load on gunicorn's sync workers (the old
model), for a few seconds with three slow clients, makes the probes time out — the
finding of the issue, kept as the proof that the test can fail.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_serving_support import build_var, start_server

pytestmark = pytest.mark.slow

SUGGEST = json.dumps({"language": "en", "text": "thanks", "cluster_id": 0}).encode()


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("slow-var"))


class SlowClients:
    """``n`` connections sending one byte per second each (headers or body) until stopped."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.sent = 0
        self.open = 0

    def run(self) -> None:
        socks, pending = [], []
        for i in range(self.n):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.setblocking(False)
            if i % 2:  # slow body: complete headers announcing 10 kB, then a byte a second
                s.send(b"POST /v1/suggest HTTP/1.1\r\nHost: x\r\nContent-Type: "
                       b"application/json\r\nContent-Length: 10000\r\n\r\n")
                data = b" " * 10000
            else:  # slowloris: the request line and headers one byte at a time
                data = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200
            socks.append(s)
            pending.append(data)
        self.open = len(socks)
        position = 0
        while not self.stop.wait(1.0):
            for s, data in zip(socks, pending, strict=True):
                try:
                    s.send(data[position:position + 1])
                    self.sent += 1
                except OSError:
                    pass
            position += 1
        for s in socks:
            s.close()

    def __enter__(self) -> SlowClients:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def probe(url: str, seconds: float, timeout: float = 2.0) -> tuple[list[float], int]:
    """Latencies (s) of alternating /healthz and /v1/suggest requests, and the failures."""
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        if i % 2:
            req = urllib.request.Request(f"{url}/v1/suggest", data=SUGGEST, method="POST",
                                         headers={"Content-Type": "application/json"})
        else:
            req = urllib.request.Request(f"{url}/healthz")
        i += 1
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                response.read()
                ok = response.status == 200
        except (urllib.error.URLError, OSError):
            ok = False
        if ok:
            latencies.append(time.perf_counter() - start)
        else:
            failures += 1
        time.sleep(0.05)
    return latencies, failures


def test_100_slow_clients_do_not_starve_the_buffered_workers(var: Path) -> None:
    server = start_server(var, workers=2)
    try:
        with SlowClients(server.port, 100) as slow:
            time.sleep(1.0)
            latencies, failures = probe(server.url, 28.0)
            assert slow.open == 100 and slow.sent > 1000
        p99 = float(np.percentile(latencies, 99)) * 1000
        print(f"100 slow clients: {len(latencies)} probes, p50 "
              f"{float(np.percentile(latencies, 50)) * 1000:.1f} ms, p99 {p99:.1f} ms")
        assert failures == 0, f"{failures} probes failed"
        assert len(latencies) > 100
        assert p99 <= 100.0, f"p99 {p99:.1f} ms with 100 slow clients"
    finally:
        server.stop()


def test_three_slow_clients_starve_sync_workers(var: Path) -> None:
    """The old worker model: the finding of #19, so the test above can fail."""
    server = start_server(var, workers=2, worker_class="sync")
    try:
        with SlowClients(server.port, 3):
            time.sleep(1.0)
            _, failures = probe(server.url, 6.0, timeout=1.0)
        assert failures > 0
    finally:
        server.stop()


def test_a_request_slower_than_the_read_timeout_gets_408(var: Path) -> None:
    server = start_server(var, workers=1, read_timeout_s=2.0)
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()
            answer = s.recv(4096)
            assert 1.5 < time.monotonic() - start < 6
        assert answer.startswith(b"HTTP/1.1 408") and b"application/problem+json" in answer
    finally:
        server.stop()


RAW_ERRORS = [  # (raw request, status): errors gunicorn raises before the app runs
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
    (b"POST /v1/suggest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /v1/federated/updates HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 99999999\r\n\r\n", 413),
]


def test_gunicorn_errors_are_problems_and_logs_hold_no_client_address(var: Path) -> None:
    server = start_server(var, workers=1)
    try:
        for raw, status in RAW_ERRORS:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                s.sendall(raw)
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(f"HTTP/1.1 {status}".encode()), (raw[:40], head)
            assert b"Content-Type: application/problem+json" in head
            assert json.loads(body)["status"] == status
        chunked = (b"POST /v1/federated/updates HTTP/1.1\r\nHost: x\r\nContent-Type: "
                   b"application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b" " * 60000
        chunked += (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") * 80 + b"0\r\n\r\n"
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(chunked)
            assert s.recv(4096).startswith(b"HTTP/1.1 413")
    finally:
        server.stop()
    log = (var / f"server-{server.port}.log").read_text()
    assert "refused a malformed request" in log
    assert "127.0.0.1" not in log.replace("http://127.0.0.1", "")
