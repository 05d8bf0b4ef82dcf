"""Loading real interaction logs (CSV or Parquet) into a dataset stage 1 can use.

The source needs a user column and an item (package) column; an event, a weight and
a timestamp column are optional. External ids of any type are mapped to dense
``int32`` ids; the maps are kept in ``id_maps/users.parquet`` and
``id_maps/packages.parquet`` (``user_id``/``package_id`` → ``external_id``) so results
can be joined back. Users get demographics ``"unknown"``; packages get their external
id as ``character``. The dataset has no stickers, labels or device logs, which stage 1
handles by skipping label coverage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from data._artifact import file_sha256, fingerprint, publish_artifact
from data._console import progress
from data._errors import DataFileError
from data._schemas import SCHEMAS, validate_frame
from data._split import split_from_timestamps

__all__ = ["ExternalLogSpec", "load_interactions", "read_external_log"]


class ExternalLogSpec(BaseModel):
    """Which columns of an external log mean what."""

    model_config = ConfigDict(extra="forbid")

    user_col: str = Field("user_id", description="Column with user ids (any type).")
    item_col: str = Field("item_id", description="Column with package/item ids (any type).")
    event_col: str | None = Field(None, description="Optional column with event names.")
    weight_col: str | None = Field(None, description="Optional column of weights >= 0.")
    ts_col: str | None = Field(
        None, description="Optional timestamps: datetime, ISO-8601 text or epoch seconds."
    )
    purchase_values: list[str] = Field(
        default_factory=lambda: ["purchase"],
        description="Event values counted as purchases; any other event is a download.",
    )


def read_external_log(source: str | Path, spec: ExternalLogSpec) -> pl.DataFrame:
    """Read and validate an external log into the ``interactions`` columns plus raw ids.

    Returns
    -------
    polars.DataFrame
        Columns ``external_user`` (str), ``external_item`` (str), ``event``, ``weight``
        (float32), ``ts`` (datetime[ms, UTC]).

    Raises
    ------
    DataFileError
        Naming the file, the column and the problem.
    """
    source = Path(source)
    if not source.is_file():
        raise DataFileError(f"{source}: no such file")
    if source.stat().st_size == 0:
        raise DataFileError(f"{source}: file is empty")
    suffix = source.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pl.read_parquet(source)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pl.read_csv(
                source,
                separator="\t" if suffix == ".tsv" else ",",
                infer_schema_length=10_000,
                try_parse_dates=False,
            )
        else:
            raise DataFileError(
                f"{source}: unsupported format {suffix!r}; expected .csv, .tsv or .parquet"
            )
    except DataFileError:
        raise
    except Exception as exc:
        raise DataFileError(f"{source}: cannot read ({exc})") from exc
    if df.height == 0:
        raise DataFileError(f"{source}: no rows")
    wanted = {
        "user": spec.user_col,
        "item": spec.item_col,
        "event": spec.event_col,
        "weight": spec.weight_col,
        "timestamp": spec.ts_col,
    }
    for role, column in wanted.items():
        if column is not None and column not in df.columns:
            raise DataFileError(
                f"{source}: {role} column {column!r} not found; columns are "
                f"{', '.join(map(repr, df.columns))}"
            )
    for role, column in (("user", spec.user_col), ("item", spec.item_col)):
        n_null = df[column].null_count()
        if n_null:
            raise DataFileError(f"{source}: {role} column {column!r} has {n_null} empty value(s)")
    out = df.select(
        pl.col(spec.user_col).cast(pl.String).alias("external_user"),
        pl.col(spec.item_col).cast(pl.String).alias("external_item"),
    )
    if spec.event_col is not None:
        ev = df[spec.event_col].cast(pl.String)
        out = out.with_columns(
            pl.when(ev.is_in(spec.purchase_values))
            .then(pl.lit("purchase"))
            .otherwise(pl.lit("download"))
            .alias("event")
        )
    else:
        out = out.with_columns(pl.lit("download").alias("event"))
    if spec.weight_col is not None:
        try:
            w = df[spec.weight_col].cast(pl.Float32, strict=True)
        except Exception as exc:
            raise DataFileError(
                f"{source}: weight column {spec.weight_col!r} is not numeric "
                f"(type {df.schema[spec.weight_col]})"
            ) from exc
        bad = int(((w < 0) | w.is_nan() | w.is_null()).sum())
        if bad:
            raise DataFileError(
                f"{source}: weight column {spec.weight_col!r} has {bad} "
                "negative, NaN or empty value(s); weights must be >= 0"
            )
        out = out.with_columns(w.alias("weight"))
    else:
        out = out.with_columns(pl.lit(1.0, dtype=pl.Float32).alias("weight"))
    out = out.with_columns(_parse_ts(df, spec.ts_col, source).alias("ts"))
    return out


def _parse_ts(df: pl.DataFrame, column: str | None, source: Path) -> pl.Series:
    if column is None:
        return pl.Series(
            "ts", [datetime(1970, 1, 1, tzinfo=UTC)] * df.height, dtype=pl.Datetime("ms", "UTC")
        )
    s = df[column]
    try:
        if s.dtype.is_numeric():
            parsed = (s.cast(pl.Float64) * 1000).cast(pl.Int64).cast(pl.Datetime("ms"))
        elif s.dtype == pl.String:
            parsed = s.str.to_datetime(strict=True, time_zone="UTC")
        elif isinstance(s.dtype, pl.Datetime | pl.Date):
            parsed = s.cast(pl.Datetime("ms"))
        else:
            raise TypeError(f"type {s.dtype}")
    except Exception as exc:
        raise DataFileError(
            f"{source}: timestamp column {column!r} cannot be parsed ({exc}); expected "
            "datetimes, ISO-8601 text or epoch seconds"
        ) from exc
    if parsed.null_count():
        raise DataFileError(
            f"{source}: timestamp column {column!r} has {parsed.null_count()} empty value(s)"
        )
    dtype = parsed.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        parsed = parsed.dt.replace_time_zone("UTC")
    return parsed.cast(pl.Datetime("ms", "UTC"))


def load_interactions(
    source: str | Path,
    spec: ExternalLogSpec,
    destination: str | Path,
    *,
    show_progress: bool = True,
) -> Path:
    """Publish an external log as a dataset directory at ``destination``.

    Nothing at ``destination`` changes unless the whole load succeeds.
    """
    source = Path(source)
    with progress(f"loading {source.name}", total=3, show=show_progress) as bar:
        raw = read_external_log(source, spec)
        bar.advance()
        users = (
            raw.select("external_user")
            .unique(maintain_order=True)
            .with_row_index("user_id")
            .with_columns(pl.col("user_id").cast(pl.Int32))
        )
        items = (
            raw.select("external_item")
            .unique(maintain_order=True)
            .with_row_index("package_id")
            .with_columns(pl.col("package_id").cast(pl.Int32))
        )
        if users.height >= 2**31 or items.height >= 2**31:
            raise DataFileError(f"{source}: too many distinct ids for int32")
        inter = (
            raw.join(users, on="external_user")
            .join(items, on="external_item")
            .select("user_id", "package_id", "event", "weight", "ts")
            .sort("user_id", "ts")
        )
        inter = validate_frame(inter, "interactions", source)
        first_seen = inter.group_by("package_id").agg(pl.col("ts").min().alias("released_at"))
        packages = (
            items.join(first_seen, on="package_id")
            .sort("package_id")
            .select(
                "package_id",
                pl.lit(-1, dtype=pl.Int32).alias("creator_id"),
                pl.col("external_item").alias("character"),
                pl.lit(0, dtype=pl.Int16).alias("n_stickers"),
                pl.lit(False).alias("premium"),
                "released_at",
                pl.lit(True).alias("available"),
            )
        )
        packages = validate_frame(packages.cast(SCHEMAS["packages"]), "packages", source)
        unknown = pl.lit("unknown")
        user_table = validate_frame(
            users.select(
                "user_id",
                unknown.alias("language"),
                unknown.alias("region"),
                unknown.alias("age_bucket"),
                unknown.alias("gender"),
                pl.lit(False).alias("subscriber"),
            ),
            "users",
            source,
        )
        bar.advance()
        params = {"source": str(source), **spec.model_dump(),
                  "split": split_from_timestamps(
                      inter["ts"].cast(pl.Int64).to_numpy() / 1000.0).to_parameters()}
        with publish_artifact(
            destination,
            kind="dataset",
            parameters=params,
            input_fingerprint=fingerprint(file_sha256(source)),
            replace=True,
            update_latest=False,
        ) as writer:
            for name, df in (
                ("users", user_table),
                ("packages", packages),
                ("interactions", inter),
            ):
                (writer.path / name).mkdir()
                df.write_parquet(writer.path / name / "part-00000.parquet")
            (writer.path / "id_maps").mkdir()
            users.rename({"external_user": "external_id"}).write_parquet(
                writer.path / "id_maps" / "users.parquet"
            )
            items.rename({"external_item": "external_id"}).write_parquet(
                writer.path / "id_maps" / "packages.parquet"
            )
            writer.metrics = {
                "rows": {
                    "users": user_table.height,
                    "packages": packages.height,
                    "interactions": inter.height,
                }
            }
            writer.extra["external"] = True
        bar.advance()
    return Path(destination)
