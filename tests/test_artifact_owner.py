"""One owner of the reranker artifact (issue #14 item 3): ``reranker.RerankerArtifact``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import data
from federated import VersionRecords, publish_version
from reranker import OnnxScorer, ParameterLayout, RerankerArtifact, initial_parameters
from reranker.model import write_model_files

ROW_LAYOUT = ParameterLayout(4, 3, 5)  # a sticker-row layout: history features
INFO = {"stage1_version": "s1", "history_features": [f"h{i}" for i in range(5)]}


def _publish(var: Path, layout: ParameterLayout = ROW_LAYOUT) -> RerankerArtifact:
    theta = initial_parameters(layout) + np.linspace(0, 1, layout.n_parameters)
    path = RerankerArtifact.publish(
        var / "reranker", theta, lambda d: write_model_files(d, theta, layout, INFO),
        VersionRecords({"task": "reranker"}, privacy={"epsilon": {"x": float("inf")}},
                       rounds=[{"round": 0}], metrics={"model_version": 3}))
    return RerankerArtifact.load(path)


def test_a_published_version_reads_back_with_its_layout(tmp_path: Path) -> None:
    artifact = _publish(tmp_path)
    assert artifact.layout == ROW_LAYOUT
    assert artifact.info["stage1_version"] == "s1"
    assert artifact.info["n_history_features"] == 5
    assert artifact.privacy == {"epsilon": {"x": None}}  # infinite ε written as null
    assert artifact.rounds == [{"round": 0}] and artifact.model_version == 3
    assert OnnxScorer(artifact.model_bytes).layout == ROW_LAYOUT
    assert data.resolve_artifact(tmp_path / "reranker").name == artifact.version


def test_the_successor_keeps_the_layout_and_copies_the_rest(tmp_path: Path) -> None:
    base = _publish(tmp_path)
    (tmp_path / "extra.txt").write_text("vocabulary")
    theta = base.weights + 1.0
    new = base.successor(theta, VersionRecords(
        {"round": 1}, "f", privacy={"epsilon": {"x": 2.0}}, rounds=[*base.rounds, {"round": 1}],
        metrics={"model_version": 4}))
    loaded = RerankerArtifact.load(new)
    # the old HTTP publisher rebuilt the layout without the history features
    assert loaded.layout == base.layout and loaded.info == base.info
    np.testing.assert_array_equal(loaded.weights, theta.astype(np.float32))
    assert loaded.model_version == 4 and loaded.rounds == [{"round": 0}, {"round": 1}]
    assert loaded.manifest.metrics["epsilon"] == {"x": 2.0}
    assert OnnxScorer(loaded.model_bytes).version == loaded.version
    assert data.resolve_artifact(tmp_path / "reranker").name == base.version  # LATEST stays
    with pytest.raises(data.ArtifactError, match=r"new parameters have shape \(3,\)"):
        base.successor(np.zeros(3), VersionRecords({}))


def test_the_platform_writes_any_task_s_container(tmp_path: Path) -> None:
    def export(directory: Path) -> list[str]:
        (directory / "model.bin").write_bytes(b"m")
        return ["model.bin"]

    path = publish_version(tmp_path / "task", np.arange(3.0), export,
                           VersionRecords({"seed": 0}, metrics={"loss": float("nan")}),
                           kind="task")
    manifest = data.read_manifest(path, kind="task")  # verifies every checksum
    assert sorted(manifest.files) == ["global_weights.npy", "metrics.json", "model.bin"]
    assert manifest.extra["model_files"] == ["model.bin"]
    assert json.loads((path / "metrics.json").read_text()) == {"loss": None}
    np.testing.assert_array_equal(np.load(path / "global_weights.npy"), np.arange(3.0))
