"""The ``stickers`` command line: one subcommand group per stage.

Each package contributes its group through the ``sticker_suggest.commands`` entry
point (see ``pyproject.toml``), so this root knows no stage by name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from data._artifact import VAR_ENV, var_root
from data._config import ComponentConfig
from data._console import configure_logging
from data._errors import StickerSuggestError

__all__ = ["CLIContext", "config_command", "config_options", "main", "pass_cli"]

ENTRY_POINT_GROUP = "sticker_suggest.commands"


@dataclass
class CLIContext:
    """What every subcommand receives: the artifact root and output settings."""

    var: Path
    quiet: bool = False
    verbose: int = 0

    @property
    def show_progress(self) -> bool:
        """Progress bars are shown unless ``--quiet``."""
        return not self.quiet


pass_cli = click.make_pass_decorator(CLIContext)

# (the CLI context, --config FILE or None, the --set strings) -> the effective config
ConfigLoader = Callable[[CLIContext, Path | None, tuple[str, ...]], ComponentConfig]


def config_options(f: Any) -> Any:
    """Add ``--config FILE`` and repeatable ``--set SECTION.KEY=VALUE`` to a command.

    The command receives them as ``config_path`` (Path or None) and ``settings`` (tuple
    of str); :meth:`data.ComponentConfig.load` takes both (``overrides=settings``).
    """
    f = click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override one config field (repeatable); values are TOML "
                          "(3, 0.5, true, [\"a\"]), else text.")(f)
    return click.option("--config", "config_path", default=None,
                        type=click.Path(dir_okay=False, path_type=Path),
                        help="Config file (.toml or .json) over the defaults.")(f)


def config_command(load: ConfigLoader, what: str) -> click.Group:
    """A ``config`` group that prints the effective config of a component.

    ``stickers <group> config show [--config FILE] [--set K=V] [--format toml|json]``
    (``config`` alone does the same): defaults, then the file, then the overrides, as the
    group's other commands would resolve them.

    Parameters
    ----------
    load : callable
        ``(cli, config_path, overrides) -> ComponentConfig``.
    what : str
        What the config configures, for the help text ("the stage-1 job").
    """

    def _show(config_path: Path | None, settings: tuple[str, ...], fmt: str) -> None:
        cli = click.get_current_context().find_object(CLIContext) or CLIContext(var_root())
        config = load(cli, config_path, settings)
        click.echo(config.to_toml() if fmt == "toml" else config.to_json(), nl=False)

    fmt_option = click.option("--format", "fmt", type=click.Choice(["toml", "json"]),
                              default="toml", show_default=True)

    @click.group("config", invoke_without_command=True,
                 help=f"Print the effective config of {what} (defaults, file, overrides).")
    @config_options
    @fmt_option
    @click.pass_context
    def group(ctx: click.Context, config_path: Path | None, settings: tuple[str, ...],
              fmt: str) -> None:
        if ctx.invoked_subcommand is None:
            _show(config_path, settings, fmt)

    @group.command("show", help=f"Print the effective config of {what} as TOML or JSON.")
    @config_options
    @fmt_option
    def show(config_path: Path | None, settings: tuple[str, ...], fmt: str) -> None:
        _show(config_path, settings, fmt)

    return group


class _StageGroup(click.Group):
    """A group whose subgroups come from entry points, loaded only when used."""

    def _stage_entry_points(self) -> dict[str, object]:
        return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._stage_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        ep = self._stage_entry_points().get(cmd_name)
        if ep is None:
            return None
        loaded = ep.load()  # type: ignore[attr-defined]
        if not isinstance(loaded, click.Command):
            raise click.ClickException(f"entry point {cmd_name!r} is not a click command")
        return loaded

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except StickerSuggestError as exc:
            # Expected failures (bad input, corrupt artifact) get one clear line, no traceback.
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_StageGroup)
@click.option(
    "--var",
    "var_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Root of data and artifacts (default: ${VAR_ENV} or ./var).",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; warnings and errors only.")
@click.option("-v", "--verbose", count=True, help="More logging (-v: debug).")
@click.version_option(package_name="sticker-suggest")
@click.pass_context
def main(ctx: click.Context, var_dir: Path | None, quiet: bool, verbose: int) -> None:
    """Sticker suggest: two-stage sticker recommendation with federated personalisation."""
    configure_logging(verbose, quiet)
    ctx.obj = CLIContext(var=var_root(var_dir), quiet=quiet, verbose=verbose)


if __name__ == "__main__":  # pragma: no cover
    main()
