"""The synthetic world: determinism, schemas, and the statistical properties it claims.

Each property of the module docstring is measured on generated data, not assumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import data
from data._world import generate_world, world_config


def _gini(x: np.ndarray) -> float:
    x = np.sort(x.astype(float))
    n = x.size
    return float((2 * np.arange(1, n + 1) - n - 1) @ x / (n * x.sum()))


def _part_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): data.file_sha256(p)
            for p in sorted(root.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def medium_world(tmp_path_factory: pytest.TempPathFactory, catalog: data.Catalog) -> data.Dataset:
    """4000 users, 400 packages: big enough to measure distributions, ~1 s to build."""
    cfg = world_config("tiny", name="medium", n_users=4000, n_packages=400, n_creators=40,
                       chunk_users=2000, interactions_per_user=12)
    path = generate_world(cfg, catalog, tmp_path_factory.mktemp("medium"), show_progress=False)
    return data.open_dataset(path)


def test_tiny_world_has_every_table_with_valid_schema(tiny_world: Path) -> None:
    ds = data.open_dataset(tiny_world)
    assert ds.tables == list(data.TABLES)
    for table in data.TABLES:
        assert ds.table(table).height > 0, table
    users = ds.table("users")
    assert users["user_id"].n_unique() == users.height == 600
    assert ds.manifest.metrics["rows"]["interactions"] == ds.table("interactions").height
    stickers = ds.table("stickers")
    assert stickers["label_ids"].list.len().is_between(1, 3).all()
    assert ds.table("packages")["n_stickers"].is_between(8, 40).all()
    # ground truth lives apart from the dataset
    assert not (tiny_world / "truth").exists()
    truth = tiny_world.parent.parent / "truth" / "tiny"
    assert data.read_manifest(truth, kind="truth").files


def test_same_seed_same_files_other_seed_differs(tmp_path: Path, catalog: data.Catalog) -> None:
    a = generate_world(world_config("tiny", seed=7), catalog, tmp_path / "a", show_progress=False)
    b = generate_world(world_config("tiny", seed=7), catalog, tmp_path / "b", show_progress=False)
    c = generate_world(world_config("tiny", seed=8), catalog, tmp_path / "c", show_progress=False)
    assert _part_hashes(a) == _part_hashes(b)
    ha, hc = _part_hashes(a), _part_hashes(c)
    assert ha["interactions/part-00000.parquet"] != hc["interactions/part-00000.parquet"]
    assert ha["device_logs/part-00000.parquet"] != hc["device_logs/part-00000.parquet"]


def test_label_popularity_is_heavy_tailed(medium_world: data.Dataset) -> None:
    counts = (medium_world.table("device_logs")
              .join(medium_world.table("stickers").select("sticker_id", "label_ids"),
                    on="sticker_id")
              .explode("label_ids")["label_ids"].value_counts()["count"].to_numpy())
    counts = np.sort(counts)[::-1]
    top = max(1, counts.size // 20)
    assert counts[:top].sum() / counts.sum() >= 0.3  # top 5 % of labels: >= 30 % of uses
    ranks = np.arange(1, counts.size + 1)
    slope = np.polyfit(np.log(ranks[: counts.size // 2]), np.log(counts[: counts.size // 2]), 1)[0]
    assert -2.0 < slope < -0.6  # a power law in rank, not a flat or geometric curve


def test_package_popularity_and_activity_are_heavy_tailed(medium_world: data.Dataset) -> None:
    inter = medium_world.table("interactions")
    per_package = inter["package_id"].value_counts()["count"].to_numpy()
    assert _gini(per_package) >= 0.5
    top = np.sort(per_package)[::-1][: per_package.size // 10].sum() / per_package.sum()
    assert top >= 0.35
    per_user = inter["user_id"].value_counts()["count"].to_numpy()
    assert per_user.max() >= 10 * np.median(per_user)


def test_taste_has_demographic_structure(medium_world: data.Dataset) -> None:
    """Package choices differ more between languages than between halves of one language."""
    inter = medium_world.table("interactions").join(
        medium_world.table("users").select("user_id", "language"), on="user_id")
    n_pkg = medium_world.table("packages").height

    def dist(df: pl.DataFrame) -> np.ndarray:
        v = np.bincount(df["package_id"].to_numpy(), minlength=n_pkg).astype(float) + 0.5
        return v / v.sum()

    def js(p: np.ndarray, q: np.ndarray) -> float:
        m = (p + q) / 2
        return float(0.5 * (p * np.log(p / m)).sum() + 0.5 * (q * np.log(q / m)).sum())

    ja = inter.filter(pl.col("language") == "ja")
    th = inter.filter(pl.col("language") == "th")
    even, odd = pl.col("user_id") % 2 == 0, pl.col("user_id") % 2 == 1
    within = js(dist(ja.filter(even)), dist(ja.filter(odd)))
    between = js(dist(ja.filter(even)), dist(th.filter(even)))
    assert between > 3 * within


def test_private_preference_differs_from_purchases(medium_world: data.Dataset) -> None:
    logs = medium_world.table("device_logs")
    owned = medium_world.table("interactions").select("user_id", "package_id").unique()
    never_acquired = logs.join(owned, on=["user_id", "package_id"], how="anti").height / logs.height
    assert 0.2 <= never_acquired <= 0.7
    # ...and what users send most is not just what they bought most
    sent = logs.group_by("package_id").len().rename({"len": "sent"})
    bought = medium_world.table("interactions").group_by("package_id").len().rename(
        {"len": "bought"})
    both = sent.join(bought, on="package_id", how="full", coalesce=True).fill_null(0)
    rho = np.corrcoef(both["sent"].rank().to_numpy(), both["bought"].rank().to_numpy())[0, 1]
    assert 0.0 < rho < 0.95


def test_device_texts_are_typed_keywords(medium_world: data.Dataset) -> None:
    logs = medium_world.table("device_logs")
    assert logs["text"].str.len_chars().min() >= 1
    langs = set(logs["language"].unique())
    assert langs <= {"ja", "zh-hant", "th", "en", "ko"} and len(langs) == 5
    ja = logs.filter(pl.col("language") == "ja")["text"]
    # some Japanese keywords are typed in half-width katakana (a variant people produce)
    assert ja.str.contains("[\uff66-\uff9f]").any()


def test_bad_world_configs_are_rejected() -> None:
    with pytest.raises(data.ConfigError, match="unknown world size 'huge'"):
        world_config("huge")
    with pytest.raises(data.ConfigError, match="unknown language"):
        world_config("tiny", languages={"xx": 1.0})
    with pytest.raises(data.ConfigError, match="n_users"):
        world_config("tiny", n_users=0)
