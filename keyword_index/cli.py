"""``stickers keywords``: build the per-language indexes, match text keystroke by keystroke."""

from __future__ import annotations

import time
from pathlib import Path

import click

import data
from data.cli import CLIContext, config_command, config_options, pass_cli
from keyword_index._config import KeywordIndexConfig
from keyword_index._index import KeywordIndex, MultilingualIndex

__all__ = ["keywords"]

_KIND_NAMES = {1: "exact", 2: "prefix", 3: "earlier"}


@click.group()
def keywords() -> None:
    """Keyword index: normalisation and incremental keyword → label matching."""


keywords.add_command(config_command(
    lambda _cli, path, settings: KeywordIndexConfig.load(path, overrides=settings),
    "the keyword index"))


@keywords.command("build")
@click.option("--lang", "languages", multiple=True,
              help="Language to index (repeatable; default: every catalog language).")
@config_options
@pass_cli
def build(cli: CLIContext, languages: tuple[str, ...], config_path: Path | None,
          settings: tuple[str, ...]) -> None:
    """Build the compact per-language indexes into var/keyword_index/<version>/."""
    config = KeywordIndexConfig.load(config_path, overrides=settings)
    catalog = data.load_catalog(data.ensure_catalog(cli.var))
    unknown = sorted(set(languages) - set(catalog.languages))
    if unknown:
        raise click.BadParameter(f"{unknown} not in the catalog ({catalog.languages})",
                                 param_hint="--lang")
    index = MultilingualIndex.build(catalog.keywords, languages or None, config)
    target = cli.var / "keyword_index" / data.new_version()
    with data.publish_artifact(target, kind="keyword_index",
                               parameters={"catalog": catalog.source},
                               input_fingerprint=catalog.source.get("sha256", "")[:16]) as writer:
        sizes = index.save(writer.path)
        writer.metrics = {"serialized_bytes": sizes,
                          "build_seconds": {k: round(v, 4) for k, v in index.build_seconds.items()},
                          "n_keywords": {k: len(v.keywords) for k, v in index.items()}}
    rows = [[lang, len(ix.keywords), ix.n_prefixes, sizes[lang],
             round(index.build_seconds[lang], 3)] for lang, ix in index.items()]
    data.print_table(f"keyword index {target.name}",
                     ["language", "keywords", "prefixes", "bytes", "build_s"], rows)
    click.echo(str(target))


def _load_index(cli: CLIContext, language: str, index_dir: Path | None) -> KeywordIndex:
    if index_dir is not None:
        return KeywordIndex.load(index_dir / f"{language}.kwi")
    kind_dir = cli.var / "keyword_index"
    try:
        return KeywordIndex.load(data.resolve_artifact(kind_dir) / f"{language}.kwi")
    except data.StickerSuggestError:
        catalog = data.load_catalog(data.ensure_catalog(cli.var))
        if language not in catalog.languages:
            raise click.BadParameter(f"{language!r} not in the catalog ({catalog.languages})",
                                     param_hint="--lang") from None
        return KeywordIndex.build(catalog.keywords, language)


@keywords.command("match")
@click.argument("text")
@click.option("--lang", "language", required=True, help="Language of the text (ja, en, th ...).")
@click.option("--top", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Labels shown per keystroke.")
@click.option("--index", "index_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Directory of <lang>.kwi files (default: latest build, or "
                                 "built from the catalog).")
@pass_cli
def match(cli: CLIContext, text: str, language: str, top: int, index_dir: Path | None) -> None:
    """Match TEXT keystroke by keystroke and print the strongest labels after each."""
    index = _load_index(cli, language, index_dir)
    names: dict[int, str] = {}
    try:
        catalog = data.load_catalog(data.ensure_catalog(cli.var)) if index_dir is None else None
    except data.StickerSuggestError:
        catalog = None
    if catalog is not None:
        names = {i: f"{e} {s}" for i, s, e in catalog.labels.select(
            "label_id", "label", "emoji").iter_rows()}
    for end in range(1, len(text) + 1):
        typed = text[:end]
        t0 = time.perf_counter_ns()
        result = index.match(typed)
        micros = (time.perf_counter_ns() - t0) / 1000
        shown = ", ".join(
            f"{names.get(label, f'label {label}')} {strength:.2f} {_KIND_NAMES[int(kind)]}"
            for label, strength, kind in result.top(top)) or "-"
        click.echo(f"{typed!r:>24} → {result.text!r:<16} {len(result):>4} labels "
                   f"({micros:6.1f} µs)  {shown}")
