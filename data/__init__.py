"""Schemas, the synthetic sticker world, loaders, and the artifact contract.

The public face of the ``data`` package; other packages import from here, never from
its private modules.
"""

from data._artifact import (
    MANIFEST,
    VAR_ENV,
    ArtifactWriter,
    Manifest,
    file_sha256,
    fingerprint,
    list_versions,
    new_version,
    publish_artifact,
    read_manifest,
    resolve_artifact,
    set_latest,
    var_root,
    verify_checksums,
)
from data._catalog import (
    CATALOG_VERSION,
    DEFAULT_LANGUAGES,
    Catalog,
    build_catalog,
    catalog_from_tarball,
    ensure_catalog,
    load_catalog,
)
from data._config import ComponentConfig, ConfigSection
from data._console import configure_logging, print_table, progress
from data._dataset import Dataset, dataset_dir, open_dataset
from data._errors import (
    ArtifactError,
    CatalogError,
    ConfigError,
    DataFileError,
    SchemaError,
    StickerSuggestError,
)
from data._schemas import (
    EVENTS,
    LIBRARY_SOURCES,
    SCHEMAS,
    TABLES,
    read_table,
    scan_table,
    validate_frame,
)
from data._split import (
    DEFAULT_SALT,
    DEFAULT_TEST_QUANTILE,
    DEFAULT_VALIDATION_QUANTILE,
    DEFAULT_VALIDATION_SHARE,
    TimeSplit,
    is_validation_device,
    split_from_timestamps,
    time_split,
)

__all__ = [
    "CATALOG_VERSION",
    "DEFAULT_LANGUAGES",
    "DEFAULT_SALT",
    "DEFAULT_TEST_QUANTILE",
    "DEFAULT_VALIDATION_QUANTILE",
    "DEFAULT_VALIDATION_SHARE",
    "EVENTS",
    "LIBRARY_SOURCES",
    "MANIFEST",
    "SCHEMAS",
    "TABLES",
    "VAR_ENV",
    "ArtifactError",
    "ArtifactWriter",
    "Catalog",
    "CatalogError",
    "ComponentConfig",
    "ConfigError",
    "ConfigSection",
    "DataFileError",
    "Dataset",
    "Manifest",
    "SchemaError",
    "StickerSuggestError",
    "TimeSplit",
    "build_catalog",
    "catalog_from_tarball",
    "configure_logging",
    "dataset_dir",
    "ensure_catalog",
    "file_sha256",
    "fingerprint",
    "is_validation_device",
    "list_versions",
    "load_catalog",
    "new_version",
    "open_dataset",
    "print_table",
    "progress",
    "publish_artifact",
    "read_manifest",
    "read_table",
    "resolve_artifact",
    "scan_table",
    "set_latest",
    "split_from_timestamps",
    "time_split",
    "validate_frame",
    "var_root",
    "verify_checksums",
]
