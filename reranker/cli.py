"""``stickers reranker ...``: export, score, local training, bundles, the central reference.

The commands that build the sticker-row task (``train-local``, ``train-central``,
``evaluate``) take ``--config FILE --set section.key=value`` (a :class:`RowTaskConfig`,
through the shared :class:`data.ComponentConfig` base; their flags win over both) and
``--print-config`` prints the effective config and stops; ``stickers reranker config
show`` prints it without a command's flags.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from candidate_gen import Stage1Artifact
from data import print_table
from data.cli import CLIContext, config_command, config_options, pass_cli
from federated import TaskContext, VersionRecords, privacy_headline
from reranker._artifact import RerankerArtifact
from reranker._context import RankingContext
from reranker._local import fold_in
from reranker._model import initial_parameters
from reranker._onnx import OnnxScorer, export_onnx
from reranker._row_task import RowTask, RowTaskConfig, make_row_task
from reranker._suggest import BUNDLE_BUDGET_BYTES, Suggester

__all__ = ["epsilon_headline", "reranker"]

EVALUATE_DEVICES = 3000
"""Validation devices of ``reranker evaluate`` when neither a flag nor the config sets it."""


@click.group("reranker")
def reranker() -> None:
    """The on-device reranker: ONNX export, scoring, local training, device bundles."""


reranker.add_command(config_command(
    lambda _cli, path, settings: RowTaskConfig.load(path, overrides=settings),
    "the sticker-row task (what `federated train -o key=value` sets)"))


def task_config_options(f: Any) -> Any:
    """``--config FILE``, ``--set K=V`` and ``--print-config`` of a command building the task."""
    f = click.option("--print-config", is_flag=True,
                     help="Print the effective task config (TOML) and stop.")(f)
    return config_options(f)


def _task_config(config_path: Path | None, settings: tuple[str, ...], print_config: bool,
                 command_defaults: dict[str, Any] | None = None, **flags: Any
                 ) -> RowTaskConfig:
    """Defaults, then the file, then ``--set``, then the command's flags (None: unset).

    ``command_defaults`` are the command's own defaults of fields that neither the file,
    ``--set`` nor a flag sets. With ``--print-config`` the effective config is printed and
    the command stops.
    """
    config = RowTaskConfig.load(config_path, overrides=settings, **flags)
    unset = {key: value for key, value in (command_defaults or {}).items()
             if key not in config.model_fields_set}
    if unset:
        config = RowTaskConfig.from_dict({**config.model_dump(), **unset})
    if print_config:
        click.echo(config.to_toml(), nl=False)
        raise SystemExit(0)
    return config


def _task(cli: CLIContext, config: RowTaskConfig, **options: object) -> RowTask:
    """The sticker-row task for ``config``; ``options`` are the task's non-config options."""
    return make_row_task(TaskContext(var=cli.var, seed=config.seed,
                                     options={k: str(v) for k, v in options.items()}), config)


@reranker.command("export")
@click.option("--version", "version", default="latest", show_default=True,
              help="Reranker version, or 'initial' for the untrained weights.")
@click.option("--stage1", "stage1_version", default="latest", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write model.onnx.")
@pass_cli
def export_cmd(cli: CLIContext, version: str, stage1_version: str, out: Path) -> None:
    """Export a reranker version's ONNX model (checked with onnx.checker) to a file."""
    if version == "initial":
        stage1 = Stage1Artifact.load(cli.var, stage1_version)
        layout = RankingContext.build(stage1).layout
        model = export_onnx(initial_parameters(layout), layout, version="initial")
        payload = model.SerializeToString()
    else:
        payload = RerankerArtifact.load(cli.var, version).model_bytes
    out.write_bytes(payload)
    scorer = OnnxScorer(payload)
    print_table("exported reranker", ["field", "value"], [
        ("path", str(out)), ("bytes", len(payload)), ("version", scorer.version or version),
        ("inputs", ", ".join(i.name for i in scorer.session.get_inputs())),
        ("n_factors", scorer.layout.n_factors),
        ("n_keyword_features", scorer.layout.n_keyword_features)])


@reranker.command("score")
@click.option("--text", required=True, help="Text typed so far.")
@click.option("--lang", "language", required=True, help="Language (e.g. ja, en, th).")
@click.option("--cluster", "cluster_id", type=int, default=None, help="Cluster id.")
@click.option("--user", "user_id", type=int, default=None,
              help="Simulated user: their cluster and on-device fold-in embedding.")
@click.option("--limit", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--version", "version", default="latest", show_default=True)
@pass_cli
def score_cmd(cli: CLIContext, text: str, language: str, cluster_id: int | None,
              user_id: int | None, limit: int, version: str) -> None:
    """Rank stickers for TEXT as a phone would (ONNX), optionally for a simulated user."""
    suggester = Suggester.load(cli.var, reranker_version=version)
    embedding = None
    if user_id is not None:
        cluster_id = int(suggester.context.stage1.cluster_of(user_id))
        embedding = _fold_in_user(suggester, user_id)
    if cluster_id is None:
        raise click.UsageError("give --cluster or --user")
    t0 = time.perf_counter()
    rows = suggester.suggest(language=language, text=text, cluster_id=cluster_id,
                             user_embedding=embedding, limit=limit)
    dt = (time.perf_counter() - t0) * 1e6
    print_table(f"{text!r} ({language}, cluster {cluster_id}, reranker "
                f"{suggester.reranker_version}, {dt:.0f} µs)",
                ["#", "sticker", "emoji", "labels", "character", "score"],
                [(i + 1, s.sticker_id, " ".join(s.emojis), ", ".join(s.labels), s.character,
                  round(s.score, 3)) for i, s in enumerate(rows)])


def _fold_in_user(suggester: Suggester, user_id: int) -> np.ndarray:
    ctx = suggester.context
    logs = ctx.dataset.table("device_logs")
    used = logs.filter(logs["user_id"] == user_id)["package_id"].to_list()
    rows = np.array([ctx.package_row.get(int(p), -1) for p in used], dtype=np.int64)
    factors = ctx.stage1.package_factors.astype(np.float32)
    gram = factors.T.astype(np.float64) @ factors.astype(np.float64)
    cfg = ctx.stage1.config
    return fold_in(np.zeros(rows.size, np.int64), rows, 1, factors, gram,
                   float(cfg.regularization), float(cfg.als.alpha))[0]


@reranker.command("train-local")
@click.option("--devices", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Simulated devices to train locally (from the global weights).")
@click.option("--version", "version", default="initial", show_default=True,
              help="Global weights to start from ('initial' or a reranker version).")
@click.option("--max-devices", type=click.IntRange(min=0), default=20000, show_default=True,
              help="Devices loaded from the world (0 = all).")
@click.option("--seed", type=int, default=None, help="Seed [default: the config's, 0].")
@task_config_options
@pass_cli
def train_local_cmd(cli: CLIContext, devices: int, version: str, max_devices: int,
                    seed: int | None, config_path: Path | None, settings: tuple[str, ...],
                    print_config: bool) -> None:
    """Run on-device training for a batch of devices; show what would be uploaded."""
    config = _task_config(config_path, settings, print_config, seed=seed)
    seed = config.seed
    task = _task(cli, config, max_devices=max_devices)
    theta = (task.initial_parameters() if version == "initial"
             else RerankerArtifact.load(cli.var, version).weights)
    rng = np.random.default_rng(seed)
    batch = rng.choice(task.n_devices, size=min(devices, task.n_devices), replace=False)
    t0 = time.perf_counter()
    result = task.local_train(theta, batch, rng)
    seconds = time.perf_counter() - t0
    norms = np.linalg.norm(result.deltas, axis=1)
    trained = result.n_examples > 0
    print_table("local training (what each device would upload: delta and count only)",
                ["measure", "value"], [
                    ("devices", batch.size), ("devices with training impressions",
                                              int(trained.sum())),
                    ("devices per second", round(batch.size / seconds)),
                    ("delta L2 norm p50 / p90", f"{np.median(norms[trained]):.3f} / "
                     f"{np.quantile(norms[trained], 0.9):.3f}" if trained.any() else "-"),
                    ("examples per device (mean)", round(float(result.n_examples.mean()), 2)),
                    ("upload fields", "delta (P floats), n_examples"),
                    ("P (shared parameters)", task.n_parameters)])


@reranker.command("train-central")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--max-devices", type=click.IntRange(min=0), default=0, show_default=True,
              help="Devices loaded from the world (0 = all).")
@click.option("--seed", type=int, default=None, help="Seed [default: the config's, 0].")
@task_config_options
@pass_cli
def train_central_cmd(cli: CLIContext, epochs: int, max_devices: int, seed: int | None,
                      config_path: Path | None, settings: tuple[str, ...],
                      print_config: bool) -> None:
    """Train the non-private reference on all devices' logs; publish var/reranker_central/."""
    config = _task_config(config_path, settings, print_config, seed=seed)
    seed = config.seed
    task = _task(cli, config, max_devices=max_devices)
    baseline = task.evaluate(task.initial_parameters())
    theta = task.train_central(epochs=epochs, rng=np.random.default_rng(seed),
                               show_progress=cli.show_progress)
    metrics = task.evaluate(theta)
    destination = RerankerArtifact.publish(
        cli.var / "reranker_central", theta, lambda directory: task.export(theta, directory),
        VersionRecords(
            parameters={"training": "central, non-private", "epochs": epochs, "seed": seed,
                        "task": task.config.model_dump()},
            input_fingerprint=task.context.stage1.version,
            privacy={"enabled": False, "epsilon": None,
                     "note": "centrally trained on every device's raw log: no privacy; the "
                             "upper bound federated training chases"},
            metrics=metrics, manifest_metrics={**metrics, "stage1_order": baseline}))
    key = f"hit@{task.config.top_k}"
    print_table("central (non-private) reranker", ["measure", "value"], [
        ("artifact", str(destination)), (f"{key} stage-1 order", baseline[f"{key}_stage1_order"]),
        (f"{key} central reranker", metrics[key]), ("eval sessions", metrics["eval_sessions"])])


@reranker.command("evaluate")
@click.argument("versions", nargs=-1)
@click.option("--central", "central_versions", multiple=True,
              help="Also evaluate these var/reranker_central versions ('latest' works).")
@click.option("--max-devices", type=click.IntRange(min=0), default=0, show_default=True,
              help="Devices loaded from the world (0 = all).")
@click.option("--eval-devices", type=click.IntRange(min=1), default=None,
              help=f"Validation devices [default: the config's eval_devices if it sets it, "
                   f"else {EVALUATE_DEVICES}].")
@click.option("--seed", type=int, default=None, help="Seed [default: the config's, 0].")
@task_config_options
@pass_cli
def evaluate_cmd(cli: CLIContext, versions: tuple[str, ...], central_versions: tuple[str, ...],
                 max_devices: int, eval_devices: int | None, seed: int | None,
                 config_path: Path | None, settings: tuple[str, ...], print_config: bool
                 ) -> None:
    """Validation metrics of reranker VERSIONS (default: latest) beside every no-model row.

    Measured as the federated per-round metric is (validation devices' sends in
    ``[validation_start, test_start)``: tuning data, never the report's); the held-out
    comparison is ``stickers report ab``.
    """
    config = _task_config(config_path, settings, print_config,
                          {"eval_devices": EVALUATE_DEVICES}, seed=seed,
                          eval_devices=eval_devices)
    task = _task(cli, config, max_devices=max_devices)
    models = [(v, "reranker") for v in (versions or ("latest",))]
    models += [(v, "reranker_central") for v in central_versions]
    rows: list[tuple[str, str, float | str, float | str, float | str]] = []
    baseline = task.evaluate(task.initial_parameters())
    key = f"hit@{task.config.top_k}"
    for name, label in (("stage1_order", "stage-1 order (control)"),
                        ("recents", "recents row"), ("owned", "owned row (sent first)"),
                        ("owned_by_match", "owned row (best match first)"),
                        ("device_counts", "device send counts"),
                        ("segment_popularity", "segment popularity (server log)")):
        rows.append((label, "-", baseline[f"{key}_{name}"], "-", "-"))
    rows.append(("strongest no-model row", "-", baseline[f"{key}_strongest_baseline"], "-",
                 "-"))
    rows.append(("initial weights (fold-in only)", "-", baseline[key], baseline["hit@1"],
                 baseline["mrr"]))
    for version, kind_dir in models:
        artifact = RerankerArtifact.load(cli.var, version, kind_dir=kind_dir)
        metrics = task.evaluate(artifact.weights)
        rows.append((f"{kind_dir}/{artifact.version}", epsilon_headline(artifact.privacy),
                     metrics[key], metrics["hit@1"], metrics["mrr"]))
    print_table(f"validation metrics ({int(baseline['eval_sessions'])} sessions of "
                f"{task.eval_devices.size} validation devices)",
                ["model", "ε headline (δ)", key, "hit@1", "mrr"], rows)


def epsilon_headline(privacy: dict[str, object]) -> str:
    """The headline guarantee (assumption met) as ``ε kind (δ)``, or why there is none.

    What ``stickers reranker evaluate`` prints for a version's ``privacy.json`` record.
    """
    if not privacy.get("guarantees"):
        return "∞ (not private)"
    try:
        kind, guarantee = privacy_headline(dict(privacy))
    except ValueError:
        return "no guarantee whose assumption is met"
    return f"{guarantee['epsilon']:.3g} {kind} ({guarantee['delta']})"


@reranker.command("bundle")
@click.option("--cluster", "cluster_id", type=int, required=True)
@click.option("--lang", "language", required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--version", "version", default="latest", show_default=True)
@pass_cli
def bundle_cmd(cli: CLIContext, cluster_id: int, language: str, out: Path,
               version: str) -> None:
    """Write the device bundle of a cluster and language; report its size vs the budget."""
    files = Suggester.load(cli.var, reranker_version=version).bundle(cluster_id, language)
    out.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        (out / name).write_bytes(payload)
    total = sum(len(v) for v in files.values())
    print_table(f"device bundle ({out})", ["file", "bytes"],
                [*((k, f"{len(v):,}") for k, v in files.items()),
                 ("total", f"{total:,}"), ("budget", f"{BUNDLE_BUDGET_BYTES:,}"),
                 ("within budget", str(total <= BUNDLE_BUDGET_BYTES))])
    (out / "SIZE.json").write_text(json.dumps({"total_bytes": total,
                                               "budget_bytes": BUNDLE_BUDGET_BYTES}) + "\n")
