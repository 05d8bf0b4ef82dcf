"""``stickers federated ...`` commands: the accountant calculator, calibration, training."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from data import read_manifest, resolve_artifact
from data.cli import main
from federated._trainer import RoundRecord
from federated.cli import round_line


def test_privacy_calculator_prints_every_kind() -> None:
    result = CliRunner().invoke(main, ["-q", "federated", "privacy", "--sigma", "8", "--q",
                                       "0.01", "--rounds", "50", "--delta", "1e-6", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["epsilon"]) == {"local", "device_local", "shuffle", "secure_sum",
                                      "device_sum"}
    assert report["rounds"] == 50 and report["noise_multiplier"] == 8.0
    assert report["headline"] == "device_local"
    assert not report["guarantees"]["secure_sum"]["assumption_met"]
    table = CliRunner().invoke(main, ["-q", "federated", "privacy", "--sigma", "2"])
    assert table.exit_code == 0 and "secure_sum" in table.output
    assert "if secure aggregation and a secret sampling coin were" in table.output


def test_calibrate_prints_a_feasible_sigma() -> None:
    result = CliRunner().invoke(main, ["-q", "federated", "calibrate", "--target-epsilon", "4",
                                       "--kind", "device_local", "--rounds", "20"])
    assert result.exit_code == 0, result.output
    sigma = float(result.output.strip().splitlines()[-1])
    check = CliRunner().invoke(main, ["-q", "federated", "privacy", "--sigma", str(sigma),
                                      "--rounds", "20", "--json"])
    assert json.loads(check.output)["epsilon"]["device_local"] <= 4.0


def test_train_publishes_a_versioned_artifact_with_privacy_json(tmp_path: Path) -> None:
    args = ["--var", str(tmp_path), "-q", "federated", "train", "--task", "synthetic",
            "-o", "n_devices=20000", "-o", "n_features=8", "--rounds", "4", "--q", "0.2",
            "--min-reports", "50", "--sigma", "4.0", "--target-epsilon", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    directory = resolve_artifact(tmp_path / "synthetic")
    manifest = read_manifest(directory, kind="synthetic")
    assert {"privacy.json", "global_weights.npy", "weights.npy", "metrics.json",
            "rounds.json"} <= set(manifest.files)
    privacy = json.loads((directory / "privacy.json").read_text())
    assert privacy["noise_multiplier"] == 4.0 and privacy["rounds"] == 4
    assert privacy["budget"]["spent_epsilon"] <= 8.0
    assert privacy["budget"]["kind"] == "device_local"
    assert privacy["budget"]["assumption_met"] is True
    # trained under secure aggregation: secure_sum holds and is the headline
    assert privacy["headline"] == "secure_sum"
    assert privacy["guarantees"]["secure_sum"]["assumption_met"] is True
    # the table lists the headline first, the unmet kinds as conditional
    lines = [line for line in result.output.splitlines() if "ε " in line]
    assert "secure_sum" in lines[0] and "headline" in lines[0]
    assert any("shuffle" in line and "if anonymous shuffling were in place" in line
               for line in lines[1:])
    over = CliRunner().invoke(main, [*args[:-1], "0.001"])
    assert over.exit_code == 2 and "over the target" in over.output


def test_unknown_task_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--var", str(tmp_path), "-q", "federated", "train",
                                       "--task", "nope"])
    assert result.exit_code == 2
    assert "no federated task named 'nope'" in result.output


def _record(loss: float) -> RoundRecord:
    return RoundRecord(round=7, status="aggregated", open_s=0.0, eligible=500, sampled=120,
                       dropped=9, uploaded=111, accepted=110, late=1, stale=0, loss=loss,
                       epsilon=1.23456, model_version=3, message="")


def test_round_line_shows_a_reported_loss_and_omits_an_unknown_one() -> None:
    # a task whose devices report their loss
    assert round_line(_record(0.123456)) == (
        "round 7 aggregated: 110 in / 9 dropped, loss 0.1235, ε 1.23")
    # the reranker's devices report none (NaN): no "loss nan" in the progress line
    assert round_line(_record(float("nan"))) == "round 7 aggregated: 110 in / 9 dropped, ε 1.23"
