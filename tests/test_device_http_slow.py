"""Populations of real device clients against gunicorn (#18): many rounds, kill -9 + restart."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from federated import SyntheticRegressionTask
from federated.device import (
    DeviceClient,
    DeviceStore,
    HttpTransport,
    RoundParticipation,
    TransportError,
    run_population,
)
from federated.secagg import modular_sum

P = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Gunicorn:
    """``stickers serve`` (gunicorn, 2 workers) with secure rounds, in its own process group."""

    def __init__(self, root: Path, port: int, **secure: object) -> None:
        self.root, self.port = root, port
        self.config = root / "secure.json"
        self.config.write_text(json.dumps({
            "enabled": True, "model": "zeros", "n_parameters": P, "checkin_s": 5.0,
            "stage_s": 5.0, "min_clients": 10, "max_clients": 1000, "tokens_per_day": 50,
            "noise_multiplier": 0.5, "n_max": 1000, "tick_interval_s": 0.25, **secure}))
        (root / "var").mkdir(exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "STICKERS_SECURE_CONFIG": str(self.config)}
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (lives with the process)
        stickers = str(Path(sys.executable).parent / "stickers")
        self.process = subprocess.Popen(
            [stickers, "--var", str(self.root / "var"), "serve", "--port", str(self.port),
             "--workers", "2"], stdout=log, stderr=log, env=env, start_new_session=True)
        t = HttpTransport(self.url, attempts=1, timeout_s=2)
        for _ in range(300):
            try:
                t.request("GET", "/v1/secure/model")
                return
            except TransportError:
                time.sleep(0.1)
        raise RuntimeError("server did not start; see server.log")

    def kill9(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # a loaded machine can be slow to shut down
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_population_of_clients_against_gunicorn(gunicorn: Gunicorn, tmp_path: Path) -> None:
    """60 devices, 3 rounds, 20% leave after key sharing and 10% after the masked upload:
    every round aggregates and its sum equals the in-process sum, bit for bit."""
    task = SyntheticRegressionTask(n_devices=1000, n_features=P, seed=1)
    records = run_population(gunicorn.url, task, n=60, rounds=3, workdir=tmp_path / "devs",
                             seed=2)
    assert len(records) == 3
    for r in records:
        assert r.status == "aggregated", r
        assert r.exact_sum is True
        assert r.participants == 60
        assert r.dropped_after_share >= 4 and r.dropped_after_mask >= 1
        assert r.n_survivors == r.masked_acknowledged == 60 - r.dropped_after_share


@pytest.mark.slow
def test_kill9_mid_round_then_restart(gunicorn: Gunicorn, tmp_path: Path) -> None:
    """kill -9 of gunicorn while a round is in its protocol stages, restart on the same
    files: the round then completes (exact sum of what was acknowledged) or is cleanly
    abandoned, nothing is left half-done, and the next round opens by itself."""
    task = SyntheticRegressionTask(n_devices=100, n_features=P, seed=1)
    rng = np.random.default_rng(0)
    devices = []

    def trainer(i: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda p: task.local_train(p, np.array([i]), rng).deltas[0]

    for i in range(16):
        # two quick tries per request: outlasting the restart is the client's own job
        d = DeviceClient(HttpTransport(gunicorn.url, attempts=2, backoff_s=0.2, timeout_s=10),
                         DeviceStore(tmp_path / f"d{i}.sqlite3"), trainer(i),
                         poll_interval_s=0.2)
        d.enrol()
        d.refill_tokens(2)
        devices.append(d)
    control = HttpTransport(gunicorn.url, attempts=30, backoff_s=0.5)
    while True:
        info = control.request("GET", "/v1/secure/round").body
        if info["stage"] == "checkin" and info["stage_ends_in_s"] > 2.5:
            break
        time.sleep(0.2)
    round_ = int(info["round"])
    results: list[RoundParticipation | None] = [None] * len(devices)

    def run(i: int) -> None:
        results[i] = devices[i].participate(drop_after="share" if i < 2 else None,
                                            deadline_s=120)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(devices))]
    for t in threads:
        t.start()
    while control.request("GET", f"/v1/secure/rounds/{round_}").body["stage"] in (
            "checkin", "advertise"):
        time.sleep(0.05)
    stage_at_kill = control.request("GET", f"/v1/secure/rounds/{round_}").body["stage"]
    gunicorn.kill9()
    time.sleep(1.0)
    gunicorn.start()
    for t in threads:
        t.join(timeout=180)
    closed = control.request("GET", f"/v1/secure/rounds/{round_}").body
    for _ in range(200):
        if closed["status"] != "open":
            break
        time.sleep(0.2)
        closed = control.request("GET", f"/v1/secure/rounds/{round_}").body
    assert closed["status"] in ("aggregated", "abandoned"), (stage_at_kill, closed)
    if closed["status"] == "aggregated":
        acked = [r.report for r in results if r is not None and r.masked_sent
                 and r.report is not None]
        total = np.frombuffer(base64.b64decode(closed["outcome"]["sum"]), "<u4")
        np.testing.assert_array_equal(total, modular_sum(np.stack(acked), 32))
    nxt = control.request("GET", "/v1/secure/round").body
    assert nxt["round"] > round_
    # no client gave up because the server was gone for a while
    ends = [r.reason for r in results if r is not None and r.status != "completed"]
    assert "unreachable" not in ends, ends
    assert sum(d.transient_failures for d in devices) > 0  # they did meet the outage
    # the ledger holds each opened round exactly once, with how it ended
    var = gunicorn.root / "var"
    ledger = sqlite3.connect(var / "serving" / "privacy_ledger.sqlite3")
    recorded = ledger.execute("SELECT round, status FROM ledger WHERE source='secure' "
                              "ORDER BY round").fetchall()
    opened = sqlite3.connect(var / "secure" / "rounds.sqlite3").execute(
        "SELECT round, status FROM secure_rounds ORDER BY round").fetchall()
    assert [r for r, _ in recorded] == [r for r, _ in opened]
    assert dict(recorded)[round_] == closed["status"]
