"""Stage 1 end to end: hand-made datasets, the artifact contract, the CLI, a generated world."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import data
from candidate_gen import Stage1Artifact, Stage1Config, build_stage1
from data.cli import main as stickers

T0 = datetime(2025, 6, 1, tzinfo=UTC)
TS = pl.Datetime("ms", "UTC")

# Two disjoint groups: "ja" users acquire only packages 0-9 (labels 1, 2),
# "th" users only packages 10-19 (labels 3, 4).
TEST_CONFIG = Stage1Config().with_overrides([
    "als.factors=4", "als.iterations=8", "als.regularization=0.1", "als.alpha=5.0",
    "clusters.n_clusters=2", "clusters.min_cluster_size=50",
    "candidates.n_candidates=5", "candidates.top_labels=1",
    "candidates.min_packages_per_label=2", "evaluation.eval_users=50", "evaluation.k=5",
])


def write_dataset(root: Path, tables: dict[str, pl.DataFrame],
                  split: data.TimeSplit | None = None) -> Path:
    """Publish a dataset directory (one Parquet part per table) the way the loaders do."""
    parameters: dict[str, object] = {"hand_made": True}
    if split is not None:
        parameters["split"] = split.to_parameters()
    with data.publish_artifact(root, kind="dataset", parameters=parameters) as writer:
        for name, frame in tables.items():
            (writer.path / name).mkdir()
            part = writer.path / name / "part-00000.parquet"
            data.validate_frame(frame, name).write_parquet(part)
    return root


def two_group_tables(n_per_group: int = 100, seed: int = 0, external: bool = False
                     ) -> dict[str, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    n_users, n_packages = 2 * n_per_group, 20
    group = np.repeat([0, 1], n_per_group)
    unknown = ["unknown"] * n_users
    users = pl.DataFrame({
        "user_id": pl.Series(np.arange(n_users) + 1000, dtype=pl.Int32),
        "language": unknown if external else np.where(group == 0, "ja", "th").tolist(),
        "region": unknown if external else np.where(group == 0, "JP", "TH").tolist(),
        "age_bucket": unknown if external else ["20-29"] * n_users,
        "gender": unknown if external else ["f"] * n_users,
        "subscriber": [False] * n_users,
    })
    packages = pl.DataFrame({
        "package_id": pl.Series(np.arange(n_packages), dtype=pl.Int32),
        "creator_id": pl.Series(np.arange(n_packages) // 5, dtype=pl.Int32),
        "character": [f"char{p // 5}" for p in range(n_packages)],
        "n_stickers": pl.Series([2] * n_packages, dtype=pl.Int16),
        "premium": [p % 2 == 0 for p in range(n_packages)],
        "released_at": pl.Series([T0 - timedelta(days=400)] * n_packages, dtype=TS),
        "available": [p != 19 for p in range(n_packages)],  # package 19 is withdrawn
    })
    rows = []
    for u in range(n_users):
        base = 10 * group[u]
        weights = np.arange(10, 0, -1, dtype=float)
        chosen = rng.choice(10, size=6, replace=False, p=weights / weights.sum())
        for j, p in enumerate(chosen):
            rows.append((1000 + u, base + p, "purchase" if p % 2 == 0 else "download", 6 - j))
    user, package, event, days = zip(*rows, strict=True)
    interactions = pl.DataFrame({
        "user_id": pl.Series(user, dtype=pl.Int32),
        "package_id": pl.Series(package, dtype=pl.Int32),
        "event": list(event), "weight": pl.Series([1.0] * len(user), dtype=pl.Float32),
        "ts": pl.Series([T0 - timedelta(days=int(d)) for d in days], dtype=TS),
    })
    tables = {"users": users, "packages": packages, "interactions": interactions}
    if not external:
        tables["stickers"] = pl.DataFrame({
            "sticker_id": pl.Series(np.arange(2 * n_packages), dtype=pl.Int32),
            "package_id": pl.Series(np.repeat(np.arange(n_packages), 2), dtype=pl.Int32),
            "position": pl.Series(np.tile([0, 1], n_packages), dtype=pl.Int16),
            "label_ids": [[1, 2] if s == 0 else [2] for _ in range(10) for s in range(2)]
            + [[3, 4] if s == 0 else [4] for _ in range(10) for s in range(2)],
        }, schema_overrides={"label_ids": pl.List(pl.Int32)})
    return tables


@pytest.fixture(scope="module")
def two_groups(tmp_path_factory) -> tuple[Path, Path]:
    """(var, published stage-1 version) built from the two-group dataset."""
    var = tmp_path_factory.mktemp("stage1-var")
    dataset = write_dataset(var / "data" / "two_groups", two_group_tables())
    return var, build_stage1(dataset, TEST_CONFIG, var)


def test_two_disjoint_groups_get_disjoint_lists(two_groups):
    var, path = two_groups
    artifact = Stage1Artifact.load(var)
    assert artifact.version == path.name and artifact.n_clusters == 2
    lists = [set(artifact.candidates(c).tolist()) for c in range(2)]
    assert all(len(x) == 5 for x in lists)
    assert lists[0].isdisjoint(lists[1])
    group_of_list = {c: min(lists[c]) // 10 for c in range(2)}
    assert {group_of_list[0], group_of_list[1]} == {0, 1}
    for c in range(2):
        assert {p // 10 for p in lists[c]} == {group_of_list[c]}
        assert 19 not in lists[c]  # withdrawn
    # every ja user (ids 1000-1099) is in the cluster whose list is packages 0-9
    ja_cluster = artifact.cluster_of(np.arange(1000, 1100))
    assert set(ja_cluster.tolist()) == {next(c for c in range(2) if group_of_list[c] == 0)}
    assert artifact.assign({"language": "th", "region": "TH"}) == next(
        c for c in range(2) if group_of_list[c] == 1)
    both = artifact.assign(pl.DataFrame({"language": ["ja", "th"]}))
    assert both.tolist() == [int(ja_cluster[0]), 1 - int(ja_cluster[0])]


def test_artifact_contents_and_metrics(two_groups):
    _, path = two_groups
    artifact = Stage1Artifact.load(path)
    assert artifact.package_ids.dtype == np.int32
    assert artifact.package_ids.tolist() == list(range(20))
    assert artifact.package_factors.shape == (20, 4)
    assert artifact.package_factors.dtype == np.float32
    assert artifact.item_centroids.shape == (2, 4)
    assert artifact.config == TEST_CONFIG and artifact.config.factors == 4
    table = artifact.candidate_table
    assert table.schema == pl.Schema({"cluster_id": pl.Int32, "rank": pl.Int32,
                                      "package_id": pl.Int32, "score": pl.Float32})
    assert table.filter(cluster_id=0)["rank"].to_list() == [1, 2, 3, 4, 5]
    users = pl.read_parquet(path / "user_clusters.parquet")
    assert users.height == 200 and users["cluster_id"].dtype == pl.Int32
    assert artifact.clusters["n_users"].to_numpy().min() >= 50  # k-anonymity
    m = artifact.metrics
    assert set(m["timings_s"]) >= {"load", "matrix", "factorize", "cluster", "candidates",
                                   "evaluate", "write", "total"}
    recall = m["evaluation"]["recall"]
    assert recall["cluster_lists"] >= recall["global_popularity"]
    assert m["split"]["source"] == "quantiles" and m["split"]["fit_end"] == m["split"][
        "test_start"]
    assert artifact.manifest.parameters["split"]["test_start"] == m["split"]["test_start"]
    assert m["label_coverage"]["covered_share"] == 1.0
    coverage = artifact.label_coverage
    assert set(coverage["label_id"].to_list()) <= {1, 2, 3, 4} and coverage["covered"].all()
    with pytest.raises(KeyError, match="user_id=5 is not in stage-1"):
        artifact.cluster_of(5)
    with pytest.raises(KeyError, match="cluster_id=7 should be in"):
        artifact.candidates(7)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "stage1" and manifest["dataset"]["name"] == "two_groups"


def _copy_version(path: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "stage1" / path.name
    shutil.copytree(path, target)
    return target


def test_corrupt_or_partial_versions_are_refused(two_groups, tmp_path):
    _, path = two_groups
    corrupt = _copy_version(path, tmp_path)
    blob = bytearray((corrupt / "package_factors.npy").read_bytes())
    blob[-1] ^= 0xFF
    (corrupt / "package_factors.npy").write_bytes(bytes(blob))
    with pytest.raises(data.ArtifactError, match=r"checksum mismatch for 'package_factors\.npy'"):
        Stage1Artifact.load(corrupt)
    (corrupt / "candidates.parquet").unlink()
    with pytest.raises(data.ArtifactError,
                       match=r"'candidates\.parquet' listed in manifest is missing"):
        Stage1Artifact.load(corrupt)
    (corrupt / "manifest.json").unlink()
    with pytest.raises(data.ArtifactError, match=r"no manifest\.json; the artifact is partial"):
        Stage1Artifact.load(corrupt)
    with pytest.raises(data.ArtifactError, match="no such version"):
        Stage1Artifact.load(tmp_path / "stage1", version="20990101-nope")
    with pytest.raises(data.ArtifactError, match="neither a stage-1 version"):
        Stage1Artifact.load(tmp_path / "elsewhere")


def test_external_dataset_without_labels_or_demographics(tmp_path):
    dataset = write_dataset(tmp_path / "data" / "external", two_group_tables(external=True))
    path = build_stage1(dataset, TEST_CONFIG, tmp_path)
    artifact = Stage1Artifact.load(path)
    manifest = data.read_manifest(path)
    assert manifest.extra["label_coverage"].startswith("skipped: dataset has no stickers")
    assert manifest.metrics["label_coverage"]["status"].startswith("skipped")
    assert artifact.label_coverage.height == 0
    assert len(artifact.candidates(0)) == 5
    assert artifact.assign({"language": "unknown"}) in range(artifact.n_clusters)


def test_bad_input_files_are_rejected(tmp_path):
    tables = two_group_tables()
    tables["interactions"] = tables["interactions"].with_columns(
        package_id=pl.when(pl.col("user_id") == 1000).then(99).otherwise(pl.col("package_id"))
        .cast(pl.Int32))
    dataset = write_dataset(tmp_path / "data" / "bad_ids", tables)
    with pytest.raises(data.DataFileError, match="have a package_id not in table 'packages'"):
        build_stage1(dataset, TEST_CONFIG, tmp_path)
    empty = write_dataset(tmp_path / "data" / "empty_part", two_group_tables())
    # A part replaced by an empty file: the dataset checksum refuses it first.
    (empty / "interactions" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(data.ArtifactError, match=r"interactions/part-00000\.parquet"):
        build_stage1(empty, TEST_CONFIG, tmp_path)
    # Same size, altered bytes: the sizes pass, the sha256 (hashed while the job reads)
    # refuses it whether or not the damage breaks parsing first; nothing is published.
    for name, offset in (("interactions", 0), ("stickers", -40)):
        flipped = write_dataset(tmp_path / "data" / f"flipped_{name}", two_group_tables())
        part = flipped / name / "part-00000.parquet"
        blob = bytearray(part.read_bytes())
        blob[offset] ^= 0xFF
        part.write_bytes(bytes(blob))
        with pytest.raises(data.ArtifactError,
                           match=rf"checksum mismatch for '{name}/part-00000\.parquet'"):
            build_stage1(flipped, TEST_CONFIG, tmp_path)
    with pytest.raises(data.DataFileError, match="no such dataset directory"):
        build_stage1("does_not_exist", TEST_CONFIG, tmp_path)
    few = write_dataset(tmp_path / "data" / "few", two_group_tables(n_per_group=20))
    with pytest.raises(data.ConfigError,
                       match=r"n_users=40 should be >= clusters\.min_cluster_size=50"):
        build_stage1(few, TEST_CONFIG, tmp_path)
    assert not (tmp_path / "stage1").exists() or not data.list_versions(tmp_path / "stage1")


def test_cli_build_inspect_assign(tmp_path, runner):
    write_dataset(tmp_path / "data" / "two_groups", two_group_tables())
    config = tmp_path / "stage1.toml"
    TEST_CONFIG.save(config)
    base = ["--var", str(tmp_path), "-q", "candidates"]
    result = runner.invoke(stickers, [*base, "build", "--dataset", "two_groups", "--config",
                                      str(config), "--set", "evaluation.enabled=false",
                                      "--version", "v1"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "stage1" / "v1") in result.output
    assert Stage1Artifact.load(tmp_path).config.evaluation.enabled is False
    result = runner.invoke(stickers, [*base, "inspect", "--cluster", "0", "--top", "3"])
    assert result.exit_code == 0 and "cluster 0" in result.output
    result = runner.invoke(stickers, [*base, "assign", "--language", "th"])
    assert result.exit_code == 0 and "-> cluster" in result.output
    result = runner.invoke(stickers, [*base, "assign", "--user-id", "1"])
    assert result.exit_code == 2 and "user_id=1 is not in stage-1" in result.output
    result = runner.invoke(stickers, [*base, "build", "--dataset", "two_groups", "--set",
                                      "als.factors=-1"])
    assert result.exit_code == 2 and "als.factors" in result.output
    result = runner.invoke(stickers, [*base, "config", "--format", "json"])
    assert Stage1Config.from_json(result.output) == Stage1Config()


@pytest.mark.slow
def test_generated_tiny_world(tiny_world, tmp_path):
    config = Stage1Config().with_overrides(["candidates.n_candidates=40"])
    path = build_stage1(tiny_world, config, tmp_path)
    artifact = Stage1Artifact.load(tmp_path)
    assert artifact.version == path.name
    assert artifact.clusters["n_history"].to_numpy().min() >= config.clusters.min_cluster_size
    assert artifact.metrics["label_coverage"]["covered_share"] == 1.0
    available = set(pl.read_parquet(tiny_world / "packages").filter("available")["package_id"])
    for c in range(artifact.n_clusters):
        assert set(artifact.candidates(c).tolist()) <= available
    ev = artifact.metrics["evaluation"]
    assert ev["eval_users"] > 0 and 0 <= ev["recall"]["cluster_lists"] <= 1
    assert ev["phase"] == "test" and ev["window"][0] == pytest.approx(data.time_split(
        data.open_dataset(tiny_world)).test_start, abs=1e-3)


def test_bpr_option_for_comparison(tmp_path):
    dataset = write_dataset(tmp_path / "data" / "two_groups", two_group_tables())
    config = TEST_CONFIG.with_overrides(["als.algorithm=\"bpr\"", "als.iterations=20",
                                         "als.learning_rate=0.05"])
    artifact = Stage1Artifact.load(build_stage1(dataset, config, tmp_path))
    assert artifact.config.als.algorithm == "bpr"
    assert artifact.package_factors.shape == (20, 5)  # BPR adds a bias column
    assert "cluster_lists" in artifact.metrics["evaluation"]["recall"]
