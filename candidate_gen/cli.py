"""``stickers candidates build|inspect|assign|config``: the stage-1 command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from candidate_gen._artifact import KIND, Stage1Artifact
from candidate_gen._build import build_stage1
from candidate_gen._config import Stage1Config
from data import print_table
from data.cli import CLIContext, pass_cli

__all__ = ["candidates"]


def _load_config(config_file: Path | None, overrides: tuple[str, ...]) -> Stage1Config:
    config = Stage1Config.load(config_file) if config_file else Stage1Config()
    return config.with_overrides(overrides)


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
    rows = _flatten({k: m[k] for k in ("evaluation", "clusters", "label_coverage",
                                       "timings_s") if k in m})
    print_table(f"stage 1 {artifact.version}", ["metric", "value"], rows)


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


@candidates.command("config")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Start from this config file instead of the defaults.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE")
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml",
              show_default=True)
def config_cmd(config_file: Path | None, overrides: tuple[str, ...], fmt: str) -> None:
    """Print the effective stage-1 config (defaults, file, overrides) as TOML or JSON."""
    config = _load_config(config_file, overrides)
    click.echo(config.to_toml() if fmt == "toml" else config.to_json(), nl=False)
