"""`stickers data ...` end to end through the click runner."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

import data
from data.cli import main


def test_generate_then_inspect(tmp_path: Path, runner: CliRunner, catalog: data.Catalog) -> None:
    # reuse the session catalog: copy nothing, point --var at a fresh root with the catalog
    var = tmp_path / "var"
    (var / "catalog").mkdir(parents=True)
    src = data.ensure_catalog(data.var_root())
    (var / "catalog" / src.name).symlink_to(src.resolve())
    result = runner.invoke(main, ["--var", str(var), "-q", "data", "generate", "--size", "tiny",
                                  "--name", "t1", "--users", "300"])
    assert result.exit_code == 0, result.output
    assert "dataset t1" in result.output
    ds = data.open_dataset(var / "data" / "t1")
    assert ds.table("users").height == 300
    result = runner.invoke(main, ["--var", str(var), "data", "inspect", "t1"])
    assert result.exit_code == 0 and "interactions" in result.output


def test_missing_dataset_gives_one_clear_line(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(main, ["--var", str(tmp_path), "data", "inspect", "nope"])
    assert result.exit_code == 2
    assert "error:" in result.output and "no manifest.json" in result.output
    assert "Traceback" not in result.output


def test_load_interactions_command(tmp_path: Path, runner: CliRunner) -> None:
    src = tmp_path / "log.csv"
    src.write_text("uid,sku\na,1\nb,1\nb,2\n")
    result = runner.invoke(main, ["--var", str(tmp_path), "-q", "data", "load-interactions",
                                  str(src), "--name", "ext", "--user-col", "uid",
                                  "--item-col", "sku"])
    assert result.exit_code == 0, result.output
    assert data.open_dataset(tmp_path / "data" / "ext").table("interactions").height == 3
    result = runner.invoke(main, ["--var", str(tmp_path), "data", "load-interactions",
                                  str(src), "--name", "ext2", "--user-col", "uid",
                                  "--item-col", "nope"])
    assert result.exit_code == 2 and "item column 'nope' not found" in result.output
