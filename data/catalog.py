"""The keyword catalogue's building blocks: its pinned source and how it is built.

:func:`data.ensure_catalog` fetches and builds the catalogue once and
:func:`data.load_catalog` reads it; this submodule is for tests and code that builds one
itself: the pinned npm package, its version and checksum, the default languages, and the
builders from an unpacked package or its tarball.
"""

from data._catalog import (
    CATALOG_PACKAGE,
    CATALOG_SHA256,
    CATALOG_VERSION,
    DEFAULT_LANGUAGES,
    build_catalog,
    catalog_from_tarball,
)

__all__ = [
    "CATALOG_PACKAGE",
    "CATALOG_SHA256",
    "CATALOG_VERSION",
    "DEFAULT_LANGUAGES",
    "build_catalog",
    "catalog_from_tarball",
]
