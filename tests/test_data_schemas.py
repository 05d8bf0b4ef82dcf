"""Schema validation and table loading: errors name the file, the column and the problem."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

import data


def _interactions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [0, 1],
            "package_id": [5, 6],
            "event": ["purchase", "download"],
            "weight": [1.0, 2.0],
            "ts": [datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)],
        },
        schema=data.SCHEMAS["interactions"],
    )


def _write(root: Path, table: str, df: pl.DataFrame) -> Path:
    (root / table).mkdir(parents=True, exist_ok=True)
    path = root / table / "part-00000.parquet"
    df.write_parquet(path)
    return path


def test_valid_table_round_trips(tmp_path: Path) -> None:
    _write(tmp_path, "interactions", _interactions())
    out = data.read_table(tmp_path, "interactions")
    assert out.equals(_interactions())
    assert data.scan_table(tmp_path, "interactions").collect().height == 2


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "interactions", _interactions().drop("event"))
    with pytest.raises(data.SchemaError, match=r"missing column\(s\) 'event'") as err:
        data.read_table(tmp_path, "interactions")
    assert str(path) in str(err.value)


def test_wrong_type_names_column_and_types(tmp_path: Path) -> None:
    df = _interactions().with_columns(pl.col("user_id").cast(pl.String))
    _write(tmp_path, "interactions", df)
    with pytest.raises(data.SchemaError, match=r"column 'user_id'.*type String, expected Int32"):
        data.read_table(tmp_path, "interactions")


def test_nulls_are_rejected(tmp_path: Path) -> None:
    df = _interactions().with_columns(
        pl.when(pl.col("user_id") == 1).then(None).otherwise(pl.col("weight")).alias("weight"))
    _write(tmp_path, "interactions", df)
    with pytest.raises(data.SchemaError, match=r"'weight'.*1 null value"):
        data.read_table(tmp_path, "interactions")


def test_empty_file_and_bad_path(tmp_path: Path) -> None:
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "part-00000.parquet").write_bytes(b"")
    with pytest.raises(data.DataFileError, match="file is empty"):
        data.read_table(tmp_path, "users")
    with pytest.raises(data.DataFileError, match=r"table 'packages' not found"):
        data.read_table(tmp_path, "packages")
    (tmp_path / "stickers").mkdir()
    (tmp_path / "stickers" / "part-00000.parquet").write_text("not parquet at all")
    with pytest.raises(data.DataFileError, match="cannot read as Parquet"):
        data.read_table(tmp_path, "stickers")


def test_unknown_table() -> None:
    with pytest.raises(data.SchemaError, match="unknown table 'nope'"):
        data.validate_frame(pl.DataFrame(), "nope")
