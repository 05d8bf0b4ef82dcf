"""A population of real device clients (threads) against a server (the `device run` command).

Each device is a :class:`DeviceClient` with its own SQLite store and HTTP connection.
When the task can run as an app on the device (``task.device_app(device, path)``, a
:class:`federated._device_app.DeviceApp`), each device runs it: the app keeps its private
data in the device's store, downloads what it needs (ETag), is used between rounds (step
``r`` of the run's ``rounds`` steps), and its local training reads the store — the task
object is not consulted again. Otherwise the device's local training is the task's
``local_train`` on that device's index (the task holds the simulated logs).
Per round, every device checks eligibility and takes part; a scripted fraction leaves
right after sharing keys and another right after its masked upload. When the round
closes, the runner checks the server's modular sum against the sum of the reports whose
masked upload the server acknowledged, computed in-process, bit for bit.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from federated._device_app import DeviceApp
from federated._device_client import DeviceClient, DeviceStore, RoundParticipation
from federated._task import FederatedTask
from federated._trainer import modular_sum
from federated._transport import HttpTransport, TransportError

__all__ = ["APP_THREADS", "PopulationRound", "run_population"]

APP_THREADS = 4
"""Threads the devices' apps run on between rounds (their work is CPU in this process:
hundreds of threads would only contend for it)."""


@dataclass
class PopulationRound:
    """One round as the population saw it, and the exact-sum check.

    Attributes
    ----------
    round : int
    status : str
        The server's outcome (``aggregated`` / ``abandoned``).
    participants : int
        Devices that took part (checked in).
    completed, dropped_after_share, dropped_after_mask, other : int
        How their participation ended.
    masked_acknowledged : int
        Devices whose masked input the server acknowledged.
    n_survivors : int or None
        The server's count of summed inputs.
    exact_sum : bool or None
        The server's sum equals the in-process sum of the acknowledged reports (None when
        abandoned).
    seconds : float
        Wall time from the first check-in to the outcome.
    bytes_per_device : float
        Mean bytes a participating device sent plus received in the round.
    message : str
    statuses : dict
        How many participations ended with each status.
    unscripted_ends : dict
        Participations that ended before the last stage without a scripted drop-out, by
        the reason (the server's problem slug: ``dropped_out`` = missed a stage deadline,
        ``round_closed``; ``unreachable``; ``device_deadline``).
    transient_failures : int
        Requests that found the server unreachable after the transport's retries and
        were tried again.
    no_data : int
        Devices with nothing to train on this round (they sit out, keeping their token).
    app_uses : int
        Uses the devices' apps logged in their stores before this round (0 without apps).
    app_bytes_per_device : float
        Mean bytes a device's app downloaded before the round (its bundle when it changed).
    app_seconds : float
        Wall time of the devices' app use before the round (typing, rows; before the
        round's check-in opened, so not in ``seconds``).
    """

    round: int
    status: str
    participants: int
    completed: int
    dropped_after_share: int
    dropped_after_mask: int
    other: int
    masked_acknowledged: int
    n_survivors: int | None
    exact_sum: bool | None
    seconds: float
    bytes_per_device: float
    message: str = ""
    statuses: dict[str, int] = field(default_factory=dict)
    unscripted_ends: dict[str, int] = field(default_factory=dict)
    transient_failures: int = 0
    no_data: int = 0
    app_uses: int = 0
    app_bytes_per_device: float = 0.0
    app_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def _wait(transport: HttpTransport, predicate: Callable[[dict[str, Any]], bool], path: str,
          timeout_s: float) -> dict[str, Any]:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        try:
            body = transport.request("GET", path).body
            if predicate(body):
                return body
        except TransportError as exc:
            if exc.status not in (404, None):
                raise
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout_s:.0f} s for {path}")


def _wait_decided(transport: HttpTransport, last: int, timeout_s: float) -> None:
    """Wait until the server opens a round after ``last`` (it does once ``last``'s
    candidate is decided) or answers that none can open (budget spent, ``max_rounds``);
    a 404 saying the candidate is still being decided means wait."""
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        try:
            if int(transport.request("GET", "/v1/secure/round").body["round"]) > last:
                return
        except TransportError as exc:
            if exc.status == 404 and "being decided" not in exc.detail:
                return
        time.sleep(0.5)


def run_population(url: str, task: FederatedTask, *, n: int, rounds: int, workdir: Path,
                   drop_after_share: float = 0.2, drop_after_mask: float = 0.1,
                   seed: int = 0, timeout_s: float = 30.0, round_timeout_s: float = 600.0,
                   max_uploads_per_day: int | None = None, announce_leave: bool = True,
                   poll_interval_s: float = 1.0,
                   on_round: Callable[[PopulationRound], None] | None = None,
                   app_metrics: dict[str, dict[str, float]] | None = None
                   ) -> list[PopulationRound]:
    """Run ``n`` device clients for ``rounds`` rounds against the server at ``url``.

    Parameters
    ----------
    url : str
        ``http://host:port`` of a server with secure rounds enabled.
    task : FederatedTask
        Supplies each device's local training (device i trains on the task's device i).
    n : int
        Devices (threads); at most ``task.n_devices``.
    rounds : int
        Rounds to take part in.
    workdir : Path
        Each device's SQLite store goes here.
    drop_after_share, drop_after_mask : float
        Fractions of each round's participants that leave right after sharing keys, and
        right after their masked upload (drawn per round from ``seed``).
    seed : int
        Drop-out draws and the task's training randomness (the DP noise and the protocol
        secrets come from the OS CSPRNG, on each device).
    timeout_s : float
        Per-request HTTP timeout.
    round_timeout_s : float
        How long to wait for a round to open or close.
    max_uploads_per_day : int, optional
        Each device's own daily cap (default: ``rounds``, a run compresses days).
    poll_interval_s : float
        Each device's wait between polls while the server says "not yet".
    announce_leave : bool
        Scripted drop-outs tell the server they left (else they go silent and each
        stage waits for its deadline).
    on_round : callable, optional
        Called with each finished round.
    app_metrics : dict, optional
        With device apps, filled with ``before`` / ``after``: the sum over devices of
        each app's own metric counts (``DeviceApp.evaluate``), each device evaluating the
        model it downloaded before the first round and after the last round's candidate
        was decided.
    """
    if not 1 <= n <= task.n_devices:
        raise ValueError(f"n={n} devices should be in [1, task.n_devices={task.n_devices}]")
    if not (drop_after_share >= 0 and drop_after_mask >= 0
            and drop_after_share + drop_after_mask < 1):
        raise ValueError(f"drop_after_share={drop_after_share} + drop_after_mask="
                         f"{drop_after_mask} should be in [0, 1)")
    rng = np.random.default_rng(seed)
    lock = threading.Lock()
    task_rng = np.random.default_rng(rng.integers(2**63))

    def trainer_for(i: int) -> Callable[[np.ndarray], np.ndarray | None]:
        def train(params: np.ndarray) -> np.ndarray | None:
            if params.shape != (task.n_parameters,):
                raise ValueError(f"the server's model has {params.shape[0]} parameters, the "
                                 f"task {task.n_parameters}")
            with lock:  # the task's vectorised trainer is not re-entrant
                result = task.local_train(params, np.array([i], np.int64), task_rng)
            # a device with no training example (e.g. held out for validation) sits out
            return None if int(result.n_examples[0]) == 0 else result.deltas[0]
        return train

    workdir.mkdir(parents=True, exist_ok=True)
    factory = getattr(task, "device_app", None)
    paths = [workdir / f"device-{i:05d}.sqlite3" for i in range(n)]
    apps: list[DeviceApp] | None = ([factory(i, paths[i]) for i in range(n)]
                                    if callable(factory) else None)
    devices = [DeviceClient(HttpTransport(url, timeout_s=timeout_s), DeviceStore(paths[i]),
                            apps[i].train if apps is not None else trainer_for(i),
                            poll_interval_s=poll_interval_s,
                            max_uploads_per_day=max_uploads_per_day or rounds,
                            announce_leave=announce_leave)
               for i in range(n)]

    def app_evaluate(i: int) -> dict[str, float]:
        assert apps is not None
        version, params = devices[i].sync_model()
        apps[i].sync(devices[i].transport)  # the app computes only with its own bundle
        return apps[i].evaluate(params, version)

    def evaluate_apps(pool: ThreadPoolExecutor) -> dict[str, float]:
        total: dict[str, float] = {}
        for counts in pool.map(app_evaluate, range(n)):
            for name, value in counts.items():
                total[name] = total.get(name, 0.0) + value
        return total

    def use_app(i: int, step: int) -> tuple[int, int]:
        """Device i's user uses the app for step ``step`` with the model the device holds
        (downloaded if newer), before the device checks in; (uses, bytes)."""
        assert apps is not None
        d = devices[i]
        before = d.transport.bytes_received + d.transport.bytes_sent
        version, params = d.sync_model()
        apps[i].sync(d.transport)
        uses = apps[i].use(step, rounds, params, version)
        return uses, d.transport.bytes_received + d.transport.bytes_sent - before

    def take_part(i: int, drop: str | None) -> RoundParticipation:
        return devices[i].participate(drop_after=drop, deadline_s=round_timeout_s)

    control = HttpTransport(url, timeout_s=timeout_s)
    # one thread per device: a device in a round holds its thread until the round ends,
    # so fewer threads than eligible devices would cap the cohort at the pool size; the
    # apps' own work (CPU in this one process) runs on a few threads, not 1 per device
    with ThreadPoolExecutor(n) as pool, ThreadPoolExecutor(min(n, APP_THREADS)) as app_pool:
        list(pool.map(lambda d: (d.enrol(), d.refill_tokens(rounds)), devices))
        if apps is not None and app_metrics is not None:
            app_metrics["before"] = evaluate_apps(app_pool)
        out: list[PopulationRound] = []
        for step in range(rounds):
            app_uses, app_bytes, app_started = [0] * n, [0] * n, time.monotonic()
            if apps is not None:  # the users use their apps, then the devices check in
                for i, (uses, nbytes) in enumerate(app_pool.map(use_app, range(n),
                                                                [step] * n)):
                    app_uses[i], app_bytes[i] = uses, nbytes
            app_seconds = time.monotonic() - app_started
            info = _wait(control, lambda b: b["stage"] == "checkin" and b[
                "stage_ends_in_s"] > 2.0, "/v1/secure/round", round_timeout_s)
            round_ = int(info["round"])
            draw = rng.random(n)
            drops = np.where(draw < drop_after_share, "share",
                             np.where(draw < drop_after_share + drop_after_mask, "mask", ""))
            for d in devices:
                d.transport.bytes_sent = d.transport.bytes_received = 0
            started = time.monotonic()
            transient_before = sum(d.transient_failures for d in devices)
            futures = [pool.submit(take_part, i, str(drops[i]) or None) for i in range(n)]
            results: list[RoundParticipation] = [f.result() for f in futures]
            closed = _wait(control, lambda b: b["status"] != "open",
                           f"/v1/secure/rounds/{round_}", round_timeout_s)
            seconds = time.monotonic() - started
            took_part = [r.round == round_ and r.status not in (
                "refused", "no_round", "no_token", "ineligible") for r in results]
            joined = [r for r, ok in zip(results, took_part, strict=True) if ok]
            acked = [r for r in joined if r.masked_sent and r.report is not None]
            outcome = closed.get("outcome") or {}
            exact = None
            if closed["status"] == "aggregated" and acked:
                total = np.frombuffer(base64.b64decode(outcome["sum"]), "<u4")
                exact = bool(np.array_equal(total, modular_sum(np.stack(
                    [r.report for r in acked if r.report is not None]), 32)))
            statuses: dict[str, int] = {}
            ends: dict[str, int] = {}
            for r in results:
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status not in ("completed", "ineligible") and r.reason != "scripted":
                    key = r.reason or r.status
                    ends[key] = ends.get(key, 0) + 1
            transient = sum(d.transient_failures for d in devices) - transient_before
            traffic = [d.transport.bytes_sent + d.transport.bytes_received
                       for d, ok in zip(devices, took_part, strict=True) if ok]
            record = PopulationRound(
                round=round_, status=closed["status"], participants=len(joined),
                completed=sum(r.status == "completed" for r in joined),
                dropped_after_share=sum(r.status == "dropped" and r.last_stage == "share"
                                        for r in joined),
                dropped_after_mask=sum(r.status == "dropped" and r.last_stage == "mask"
                                       for r in joined),
                other=sum(r.status not in ("completed", "dropped") for r in joined),
                masked_acknowledged=len(acked), n_survivors=outcome.get("n_survivors"),
                exact_sum=exact, seconds=seconds,
                bytes_per_device=float(np.mean(traffic)) if traffic else 0.0,
                message=str(outcome.get("message", "")), statuses=statuses,
                unscripted_ends=ends, transient_failures=transient,
                no_data=sum(r.status == "ineligible" and r.detail == "nothing to train on"
                            for r in results),
                app_uses=sum(app_uses), app_bytes_per_device=float(np.mean(app_bytes)),
                app_seconds=app_seconds)
            out.append(record)
            if on_round is not None:
                on_round(record)
        if apps is not None and app_metrics is not None:
            last = out[-1].round if out else -1
            # the last round's candidate is decided when the next round opens (or none
            # can open): evaluate the model the server serves then
            _wait_decided(control, last, round_timeout_s)
            app_metrics["after"] = evaluate_apps(app_pool)
    for d in devices:
        d.transport.close()
        d.store.close()
    for app in apps or []:
        app.close()
    control.close()
    return out
