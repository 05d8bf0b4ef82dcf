"""``stickers data ...``: the keyword catalog, world generation, inspection, external logs."""

from __future__ import annotations

from pathlib import Path

import click
import polars as pl

from data._artifact import read_manifest
from data._catalog import ensure_catalog, load_catalog
from data._console import print_table
from data._dataset import dataset_dir, open_dataset
from data._external import ExternalLogSpec, load_interactions
from data._world import SIZES, generate_world, settings_name, world_config
from data.cli import CLIContext, config_command, pass_cli

__all__ = ["data_group"]


@click.group("data")
def data_group() -> None:
    """Keyword catalog, synthetic world and dataset loaders."""


@data_group.command("catalog")
@pass_cli
def catalog_cmd(cli: CLIContext) -> None:
    """Fetch (once, checksum-verified) and build the CLDR label/keyword catalog."""
    path = ensure_catalog(cli.var)
    manifest = read_manifest(path)
    m = manifest.metrics
    print_table(
        f"catalog {manifest.parameters['package']}@{manifest.parameters['version']} ({path})",
        ["language", "keywords"],
        [*sorted(m["keywords_per_language"].items()), ("labels", m["n_labels"])],
    )


@data_group.command("generate")
@click.option(
    "--size",
    type=click.Choice(sorted(SIZES)),
    default="small",
    show_default=True,
    help="Preset world size.",
)
@click.option(
    "--name",
    default=None,
    help="Dataset name (default: the size and the --set knobs, e.g. small-favourite_creators=0).",
)
@click.option("--seed", type=int, default=None, help="Seed of every draw [default: the "
              "config file's, else 0].")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="World config (.toml or .json): fields over the size's preset, under --set.",
)
@click.option(
    "--users",
    "n_users",
    type=click.IntRange(min=1),
    default=None,
    help="Override the number of users.",
)
@click.option(
    "--packages",
    "n_packages",
    type=click.IntRange(min=1),
    default=None,
    help="Override the number of packages.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="world.KEY=VALUE",
    help="Override a WorldConfig field, e.g. --set world.favourite_creators=0 (repeatable; "
    "see the knob table in the README).",
)
@pass_cli
def generate_cmd(
    cli: CLIContext,
    size: str,
    name: str | None,
    seed: int | None,
    config_path: Path | None,
    n_users: int | None,
    n_packages: int | None,
    settings: tuple[str, ...],
) -> None:
    """Generate a synthetic world into var/data/<name>/ (ground truth: var/truth/<name>/)."""
    config = world_config(
        size, settings, config_path, name=name or settings_name(size, settings), seed=seed,
        n_users=n_users, n_packages=n_packages,
    )
    catalog = load_catalog(ensure_catalog(cli.var))
    path = generate_world(config, catalog, cli.var, show_progress=cli.show_progress)
    _summary(path)


data_group.add_command(config_command(
    lambda _cli, path, settings: world_config("small", settings, path),
    "a synthetic world (the small preset, then the file and --set world.KEY=VALUE)"))


@data_group.command("inspect")
@click.argument("name", default="small")
@click.option("--no-verify", is_flag=True, help="Skip checksum verification (faster).")
@pass_cli
def inspect_cmd(cli: CLIContext, name: str, no_verify: bool) -> None:
    """Summarise a dataset: NAME under var/data/, or a path to a dataset directory."""
    path = Path(name) if Path(name).is_dir() else dataset_dir(cli.var, name)
    _summary(path, verify=not no_verify)


@data_group.command("load-interactions")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dataset name to create under var/data/.")
@click.option("--user-col", default="user_id", show_default=True)
@click.option("--item-col", default="item_id", show_default=True)
@click.option("--event-col", default=None, help="Column with 'purchase'/'download' events.")
@click.option("--weight-col", default=None, help="Column with non-negative weights.")
@click.option("--ts-col", default=None, help="Column with timestamps.")
@click.option(
    "--purchase-value", multiple=True, help="Event values meaning purchase (default: purchase)."
)
@pass_cli
def load_interactions_cmd(
    cli: CLIContext,
    source: Path,
    name: str,
    user_col: str,
    item_col: str,
    event_col: str | None,
    weight_col: str | None,
    ts_col: str | None,
    purchase_value: tuple[str, ...],
) -> None:
    """Turn an external interaction log (CSV or Parquet) into a dataset for stage 1."""
    spec = ExternalLogSpec(
        user_col=user_col,
        item_col=item_col,
        event_col=event_col,
        weight_col=weight_col,
        ts_col=ts_col,
        purchase_values=list(purchase_value) or ["purchase"],
    )
    path = load_interactions(
        source, spec, dataset_dir(cli.var, name), show_progress=cli.show_progress
    )
    _summary(path)


def _summary(path: Path, verify: bool = True) -> None:
    ds = open_dataset(path, verify=verify)
    rows = ds.manifest.metrics.get("rows", {})
    table_rows: list[tuple[str, object]] = [
        (t, f"{rows.get(t, '?'):,}" if isinstance(rows.get(t), int) else "?") for t in ds.tables
    ]
    if ds.has("interactions"):
        inter = ds.scan("interactions")
        stats = (
            inter.select(
                pl.len().alias("n"),
                pl.col("user_id").n_unique().alias("users"),
                pl.col("package_id").n_unique().alias("packages"),
                pl.col("ts").min().alias("first"),
                pl.col("ts").max().alias("last"),
                (pl.col("event") == "purchase").mean().alias("purchase_share"),
            )
            .collect()
            .row(0, named=True)
        )
        table_rows += [
            ("interactions: active users", f"{stats['users']:,}"),
            ("interactions: packages touched", f"{stats['packages']:,}"),
            ("interactions: period", f"{stats['first']:%Y-%m-%d} .. {stats['last']:%Y-%m-%d}"),
            ("interactions: purchase share", f"{stats['purchase_share']:.3f}"),
        ]
    if "private_session_share" in ds.manifest.metrics:
        table_rows.append(
            (
                "device sessions of packages the server never saw acquired",
                f"{ds.manifest.metrics['private_session_share']:.3f}",
            )
        )
    for key, label in (
        ("holdings_after_test_start_share", "device holdings acquired after test_start"),
        ("held_out_sends_acquired_after_test_start_share",
         "held-out sends of packages acquired after test_start"),
    ):
        if key in ds.manifest.metrics:
            table_rows.append((label, f"{ds.manifest.metrics[key]:.3f}"))
    timings = ds.manifest.metrics.get("timings", {})
    if "total_s" in timings:
        table_rows.append(("generation time (s)", f"{timings['total_s']:.1f}"))
    print_table(f"dataset {ds.name} ({path})", ["table / statistic", "value"], table_rows)
