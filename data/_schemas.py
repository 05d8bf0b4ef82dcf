"""Explicit polars schemas of every table in a sticker-suggest dataset.

A dataset directory (``var/data/<name>/``) holds one sub-directory per table, each
with one or more Parquet parts (``<table>/part-00000.parquet`` ...). The schemas here
are the contract between the generator, the loaders and every stage that reads a
dataset. Columns are listed in their canonical order.

Tables
------
labels
    One row per semantic label (an emoji concept from CLDR): ``label_id``, ``label``
    (an ASCII slug such as ``folded_hands``), ``emoji``, ``name_en``, ``group``.
keywords
    Keywords of labels per language: ``label_id``, ``language`` (BCP-47, lower case,
    e.g. ``zh-hant``), ``keyword`` (as CLDR spells it), ``kind`` (``name`` or ``tag``).
packages
    Sticker packages (the item of stage 1): ``package_id``, ``creator_id``,
    ``character`` (display name), ``n_stickers``, ``premium``, ``released_at``,
    ``available`` (false for withdrawn packages, never recommended).
stickers
    ``sticker_id``, ``package_id``, ``position`` in the package, ``label_ids``
    (1–3 labels).
users
    ``user_id``, ``language``, ``region``, ``age_bucket``, ``gender`` (estimated
    demographics), ``subscriber`` (has the all-you-can-use subscription).
interactions
    Server-visible purchase/download log: ``user_id``, ``package_id``, ``event``
    (``purchase`` or ``download``), ``weight`` (≥ 0, 1.0 unless the source says
    otherwise), ``ts`` (UTC).
device_logs
    Private typing sessions, one row per sticker sent: ``session_id``, ``user_id``,
    ``ts``, ``language``, ``text`` (the typed text when the sticker was sent; the
    keystrokes are its successive prefixes), ``sticker_id``, ``package_id``.
    In production these never leave the phone; the simulator keeps them per device.
device_library
    What each simulated device holds and since when, one row per (user, package):
    ``user_id``, ``package_id``, ``source`` (``purchase`` or ``download``, which the
    server log also records; ``subscription``: added to the subscription library;
    ``gift``: received from someone else), ``ts`` (UTC, when the device got it). A
    device sends from a package only at or after its ``ts``. Private like
    ``device_logs`` (the phone knows its own library; the server sees only purchases
    and downloads); generated worlds have it, loaded external logs do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from data._errors import DataFileError, SchemaError

__all__ = [
    "EVENTS",
    "LIBRARY_SOURCES",
    "SCHEMAS",
    "TABLES",
    "read_table",
    "scan_table",
    "table_files",
    "validate_frame",
]

UTC_TS = pl.Datetime("ms", "UTC")

EVENTS: tuple[str, ...] = ("purchase", "download")

LIBRARY_SOURCES: tuple[str, ...] = ("purchase", "download", "subscription", "gift")
"""How a device came to hold a package (``device_library.source``)."""

_S = dict[str, Any]  # polars accepts dtype classes and instances

SCHEMAS: dict[str, pl.Schema] = {
    "labels": pl.Schema(
        _S({
            "label_id": pl.Int32,
            "label": pl.String,
            "emoji": pl.String,
            "name_en": pl.String,
            "group": pl.String,
        })
    ),
    "keywords": pl.Schema(
        _S({
            "label_id": pl.Int32,
            "language": pl.String,
            "keyword": pl.String,
            "kind": pl.String,
        })
    ),
    "packages": pl.Schema(
        _S({
            "package_id": pl.Int32,
            "creator_id": pl.Int32,
            "character": pl.String,
            "n_stickers": pl.Int16,
            "premium": pl.Boolean,
            "released_at": UTC_TS,
            "available": pl.Boolean,
        })
    ),
    "stickers": pl.Schema(
        _S({
            "sticker_id": pl.Int32,
            "package_id": pl.Int32,
            "position": pl.Int16,
            "label_ids": pl.List(pl.Int32),
        })
    ),
    "users": pl.Schema(
        _S({
            "user_id": pl.Int32,
            "language": pl.String,
            "region": pl.String,
            "age_bucket": pl.String,
            "gender": pl.String,
            "subscriber": pl.Boolean,
        })
    ),
    "interactions": pl.Schema(
        _S({
            "user_id": pl.Int32,
            "package_id": pl.Int32,
            "event": pl.String,
            "weight": pl.Float32,
            "ts": UTC_TS,
        })
    ),
    "device_logs": pl.Schema(
        _S({
            "session_id": pl.Int64,
            "user_id": pl.Int32,
            "ts": UTC_TS,
            "language": pl.String,
            "text": pl.String,
            "sticker_id": pl.Int32,
            "package_id": pl.Int32,
        })
    ),
    "device_library": pl.Schema(
        _S({
            "user_id": pl.Int32,
            "package_id": pl.Int32,
            "source": pl.String,
            "ts": UTC_TS,
        })
    ),
}

TABLES: tuple[str, ...] = tuple(SCHEMAS)

# Columns that may never be null; every column is non-null in this version.
_NON_NULL: Mapping[str, tuple[str, ...]] = {name: tuple(s.names()) for name, s in SCHEMAS.items()}


def validate_frame(df: pl.DataFrame, table: str, source: str | Path = "<frame>") -> pl.DataFrame:
    """Check ``df`` against the schema of ``table`` and return it in canonical column order.

    Parameters
    ----------
    df : polars.DataFrame
        The frame to check. Extra columns are dropped.
    table : str
        One of :data:`TABLES`.
    source : str or Path
        Where the frame came from; named in error messages.

    Returns
    -------
    polars.DataFrame
        ``df`` with exactly the schema's columns, in the schema's order.

    Raises
    ------
    SchemaError
        If a column is missing, has the wrong type, or holds nulls; the message names
        the source, the column and the problem.
    """
    if table not in SCHEMAS:
        raise SchemaError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    schema = SCHEMAS[table]
    missing = [c for c in schema.names() if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{source}: table {table!r} is missing column(s) {', '.join(map(repr, missing))}; "
            f"found {', '.join(map(repr, df.columns)) or 'no columns'}"
        )
    for column, dtype in schema.items():
        actual = df.schema[column]
        if actual != dtype:
            raise SchemaError(
                f"{source}: column {column!r} of table {table!r} has type {actual}, "
                f"expected {dtype}"
            )
    for column in _NON_NULL[table]:
        n_null = df[column].null_count()
        if n_null:
            raise SchemaError(
                f"{source}: column {column!r} of table {table!r} has {n_null} null value(s); "
                "nulls are not allowed"
            )
    return df.select(schema.names())


def table_files(root: Path, table: str) -> list[Path]:
    """Parquet parts of ``table`` under a dataset directory, sorted by name.

    Raises
    ------
    DataFileError
        If the table directory does not exist or holds no Parquet part.
    """
    directory = Path(root) / table
    if not directory.is_dir():
        raise DataFileError(f"{directory}: table {table!r} not found (no such directory)")
    parts = sorted(directory.glob("*.parquet"))
    if not parts:
        raise DataFileError(f"{directory}: table {table!r} has no .parquet part")
    return parts


def _read_part(path: Path, table: str) -> pl.DataFrame:
    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: file is empty; expected a Parquet part of table {table!r}")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several exception types for corrupt files
        raise DataFileError(f"{path}: cannot read as Parquet ({exc})") from exc
    return validate_frame(df, table, path)


def read_table(root: str | Path, table: str) -> pl.DataFrame:
    """Read and validate every part of ``table`` in the dataset at ``root``.

    Parameters
    ----------
    root : str or Path
        A dataset directory, e.g. ``var/data/small``.
    table : str
        One of :data:`TABLES`.

    Returns
    -------
    polars.DataFrame
        All parts concatenated, with exactly the schema's columns.
    """
    parts = table_files(Path(root), table)
    frames = [_read_part(p, table) for p in parts]
    return pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]


def scan_table(root: str | Path, table: str) -> pl.LazyFrame:
    """Lazily scan ``table`` after checking the schema of its parts' footers.

    Cheap for large tables: only Parquet metadata is read before the scan.
    """
    parts = table_files(Path(root), table)
    schema = SCHEMAS[table]
    for part in parts:
        if part.stat().st_size == 0:
            raise DataFileError(f"{part}: file is empty; expected a Parquet part of {table!r}")
        try:
            found = pl.read_parquet_schema(part)
        except Exception as exc:
            raise DataFileError(f"{part}: cannot read as Parquet ({exc})") from exc
        empty = pl.DataFrame(schema={k: v for k, v in found.items()})
        validate_frame(empty, table, part)
    return pl.scan_parquet(parts).select(schema.names())
