"""Serving throughput and latency: gunicorn (2 workers) on 127.0.0.1 loaded with wrk.

1. Build a world, a stage-1 version and a reranker version (a short federated run of the
   real task, published like ``stickers federated train``) under a scratch artifact root.
2. Start one gunicorn (2 workers, a free loopback port) per worker model (``--models``,
   default all three) and keep them all up for the whole measurement: ``buffered``
   (threaded workers behind the in-worker buffering front, the default since issue #19;
   keep-alive), ``buffered-close`` (the same, a new connection per request, as the sync
   model forces) and ``sync`` (gunicorn's sync workers, the model before it).
3. Warm both endpoints of each (2 s each), then saturate ``GET /healthz`` (trivial JSON)
   and ``POST /v1/suggest`` (keyword matching + ONNX reranking) with wrk, same settings,
   both through the same Lua script shape (requests formatted once, handed out per
   request), in ``--rounds`` rounds (default 5, each run ``--duration/--rounds`` s).
   Interleaved: every round loads one back-to-back healthz/suggest pair of *every*
   model, the models in an order rotated each round and the endpoint order alternated,
   so a drift in the machine's load (it is shared) reaches every model and both
   endpoints alike. A model's ratio is the median of its pairs' suggest/trivial
   requests/s, reported with the quartiles and range over the pairs, and per round
   over sync's ratio of the same round. A run that completes no request (the server
   died or was starved) is reported as a failed pair instead of being divided by.
   gunicorn's sync workers close the connection after each response (no keep-alive),
   ``buffered`` keeps it, for both endpoints alike (keep-alive makes the trivial
   endpoint cheaper, so the ratio is harder to reach than with a connection per
   request). CPU microseconds per request of gunicorn and of wrk are recorded too: on a
   shared machine they show where the cores went.
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
from serving.http import GunicornServer, enable_multiprocess_metrics
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
    from data import generate_world, world_config
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
    # wrk's default 2 s timeout counts a slow response as an error, so on a saturated
    # shared machine a run could "complete" nothing; 10 s keeps such responses counted
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
           "--timeout", "10s"]
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
    timeouts = re.search(r"timeout (\d+)", out)
    result["timeouts"] = float(timeouts.group(1)) if timeouts else 0.0
    n = max(result["requests"], 1.0)
    wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["wrk_cpu_us"] = 1e6 * wrk_cpu / n
    if server_pid is not None:
        result["server_cpu_us"] = 1e6 * (server_after - server_before) / n
    return result


class NoRequestsError(RuntimeError):
    """A wrk run completed no request: there is no throughput to compare."""


def _ratio(numerator: float, denominator: float, what: str) -> float:
    """``numerator / denominator``, refusing a zero denominator with a clear message."""
    if denominator <= 0:
        raise NoRequestsError(f"{what}: the denominator is {denominator:g} (a run completed "
                              "no request, or used no CPU); the server may be down or the "
                              "machine saturated — see server.log in the scratch root")
    return numerator / denominator


def _checked(result: dict[str, float], model: str, path: str) -> dict[str, float]:
    if result["requests"] <= 0 or result["rps"] <= 0:
        raise NoRequestsError(f"{model} {path}: wrk completed 0 requests in its run; the "
                              "server did not answer (crashed, not ready, or starved of CPU)")
    return result


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of ``values`` (which must not be empty)."""
    q1, median, q3 = (float(x) for x in np.percentile(values, [25, 50, 75]))
    return {"median": median, "q1": q1, "q3": q3, "min": float(min(values)),
            "max": float(max(values)), "n": len(values)}


class _Server:
    """One worker model's gunicorn, its wrk scripts and its results."""

    def __init__(self, scratch: Path, model: str, args: argparse.Namespace) -> None:
        self.model = model
        worker_class, _, mode = model.partition("-")
        self.close = mode == "close"
        root = scratch / f"lua-{model}"
        root.mkdir(exist_ok=True)
        self.root = root
        self.process, self.url = start_server(scratch, args.workers, worker_class, args.threads)
        self.bodies = _suggest_bodies(self.url)
        self.scripts = {
            "/healthz": _lua(root / "healthz.lua", "GET", [None], None, self.close),
            "/v1/suggest": _lua(root / "suggest.lua", "POST", list(self.bodies), None,
                                self.close)}
        self.pairs: list[tuple[dict[str, float], dict[str, float]] | None] = []
        self.failures: list[str] = []

    def run(self, path: str, **kwargs: Any) -> dict[str, float]:
        return run_wrk(f"{self.url}{path}", script=self.scripts[path],
                       server_pid=self.process.pid, **kwargs)

    def status(self) -> str:
        """Whether the server process is alive, and the end of its log (for errors: the
        scratch root, and the log with it, is removed when the bench exits)."""
        code = self.process.poll()
        alive = "running" if code is None else f"exited with {code}"
        log = self.root.parent / "server.log"
        tail = log.read_text(errors="replace").splitlines()[-12:] if log.exists() else []
        return f"gunicorn {alive}; end of server.log:\n" + "\n".join(tail)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def _pair(server: _Server, first_suggest: bool, per_run: dict[str, Any]) -> None:
    """One back-to-back healthz/suggest pair of ``server`` (a zero-request run is recorded
    as a failed pair, not divided by)."""
    order = ["/healthz", "/v1/suggest"]
    if first_suggest:
        order.reverse()
    try:
        runs = {path: _checked(server.run(path, **per_run), server.model, path)
                for path in order}
    except NoRequestsError as exc:
        # with the server's state and the end of its log (the scratch root goes at exit)
        failure = f"{exc}; {server.status()}"
        print(f"warning: {failure}", file=sys.stderr)
        server.failures.append(failure)
        server.pairs.append(None)
        return
    server.pairs.append((runs["/healthz"], runs["/v1/suggest"]))


def _paced(server: _Server, saturated: dict[str, float], args: argparse.Namespace
           ) -> dict[str, float]:
    """``/v1/suggest`` at half its saturated rate (see the module doc, step 4)."""
    half = saturated["rps"] / 2
    paced_connections = 4
    # wrk's delay() runs after each response, so a connection sends one request per
    # (latency + delay). A 3 s calibration run with a guess of the latency (a worker's
    # time per request at saturation) measures the real cycle; the delay of the
    # measured run is set from it, so the paced rate lands near half.
    cycle_ms = 1000.0 * paced_connections / half  # per connection, at half the rate
    delay_ms = max(0.0, cycle_ms - 1000.0 * args.workers / saturated["rps"])
    calibration = _checked(run_wrk(
        f"{server.url}/v1/suggest", duration=3, threads=2, connections=paced_connections,
        script=_lua(server.root / "paced.lua", "POST", list(server.bodies), delay_ms,
                    server.close)), server.model, "/v1/suggest (calibration)")
    latency_ms = max(0.0, 1000.0 * paced_connections / calibration["rps"] - delay_ms)
    paced = run_wrk(f"{server.url}/v1/suggest", duration=min(args.duration, 10), threads=2,
                    connections=paced_connections,
                    script=_lua(server.root / "paced.lua", "POST", list(server.bodies),
                                max(0.0, cycle_ms - latency_ms), server.close),
                    server_pid=server.process.pid)
    paced["target_rps"] = half
    return paced


def measure(scratch: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Saturation pairs (healthz vs suggest) of every worker model, interleaved, then a
    half-rate run of each.

    Every model's gunicorn runs for the whole measurement (idle when not loaded). Round
    ``r`` loads one healthz/suggest pair of each model, back to back, the models in an
    order rotated every round and the endpoint order alternated, so a drift in the
    machine's load over the run reaches every model and both endpoints alike; each
    model's ratio is the median of its pairs, with their spread.
    """
    servers: list[_Server] = []
    try:
        for model in args.models:
            servers.append(_Server(scratch, model, args))
        for server in servers:  # warm both endpoints: first requests build caches
            for path in server.scripts:
                failure = ""
                for _ in range(5):  # until a warm-up run completes requests
                    try:
                        warm = server.run(path, duration=2, threads=2,
                                          connections=args.connections)
                    except subprocess.CalledProcessError as exc:
                        # seen once against a just-started server: wrk exits 1; retry
                        failure = f"wrk exited {exc.returncode}: {(exc.stderr or '').strip()}"
                        time.sleep(1.0)
                        continue
                    if warm["requests"] > 0:
                        break
                else:
                    if failure:
                        raise RuntimeError(f"warm-up of {server.model} {path} failed 5 "
                                           f"times; last: {failure}; {server.status()}")
        rounds = max(1, args.rounds)
        per_run = {"duration": max(1, args.duration // rounds), "threads": 2,
                   "connections": args.connections}
        for r in range(rounds):
            shift = r % len(servers)
            for server in servers[shift:] + servers[:shift]:
                _pair(server, first_suggest=bool(r % 2), per_run=per_run)
        results: dict[str, dict[str, Any]] = {}
        for server in servers:
            valid = [(i, p) for i, p in enumerate(server.pairs) if p is not None]
            if not valid:
                results[server.model] = {"failures": server.failures, "runs": []}
                continue
            ratios = {i: s["rps"] / h["rps"] for i, (h, s) in valid}
            order = sorted(ratios, key=ratios.__getitem__)
            trivial, saturated = server.pairs[order[len(order) // 2]]  # type: ignore[misc]
            paced = _paced(server, saturated, args)
            cpu_trivial = trivial["server_cpu_us"] + trivial["wrk_cpu_us"]
            cpu_suggest = saturated["server_cpu_us"] + saturated["wrk_cpu_us"]
            results[server.model] = {
                "runs": [("GET /healthz (trivial JSON)", "max", trivial),
                         ("POST /v1/suggest", "max", saturated),
                         ("POST /v1/suggest", f"paced to {paced['target_rps']:.0f}/s",
                          paced)],
                "suggest_over_trivial": ratios[order[len(order) // 2]],
                "suggest_over_trivial_spread": spread(list(ratios.values())),
                "suggest_over_trivial_per_round": [
                    None if p is None else ratios[i] for i, p in enumerate(server.pairs)],
                "suggest_over_trivial_cpu_per_request": _ratio(
                    cpu_trivial, cpu_suggest, f"{server.model}: CPU per suggest request"),
                "half_rate_p99_ms": paced.get("p99_ms"), "wrk": per_run,
                "bodies": len(server.bodies), "failures": server.failures}
        return results
    finally:
        for server in servers:
            server.stop()


def _same_round_ratios(results: dict[str, dict[str, Any]], model: str, baseline: str
                       ) -> dict[str, float] | None:
    """Per round, ``model``'s suggest/trivial ratio over ``baseline``'s (the same round,
    so the same machine load): their spread."""
    a = results.get(model, {}).get("suggest_over_trivial_per_round") or []
    b = results.get(baseline, {}).get("suggest_over_trivial_per_round") or []
    pairs = [x / y for x, y in zip(a, b, strict=False)
             if x is not None and y is not None and y > 0]
    return spread(pairs) if pairs else None


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
        results = measure(scratch, args)
        rows = []
        for model, result in results.items():
            for name, load, r in result["runs"]:
                rows.append([model, name, load, r["rps"], r.get("p50_ms"), r.get("p99_ms"),
                             r["non_2xx"], r["timeouts"], r["server_cpu_us"], r["wrk_cpu_us"]])
        versus = {m: _same_round_ratios(results, m, "sync") for m in results if m != "sync"}
        meta = {"versions": versions, "workers": args.workers, "threads": args.threads,
                "cpus": os.cpu_count(),
                "rounds": args.rounds, "goal_ratio": 0.7, "goal_p99_ms": 10.0,
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
                "models": {m: {k: v for k, v in r.items() if k != "runs"}
                           for m, r in results.items()},
                "over_sync_same_round": versus,
                "note": "worker models measured interleaved in the same run (every model's "
                        "server up for the whole run; each round loads one healthz/suggest "
                        "pair per model, model order rotated, endpoint order alternated), "
                        "same wrk settings; the ratio is the median pair's, with quartiles "
                        "and range over the pairs; buffered = threaded workers behind the "
                        "in-worker buffering front (keep-alive), buffered-close = the same "
                        "with a new connection per request (Connection: close), sync = "
                        "gunicorn's sync workers (the pre-#19 model: a connection per "
                        "request); wrk and gunicorn share the machine's cores (loopback); "
                        "CPU columns are microseconds per request of gunicorn's processes "
                        "and of wrk"}
        write_results("serving", ["worker model", "endpoint", "load", "requests/s", "p50 ms",
                                  "p99 ms", "non-2xx", "timeouts (10 s)", "server CPU µs/req",
                                  "wrk CPU µs/req"],
                      rows, meta)
        failed = False
        for model, r in results.items():
            if not r["runs"]:
                failed = True
                print(f"{model}: no pair completed requests on both endpoints; no ratio "
                      f"({'; '.join(r['failures'][:2])})")
                continue
            sp = r["suggest_over_trivial_spread"]
            per_round = ", ".join("failed" if x is None else f"{x:.3f}"
                                  for x in r["suggest_over_trivial_per_round"])
            print(f"{model}: suggest/trivial requests/s ratio median {sp['median']:.3f} "
                  f"(quartiles {sp['q1']:.3f}-{sp['q3']:.3f}, range {sp['min']:.3f}-"
                  f"{sp['max']:.3f} over {sp['n']} pairs: {per_round}; goal >= 0.7); "
                  f"p99 at half rate {r['half_rate_p99_ms']} ms (goal <= 10)")
        for model, sp in versus.items():
            if sp is not None:
                print(f"{model} over sync, same round: median {sp['median']:.3f} (range "
                      f"{sp['min']:.3f}-{sp['max']:.3f}, {sp['n']} rounds)")
        print(f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
