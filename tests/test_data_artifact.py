"""The artifact contract: manifest last, checksums verified, atomic publish, LATEST."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import data


def _publish(kind_dir: Path, version: str, payload: str = "hello") -> Path:
    with data.publish_artifact(kind_dir / version, kind="test", parameters={"a": 1}) as w:
        (w.path / "payload.txt").write_text(payload)
        w.metrics["n"] = 3
    return kind_dir / version


def test_publish_writes_manifest_with_checksums(tmp_path: Path) -> None:
    path = _publish(tmp_path, "v1")
    manifest = data.read_manifest(path, kind="test")
    assert manifest.version == "v1"
    assert manifest.metrics == {"n": 3}
    assert manifest.files["payload.txt"]["sha256"] == data.file_sha256(path / "payload.txt")
    assert data.resolve_artifact(tmp_path) == path
    assert data.list_versions(tmp_path) == ["v1"]


def test_latest_moves_and_versions_are_never_overwritten(tmp_path: Path) -> None:
    _publish(tmp_path, "v1")
    _publish(tmp_path, "v2")
    assert data.resolve_artifact(tmp_path).name == "v2"
    with pytest.raises(data.ArtifactError, match="already exists"):
        _publish(tmp_path, "v1")
    data.set_latest(tmp_path, "v1")
    assert data.resolve_artifact(tmp_path).name == "v1"


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = _publish(tmp_path, "v1")
    (path / "payload.txt").write_text("hellO")
    with pytest.raises(data.ArtifactError, match=r"checksum mismatch for 'payload.txt'"):
        data.read_manifest(path)
    (path / "payload.txt").write_text("truncated-and-longer")
    with pytest.raises(data.ArtifactError, match="bytes, manifest says"):
        data.read_manifest(path)


def test_partial_artifact_without_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "v9").mkdir()
    (tmp_path / "v9" / "payload.txt").write_text("x")
    with pytest.raises(data.ArtifactError, match=r"no manifest\.json; the artifact is partial"):
        data.read_manifest(tmp_path / "v9")
    assert data.list_versions(tmp_path) == []


def test_malformed_manifest_and_wrong_kind(tmp_path: Path) -> None:
    path = _publish(tmp_path, "v1")
    with pytest.raises(data.ArtifactError, match="kind is 'test', expected 'stage1'"):
        data.read_manifest(path, kind="stage1")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(data.ArtifactError, match="malformed manifest"):
        data.read_manifest(path)


def test_failure_inside_publish_leaves_nothing_and_keeps_old(tmp_path: Path) -> None:
    path = _publish(tmp_path, "ds", payload="old")
    with (
        pytest.raises(RuntimeError, match="boom"),
        data.publish_artifact(path, kind="test", parameters={}, replace=True) as w,
    ):
        (w.path / "payload.txt").write_text("new")
        raise RuntimeError("boom")
    assert (path / "payload.txt").read_text() == "old"
    assert data.read_manifest(path).kind == "test"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_unknown_version_message_lists_known(tmp_path: Path) -> None:
    _publish(tmp_path, "v1")
    with pytest.raises(data.ArtifactError, match=r"no such version \(latest known: v1\)"):
        data.resolve_artifact(tmp_path, "v7")
    with pytest.raises(data.ArtifactError, match="no published version"):
        data.resolve_artifact(tmp_path / "empty")


def test_var_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.VAR_ENV, str(tmp_path / "env"))
    assert data.var_root() == tmp_path / "env"
    assert data.var_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(data.VAR_ENV)
    assert data.var_root() == Path("var")
    # manifests are plain JSON that other tools can read
    path = _publish(tmp_path, "v1")
    assert json.loads((path / "manifest.json").read_text())["parameters"] == {"a": 1}
