"""``stickers reranker`` commands take ``--config FILE --set K=V`` (issue #14 item 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import data
from data.cli import main as stickers
from reranker import RowTaskConfig


def _printed(runner: CliRunner, *args: str) -> RowTaskConfig:
    result = runner.invoke(stickers, ["reranker", *args, "--print-config"])
    assert result.exit_code == 0, result.output
    return RowTaskConfig.from_toml(result.output)


@pytest.mark.parametrize("command", ["train-local", "train-central", "evaluate"])
def test_file_then_settings_then_flags(tmp_path: Path, command: str) -> None:
    path = tmp_path / "task.toml"
    path.write_text("top_k = 3\nseed = 4\n[row]\ncap = 100\n", encoding="utf-8")
    runner = CliRunner()
    config = _printed(runner, command, "--config", str(path), "--set", "row.cap=200")
    assert (config.top_k, config.seed, config.row.cap) == (3, 4, 200)
    assert _printed(runner, command, "--config", str(path), "--seed", "9").seed == 9
    assert _printed(runner, command).seed == 0  # no file, no flag: the default


def test_evaluate_keeps_its_own_default_unless_the_config_sets_it(tmp_path: Path) -> None:
    runner = CliRunner()
    assert _printed(runner, "evaluate").eval_devices == 3000
    assert _printed(runner, "train-central").eval_devices == RowTaskConfig().eval_devices
    assert _printed(runner, "evaluate", "--set", "eval_devices=7").eval_devices == 7
    assert _printed(runner, "evaluate", "--set", "eval_devices=7",
                    "--eval-devices", "9").eval_devices == 9


def test_a_bad_setting_is_one_clear_error() -> None:
    result = CliRunner().invoke(stickers, ["reranker", "train-central", "--set",
                                           "row.nope=1", "--print-config"])
    assert result.exit_code == 2
    assert "row.nope" in result.output


def test_the_effective_config_reaches_the_task(tiny_var: Path, tmp_path: Path) -> None:
    var = tmp_path / "var"
    shutil.copytree(tiny_var, var)  # the fixture is shared: this test publishes a version
    result = CliRunner().invoke(stickers, [
        "--var", str(var), "--quiet", "reranker", "train-central", "--epochs", "1",
        "--max-devices", "60", "--set", "eval_devices=7", "--set", "row.cap=100",
        "--seed", "2"])
    assert result.exit_code == 0, result.output
    manifest = data.read_manifest(data.resolve_artifact(var / "reranker_central", "latest"))
    task = manifest.parameters["task"]
    assert (task["eval_devices"], task["row"]["cap"], task["seed"]) == (7, 100, 2)
    assert manifest.parameters["seed"] == 2
