"""The server as a real gunicorn process: durability under kill -9, and the CLI."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_serving_support import build_var, post_json, publish_fake_reranker, start_server, upload

from data import read_manifest
from data.cli import CLIContext
from serving import UpdateStore, list_models
from serving.cli import models, rounds

FORKED_METRICS = """
import os, sys
from pathlib import Path
from serving.http import enable_multiprocess_metrics
from serving.http import ServingMetrics
directory = Path(sys.argv[1])
enable_multiprocess_metrics(directory)  # in the master, before any worker forks
metrics = ServingMetrics()
metrics.count_suggestion("control", "en", 4)  # queued in the parent, written by it
child = os.fork()
if child == 0:  # a worker: its own samples file, under its own pid
    metrics.count_suggestion("control", "en", 3)
    sys.exit(0)  # the queued count is written at exit
os.waitpid(child, 0)
metrics.count_suggestion("control", "en", 2)
print(child, os.getpid())
print(metrics.exposition().decode())
"""


def test_multiprocess_metrics_give_each_forked_process_its_own_samples(tmp_path: Path) -> None:
    """The remembered process id follows forks: each process writes its own file and
    ``/metrics`` sums them; a count queued before the fork is written once (by the
    parent), and the child's queued count at its exit."""
    out = subprocess.run([sys.executable, "-c", FORKED_METRICS, str(tmp_path / "prom")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    pids, exposition = out.split("\n", 1)
    child, parent = pids.split()
    assert child != parent
    files = sorted(p.name for p in (tmp_path / "prom").glob("counter_*.db"))
    assert files == sorted([f"counter_{child}.db", f"counter_{parent}.db"])
    assert 'sticker_suggestions_served_total{arm="control"} 9.0' in exposition
    assert 'sticker_suggest_requests_total{arm="control",language="en"} 3.0' in exposition


@pytest.mark.slow
def test_every_acknowledged_update_survives_kill_9(tiny_world: Path, tmp_path: Path) -> None:
    var = build_var(tiny_world, tmp_path / "var")
    server = start_server(var, workers=2)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def post_forever(seed: int) -> None:
        i = 0
        while not stop.is_set() and i < 10_000:  # bounded
            payload = upload(seed=seed * 100_000 + i)
            i += 1
            try:
                status, _ = post_json(f"{server.url}/v1/federated/updates", payload, timeout=2)
            except (OSError, http.client.HTTPException):
                continue  # the server died mid-request or mid-response: not acknowledged
            if status == 202:
                with lock:
                    acknowledged.append(payload["nonce"])

    threads = [threading.Thread(target=post_forever, args=(s,)) for s in range(4)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(acknowledged) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.kill()  # SIGKILL to master and workers, mid-traffic
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        server.kill()
    assert len(acknowledged) >= 50, "the load never got going"

    restarted = start_server(var, workers=1)
    try:
        status, body = post_json(f"{restarted.url}/v1/federated/updates", upload(seed=999_999_999))
        assert status == 202, body  # the same round is still open after the restart
    finally:
        restarted.stop()
    with UpdateStore(var / "serving" / "updates.sqlite3") as store:
        stored = store.nonces()
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged updates lost of {len(acknowledged)}"


def test_models_list_promote_rollback(tiny_world: Path, tmp_path: Path) -> None:
    var = build_var(tiny_world, tmp_path / "var")
    first = sorted(p.name for p in (var / "reranker").iterdir() if not p.name.startswith("."))
    second = publish_fake_reranker(var, tag="b").name
    runner = CliRunner()
    obj = CLIContext(var=var, quiet=True)
    result = runner.invoke(models, ["list", "--json"], obj=obj)
    assert result.exit_code == 0, result.output
    rows = list_models(var)
    latest = {r["kind"]: r["version"] for r in rows if r["latest"]}
    assert latest["reranker"] == second and all(r["status"] == "ok" for r in rows)
    # Only promoted versions are rollback targets: ``first`` was never promoted.
    result = runner.invoke(models, ["rollback", "reranker"], obj=obj)
    assert result.exit_code != 0 and "never promoted" in str(result.exception)
    for version in (first[0], second):
        assert runner.invoke(models, ["promote", "reranker", version], obj=obj).exit_code == 0

    result = runner.invoke(models, ["rollback", "reranker"], obj=obj)
    assert result.exit_code == 0 and f"-> {first[0]}" in result.output
    result = runner.invoke(models, ["promote", "reranker", second], obj=obj)
    assert result.exit_code == 0 and f"-> {second}" in result.output

    # A corrupt version is refused and LATEST stays put.
    (var / "reranker" / first[0] / "model.onnx").write_bytes(b"tampered")
    result = runner.invoke(models, ["promote", "reranker", first[0]], obj=obj)
    assert result.exit_code != 0
    assert read_manifest(var / "reranker" / second).version == second
    assert {r["version"]: r["latest"] for r in list_models(var)}[second]
    result = runner.invoke(models, ["rollback", "reranker"], obj=obj)
    assert result.exit_code != 0  # the only older version fails verification


def test_rounds_cli_open_status_aggregate(tiny_world: Path, tmp_path: Path) -> None:
    var = build_var(tiny_world, tmp_path / "var")
    runner = CliRunner()
    obj = CLIContext(var=var, quiet=True)
    result = runner.invoke(rounds, ["open", "--deadline", "600"], obj=obj)
    assert result.exit_code == 0, result.output
    with UpdateStore(var / "serving" / "updates.sqlite3") as store:
        from federated import parse_upload
        for seed in range(2):
            store.add_update(parse_upload(upload(seed=seed), n_parameters=16,
                                          max_examples=100), time.time())
    result = runner.invoke(rounds, ["aggregate", "--no-publish"], obj=obj)
    assert result.exit_code == 0, result.output
    assert "aggregated" in result.output and "opened round 1" in result.output
    result = runner.invoke(rounds, ["status"], obj=obj)
    assert result.exit_code == 0 and "aggregated" in result.output


def test_serve_prints_its_resolved_config(tmp_path: Path) -> None:
    from serving.cli import serve

    result = CliRunner().invoke(serve, ["--print-config", "--port", "9100", "--workers", "3"],
                                obj=CLIContext(var=tmp_path, quiet=True))
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    assert (config["host"], config["port"], config["workers"]) == ("127.0.0.1", 9100, 3)
    assert config["var"] == str(tmp_path)


@pytest.mark.slow
def test_queued_suggest_counts_survive_a_graceful_stop(tiny_world: Path, tmp_path: Path) -> None:
    """The suggest counters are written in sums every 0.25 s (serving._metrics); a worker
    stopped right after its last request still writes what it queued (at exit)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    var = build_var(tiny_world, tmp_path / "var")
    server = start_server(var, workers=2)
    try:
        for _ in range(30):
            status, _ = post_json(f"{server.url}/v1/suggest",
                                  {"language": "en", "text": "hi", "cluster_id": 0})
            assert status == 200
    finally:
        server.stop()  # SIGTERM at once: most counts are still queued
    assert server.process.returncode == 0
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(var / "serving" / "prometheus"))
    text = generate_latest(registry).decode()
    assert 'sticker_suggest_requests_total{arm="control",language="en"} 30.0' in text
