"""The pipeline's one split: manifest form, quantile default, validation devices.

Expected values are computed by hand (quantiles of evenly spaced times; sha256 buckets
printed once from ``hashlib`` and written here).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import data
from data import world_config
from data.split import (
    DEFAULT_SALT,
    DEFAULT_VALIDATION_SHARE,
    is_validation_device,
    split_from_timestamps,
)


def _dataset_with(tmp_path: Path, ts_seconds: list[float], split: dict | None) -> data.Dataset:
    """A dataset holding only an interactions table (times in seconds), maybe a split."""
    params: dict = {"source": "test"}
    if split is not None:
        params["split"] = split
    inter = pl.DataFrame({
        "user_id": np.arange(len(ts_seconds), dtype=np.int32),
        "package_id": np.zeros(len(ts_seconds), dtype=np.int32),
        "event": ["download"] * len(ts_seconds),
        "weight": np.ones(len(ts_seconds), dtype=np.float32),
        "ts": [datetime.fromtimestamp(t, UTC) for t in ts_seconds],
    }).cast({"ts": pl.Datetime("ms", "UTC")})
    with data.publish_artifact(tmp_path / "ds", kind="dataset", parameters=params,
                               update_latest=False) as writer:
        (writer.path / "interactions").mkdir()
        inter.write_parquet(writer.path / "interactions" / "part-00000.parquet")
    return data.open_dataset(tmp_path / "ds")


def test_default_split_is_the_quantiles_of_interaction_times(tmp_path: Path) -> None:
    # 11 evenly spaced times 1000, 1010, ..., 1100 s: the 0.65 quantile is 1065, 0.8 is 1080
    ds = _dataset_with(tmp_path, [1000.0 + 10 * i for i in range(11)], None)
    split = data.time_split(ds)
    assert split.validation_start == pytest.approx(1065.0)
    assert split.test_start == pytest.approx(1080.0)
    assert split.validation_share == DEFAULT_VALIDATION_SHARE
    assert split.salt == DEFAULT_SALT
    assert split.source == "quantiles"


def test_manifest_split_wins_over_the_default(tmp_path: Path) -> None:
    recorded = {"validation_start": 1001.5, "test_start": 1002.5, "validation_share": 0.25,
                "salt": "s"}
    split = data.time_split(_dataset_with(tmp_path, [1000.0, 2000.0, 3000.0], recorded))
    assert split == data.TimeSplit(1001.5, 1002.5, 0.25, "s", "manifest")
    assert split.to_parameters() == recorded


def test_bad_manifest_split_is_a_clear_error(tmp_path: Path) -> None:
    bad = {"validation_start": 5.0, "test_start": 4.0, "validation_share": 0.1, "salt": "s"}
    with pytest.raises(data.DataFileError, match=r"validation_start=5\.0 should be < test_start"):
        data.time_split(_dataset_with(tmp_path, [1000.0], bad))
    with pytest.raises(data.DataFileError, match="missing field"):
        data.time_split(_dataset_with(tmp_path / "b", [1000.0], {"test_start": 4.0}))


def test_degenerate_times_still_give_an_ordered_split() -> None:
    # all at one instant: nothing can be held out, test starts one second later
    one = split_from_timestamps(np.array([50.0, 50.0, 50.0]))
    assert (one.validation_start, one.test_start) == (50.0, 51.0)
    # 0.65 and 0.8 quantiles of [0]*9 + [100] are both 0: test starts at the next time, 100
    two = split_from_timestamps(np.array([0.0] * 9 + [100.0]))
    assert (two.validation_start, two.test_start) == (0.0, 100.0)


def test_validation_devices_are_sha256_buckets_below_the_share() -> None:
    # buckets of users 0..9 under salt "salt" (first 64 bits of sha256 / 2**64):
    # 0.137, 0.170, 0.971, 0.251, 0.244, 0.085, 0.217, 0.385, 0.553, 0.120
    users = np.arange(10)
    split = data.TimeSplit(0.0, 1.0, 0.15, "salt")
    assert split.is_validation_device(users).tolist() == [
        True, False, False, False, False, True, False, False, False, True]
    assert is_validation_device(users, 0.2, "salt").nonzero()[0].tolist() == [0, 1, 5, 9]
    assert not is_validation_device(users, 0.0, "salt").any()
    digest = hashlib.sha256(b"salt\x002").digest()
    assert int.from_bytes(digest[:8], "big") / 2**64 == pytest.approx(0.9713, abs=1e-4)
    # another salt, another draw; about the share of many users
    many = is_validation_device(np.arange(20_000), 0.1, "other")
    assert 0.09 < many.mean() < 0.11
    assert not np.array_equal(many[:10], is_validation_device(users, 0.1, "salt"))


def test_time_split_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"validation_share=1\.0"):
        data.TimeSplit(0.0, 1.0, 1.0, "s")
    with pytest.raises(ValueError, match="finite"):
        data.TimeSplit(float("nan"), 1.0, 0.1, "s")


def test_generated_world_records_its_split(tiny_world: Path) -> None:
    ds = data.open_dataset(tiny_world)
    split = data.time_split(ds)
    assert split.source == "manifest"
    cfg = world_config("tiny")
    day0 = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    assert split.test_start == pytest.approx(day0 + 0.8 * 365 * 86_400)
    assert split.validation_start == pytest.approx(day0 + 0.65 * 365 * 86_400)
    assert split.validation_share == cfg.validation_share
    assert ds.manifest.parameters["split"] == split.to_parameters()
    with pytest.raises(data.ConfigError, match="should be < test_start_at"):
        world_config("tiny", validation_start_at=0.9, test_start_at=0.8)


def test_loaded_external_log_records_the_default_split(tmp_path: Path) -> None:
    from data import ExternalLogSpec, load_interactions

    src = tmp_path / "log.parquet"
    pl.DataFrame({"u": [10, 10, 20], "i": [1, 2, 1], "t": [1_700_000_000, 1_700_000_100, 5]}
                 ).write_parquet(src)
    spec = ExternalLogSpec(user_col="u", item_col="i", ts_col="t")
    ds = data.open_dataset(load_interactions(src, spec, tmp_path / "ds", show_progress=False))
    # sorted times 5, 1.7e9, 1.7e9 + 100: quantile 0.65 sits at position 1.3, 0.8 at 1.6
    assert ds.manifest.parameters["split"] == {
        "validation_start": 1_700_000_030.0, "test_start": 1_700_000_060.0,
        "validation_share": DEFAULT_VALIDATION_SHARE, "salt": DEFAULT_SALT}
    assert data.time_split(ds).source == "manifest"
