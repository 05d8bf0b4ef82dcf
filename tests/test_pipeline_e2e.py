"""The whole pipeline through the ``stickers`` CLI on the tiny world, as ``make run`` runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import data
from data.cli import main


def _run(runner: CliRunner, var: Path, *args: str) -> str:
    result = runner.invoke(main, ["--var", str(var), "-q", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_world_to_suggestions(tmp_path: Path, runner: CliRunner) -> None:
    var = tmp_path / "var"
    (var / "catalog").mkdir(parents=True)
    src = data.ensure_catalog(data.var_root())
    (var / "catalog" / src.name).symlink_to(src.resolve())
    _run(runner, var, "data", "generate", "--size", "tiny")
    _run(runner, var, "candidates", "build", "--dataset", "tiny", "--set", "als.factors=8",
         "--set", "clusters.n_clusters=6", "--set", "candidates.n_candidates=40")
    config = tmp_path / "fl.toml"
    config.write_text(
        "[devices]\nretention_days = 365.0\n"
        "[rounds]\nrounds = 12\nsampling_rate = 0.5\nmin_reports = 5\n"
        "[strategy]\nname = \"fedadam\"\nserver_learning_rate = 0.1\n"
        "[privacy]\nclip_norm = 1.0\nnoise_multiplier = 0.5\ntarget_epsilon = 50.0\n"
        "delta = 1e-6\nbudget_kind = \"secure_sum\"\n")
    out = _run(runner, var, "federated", "train", "--task", "reranker", "--config", str(config))
    assert "completed" in out
    version = (var / "reranker" / "LATEST").read_text().strip()
    privacy = json.loads((var / "reranker" / version / "privacy.json").read_text())
    assert privacy["epsilon"]["secure_sum"] <= 50.0
    assert set(privacy["epsilon"]) == {"local", "device_local", "shuffle", "secure_sum",
                                       "device_sum"}
    out = _run(runner, var, "reranker", "train-central", "--epochs", "1")
    assert "central reranker" in out
    out = _run(runner, var, "reranker", "score", "--text", "ありがとう", "--lang", "ja",
               "--cluster", "0")
    assert "ありがとう" in out
    out = _run(runner, var, "reranker", "bundle", "--cluster", "0", "--lang", "en", "--out",
               str(tmp_path / "bundle"))
    size = json.loads((tmp_path / "bundle" / "SIZE.json").read_text())
    assert 0 < size["total_bytes"] <= size["budget_bytes"]
    # a budget the planned run would exceed is refused before any device trains
    result = runner.invoke(main, ["--var", str(var), "-q", "federated", "train", "--task",
                                  "reranker", "--config", str(config), "--target-epsilon",
                                  "0.001"])
    assert result.exit_code != 0
    assert "budget" in result.output.lower() or "epsilon" in result.output.lower()
