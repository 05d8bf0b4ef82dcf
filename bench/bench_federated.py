"""Federated platform throughput: simulated client updates per second, server aggregation.

The client task is the platform's built-in synthetic linear-regression task scaled to
P = 1,064 parameters (the sticker reranker's size at d = 32: 32×32 + 32 + 7 + 1), 8 log
entries per device, 2 local steps: every update includes local training, clipping and
Gaussian noise on the device side, so this measures the platform, not a task's model
(the reranker's own local-training rate is in ``bench_reranker``). Goal: >= 10k
updates/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from bench._results import write_results
from federated import DeviceConfig, RoundPlan, Server, SyntheticRegressionTask
from federated.privacy import add_gaussian_noise, clip_deltas
from federated.simulation import DevicePopulation, DeviceRoundResult, DeviceRuntime
from federated.strategies import (
    DifferentialPrivacy,
    FedAdam,
    FedAvg,
    NormBound,
    Strategy,
    TrimmedMean,
    noisy_norm_bound,
)

GOAL_UPDATES_PER_S = 10_000


def _best_rate(n_items: int, run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def main(argv: list[str]) -> int:
    """Run the benchmark; ``--quick`` uses smaller sizes (for smoke tests)."""
    parser = argparse.ArgumentParser(prog="bench_federated")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--parameters", type=int, default=1064)
    args = parser.parse_args(argv)
    p = args.parameters
    n_devices = 20_000 if args.quick else 100_000
    batch = 2_000 if args.quick else 10_000
    repeats = 2 if args.quick else 3
    rng = np.random.default_rng(0)
    task = SyntheticRegressionTask(n_devices=n_devices, n_features=p, seed=0)
    population = DevicePopulation.simulate(n_devices, rng)
    runtime = DeviceRuntime(task, population, DeviceConfig(), max_uploads_per_day=10**6,
                            batch_size=4096)
    params = task.initial_parameters()
    plan = RoundPlan(round=0, model_version=0, open_s=0.0, deadline_s=300.0,
                     sampling_rate=1.0, max_examples=1000, clip_norm=1.0,
                     noise_multiplier=1.0)
    devices = np.sort(rng.choice(n_devices, size=batch, replace=False)).astype(np.int64)
    rows: list[list[object]] = []

    def client() -> object:
        return runtime.train_and_privatize(plan, params, devices, rng)

    client()  # warm-up
    rate = _best_rate(batch, client, repeats)
    rows.append(["client updates (train+clip+noise)", p, batch, rate,
                 "yes" if rate >= GOAL_UPDATES_PER_S else "NO"])

    raw = rng.standard_normal((batch, p), dtype=np.float32)

    def local_dp_only() -> object:
        return add_gaussian_noise(clip_deltas(raw, 1.0), 1.0, 1.0, rng)

    rows.append(["device-side clip+noise only", p, batch, _best_rate(batch, local_dp_only,
                                                                      repeats), "-"])

    sim_plan = RoundPlan(round=0, model_version=0, open_s=23 * 3600.0,
                         deadline_s=23 * 3600.0 + 300.0, sampling_rate=0.1, max_examples=1000,
                         clip_norm=1.0, noise_multiplier=1.0)
    runtime.run_round(sim_plan, params, rng)  # warm-up

    def full_round() -> DeviceRoundResult:
        population.last_round[:] = -1
        return runtime.run_round(sim_plan, params, rng)

    elapsed = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = full_round()
        elapsed = min(elapsed, time.perf_counter() - t0)
    rows.append([f"full round (check-in of {n_devices:,}, q=0.1)", p, len(result.uploads),
                 len(result.uploads) / elapsed, "-"])

    uploads = rng.standard_normal((batch, p)).astype(np.float32)
    counts = np.full(batch, 8, np.int64)
    bound = noisy_norm_bound(1.0, 1.0, p)
    strategies: list[tuple[str, Callable[[], Strategy]]] = [
        ("server FedAvg", FedAvg),
        ("server FedAdam", FedAdam),
        ("server trimmed mean (β=0.1)", lambda: TrimmedMean(0.1)),
        ("server DP(NormBound(FedAvg))",
         lambda: DifferentialPrivacy(NormBound(FedAvg(), bound), 1.0, 1.0, 100)),
    ]
    for label, make in strategies:
        strategy = make()

        def aggregate(s: Strategy = strategy) -> object:
            return s.aggregate(params, uploads, counts)

        rows.append([label, p, batch, _best_rate(batch, aggregate, repeats), "-"])

    server = Server(FedAvg(), params, min_reports=1, deadline_s=300, sampling_rate=0.1,
                    max_examples=1000)
    arrival = np.full(len(result.uploads), sim_plan.open_s + 1.0)

    def receive_and_close() -> object:
        server.model_version = 0  # the uploads were made for version 0
        server.open_round(0, sim_plan.open_s)
        server.receive(result.uploads, arrival)
        outcome = server.close_round()
        assert outcome.accepted == len(result.uploads)
        return outcome

    rows.append(["server receive+validate+aggregate", p, len(result.uploads),
                 _best_rate(len(result.uploads), receive_and_close, repeats), "-"])

    columns = ["stage", "P", "batch", "updates/s", f">= {GOAL_UPDATES_PER_S:,}/s"]
    write_results("federated", columns, rows, {
        "goal_client_updates_per_s": GOAL_UPDATES_PER_S,
        "client_updates_per_s": rate, "n_parameters": p, "n_devices": n_devices,
        "task": "SyntheticRegressionTask (8 examples/device, 2 local steps) scaled to P",
        "cpus": os.cpu_count(), "quick": args.quick})
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
