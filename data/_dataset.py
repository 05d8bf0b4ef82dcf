"""Reading a published dataset directory (``var/data/<name>/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from data._artifact import Manifest, read_manifest
from data._errors import DataFileError
from data._schemas import TABLES, read_table, scan_table

__all__ = ["Dataset", "dataset_dir", "open_dataset"]


def dataset_dir(var: str | Path, name: str) -> Path:
    """Directory of the dataset called ``name`` under the artifact root ``var``."""
    return Path(var) / "data" / name


@dataclass
class Dataset:
    """A verified dataset directory; tables are read on first use and cached.

    Attributes
    ----------
    root : Path
        The dataset directory.
    manifest : Manifest
        Its verified manifest (``metrics`` holds the generator's summary).
    """

    root: Path
    manifest: Manifest
    _cache: dict[str, pl.DataFrame] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The dataset's name (its directory name)."""
        return self.root.name

    @property
    def tables(self) -> list[str]:
        """Tables present in this dataset (external datasets lack some)."""
        return [t for t in TABLES if (self.root / t).is_dir()]

    def has(self, table: str) -> bool:
        """Whether the dataset holds ``table``."""
        return table in self.tables

    def table(self, table: str) -> pl.DataFrame:
        """Read (once) and return a validated table."""
        if table not in self._cache:
            if not self.has(table):
                raise DataFileError(
                    f"{self.root}: dataset has no table {table!r} (it has {', '.join(self.tables)})"
                )
            self._cache[table] = read_table(self.root, table)
        return self._cache[table]

    def scan(self, table: str) -> pl.LazyFrame:
        """Lazily scan a table (schema checked from Parquet footers only)."""
        return scan_table(self.root, table)


def open_dataset(path: str | Path, *, verify: bool = True, checksums: bool = True) -> Dataset:
    """Open a dataset directory after verifying its manifest and checksums.

    Parameters
    ----------
    path : str or Path
        ``var/data/<name>``.
    verify : bool
        Check every file's size and sha256 (seconds for the large world; on by default).
    checksums : bool
        With ``verify``, hash the files now; False checks sizes only and leaves the sums
        to :func:`data.verify_checksums` (e.g. in a thread while the tables load).
    """
    path = Path(path)
    manifest = read_manifest(path, verify=verify, kind="dataset", checksums=checksums)
    return Dataset(path, manifest)
