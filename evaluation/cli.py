"""``stickers report ...``: the offline A/B report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from data.cli import CLIContext, config_command, config_options, pass_cli
from evaluation._config import ReportConfig
from evaluation._render import arms_table, load_report
from evaluation._report import build_ab_report, publish_report, render_report

__all__ = ["report"]


@click.group("report")
def report() -> None:
    """Offline evaluation reports."""


report.add_command(config_command(
    lambda _cli, path, settings: ReportConfig.load(path, overrides=settings),
    "the offline A/B report"))


@report.command("ab")
@click.option("--stage1", default="latest", show_default=True, help="Stage-1 version.")
@click.option("--treatment", default="latest", show_default=True,
              help="Federated reranker version (var/reranker/).")
@click.option("--central", default="latest", show_default=True,
              help="Non-private reference (var/reranker_central/); 'none' to skip.")
@click.option("--sweep", default="latest", show_default=True,
              help="Privacy–utility sweep version or directory; 'none' to skip.")
@click.option("--devices", type=click.IntRange(min=2), default=None,
              help="Devices with held-out sessions to replay [default: 5000].")
@click.option("--k", "k", type=click.IntRange(min=1), default=None,
              help="Length of the visible sticker row [default: 5].")
@click.option("--seed", type=int, default=None, help="Seed of sample and bootstrap [default: 0].")
@click.option("--bootstrap", type=click.IntRange(min=100), default=None,
              help="User-level bootstrap resamples [default: 2000].")
@click.option("--salt", default=None, help="Salt of the user → arm hash [default: report-ab].")
@config_options
@click.option("--no-publish", is_flag=True,
              help="Print the summary only; write nothing under var/reports.")
@pass_cli
def ab_command(cli: CLIContext, stage1: str, treatment: str, central: str, sweep: str,
               devices: int | None, k: int | None, seed: int | None, bootstrap: int | None,
               salt: str | None, config_path: Path | None, settings: tuple[str, ...],
               no_publish: bool) -> None:
    """Replay held-out sessions: A (stage 1) vs B (federated DP reranker), with CIs and ε.

    Writes var/reports/ab/<version>/{report.html, report.json, summary.md} and prints
    the Markdown summary on stdout.
    """
    overrides: dict[str, Any] = {"devices": devices, "k": k, "seed": seed,
                                 "n_bootstrap": bootstrap, "salt": salt}
    config = ReportConfig.load(config_path, overrides=settings, **overrides)
    data = build_ab_report(cli.var, stage1=stage1, treatment=treatment, central=central,
                           sweep=sweep, config=config, show_progress=cli.show_progress)
    if no_publish:
        click.echo(render_report(data)[1], nl=False)
        return
    directory = publish_report(cli.var, data)
    click.echo((directory / "summary.md").read_text(encoding="utf-8"), nl=False)


@report.command("table")
@click.argument("reports", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--name", "names", multiple=True,
              help="Row name of each report, in order [default: its directory's parent "
                   "name].")
@click.option("--metric", default=None, help="Metric to tabulate [default: the headline].")
def table_command(reports: tuple[Path, ...], names: tuple[str, ...], metric: str | None
                  ) -> None:
    """One Markdown row per A/B report (a report.json or its directory): every arm's metric.

    For comparing worlds, e.g. the knob table: each hidden-preference mechanism of the
    world switched off in turn (``make knobs``).
    """
    if names and len(names) != len(reports):
        raise click.BadParameter(f"{len(names)} --name for {len(reports)} reports; give one "
                                 "per report or none", param_hint="--name")
    click.echo(arms_table([load_report(p) for p in reports],
                          list(names) or [_default_name(p) for p in reports], metric), nl=False)


def _default_name(path: Path) -> str:
    # var/knobs/<knob>/reports/ab/<version>/report.json → <knob>
    parts = path.resolve().parts
    return parts[parts.index("reports") - 1] if "reports" in parts else path.name
