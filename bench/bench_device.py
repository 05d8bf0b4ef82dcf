"""Cost of secure rounds over HTTP: server CPU per admitted device per round, bytes per device.

``python -m bench device [--n 100] [--rounds 3] [--features 64]`` starts ``stickers serve``
(gunicorn, 2 workers) with secure rounds on a scratch var, runs a population of real
device clients (threads, 20% leaving after key sharing, 10% after the masked upload) and
reads the server's CPU time (master and workers, psutil) around the run. Baseline in the
same run: the same cohort's SecAgg+ round in-process (``federated.run_secagg_round``,
server and clients together, no HTTP), and the bytes of one plain float32 update.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bench._results import write_results
from federated import SyntheticRegressionTask
from federated.device import HttpTransport, TransportError, run_population
from federated.secagg import SecAggParams, run_secagg_round


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_cpu(pid: int) -> float:
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def main(argv: list[str]) -> None:
    """Run the benchmark (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m bench device")
    ap.add_argument("--n", type=int, default=100, help="devices")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--features", type=int, default=64, help="model parameters P")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-device-"))
    config = root / "secure.json"
    config.write_text(json.dumps({
        "enabled": True, "model": "zeros", "n_parameters": args.features, "checkin_s": 8.0,
        "stage_s": 8.0, "min_clients": 10, "max_clients": 10_000, "tokens_per_day": 100,
        "noise_multiplier": 0.5, "n_max": 10_000, "tick_interval_s": 0.25}))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "ab")  # noqa: SIM115 (lives with the process)
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "stickers"), "--var", str(root / "var"), "serve",
         "--port", str(port), "--workers", "2"], stdout=log, stderr=log,
        env={**os.environ, "STICKERS_SECURE_CONFIG": str(config)}, start_new_session=True)
    try:
        probe = HttpTransport(url, attempts=1, timeout_s=2)
        for _ in range(300):
            try:
                probe.request("GET", "/v1/secure/model")
                break
            except TransportError:
                time.sleep(0.1)
        task = SyntheticRegressionTask(n_devices=max(args.n, 1000), n_features=args.features)
        cpu0 = _server_cpu(server.pid)
        records = run_population(url, task, n=args.n, rounds=args.rounds,
                                 workdir=root / "devices", seed=0)
        cpu = _server_cpu(server.pid) - cpu0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine can be slow to shut down
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    admitted = sum(r.participants for r in records)
    per_device_ms = 1000 * cpu / max(admitted, 1)
    bytes_per_device = float(np.mean([r.bytes_per_device for r in records]))
    exact = all(r.exact_sum for r in records if r.status == "aggregated")
    # baseline: the same cohort in-process (server and clients), same drop-outs
    d = 1 << max(0, (args.features - 1).bit_length())
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, 2**32, (args.n, d), dtype=np.uint32)
    draw = rng.random(args.n)
    drops = {"mask": set(np.flatnonzero(draw < 0.2).tolist()),
             "consistency": set(np.flatnonzero((draw >= 0.2) & (draw < 0.3)).tolist())}
    params = SecAggParams.for_cohort(args.n, bits=32, dimension=d, dropout_rate=0.3,
                                     corruption_rate=0.05)
    t0 = time.process_time()
    run_secagg_round(inputs, params, drop=drops, transport=True)
    inproc_ms = 1000 * (time.process_time() - t0) / args.n
    rows = [
        ["secure rounds over HTTP (gunicorn): server CPU", args.n, args.rounds, admitted,
         round(per_device_ms, 2), round(bytes_per_device / 1024, 1),
         sum(r.status == "aggregated" for r in records), exact],
        ["baseline: SecAgg+ in-process, server + clients CPU", args.n, 1, args.n,
         round(inproc_ms, 2), round(4 * args.features / 1024, 2), 1, True],
    ]
    write_results("device", ["path", "devices", "rounds", "admitted", "ms CPU / device / round",
                             "kB / device / round", "aggregated", "exact sum"], rows,
                  {"features": args.features, "padded_dimension": d,
                   "degree_threshold": [params.degree, params.threshold],
                   "rounds_detail": [r.to_dict() for r in records],
                   "note": "baseline kB is one plain float32 update (no protocol); HTTP bytes "
                           "are bodies plus ~64 B of request line per request"})


if __name__ == "__main__":
    main(sys.argv[1:])
