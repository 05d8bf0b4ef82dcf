"""Schemas, the synthetic sticker world, loaders, and the artifact contract.

The public face of the ``data`` package; other packages import from here, never from
its private modules. It holds the artifact contract, the keyword catalogue, the shared
config base and console, datasets, the errors, the table schemas, the time split, the
synthetic world and the loader for real logs. Two documented submodules hold building
blocks for tests and new pieces: :mod:`data.catalog` (how the catalogue is built) and
:mod:`data.split` (the split's defaults and pieces).
"""

from data._artifact import (
    MANIFEST,
    VAR_ENV,
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
from data._catalog import Catalog, ensure_catalog, load_catalog
from data._config import ComponentConfig, ConfigSection
from data._console import print_table, progress
from data._dataset import Dataset, dataset_dir, open_dataset
from data._errors import (
    ArtifactError,
    CatalogError,
    ConfigError,
    DataFileError,
    InputError,
    SchemaError,
    StickerSuggestError,
)
from data._external import ExternalLogSpec, load_interactions
from data._schemas import (
    EVENTS,
    LIBRARY_SOURCES,
    SCHEMAS,
    TABLES,
    read_table,
    scan_table,
    validate_frame,
)
from data._split import TimeSplit, time_split
from data._world import WorldConfig, generate_world, world_config

__all__ = [
    "EVENTS",
    "LIBRARY_SOURCES",
    "MANIFEST",
    "SCHEMAS",
    "TABLES",
    "VAR_ENV",
    "ArtifactError",
    "Catalog",
    "CatalogError",
    "ComponentConfig",
    "ConfigError",
    "ConfigSection",
    "DataFileError",
    "Dataset",
    "ExternalLogSpec",
    "InputError",
    "Manifest",
    "SchemaError",
    "StickerSuggestError",
    "TimeSplit",
    "WorldConfig",
    "dataset_dir",
    "ensure_catalog",
    "file_sha256",
    "fingerprint",
    "generate_world",
    "list_versions",
    "load_catalog",
    "load_interactions",
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
    "time_split",
    "validate_frame",
    "var_root",
    "verify_checksums",
    "world_config",
]
