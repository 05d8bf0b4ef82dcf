"""``stickers keywords match``: keystroke-by-keystroke output (issue #4)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from click.testing import CliRunner

from data.cli import main
from keyword_index import KeywordIndex

FIXTURE = Path(__file__).parent / "fixtures" / "keyword_index" / "cldr_excerpt.json"


def test_match_prints_every_keystroke(tmp_path: Path) -> None:
    raw = json.loads(FIXTURE.read_text())
    keywords = pl.DataFrame(raw["keywords"], orient="row", schema={
        "label_id": pl.Int32, "language": pl.String, "keyword": pl.String, "kind": pl.String})
    KeywordIndex.build(keywords, "ja").save(tmp_path / "ja.kwi")
    thanks = next(i for i, slug, _ in raw["labels"] if slug == "folded_hands")
    result = CliRunner().invoke(main, ["--var", str(tmp_path / "var"), "-q", "keywords", "match",
                                       "アリガトウ", "--lang", "ja", "--index", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 5
    assert "'ありがとう'" in lines[-1]
    assert f"label {thanks} 1.00 exact" in lines[-1]
    assert "prefix" in lines[2]


def test_match_with_missing_index_file_fails_cleanly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--var", str(tmp_path / "var"), "-q", "keywords", "match",
                                       "x", "--lang", "ja", "--index", str(tmp_path)])
    assert result.exit_code == 2
    assert "no such keyword index file" in result.output
