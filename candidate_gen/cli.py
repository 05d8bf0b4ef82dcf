"""``stickers candidates build|inspect|assign|config|tune``: the stage-1 command line."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from candidate_gen._artifact import KIND, Stage1Artifact
from candidate_gen._build import build_stage1, resolve_dataset
from candidate_gen._config import Stage1Config
from candidate_gen._metrics import BASELINES, LISTS
from candidate_gen._tune import tune_stage1
from data import print_table
from data.cli import CLIContext, config_command, pass_cli

_SHORT = {
    "als.confidence": "conf.", "als.alpha": "alpha", "als.regularization": "reg.",
    "als.iterations": "iters", "als.factors": "factors", "als.popularity_prior": "own pop.",
    "clusters.feature_weight": "demogr. weight", "clusters.n_clusters": "clusters",
    "candidates.popularity_blend": "pop. blend", "candidates.shrinkage": "shrink",
    "candidates.segment_features": "prior segment", "clusters.method": "method",
    "clusters.representation": "taste", "clusters.features": "cluster features",
}
_LIST_NAMES = {
    "cluster_lists": "cluster lists (stage 1)",
    "global_popularity": "global popularity",
    "language_popularity": "per-language popularity",
    "segment_popularity": "per-segment popularity (language × region × age)",
    "demographics_assignment": "demographics-only assignment (cluster from features)",
    "own_factorisation_top_k": "each user's own factorisation top-k (not shareable)",
}

__all__ = ["candidates"]


def _load_config(config_file: Path | None, overrides: tuple[str, ...]) -> Stage1Config:
    return Stage1Config.load(config_file, overrides=overrides)


def _flatten(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


@click.group("candidates")
def candidates() -> None:
    """Stage 1: ALS, user clusters and per-cluster candidate lists."""


@candidates.command("build")
@click.option("--dataset", default="small", show_default=True,
              help="Dataset name under <var>/data/, or a dataset directory.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="A stage-1 config (.toml or .json).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a config value, e.g. --set als.factors=64 (repeatable).")
@click.option("--version", default=None, help="Version name (default: a new timestamp).")
@pass_cli
def build_cmd(cli: CLIContext, dataset: str, config_file: Path | None,
              overrides: tuple[str, ...], version: str | None) -> None:
    """Build and publish a stage-1 artifact from a dataset."""
    config = _load_config(config_file, overrides)
    path = build_stage1(dataset, config, cli.var, show_progress=cli.show_progress,
                        version=version)
    artifact = Stage1Artifact.load(path)
    _summary(artifact)
    click.echo(str(path))


def _summary(artifact: Stage1Artifact) -> None:
    m = artifact.metrics
    evaluation = m.get("evaluation") or {}
    if "recall" in evaluation:
        _recall_table(evaluation, f"stage 1 {artifact.version}: recall@{evaluation['k']}")
    rest: dict[str, Any] = {k: m[k] for k in ("split", "clusters", "label_coverage",
                                              "timings_s") if k in m}
    if "split" in rest:  # epoch seconds shown as UTC times
        rest["split"] = {k: _utc(v) if k in ("validation_start", "test_start", "fit_end")
                         else v for k, v in rest["split"].items()}
    rest["evaluation"] = {k: v for k, v in evaluation.items()
                          if k not in ("recall", "new_users")}
    if "window" in rest["evaluation"]:
        rest["evaluation"]["window"] = " .. ".join(_utc(t) for t in
                                                   rest["evaluation"]["window"])
    rest["evaluation"].pop("fit_end", None)
    print_table(f"stage 1 {artifact.version}", ["metric", "value"], _flatten(rest))


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _recall_table(evaluation: dict[str, Any], title: str) -> None:
    """One row per list: recall@k on users with history, ratio to the best baseline."""
    recall = evaluation["recall"]
    best = max(BASELINES, key=lambda name: recall[name])
    new = (evaluation.get("new_users") or {}).get("recall", {})
    rows = []
    for name in LISTS:
        ratio = recall[name] / recall[best] if recall[best] > 0 else float("nan")
        mark = " (best baseline)" if name == best else ""
        rows.append((_LIST_NAMES[name] + mark, f"{recall[name]:.4f}", f"{ratio:.3f}",
                     f"{new[name]:.4f}" if name in new else ""))
    n_new = (evaluation.get("new_users") or {}).get("eval_users", 0)
    print_table(
        f"{title} on new packages after the split ({evaluation['eval_users']} users with "
        f"history, {evaluation['held_out_pairs']} pairs; {n_new} users without history)",
        ["list", "recall", "× best baseline", "users without history"], rows)


@candidates.command("inspect")
@click.option("--version", default="latest", show_default=True)
@click.option("--cluster", "cluster_id", type=int, default=None,
              help="Show this cluster's candidate list.")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True,
              help="Candidates to show.")
@pass_cli
def inspect_cmd(cli: CLIContext, version: str, cluster_id: int | None, top: int) -> None:
    """Verify a stage-1 version and show its metrics (or one cluster's list)."""
    artifact = Stage1Artifact.load(cli.var / KIND, version)
    if cluster_id is None:
        _summary(artifact)
        return
    _show_cluster(artifact, cluster_id, top)


def _show_cluster(artifact: Stage1Artifact, cluster_id: int, top: int) -> None:
    if not 0 <= cluster_id < artifact.n_clusters:
        raise click.BadParameter(
            f"cluster {cluster_id} should be in [0, {artifact.n_clusters})", param_hint="--cluster"
        )
    table = artifact.candidate_table.filter(cluster_id=cluster_id).head(top)
    size = artifact.clusters.row(cluster_id, named=True)
    print_table(
        f"cluster {cluster_id} ({size['n_users']} users) of {artifact.version}",
        ["rank", "package_id", "score"],
        [(r["rank"], r["package_id"], float(r["score"])) for r in table.iter_rows(named=True)],
    )


@candidates.command("assign")
@click.option("--version", default="latest", show_default=True)
@click.option("--user-id", type=int, default=None, help="A known user: look up its cluster.")
@click.option("--language", default=None)
@click.option("--region", default=None)
@click.option("--age-bucket", default=None)
@click.option("--gender", default=None)
@click.option("--subscriber/--no-subscriber", default=None)
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True)
@pass_cli
def assign_cmd(cli: CLIContext, version: str, user_id: int | None, language: str | None,
               region: str | None, age_bucket: str | None, gender: str | None,
               subscriber: bool | None, top: int) -> None:
    """The cluster (and top candidates) of a known user, or of a new user from features."""
    artifact = Stage1Artifact.load(cli.var / KIND, version)
    if user_id is not None:
        try:
            cluster_id = artifact.cluster_of(user_id)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="--user-id") from None
        how = f"user {user_id}"
    else:
        features = {k: v for k, v in {"language": language, "region": region,
                                      "age_bucket": age_bucket, "gender": gender,
                                      "subscriber": subscriber}.items() if v is not None}
        if not features:
            raise click.UsageError("give --user-id or at least one feature (--language ...)")
        cluster_id = artifact.assign(features)
        how = "features " + ", ".join(f"{k}={v}" for k, v in features.items())
    click.echo(f"{how} -> cluster {cluster_id}")
    _show_cluster(artifact, cluster_id, top)


candidates.add_command(config_command(lambda _cli, path, settings: _load_config(path, settings),
                                      "the stage-1 job"))


def _parse_space(items: tuple[str, ...]) -> dict[str, tuple[Any, ...]]:
    space: dict[str, tuple[Any, ...]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        try:
            values = tomllib.loads(f"v = {text.strip()}")["v"] if sep else None
        except tomllib.TOMLDecodeError:
            values = None
        if not isinstance(values, list) or not values or key.count(".") != 1:
            raise click.BadParameter(f"{item!r} is not of the form section.key=[v1, v2]",
                                     param_hint="--space")
        space[key.strip()] = tuple(values)
    return space


def _shown(value: Any) -> str:
    if isinstance(value, list):  # segment features: initials keep the table narrow
        return "×".join(str(v)[:3] for v in value)
    return str(value)


@candidates.command("tune")
@click.option("--dataset", default="small", show_default=True,
              help="Dataset name under <var>/data/, or a dataset directory.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Start from this config (trial 0) instead of the defaults.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a starting value (keys the search draws are drawn anyway).")
@click.option("--trials", type=click.IntRange(min=1), default=24, show_default=True,
              help="Trials in all, the starting config included.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the draws.")
@click.option("--space", "space_items", multiple=True, metavar="SECTION.KEY=[V1, V2]",
              help="Search only these keys over these values (TOML list; repeatable); "
                   "default: every key of the built-in grid.")
@click.option("--popularity-trials/--no-popularity-trials", default=True, show_default=True,
              help="Also try the segment, language and global popularity lists as configs "
                   "(clusters.method=segments), so nothing below them is chosen.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the chosen config (.toml; default "
                   "<var>/stage1-tune/<dataset>.toml). Every trial goes next to it as JSON.")
@pass_cli
def tune_cmd(cli: CLIContext, dataset: str, config_file: Path | None,
             overrides: tuple[str, ...], trials: int, seed: int,
             space_items: tuple[str, ...], popularity_trials: bool,
             out: Path | None) -> None:
    """Search stage-1 settings on the VALIDATION split and write the best as TOML.

    The table has one row per trial (best first): the drawn settings, then recall@k of
    the cluster lists, of the global, per-language and per-segment popularity lists, of
    the demographics-only assignment and of each user's own factorisation top-k, and the
    cluster lists' ratio to the best of the four baselines.

    Each trial fits on interactions before the split's validation_start and is scored on
    validation devices' new packages in [validation_start, test_start); the test window
    is never used. `stickers candidates build --config <out>` builds with the choice.
    """
    base = _load_config(config_file, overrides)
    space = _parse_space(space_items) if space_items else None
    ds = resolve_dataset(dataset, cli.var)
    try:
        result = tune_stage1(ds, base, trials, seed, space=space,
                             show_progress=cli.show_progress,
                             popularity_trials=popularity_trials)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    keys = sorted({k for t in result.trials for k in t.overrides})
    rows = []
    for t in sorted(result.trials, key=lambda t: -t.score):
        r = t.evaluation["recall"]
        best_baseline = max(r[name] for name in BASELINES)
        values = [t.overrides.get(k, getattr(getattr(t.config, k.split(".")[0]),
                                             k.split(".")[1])) for k in keys]
        rows.append((t.trial, *[_shown(v) for v in values], f"{r['cluster_lists']:.4f}",
                     *[f"{r[name]:.4f}" for name in BASELINES],
                     f"{r['own_factorisation_top_k']:.4f}",
                     f"{r['cluster_lists'] / best_baseline:.3f}" if best_baseline else "",
                     "*" if t is result.best else ""))
    ev = result.best.evaluation
    print_table(
        "stage-1 tuning on the validation split (fit < validation_start, scored on "
        f"{ev['eval_users']} validation devices' new packages in [validation_start, "
        f"test_start)), recall@{ev['k']}; chosen: best cluster lists among trials whose "
        "own top-k ≥ global popularity",
        ["trial", *[_SHORT.get(k, k) for k in keys], "cluster lists", "global", "language",
         "segment", "demogr.", "own top-k", "× best", "chosen"], rows)
    out = out or cli.var / "stage1-tune" / f"{ds.name}.toml"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix != ".toml":
        raise click.BadParameter(f"{out}: the chosen config is written as .toml",
                                 param_hint="--out")
    header = (f"# stage-1 config chosen by `stickers candidates tune` on dataset {ds.name}\n"
              f"# trial {result.best.trial} of {len(result.trials)} (seed {seed}); validation "
              f"recall@{ev['k']} of the cluster lists {result.best.score:.4f}\n"
              f"# fit < validation_start={result.split['validation_start']}, scored on "
              f"[validation_start, test_start={result.split['test_start']})\n")
    out.write_text(header + result.best.config.to_toml())
    trials_path = out.with_suffix(".trials.json")
    trials_path.write_text(json.dumps({
        "dataset": str(ds.root), "seed": seed, "split": result.split,
        "chosen_trial": result.best.trial,
        "trials": [{"trial": t.trial, "overrides": t.overrides, "evaluation": t.evaluation}
                   for t in result.trials],
    }, indent=2, default=str) + "\n")
    click.echo(f"chosen: trial {result.best.trial} {result.best.overrides}")
    click.echo(str(out))
