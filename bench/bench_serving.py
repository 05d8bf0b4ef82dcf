"""Serving throughput and latency: gunicorn (2 workers) on 127.0.0.1 loaded with wrk.

1. Build a world, a stage-1 version and a reranker version (a short federated run of the
   real task, published like ``stickers federated train``) under a scratch artifact root.
2. For each worker model (``--models``, default all three, one after the other in the
   same run): start ``stickers serve``'s gunicorn with 2 workers on a free loopback port —
   ``buffered`` (threaded workers behind the in-worker buffering front, the default since
   issue #19; keep-alive), ``buffered-close`` (the same, a new connection per request, as
   the sync model forces) and ``sync`` (gunicorn's sync workers, the model before it).
3. Warm both endpoints (2 s each), then saturate ``GET /healthz`` (trivial JSON) and
   ``POST /v1/suggest`` (keyword matching + ONNX reranking of a cluster's candidates)
   with wrk, same settings, same run, both through the same Lua script shape (requests
   formatted once, handed out per request), in ``--rounds`` back-to-back pairs (default 5
   pairs of 6 s per endpoint; which endpoint goes first alternates, so a drift in the
   machine's load favours neither): the ratio of their requests/s (the median pair's) is
   the cost of a suggestion relative to the framework. gunicorn's sync workers close the
   connection after each response (no keep-alive), ``buffered`` keeps it, for both
   endpoints alike (keep-alive makes the trivial endpoint cheaper, so the ratio is
   harder to reach than with a connection per request). CPU microseconds per request
   of gunicorn and of wrk are recorded too: on a shared machine they show where the
   cores went.
4. Load ``/v1/suggest`` at half its maximum rate (wrk paced with a Lua ``delay()``: the
   cycle per connection less the latency measured in a 3 s calibration run) for 10 s and
   report p50/p99 latency and the rate reached.

``python -m bench serving`` or ``python -m bench.bench_serving [--world tiny] [--duration 30]
[--rounds 5] [--models buffered buffered-close sync] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench._results import write_results

TEXTS = {
    "en": ["", "t", "th", "thanks", "thank you", "ok", "good night", "lol", "sorry", "love"],
    "ja": ["", "あ", "ありがと", "ありがとう", "おやすみ", "ごめん", "了解", "おめでとう"],
}

SERVER = """
from serving import ServingConfig
from serving._gunicorn import GunicornServer, enable_multiprocess_metrics
config = ServingConfig.load(environ={{}}, var={var!r}, port={port}, workers={workers},
                            reload_interval_s=0, worker_class={worker_class!r}, demo=True,
                            threads={threads})
enable_multiprocess_metrics(config.var / "serving" / "prometheus")
GunicornServer(config).run()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_artifacts(var: Path, world: str, seed: int) -> dict[str, Any]:
    """World → stage 1 → a reranker version from a short federated run of the real task."""
    import data
    from candidate_gen import build_stage1
    from data._world import generate_world, world_config
    from federated import FederatedConfig, FederatedTrainer, TaskContext, publish_model
    from reranker import make_task

    catalog = data.load_catalog(data.ensure_catalog(data.var_root()))
    dataset = generate_world(world_config(world), catalog, var, show_progress=False)
    stage1 = build_stage1(dataset, None, var)
    task = make_task(TaskContext(var=var, seed=seed, options={"eval_devices": "200"}))
    config = FederatedConfig.model_validate({
        "rounds": {"rounds": 2, "sampling_rate": 0.5, "min_reports": 10},
        "privacy": {"target_epsilon": None}})
    trainer = FederatedTrainer(task, config).fit(np.random.default_rng(seed))
    reranker = publish_model(trainer, task, var / task.name, seed=seed)
    return {"world": world, "stage1": stage1.name, "reranker": reranker.name}


def start_server(var: Path, workers: int, worker_class: str = "buffered", threads: int = 4
                 ) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn in its own process group; returns when /readyz answers 200."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(var=str(var), port=port, workers=workers,
                                             worker_class=worker_class, threads=threads)],
        stdout=subprocess.DEVNULL, stderr=open(var / "server.log", "ab"),  # noqa: SIM115
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited; see {var / 'server.log'}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("server did not become ready")


def _suggest_bodies(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/demo/users", timeout=5) as response:
        users = json.loads(response.read())["users"]
    bodies = []
    for user in users:
        for text in TEXTS.get(user["language"], TEXTS["en"]):
            bodies.append(json.dumps({"language": user["language"], "text": text,
                                      "cluster_id": user["cluster_id"], "limit": 8}))
    return bodies


def _lua(path: Path, method: str, bodies: list[str | None], delay_ms: float | None,
         close: bool = False) -> Path:
    """A wrk script cycling through ``bodies`` (None: no body) with ``method``.

    Every endpoint is loaded through the same script shape: the requests are formatted
    once in ``init`` and ``request()`` only hands the next one out, so wrk (which shares
    the cores with gunicorn) spends the same per request on every endpoint.
    """
    quoted = ",\n".join("false" if b is None else "[==[" + b + "]==]" for b in bodies)
    headers = ('wrk.headers["Content-Type"] = "application/json"\n'
               if any(b is not None for b in bodies) else "")
    if close:  # a new connection per request, as gunicorn's sync workers force
        headers += 'wrk.headers["Connection"] = "close"\n'
    # wrk truncates delay() to whole milliseconds: carry the fractions over (error
    # diffusion), so the delays average to delay_ms.
    delay = "" if delay_ms is None else (
        f"local owed = 0\nfunction delay()\n  owed = owed + {delay_ms:.4f}\n"
        "  local whole = math.floor(owed)\n  owed = owed - whole\n  return whole\nend\n")
    path.write_text(
        f'wrk.method = "{method}"\n{headers}'
        f"local bodies = {{\n{quoted}\n}}\nlocal requests = {{}}\nlocal i = 0\n"
        "init = function(args)\n"
        "  for k, b in ipairs(bodies) do requests[k] = wrk.format(nil, nil, nil, b or nil) end\n"
        "end\n"
        "request = function()\n  i = i % #requests + 1\n  return requests[i]\nend\n"
        + delay)
    return path


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _server_cpu_s(server_pid: int) -> float:
    """CPU seconds (user + system) used so far by the gunicorn master and its workers."""
    import psutil

    master = psutil.Process(server_pid)
    total = 0.0
    for proc in [master, *master.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def run_wrk(url: str, *, duration: int, threads: int, connections: int,
            script: Path | None = None, server_pid: int | None = None) -> dict[str, float]:
    """Run wrk; requests/s, latency percentiles (ms), non-2xx count and CPU per request.

    ``wrk_cpu_us`` (the load generator) and, given ``server_pid``, ``server_cpu_us``
    (gunicorn's processes) are CPU microseconds per completed request: on a shared
    machine they say where the cores went, which requests/s alone does not.
    """
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = _server_cpu_s(server_pid) if server_pid is not None else 0.0
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                         timeout=duration + 30).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_after = _server_cpu_s(server_pid) if server_pid is not None else 0.0
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        result[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    result["requests"] = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    n = max(result["requests"], 1.0)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["wrk_cpu_us"] = 1e6 * wrk_cpu / n
    if server_pid is not None:
        result["server_cpu_us"] = 1e6 * (server_after - server_before) / n
    return result


def measure(scratch: Path, model: str, args: argparse.Namespace) -> dict[str, Any]:
    """Saturation pairs (healthz vs suggest) and the half-rate run for one worker model."""
    worker_class, _, mode = model.partition("-")
    close = mode == "close"
    process, url = start_server(scratch, args.workers, worker_class, args.threads)
    try:
        bodies = _suggest_bodies(url)
        common = {"duration": args.duration, "threads": 2, "connections": args.connections}
        healthz = _lua(scratch / "healthz.lua", "GET", [None], None, close)
        suggest = _lua(scratch / "suggest.lua", "POST", list(bodies), None, close)
        for script, path in ((healthz, "/healthz"), (suggest, "/v1/suggest")):  # warm both:
            run_wrk(f"{url}{path}", duration=2, threads=2,  # first requests build caches
                    connections=args.connections, script=script)
        # Back-to-back pairs: on a shared machine the load from elsewhere drifts, and one
        # pair measured minutes apart would mostly measure the drift.
        rounds = max(1, args.rounds)
        per_run = {**common, "duration": max(1, args.duration // rounds)}
        # Alternate which endpoint goes first (ABBA...), so a drift in the machine's load
        # during the run does not favour either.
        pairs = []
        for r in range(rounds):
            order = [("/healthz", healthz), ("/v1/suggest", suggest)]
            if r % 2:
                order.reverse()
            runs = {path: run_wrk(f"{url}{path}", **per_run, script=script,
                                  server_pid=process.pid) for path, script in order}
            pairs.append((runs["/healthz"], runs["/v1/suggest"]))
        pair_ratios = [s["rps"] / h["rps"] for h, s in pairs]
        trivial, saturated = pairs[sorted(range(rounds), key=pair_ratios.__getitem__)[
            rounds // 2]]  # the median pair
        half = saturated["rps"] / 2
        paced_connections = 4
        # wrk's delay() runs after each response, so a connection sends one request per
        # (latency + delay). A 3 s calibration run with a guess of the latency (a worker's
        # time per request at saturation) measures the real cycle; the delay of the
        # measured run is set from it, so the paced rate lands near half.
        cycle_ms = 1000.0 * paced_connections / half  # per connection, at half the rate
        delay_ms = max(0.0, cycle_ms - 1000.0 * args.workers / saturated["rps"])
        calibration = run_wrk(f"{url}/v1/suggest", duration=3, threads=2,
                              connections=paced_connections,
                              script=_lua(scratch / "paced.lua", "POST", list(bodies), delay_ms,
                                          close))
        latency_ms = max(0.0, 1000.0 * paced_connections / calibration["rps"] - delay_ms)
        paced = run_wrk(f"{url}/v1/suggest", duration=min(args.duration, 10), threads=2,
                        connections=paced_connections,
                        script=_lua(scratch / "paced.lua", "POST", list(bodies),
                                    max(0.0, cycle_ms - latency_ms), close),
                        server_pid=process.pid)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
    cpu_ratio = ((trivial["server_cpu_us"] + trivial["wrk_cpu_us"])
                 / (saturated["server_cpu_us"] + saturated["wrk_cpu_us"]))
    return {"runs": [("GET /healthz (trivial JSON)", "max", trivial),
                     ("POST /v1/suggest", "max", saturated),
                     ("POST /v1/suggest", f"paced to {half:.0f}/s", paced)],
            "suggest_over_trivial": saturated["rps"] / trivial["rps"],
            "suggest_over_trivial_per_round": pair_ratios,
            "suggest_over_trivial_cpu_per_request": cpu_ratio,
            "half_rate_p99_ms": paced.get("p99_ms"), "wrk": per_run, "bodies": len(bodies)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_serving", description=__doc__)
    parser.add_argument("--world", default="tiny", help="world size (tiny, small)")
    parser.add_argument("--duration", type=int, default=30,
                        help="seconds of saturation per endpoint, split over --rounds")
    parser.add_argument("--rounds", type=int, default=5,
                        help="healthz/suggest pairs, each endpoint loaded --duration/--rounds "
                             "seconds per pair (the ratio is the median pair's)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="threads per buffered worker (the serving default is 2)")
    parser.add_argument("--models", nargs="+", default=["buffered", "buffered-close", "sync"],
                        choices=["buffered", "buffered-close", "sync"],
                        help="worker models to measure, one after the other in this run")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk); skipping", file=sys.stderr)
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    try:
        versions = build_artifacts(scratch, args.world, args.seed)
        load_before = os.getloadavg()
        results = {model: measure(scratch, model, args) for model in args.models}
        rows = []
        for model, result in results.items():
            for name, load, r in result["runs"]:
                rows.append([model, name, load, r["rps"], r.get("p50_ms"), r.get("p99_ms"),
                             r["non_2xx"], r["server_cpu_us"], r["wrk_cpu_us"]])
        meta = {"versions": versions, "workers": args.workers, "threads": args.threads,
                "cpus": os.cpu_count(),
                "rounds": args.rounds, "goal_ratio": 0.7, "goal_p99_ms": 10.0,
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "models": {m: {k: v for k, v in r.items() if k != "runs"}
                           for m, r in results.items()},
                "note": "worker models measured one after the other in the same run, same "
                        "wrk settings; buffered = threaded workers behind the in-worker "
                        "buffering front (keep-alive), buffered-close = the same with a new "
                        "connection per request (Connection: close), sync = gunicorn's sync "
                        "workers (the pre-#19 model: a connection per request); wrk and "
                        "gunicorn share "
                        "the machine's cores (loopback); CPU columns are microseconds per "
                        "request of gunicorn's processes and of wrk"}
        write_results("serving", ["worker model", "endpoint", "load", "requests/s", "p50 ms",
                                  "p99 ms", "non-2xx", "server CPU µs/req", "wrk CPU µs/req"],
                      rows, meta)
        for model, r in results.items():
            print(f"{model}: suggest/trivial requests/s ratio {r['suggest_over_trivial']:.3f} "
                  f"(goal >= 0.7; pairs "
                  f"{', '.join(f'{x:.3f}' for x in r['suggest_over_trivial_per_round'])}); "
                  f"p99 at half rate {r['half_rate_p99_ms']} ms (goal <= 10)")
        print(f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
