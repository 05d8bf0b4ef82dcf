"""``stickers serve``, ``stickers models list|promote|rollback``, ``stickers rounds ...``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from data import print_table
from data.cli import CLIContext, config_command, config_options, pass_cli
from serving._config import ServingConfig
from serving._registry import KINDS, list_models, promote, rollback
from serving._rounds import aggregate_round, federated_config_for, open_next_round
from serving._store import UpdateStore

__all__ = ["models", "rounds", "serve"]


def _config(cli: CLIContext, config_path: Path | None, settings: tuple[str, ...] = (),
            **overrides: Any) -> ServingConfig:
    overrides.setdefault("var", cli.var)
    return ServingConfig.load(config_path, overrides=settings, **overrides)


# --config FILE and --set KEY=VALUE; also STICKERS_SERVE_CONFIG and STICKERS_SERVE_*.
_CONFIG_OPTION = config_options


@click.command("serve")
@_CONFIG_OPTION
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default 8000).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="gunicorn workers (default 2).")
@click.option("--threads", type=click.IntRange(1, 64), default=None,
              help="Threads per worker (default 1).")
@click.option("--worker-class", type=click.Choice(["buffered", "sync"]), default=None,
              help="buffered (default): slow clients cannot hold a worker thread; sync: "
                   "gunicorn's sync workers (put a buffering proxy in front).")
@click.option("--demo/--no-demo", default=None,
              help="Demo mode: the keyboard demo page at / and /demo/users, which lists "
                   "dataset user ids with their cluster (off by default).")
@click.option("--reload-interval", "reload_interval_s", type=click.FloatRange(min=0),
              default=None, help="Seconds between registry checks (0: never).")
@click.option("--debug", is_flag=True, default=None,
              help="Flask's development server with the debugger (never in production).")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@pass_cli
def serve(cli: CLIContext, config_path: Path | None, settings: tuple[str, ...],
          print_config: bool, **overrides: Any) -> None:
    """Serve suggestions, bundles, models and federated uploads under gunicorn."""
    config = _config(cli, config_path, settings, **overrides)
    if print_config:
        click.echo(config.to_json())
        return
    if config.debug:
        from serving._app import create_app

        click.echo(f"debug server on http://{config.host}:{config.port}/ (not for production)",
                   err=True)
        create_app(config).run(host=config.host, port=config.port, debug=True,
                               use_reloader=False)
        return
    from serving._gunicorn import GunicornServer, enable_multiprocess_metrics

    enable_multiprocess_metrics(config.var / "serving" / "prometheus")
    click.echo(f"serving on http://{config.host}:{config.port}/ with {config.workers} "
               f"gunicorn workers (var {config.var})", err=True)
    GunicornServer(config).run()


# ---------------------------------------------------------------------------- models


@click.group("models")
def models() -> None:
    """The model registry: served stage-1 and reranker versions."""


@models.command("list")
@click.option("--no-verify", is_flag=True, help="Skip checksum verification (faster).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows.")
@pass_cli
def list_command(cli: CLIContext, no_verify: bool, as_json: bool) -> None:
    """Every published version, which one is LATEST, and whether it verifies."""
    rows = list_models(cli.var, verify=not no_verify)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(f"models in {cli.var}", ["kind", "version", "created", "latest", "status"],
                [[r["kind"], r["version"], r["created_at"], "*" if r["latest"] else "",
                  r["status"]] for r in rows])


@models.command("promote")
@click.argument("kind", type=click.Choice(KINDS))
@click.argument("version")
@pass_cli
def promote_command(cli: CLIContext, kind: str, version: str) -> None:
    """Verify VERSION and make it LATEST; running servers swap to it without restart."""
    previous = promote(cli.var, kind, version)
    click.echo(f"{kind}: LATEST {previous or '(none)'} -> {version}")


@models.command("rollback")
@click.argument("kind", type=click.Choice(KINDS))
@pass_cli
def rollback_command(cli: CLIContext, kind: str) -> None:
    """Make the newest verified version older than LATEST the LATEST again."""
    old, new = rollback(cli.var, kind)
    click.echo(f"{kind}: LATEST {old} -> {new}")


# ---------------------------------------------------------------------------- rounds


@click.group("rounds")
def rounds() -> None:
    """Federated rounds served over HTTP: open, inspect, aggregate from the update store."""


rounds.add_command(config_command(_config, "the server and its rounds"))


def _store(config: ServingConfig) -> UpdateStore:
    return UpdateStore(config.resolved_store_path)


@rounds.command("status")
@_CONFIG_OPTION
@pass_cli
def status_command(cli: CLIContext, config_path: Path | None, settings: tuple[str, ...]
                   ) -> None:
    """Every round with its state and stored update count."""
    config = _config(cli, config_path, settings)
    with _store(config) as store:
        rows = [[r.round, r.status, r.model_version, r.reranker_version,
                 store.count_updates(r.round), r.min_reports,
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.deadline_at))]
                for r in store.rounds()]
    print_table(f"rounds in {config.resolved_store_path}",
                ["round", "status", "model v", "reranker", "updates", "min reports",
                 "deadline"], rows)


@rounds.command("open")
@_CONFIG_OPTION
@click.option("--reranker-version", default=None, help="Version to train (default: served).")
@click.option("--deadline", "deadline_s", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Upload window in seconds (default: the platform config's).")
@pass_cli
def open_command(cli: CLIContext, config_path: Path | None, settings: tuple[str, ...],
                 reranker_version: str | None, deadline_s: float | None) -> None:
    """Open the next round (fails if one is open)."""
    config = _config(cli, config_path, settings)
    version = reranker_version or config.reranker_version
    fed = federated_config_for(config.var, version, config.federated_config)
    with _store(config) as store:
        spec = open_next_round(store, config.var, version, config=fed,
                               deadline_s=deadline_s or config.round_deadline_s)
    click.echo(json.dumps(spec.to_dict(), indent=2))


@rounds.command("aggregate")
@_CONFIG_OPTION
@click.option("--round", "round_", type=int, default=None,
              help="Round to aggregate (default: the open one).")
@click.option("--no-publish", is_flag=True, help="Record the outcome without a new version.")
@click.option("--promote/--no-promote", default=True, show_default=True,
              help="Let the promotion policy (config 'promotion': validation or operator) "
                   "decide whether the new version becomes LATEST; --no-promote leaves it "
                   "a candidate for an operator.")
@click.option("--open-next/--no-open-next", default=True, show_default=True,
              help="Open the next round for the served version afterwards.")
@pass_cli
def aggregate_command(cli: CLIContext, config_path: Path | None, settings: tuple[str, ...],
                      round_: int | None, no_publish: bool, promote: bool,
                      open_next: bool) -> None:
    """Aggregate a round's accepted updates with the federated platform's server."""
    from serving._promotion_policy import decide_promotion
    from serving._publish import reranker_publisher

    config = _config(cli, config_path, settings)
    with _store(config) as store:
        if round_ is None:
            current = store.current_round()
            if current is None:
                raise click.ClickException("no round is open; give --round")
            round_ = current.round
        spec = store.get_round(round_)
        version = spec.reranker_version if spec is not None else config.reranker_version
        fed = federated_config_for(config.var, version, config.federated_config)
        # the round publishes a candidate; the promotion policy decides whether it goes live
        publisher = None if no_publish else reranker_publisher(promote=False)
        result = aggregate_round(store, config.var, round_, config=fed, publish=publisher)
        rows: list[list[Any]] = [[k, v] for k, v in result.to_dict().items()
                                 if k != "metrics"]
        if result.published is not None and spec is not None:
            decision = decide_promotion(
                config.var, result.published.name, spec.reranker_version,
                policy=config.promotion if promote else "operator",
                tolerance=config.promotion_tolerance)
            rows += [["promoted", decision.promoted], ["promotion", decision.reason]]
        rows += [[f"metric {k}", v] for k, v in result.outcome.metrics.items()]
        print_table(f"round {round_}: {result.outcome.status}", ["", "value"], rows)
        if open_next:
            spec = open_next_round(store, config.var, config.reranker_version,
                                   config=federated_config_for(config.var,
                                                               config.reranker_version,
                                                               config.federated_config),
                                   deadline_s=config.round_deadline_s)
            click.echo(f"opened round {spec.round} for reranker {spec.reranker_version}")
