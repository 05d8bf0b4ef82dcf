"""Buffered workers share new connections evenly (``ServingConfig.reuse_port``).

With one listening socket shared by the workers, the first worker awake took each new
connection: a client opening 16 keep-alive connections at once (wrk in the serving bench,
a proxy's connection pool) landed all 16 on one of two workers in 8 of 20 bursts, and the
other worker idled while those connections lived (the bench saw throughput drop by 65 %
in such runs). With a socket per worker the kernel hashes connections over the workers.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_serving_support import ServerProcess, build_var, free_port, start_server

from serving import ServingConfig
from serving.http import GunicornServer, PortInUseError
from serving.versions import BOARD_ENV

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


def _listening_workers(server: ServerProcess) -> list[psutil.Process]:
    """Both workers, once each listens (a worker binds its socket when its app is loaded)."""
    workers = _workers(server)
    deadline = time.monotonic() + 30
    while (time.monotonic() < deadline
           and not all(_sockets(w, server.port, "LISTEN") for w in workers)):
        time.sleep(0.2)
    return workers


def test_each_buffered_worker_listens_on_its_own_socket(server: ServerProcess) -> None:
    workers = _listening_workers(server)
    master = psutil.Process(server.process.pid)
    assert _sockets(master, server.port, "LISTEN") == 0
    assert [_sockets(w, server.port, "LISTEN") for w in workers] == [1, 1]


def test_a_burst_of_keepalive_connections_never_lands_on_one_worker(
        server: ServerProcess) -> None:
    workers = _listening_workers(server)
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


SLOW_SECOND_WORKER = """
import os, sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from serving import ServingConfig, create_app
from serving.http import GunicornServer, PortInUseError
from test_serving_support import fake_registry
config = ServingConfig.load(environ={{}}, var={var!r}, port={port}, workers=2,
                            reload_interval_s=0)
marker = Path({marker!r})

def factory():
    try:  # the first worker to boot loads at once, the second takes 6 s
        marker.touch(exist_ok=False)
    except FileExistsError:
        time.sleep(6.0)
    return create_app(config, registry=fake_registry(config))

GunicornServer(config, app_factory=factory).run()
"""


def test_a_worker_still_loading_its_models_is_given_no_connections(
        var: Path, tmp_path: Path) -> None:
    """gunicorn binds a reuse_port worker's socket before the app loads; the buffered worker
    listens only once loaded, so no connection waits on a worker loading its models."""
    port = free_port()
    script = SLOW_SECOND_WORKER.format(tests=str(Path(__file__).parent), var=str(var),
                                       port=port, marker=str(tmp_path / "first"))
    log = open(tmp_path / "server.log", "ab")  # noqa: SIM115 (lives with the process)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log,
                               start_new_session=True)
    server = ServerProcess(process, port)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the fast worker answers
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(4096).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                time.sleep(0.1)
        listening = [_sockets(w, port, "LISTEN") for w in _workers(server)]
        assert sorted(listening) == [0, 1], listening  # the loading worker has no socket
        slowest = 0.0
        for _ in range(CONNECTIONS):  # none is queued on the loading worker
            start = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
            slowest = max(slowest, time.monotonic() - start)
        assert slowest < 2.0, f"a connection waited {slowest:.1f} s"
    finally:
        server.stop()


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, True), ({"worker_class": "sync"}, False), ({"workers": 1}, False),
    ({"port": 0}, False), ({"reuse_port": False}, False)])
def test_reuse_port_only_where_it_balances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           overrides: dict[str, Any], expected: bool) -> None:
    monkeypatch.setenv(BOARD_ENV, str(tmp_path / "board"))  # GunicornServer sets it
    config = ServingConfig.load(environ={}, var=tmp_path, **{"port": 8123, **overrides})
    assert GunicornServer(config).cfg.reuse_port is expected


@pytest.mark.parametrize("reuse", [False, True])
def test_a_taken_port_is_a_clear_error_not_a_shared_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reuse: bool) -> None:
    """SO_REUSEPORT would let a second server join a port silently: it must refuse to."""
    monkeypatch.setenv(BOARD_ENV, str(tmp_path / "board"))
    with socket.socket() as other:  # another server's socket, plain or SO_REUSEPORT
        if reuse:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        server = GunicornServer(ServingConfig.load(environ={}, var=tmp_path, port=port))
        assert server.cfg.reuse_port
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}.*another server"):
            server.run()
