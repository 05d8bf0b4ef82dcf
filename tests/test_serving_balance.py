"""Buffered workers share new connections evenly (``ServingConfig.reuse_port``).

With one listening socket shared by the workers, the first worker awake took each new
connection: a client opening 16 keep-alive connections at once (wrk in the serving bench,
a proxy's connection pool) landed all 16 on one of two workers in 8 of 20 bursts, and the
other worker idled while those connections lived (the bench saw throughput drop by 65 %
in such runs). With a socket per worker the kernel hashes connections over the workers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from test_serving_support import ServerProcess, build_var, start_server

BURSTS = 10
CONNECTIONS = 16


@pytest.fixture(scope="module")
def var(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_var(tiny_world, tmp_path_factory.mktemp("balance-var"))


@pytest.fixture()
def server(var: Path) -> Iterator[ServerProcess]:
    server = start_server(var, workers=2)
    try:
        yield server
    finally:
        server.stop()


def _workers(server: ServerProcess) -> list[psutil.Process]:
    workers = psutil.Process(server.process.pid).children()
    deadline = time.monotonic() + 30
    while len(workers) < 2 and time.monotonic() < deadline:  # both booted
        time.sleep(0.2)
        workers = psutil.Process(server.process.pid).children()
    assert len(workers) == 2
    return workers


def _sockets(process: psutil.Process, port: int, status: str) -> int:
    return sum(1 for c in process.net_connections(kind="tcp")
               if c.status == status and c.laddr.port == port)


def test_each_buffered_worker_listens_on_its_own_socket(server: ServerProcess) -> None:
    workers = _workers(server)
    deadline = time.monotonic() + 30
    while (time.monotonic() < deadline
           and not all(_sockets(w, server.port, "LISTEN") for w in workers)):
        time.sleep(0.2)  # a worker binds its socket as it boots
    master = psutil.Process(server.process.pid)
    assert _sockets(master, server.port, "LISTEN") == 0
    assert [_sockets(w, server.port, "LISTEN") for w in workers] == [1, 1]


def test_a_burst_of_keepalive_connections_never_lands_on_one_worker(
        server: ServerProcess) -> None:
    workers = _workers(server)
    splits = []
    for _ in range(BURSTS):
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                 for _ in range(CONNECTIONS)]
        try:
            for s in socks:  # one request each, kept alive
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in socks:
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
            splits.append(sorted(_sockets(w, server.port, "ESTABLISHED") for w in workers))
        finally:
            for s in socks:
                s.close()
        time.sleep(0.2)
    assert all(sum(split) == CONNECTIONS for split in splits), splits
    # hashing puts all 16 on one of two workers with probability 2 / 2**16 per burst;
    # the shared socket did in 8 of 20 bursts
    assert all(split[0] > 0 for split in splits), splits
