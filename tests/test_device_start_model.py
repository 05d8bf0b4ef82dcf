"""``stickers device start-model``: the task's initial parameters as a fresh lineage root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from data import read_manifest, resolve_artifact
from data.cli import main
from federated import TaskContext, load_task
from serving.rounds import lineage_of, simulated_events


def test_start_model_publishes_the_initial_parameters_as_latest(tiny_var: Path,
                                                                tmp_path: Path) -> None:
    var = tmp_path / "var"
    shutil.copytree(tiny_var, var)
    result = CliRunner().invoke(main, ["--var", str(var), "-q", "device", "start-model",
                                       "--task", "reranker", "--task-option",
                                       "max_devices=50"])
    assert result.exit_code == 0, result.output
    version = resolve_artifact(var / "reranker", "latest")
    manifest = read_manifest(version, verify=True, kind="reranker")
    weights = np.load(manifest.file("global_weights.npy"))
    task = load_task("reranker", TaskContext(var=var, options={"max_devices": "50"}))
    np.testing.assert_array_equal(weights, task.initial_parameters())
    assert "model.onnx" in manifest.files
    privacy = json.loads(manifest.file("privacy.json").read_text())
    assert privacy["rounds"] == 0
    # a lineage of its own, with no round to account before the server's
    assert lineage_of(var, version.name) == version.name
    assert simulated_events(var, version.name) == []
