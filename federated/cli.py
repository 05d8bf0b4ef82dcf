"""``stickers federated ...``: train, sweep, and the privacy calculator and calibrator."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from data import fingerprint, new_version, print_table, progress, publish_artifact
from data.cli import CLIContext, config_command, config_options, pass_cli
from federated._accounting import (
    GUARANTEE_KINDS,
    DevicePrivacyAccountant,
    PrivacyLedger,
    calibrate_noise_multiplier,
    guarantees_headline_first,
)
from federated._config import FederatedConfig, RoundConfig, SecureAggregationConfig
from federated._errors import FederatedError
from federated._publish import VersionRecords, _finite, publish_model, publish_version
from federated._strategy import available_strategies, registered_strategy
from federated._sweep import privacy_utility_sweep
from federated._task import (
    TASK_PACKAGE,
    TaskContext,
    available_tasks,
    load_task,
    project_tasks,
)
from federated._trainer import FederatedTrainer, RoundRecord

__all__ = ["device", "federated"]

_KIND = click.Choice(list(GUARANTEE_KINDS))


def _schedule_options(f: Any) -> Any:
    for opt in reversed([
        click.option("--q", "--sampling-rate", "q", type=click.FloatRange(0, 1, min_open=True),
                     default=0.01, show_default=True, help="Poisson sampling rate q."),
        click.option("--rounds", type=click.IntRange(min=1), default=100, show_default=True,
                     help="Rounds R."),
        click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     default=1e-6, show_default=True, help="Target delta."),
        click.option("--min-reports", type=click.IntRange(min=1), default=100,
                     show_default=True, help="Fewest reports a round aggregates (n_min)."),
        click.option("--max-per-day", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Uploads a device may make per day."),
        click.option("--round-interval", type=click.FloatRange(min=0, min_open=True),
                     default=1800.0, show_default=True, help="Seconds between rounds."),
        click.option("--accountant", type=click.Choice(["pld", "rdp"]), default="pld",
                     show_default=True, help="Headline accountant."),
        click.option("--corruption-rate", type=click.FloatRange(0, 0.5, max_open=True),
                     default=SecureAggregationConfig().corruption_rate, show_default=True,
                     help="γ: fraction of clients that may collude with the server; the "
                          "secure kinds count only n_min - floor(γ n_min) clients' noise."),
    ]):
        f = opt(f)
    return f


def _ledger(sigma: float, q: float, rounds: int, min_reports: int, max_per_day: int,
            round_interval: float, corruption_rate: float) -> PrivacyLedger:
    # the calculator knows no P, so it plans continuous-Gaussian rounds (secure=False);
    # their secure kinds are what secure rounds would give, under the collusion bound γ
    values: dict[str, Any] = {
        "privacy.noise_multiplier": sigma, "rounds.sampling_rate": q, "rounds.rounds": rounds,
        "rounds.min_reports": min_reports, "rounds.max_uploads_per_day": max_per_day,
        "rounds.round_interval_s": round_interval,
        "rounds.deadline_s": min(round_interval, RoundConfig().deadline_s)}
    config = FederatedConfig.load(None, **values)
    ledger = PrivacyLedger.planned_from(config, secure=False)
    return dataclasses.replace(ledger, events=tuple(
        dataclasses.replace(e, corruption_rate=corruption_rate) for e in ledger.events))


class _FederatedGroup(click.Group):
    """Reports the platform's expected failures as one line (exit 2), as the root CLI
    does for the project's own errors (``FederatedError`` has its own root)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FederatedError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group("federated", cls=_FederatedGroup)
def federated() -> None:
    """Federated training with local differential privacy (application-agnostic)."""


def round_line(rec: RoundRecord) -> str:
    """The progress line of one round: status, reports, the devices' mean local loss when
    the task reports one (a task whose devices report none shows no "loss nan"), ε so far."""
    loss = f", loss {rec.loss:.4g}" if math.isfinite(rec.loss) else ""
    return (f"round {rec.round} {rec.status}: {rec.accepted} in / {rec.dropped} dropped"
            f"{loss}, ε {rec.epsilon:.3g}")


@federated.command("privacy")
@click.option("--sigma", "--noise-multiplier", "sigma", type=click.FloatRange(min=0),
              required=True, help="Noise multiplier σ (noise std = σ·C).")
@click.option("--clip-norm", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Clip norm C (recorded; ε does not depend on it).")
@_schedule_options
@click.option("--json", "as_json", is_flag=True, help="Print the privacy.json record.")
def privacy_command(sigma: float, clip_norm: float, q: float, rounds: int, delta: float,
                    min_reports: int, max_per_day: int, round_interval: float, accountant: str,
                    corruption_rate: float, as_json: bool) -> None:
    """Compute every kind of (ε, δ) for a planned schedule (an accountant calculator)."""
    acc = DevicePrivacyAccountant(delta=delta, accountant=accountant)  # type: ignore[arg-type]
    ledger = _ledger(sigma, q, rounds, min_reports, max_per_day, round_interval,
                     corruption_rate)
    report = acc.report(ledger, clip_norm=clip_norm)
    if as_json:
        click.echo(json.dumps(_finite(report), indent=2, sort_keys=True))
        return
    rows = []
    for kind, g, label in guarantees_headline_first(report):
        rdp = g["epsilon_rdp"]
        rows.append([kind, label, g["epsilon_pld"], "-" if rdp is None else rdp, g["delta"],
                     g["assumption"]])
    print_table(f"privacy: σ={sigma:g} q={q:g} R={rounds} n_min={min_reports} "
                f"(≤{report['max_participations_per_device']} uploads/device); headline "
                f"first: the strongest guarantee whose assumption the platform meets",
                ["kind", "holds", "ε (PLD)", "ε (RDP)", "δ", "assumption"], rows)


@federated.command("calibrate")
@click.option("--target-epsilon", type=click.FloatRange(min=0, min_open=True), required=True,
              help="The ε to reach.")
@click.option("--kind", type=_KIND, default="secure_sum", show_default=True,
              help="Which guarantee the target applies to.")
@_schedule_options
def calibrate_command(target_epsilon: float, kind: str, q: float, rounds: int, delta: float,
                      min_reports: int, max_per_day: int, round_interval: float,
                      accountant: str, corruption_rate: float) -> None:
    """Find the smallest noise multiplier σ whose ε stays within the target."""
    acc = DevicePrivacyAccountant(delta=delta, accountant=accountant)  # type: ignore[arg-type]
    ledger = _ledger(1.0, q, rounds, min_reports, max_per_day, round_interval,
                     corruption_rate)
    sigma = calibrate_noise_multiplier(ledger, target_epsilon, kind=kind,  # type: ignore[arg-type]
                                       accountant=acc)
    eps = acc.epsilon(ledger.with_noise_multiplier(sigma), kind)  # type: ignore[arg-type]
    print_table("calibration", ["kind", "target ε", "σ", "ε at σ", "δ", "q", "rounds"],
                [[kind, target_epsilon, sigma, eps, delta, q, rounds]])
    click.echo(f"{sigma:.6g}")


def _resolve_task_name(name: str | None) -> str:
    """``--task`` or, when omitted, the project's single task (its task package's or an
    entry point's; the platform's own examples do not count)."""
    if name is not None:
        return name
    project = project_tasks()
    if len(project) == 1:
        return project[0]
    raise click.UsageError(
        f"--task is required: the project has {len(project)} tasks "
        f"({', '.join(project) or 'none'}); every task: {', '.join(available_tasks())}")


def _key_values(pairs: tuple[str, ...], shape: str, hint: str) -> dict[str, str]:
    """``("a=1", "b=x")`` → ``{"a": "1", "b": "x"}``; a pair without ``=`` or a name is a
    usage error naming ``shape`` and the option ``hint``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} should {shape}", param_hint=hint)
        out[key] = value
    return out


def _task_options(pairs: tuple[str, ...]) -> dict[str, str]:
    return _key_values(pairs, "look like key=value", "-o")


def _train_options(f: Any) -> Any:
    options: list[Callable[[Any], Any]] = [
        click.option("--task", "task_name", default=None,
                     help=f"Task name (a module of the package {TASK_PACKAGE!r}, or an "
                          "entry point); default: the project's one task."),
        click.option("-o", "--task-option", "task_options", multiple=True,
                     help="key=value passed to the task factory (repeatable)."),
        config_options,
        click.option("--rounds", type=click.IntRange(min=1), help="Rounds R."),
        click.option("--q", "--sampling-rate", "q", type=click.FloatRange(0, 1, min_open=True),
                     help="Poisson sampling rate q."),
        click.option("--clip-norm", type=click.FloatRange(min=0, min_open=True),
                     help="Clip norm C."),
        click.option("--min-reports", type=click.IntRange(min=1), help="n_min per round."),
        click.option("--strategy", type=click.Choice(available_strategies()),
                     help="Aggregation strategy (a registered one)."),
        click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="Target delta."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _load_config(config_path: Path | None, settings: tuple[str, ...] = (),
                 **overrides: Any) -> FederatedConfig:
    mapping = {"rounds": "rounds.rounds", "q": "rounds.sampling_rate",
               "clip_norm": "privacy.clip_norm", "min_reports": "rounds.min_reports",
               "strategy": "strategy.name", "delta": "privacy.delta",
               "sigma": "privacy.noise_multiplier", "target_epsilon": "privacy.target_epsilon",
               "kind": "privacy.budget_kind"}
    return FederatedConfig.load(config_path, overrides=settings,
                                **{mapping[k]: v for k, v in overrides.items()})


federated.add_command(config_command(lambda _cli, path, settings: _load_config(path, settings),
                                     "a federated run"))


@federated.command("train")
@_train_options
@click.option("--target-epsilon", type=click.FloatRange(min=0, min_open=True),
              help="Privacy budget ε (the run refuses to exceed it).")
@click.option("--sigma", "--noise-multiplier", "sigma", type=click.FloatRange(min=0),
              help="Noise multiplier σ.")
@click.option("--kind", type=_KIND, help="Guarantee the budget applies to.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Checkpoint directory (default: <var>/federated/checkpoints/<task>-<seed>).")
@pass_cli
def train_command(cli: CLIContext, task_name: str | None, task_options: tuple[str, ...],
                  config_path: Path | None, settings: tuple[str, ...], seed: int,
                  checkpoint_dir: Path | None, **overrides: Any) -> None:
    """Train a task federatedly with local DP and publish a versioned model artifact."""
    config = _load_config(config_path, settings, **overrides)
    task_name = _resolve_task_name(task_name)
    task = load_task(task_name, TaskContext(var=cli.var, seed=seed,
                                            options=_task_options(task_options)))
    checkpoint_dir = checkpoint_dir or cli.var / "federated" / "checkpoints" / f"{task.name}-{seed}"
    with progress(f"federated {task.name}", total=config.rounds.rounds,
                  show=cli.show_progress) as bar:
        def on_round(rec: RoundRecord) -> None:
            bar.update(description=round_line(rec))
            bar.advance()
        trainer = FederatedTrainer(task, config, checkpoint_dir=checkpoint_dir,
                                   on_round=on_round)
        if trainer.config.privacy.target_epsilon is not None:
            trainer.affordable_rounds()  # refuse before the progress bar moves
        trainer.fit(np.random.default_rng(seed))
    out = publish_model(trainer, task, cli.var / task.name, seed=seed,
                        inputs={"task_options": _task_options(task_options)})
    abandoned = [h for h in trainer.history_ if h.status == "abandoned"]
    rows: list[list[Any]] = [["artifact", str(out)], ["rounds run", len(trainer.history_)],
                             ["rounds abandoned (fewer than min_reports in time)",
                              len(abandoned)],
                             ["model version", trainer.model_version_]]
    rows += [[name, value] for name, value in trainer.metrics_.items()]
    rows += [[f"ε {kind} ({label}, δ={g.get('delta')})",
              g["epsilon"] if g.get("epsilon") is not None else math.inf]
             for kind, g, label in guarantees_headline_first(trainer.privacy_)]
    print_table(f"federated {task.name}: {trainer.status_}", ["", "value"], rows)


@federated.command("sweep")
@_train_options
@click.option("--sigmas", default="0.5,1,2,4", show_default=True,
              help="Comma-separated noise multipliers.")
@click.option("--no-baseline", is_flag=True, help="Skip the non-private point.")
@pass_cli
def sweep_command(cli: CLIContext, task_name: str | None, task_options: tuple[str, ...],
                  config_path: Path | None, settings: tuple[str, ...], seed: int,
                  sigmas: str, no_baseline: bool, **overrides: Any) -> None:
    """Privacy–utility sweep over σ: ε of each kind and held-out metrics per setting."""
    try:
        values = [float(s) for s in sigmas.split(",") if s.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{sigmas!r}: {exc}", param_hint="--sigmas") from exc
    config = _load_config(config_path, settings, **overrides)
    task_name = _resolve_task_name(task_name)
    context = TaskContext(var=cli.var, seed=seed, options=_task_options(task_options))
    name = load_task(task_name, context).name
    resolved: str = task_name
    n = len(values) + (0 if no_baseline else 1)
    with progress(f"sweep {name}", total=n, show=cli.show_progress) as bar:
        points = privacy_utility_sweep(lambda: load_task(resolved, context), config, values,
                                       seed=seed, include_non_private=not no_baseline,
                                       on_point=lambda _: bar.advance())
    destination = cli.var / "federated" / "sweeps" / name / new_version()
    with publish_artifact(destination, kind="federated-sweep",
                          parameters={"task": name, "sigmas": values, "seed": seed,
                                      "config": config.model_dump(mode="json")}) as writer:
        writer.write_json("sweep.json", _finite(points))
        writer.metrics = {"points": len(points)}
    metric_names = sorted({k for p in points for k in p["metrics"]})
    private = next((p for p in points if p.get("guarantees")), None)
    ordered = ([(k, label) for k, _, label in guarantees_headline_first(private)]
               if private else [(k, k) for k in GUARANTEE_KINDS])
    # One column per setting, one row per ε kind and metric: a sweep has a few settings
    # and dozens of metrics, so the other way round does not fit a terminal.
    columns = [f"σ={p['noise_multiplier']:g}" if p["noise_multiplier"] is not None
               else "no noise" for p in points]
    rows = [[f"ε {k} ({label})", *((p["epsilon"] or {}).get(k, math.inf) for p in points)]
            for k, label in ordered]
    rows += [[m, *(p["metrics"].get(m, math.nan) for p in points)] for m in metric_names]
    print_table(f"sweep {name} → {destination}", ["", *columns], rows)


@federated.command("strategies")
def strategies_command() -> None:
    """List registered aggregation strategies, whether each aggregates a secure sum, and
    its options with their defaults."""
    rows = []
    for name in available_strategies():
        entry = registered_strategy(name)
        options = ", ".join(f"{k}={v!r}" for k, v in entry.options().model_dump().items())
        rows.append([name, "yes" if entry.sum_based else "no", options])
    print_table("registered strategies (config: strategy.name)",
                ["name", "secure sum", "options"], rows)


@federated.command("tasks")
def tasks_command() -> None:
    """List registered federated tasks."""
    for name in available_tasks():
        click.echo(name)


# ------------------------------------------------------------------ device commands


@click.group("device", cls=_FederatedGroup)
def device() -> None:
    """Real device clients: secure rounds over HTTP with anonymous admission tokens."""


@device.command("start-model")
@click.option("--task", "task_name", required=True,
              help="Task whose initial parameters start the lineage.")
@click.option("--task-option", "task_options", multiple=True, metavar="KEY=VALUE",
              help="Task option (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--latest/--no-latest", default=True, show_default=True,
              help="Point the task's LATEST at the new version.")
@pass_cli
def device_start_model_command(cli: CLIContext, task_name: str, task_options: tuple[str, ...],
                               seed: int, latest: bool) -> None:
    """Publish the task's initial parameters as a new model version: the root of a fresh
    lineage that no round trained yet (privacy.json: 0 rounds), for secure rounds over
    HTTP to start from."""
    task = load_task(task_name, TaskContext(var=cli.var, seed=seed,
                                            options=_task_options(task_options)))
    theta = np.asarray(task.initial_parameters(), np.float32)
    privacy = {"enabled": True, "rounds": 0, "epsilon": {}, "guarantees": {},
               "note": "initial parameters: no federated round has trained this version; "
                       "rounds that train it are accounted by the server's privacy ledger"}
    records = VersionRecords(
        parameters={"task": task.name, "n_parameters": task.n_parameters, "seed": seed,
                    "start_model": "initial_parameters"},
        input_fingerprint=fingerprint({"task": task.name, "options": list(task_options)}),
        privacy=privacy, rounds=[], metrics={"model_version": 0, "rounds_run": 0})
    destination = publish_version(cli.var / task.name, theta,
                                  lambda directory: task.export(theta, directory), records,
                                  kind=task.name, update_latest=latest)
    click.echo(f"published {destination} (initial parameters, P={task.n_parameters}"
               f"{', LATEST' if latest else ''})")


@device.command("supervise", context_settings={"ignore_unknown_options": True})
@click.option("--url", required=True, help="Where the server answers (http://host:port).")
@click.option("--kill-round", type=click.IntRange(min=0), default=None,
              help="kill -9 the server's process group while this round is open ...")
@click.option("--kill-stage", default="mask", show_default=True,
              type=click.Choice(["checkin", "advertise", "share", "mask", "consistency",
                                 "unmask"]),
              help="... in this stage, then start it again.")
@click.option("--restart-after", type=click.FloatRange(min=0), default=5.0,
              show_default=True, help="Seconds between the kill and the restart.")
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
              help="Environment of the server command (repeatable).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Append the server's output here.")
@click.option("--events", "events_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Append the kill/restart events here (JSON lines).")
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def device_supervise_command(url: str, kill_round: int | None, kill_stage: str,
                             restart_after: float, env_pairs: tuple[str, ...],
                             log_path: Path | None, events_path: Path | None,
                             argv: tuple[str, ...]) -> None:
    """Run a server command in its own process group until SIGTERM or Ctrl-C (then stop
    it cleanly); with --kill-round, SIGKILL the whole group (master and workers) when
    that round is open in --kill-stage, and start the same command again on the same
    files: the crash test of a device run (start it, then `device run`)."""
    import signal
    import threading

    from federated._device_harness import ServerSupervisor, kill_and_restart

    env = _key_values(env_pairs, "be NAME=VALUE", "--env")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def emit(event: dict[str, Any]) -> None:
        line = json.dumps(event)
        click.echo(line)
        if events_path is not None:
            with events_path.open("a") as out:
                out.write(line + "\n")

    supervisor = ServerSupervisor(list(argv), env, log_path)
    try:
        emit({"event": "started", "pid": supervisor.start(), "at": time.time()})
        supervisor.wait_ready(url)
        if kill_round is not None:
            event = kill_and_restart(supervisor, url, kill_round, kill_stage,
                                     restart_after_s=restart_after, should_stop=stop.is_set)
            emit({"event": "killed_and_restarted", **event} if event is not None
                 else {"event": "not_killed", "round": kill_round, "stage": kill_stage})
        while not stop.wait(1.0):
            if supervisor.process is not None and supervisor.process.poll() is not None:
                emit({"event": "exited", "returncode": supervisor.process.returncode})
                raise click.ClickException("the server exited on its own; see its log")
    finally:
        supervisor.stop()
        emit({"event": "stopped", "at": time.time()})


@device.command("run")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="Server with secure rounds enabled.")
@click.option("--n", "n_devices", type=click.IntRange(min=1), default=200, show_default=True,
              help="Devices (one thread each).")
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True,
              help="Rounds to take part in (the server's tokens_per_day must allow them).")
@click.option("--task", "task_name", default="synthetic", show_default=True,
              help="Task whose local training each device runs on its own data.")
@click.option("--task-option", "task_options", multiple=True, metavar="KEY=VALUE",
              help="Task option (repeatable), e.g. n_features=64.")
@click.option("--drop-after-share", type=click.FloatRange(0, 1), default=0.2,
              show_default=True, help="Fraction leaving right after sharing keys.")
@click.option("--drop-after-mask", type=click.FloatRange(0, 1), default=0.1,
              show_default=True, help="Fraction leaving right after the masked upload.")
@click.option("--silent-dropouts", is_flag=True,
              help="Drop-outs go silent (each stage then waits for its deadline) instead of "
                   "telling the server they left.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Device stores (default: var/devices).")
@click.option("--evaluate/--no-evaluate", default=False, show_default=True,
              help="Task metrics of the server's model before and after the run.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the rounds as JSON here.")
@pass_cli
def device_run_command(cli: CLIContext, url: str, n_devices: int, rounds: int, task_name: str,
                       task_options: tuple[str, ...], drop_after_share: float,
                       drop_after_mask: float, silent_dropouts: bool, seed: int,
                       workdir: Path | None,
                       evaluate: bool, json_path: Path | None) -> None:
    """Run a population of real device clients against a server for some rounds.

    A task with a device app (``task.device_app``) runs it on every device: each keeps
    its private data in its own store, serves its user there and trains from it; with
    ``--evaluate`` the held-out devices' apps also report their own hit rate (hits /
    impressions) before and after."""
    import base64

    from federated._device_population import PopulationRound, run_population
    from federated._transport import HttpTransport, TransportError

    context = TaskContext(var=cli.var, seed=seed, options=_task_options(task_options))
    task = load_task(task_name, context)
    control = HttpTransport(url)

    def server_metrics() -> dict[str, float]:
        body = control.request("GET", "/v1/secure/model").body
        params = np.frombuffer(base64.b64decode(body["parameters"]), "<f4").astype(np.float32)
        return task.evaluate(params) if params.shape == (task.n_parameters,) else {}

    try:
        before = server_metrics() if evaluate else {}
    except TransportError as exc:
        raise click.ClickException(f"{url}: {exc}") from exc
    with progress(f"device run: {n_devices} devices", total=rounds,
                  show=cli.show_progress) as bar:
        done: list[PopulationRound] = []

        def on_round(r: PopulationRound) -> None:
            bar.advance()
            done.append(r)
            if json_path is not None:  # each round as it ends: a long run can be cut short
                json_path.write_text(json.dumps({"rounds": [x.to_dict() for x in done],
                                                 "before": before}, indent=1))

        app_metrics: dict[str, dict[str, float]] = {}
        records = run_population(url, task, n=n_devices, rounds=rounds,
                                 workdir=workdir or cli.var / "devices",
                                 drop_after_share=drop_after_share,
                                 drop_after_mask=drop_after_mask, seed=seed,
                                 announce_leave=not silent_dropouts, on_round=on_round,
                                 app_metrics=app_metrics if evaluate else None)
    after = server_metrics() if evaluate else {}
    print_table(f"device run against {url}",
                ["round", "status", "no data", "joined", "completed", "left@share",
                 "left@mask", "other", "acked", "survivors", "exact sum", "s", "kB/device",
                 "app uses", "app s"],
                [[r.round, r.status, r.no_data, r.participants, r.completed,
                  r.dropped_after_share, r.dropped_after_mask, r.other,
                  r.masked_acknowledged, r.n_survivors, r.exact_sum, round(r.seconds, 1),
                  round(r.bytes_per_device / 1024, 1), r.app_uses, round(r.app_seconds, 1)]
                 for r in records])
    if evaluate:
        for name in sorted(set(before) | set(after)):
            click.echo(f"{name}: before {before.get(name, math.nan):.4f}  after "
                       f"{after.get(name, math.nan):.4f}")
        # the devices' apps measuring themselves (counts summed over devices)
        on_devices = {when: dict(counts) for when, counts in app_metrics.items()}
        for counts in on_devices.values():
            if counts.get("impressions"):
                counts["rate"] = counts.get("hits", 0.0) / counts["impressions"]
        for name in sorted(set(on_devices.get("before", {})) | set(on_devices.get("after", {}))):
            click.echo(f"on the devices, {name}: before "
                       f"{on_devices.get('before', {}).get(name, math.nan):.4f}  after "
                       f"{on_devices.get('after', {}).get(name, math.nan):.4f}")
    else:
        on_devices = {}
    if json_path is not None:
        json_path.write_text(json.dumps({"rounds": [r.to_dict() for r in records],
                                         "before": before, "after": after,
                                         "on_devices": on_devices}, indent=1))
