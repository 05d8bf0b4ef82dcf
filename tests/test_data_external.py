"""Loading external interaction logs: mapping, events, and errors that name the problem."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import data
from data import ExternalLogSpec, load_interactions

CSV = """user,item,action,when,w
alice,pkg-9,buy,2024-03-01T10:00:00,2
bob,pkg-9,get,2024-03-02T11:00:00,1
alice,pkg-3,get,2024-03-03T12:00:00,1
"""


def _spec(item_col: str = "item") -> ExternalLogSpec:
    """The spec of ``CSV``; a bad test names another item column."""
    return ExternalLogSpec(user_col="user", item_col=item_col, event_col="action",
                           ts_col="when", weight_col="w", purchase_values=["buy"])


def test_csv_becomes_a_dataset_with_id_maps(tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text(CSV)
    path = load_interactions(src, _spec(), tmp_path / "ds", show_progress=False)
    ds = data.open_dataset(path)
    assert ds.tables == ["packages", "users", "interactions"]
    inter = ds.table("interactions")
    assert inter.height == 3
    users = pl.read_parquet(path / "id_maps" / "users.parquet")
    alice = users.filter(pl.col("external_id") == "alice")["user_id"].item()
    rows = inter.filter(pl.col("user_id") == alice).sort("ts")
    assert rows["event"].to_list() == ["purchase", "download"]
    assert rows["weight"].to_list() == [2.0, 1.0]
    pkgs = ds.table("packages")
    assert set(pkgs["character"]) == {"pkg-9", "pkg-3"}
    assert pkgs["available"].all()


def test_parquet_with_integer_ids_and_epoch_seconds(tmp_path: Path) -> None:
    src = tmp_path / "log.parquet"
    pl.DataFrame({"u": [10, 10, 20], "i": [1, 2, 1], "t": [1_700_000_000, 1_700_000_100, 5]}
                 ).write_parquet(src)
    spec = ExternalLogSpec(user_col="u", item_col="i", ts_col="t")
    ds = data.open_dataset(load_interactions(src, spec, tmp_path / "ds", show_progress=False))
    inter = ds.table("interactions")
    assert (inter["event"] == "download").all()
    assert inter["ts"].dt.year().to_list().count(2023) == 2


@pytest.mark.parametrize(
    ("content", "spec_kw", "message"),
    [
        ("", {}, "file is empty"),
        ("user,item,action,when,w\n", {}, "no rows"),
        (CSV, {"item_col": "sku"}, "item column 'sku' not found"),
        (CSV.replace(",2\n", ",-1\n"), {}, "weight column 'w' has 1 negative"),
        (CSV.replace("2024-03-02T11:00:00", "yesterday"), {}, "timestamp column 'when'"),
        (CSV.replace(",2\n", ",lots\n"), {}, "weight column 'w' is not numeric"),
    ],
)
def test_bad_logs_are_rejected_and_nothing_is_lost(tmp_path: Path, content: str,
                                                   spec_kw: dict[str, str], message: str) -> None:
    good = tmp_path / "good.csv"
    good.write_text(CSV)
    dest = load_interactions(good, _spec(), tmp_path / "ds", show_progress=False)
    before = data.read_manifest(dest).files
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with pytest.raises(data.DataFileError, match=message) as err:
        load_interactions(bad, _spec(**spec_kw), dest, show_progress=False)
    assert "bad.csv" in str(err.value)
    assert data.read_manifest(dest).files == before  # the existing dataset is untouched


def test_unsupported_format(tmp_path: Path) -> None:
    src = tmp_path / "log.xlsx"
    src.write_text("x")
    with pytest.raises(data.DataFileError, match=r"unsupported format '\.xlsx'"):
        load_interactions(src, _spec(), tmp_path / "ds", show_progress=False)
